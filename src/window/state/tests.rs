use super::*;

const MIN: i64 = 60_000;
/// 2026-11-25T16:00:00Z = 2026-11-26 00:00 in Beijing.
const DAY0: i64 = 1_795_622_400_000;

fn spec() -> Spec {
    Spec {
        base_ms: MIN,
        mids: vec![HOUR_MS],
        days: true,
        calendar: Calendar {
            tz: chrono_tz::Asia::Shanghai,
        },
        lateness_ms: 0,
        horizon_ms: 2 * HOUR_MS,
        fine_horizon_ms: 2 * HOUR_MS,
        hour_min_minutes: 45,
        day_min_hours: 20,
        eight_hour_min_hours: 6,
    }
}

fn bp(series: u32, start_ms: i64, v: f64) -> BasePartial {
    BasePartial {
        series,
        field: 0,
        start_ms,
        partial: Partial::of(v),
    }
}

fn alone(s: u32) -> [Option<u32>; 2] {
    [Some(s), None]
}

fn hour_of(out: &[Closed], start: i64) -> Option<Closed> {
    out.iter()
        .find(|c| c.level == 1 && c.start_ms == start)
        .copied()
}

#[test]
fn an_hour_is_built_from_minutes_and_valid_from_45() {
    for (minutes, valid) in [(45, true), (44, false)] {
        let mut st = State::new(spec());
        let parts: Vec<_> = (0..minutes)
            .map(|m| bp(0, DAY0 + m * MIN, m as f64))
            .collect();
        st.merge(&parts, alone);
        let out = st.advance(DAY0 + HOUR_MS);
        let h = hour_of(&out, DAY0).unwrap();
        let n = minutes as f64;
        assert_eq!(h.stats.count, minutes as u64);
        assert_eq!(h.stats.mean, Some((n - 1.0) / 2.0));
        assert_eq!((h.stats.min, h.stats.max), (0.0, n - 1.0));
        assert_eq!((h.stats.received, h.stats.expected), (minutes as u64, 60));
        assert_eq!(h.stats.valid, valid);
        assert!(!h.correction);
        assert_eq!(
            out.iter().filter(|c| c.level == 0).count(),
            minutes as usize
        );
    }
}

#[test]
fn windows_close_only_when_the_watermark_passes_their_end() {
    let mut st = State::new(spec());
    st.merge(&[bp(0, DAY0, 1.0)], alone);
    assert!(st.advance(DAY0 + MIN - 1).is_empty());
    let out = st.advance(DAY0 + MIN);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].level, 0);
    // Nothing closes twice.
    assert!(st.advance(DAY0 + MIN + 1).is_empty());
    // The watermark never goes back.
    st.advance(DAY0);
    assert_eq!(st.watermark(), DAY0 + MIN + 1);
}

#[test]
fn a_sensor_reporting_every_five_minutes_samples_the_whole_hour() {
    let mut st = State::new(spec());
    st.set_interval(0, 5 * MIN);
    let parts: Vec<_> = (0..12).map(|k| bp(0, DAY0 + k * 5 * MIN, 1.0)).collect();
    st.merge(&parts, alone);
    let h = hour_of(&st.advance(DAY0 + HOUR_MS), DAY0).unwrap();
    assert_eq!(
        (h.stats.received, h.stats.expected, h.stats.valid),
        (60, 60, true)
    );
    // ...and a minute window expects one reading.
    assert_eq!(st.hour_mean(0, 0, DAY0), Some((1.0, true)));
}

#[test]
fn late_readings_within_the_horizon_rewrite_their_windows() {
    let mut st = State::new(spec());
    let parts: Vec<_> = (0..60).map(|m| bp(0, DAY0 + m * MIN, 10.0)).collect();
    st.merge(&parts, alone);
    st.advance(DAY0 + 2 * HOUR_MS);
    // A reading for 00:30 arrives at watermark 02:00: within the 2 h horizon.
    let m = st.merge(&[bp(0, DAY0 + 30 * MIN, 40.0)], alone);
    assert_eq!(
        m,
        Merged {
            corrections: 1,
            too_late: 0
        }
    );
    let out = st.advance(DAY0 + 2 * HOUR_MS);
    let minute = out.iter().find(|c| c.level == 0).unwrap();
    assert!(minute.correction);
    assert_eq!(minute.stats.mean, Some(25.0));
    let h = hour_of(&out, DAY0).unwrap();
    assert!(h.correction);
    assert_eq!(h.stats.count, 61);
    assert_eq!(h.stats.mean, Some((600.0 + 40.0) / 61.0));
    assert_eq!(out.len(), 2, "day is still open: {out:?}");
    // One for a minute that had no data yet: a first write, still late.
    st.merge(&[bp(0, DAY0 + HOUR_MS + 5 * MIN, 1.0)], alone);
    let out = st.advance(DAY0 + 2 * HOUR_MS);
    assert!(out.iter().all(|c| c.correction));
    assert_eq!(out.len(), 2);
    // Older than the horizon: counted, not merged.
    st.advance(DAY0 + 3 * HOUR_MS);
    let m = st.merge(&[bp(0, DAY0 + 30 * MIN, 40.0)], alone);
    assert_eq!(
        m,
        Merged {
            corrections: 0,
            too_late: 1
        }
    );
    assert!(st.advance(DAY0 + 3 * HOUR_MS).is_empty());
}

#[test]
fn a_day_is_the_mean_of_its_valid_hourly_means() {
    let mut st = State::new(spec());
    let mut parts = Vec::new();
    // Hours 0..20 complete with value = hour; hour 20 has only 10 minutes
    // (invalid, left out of the mean but counted in min/max/count).
    for h in 0..20 {
        for m in 0..60 {
            parts.push(bp(0, DAY0 + h * HOUR_MS + m * MIN, h as f64));
        }
    }
    for m in 0..10 {
        parts.push(bp(0, DAY0 + 20 * HOUR_MS + m * MIN, 1000.0));
    }
    st.merge(&parts, alone);
    let out = st.advance(DAY0 + 24 * HOUR_MS);
    let day = out.iter().find(|c| c.level == 2).unwrap();
    assert_eq!(day.start_ms, DAY0);
    assert_eq!(day.stats.mean, Some(9.5)); // mean of 0..19
    assert_eq!(day.stats.received, 20);
    assert_eq!(day.stats.expected, 24);
    assert!(day.stats.valid);
    assert_eq!(day.stats.count, 20 * 60 + 10);
    assert_eq!(day.stats.max, 1000.0);
}

#[test]
fn a_day_with_19_valid_hours_is_invalid() {
    let mut st = State::new(spec());
    let parts: Vec<_> = (0..19 * 60).map(|m| bp(0, DAY0 + m * MIN, 1.0)).collect();
    st.merge(&parts, alone);
    let out = st.advance(DAY0 + 24 * HOUR_MS);
    let day = out.iter().find(|c| c.level == 2).unwrap();
    assert!(!day.stats.valid);
    assert_eq!(day.stats.received, 19);
}

#[test]
fn site_series_pool_their_sensors() {
    let mut st = State::new(spec());
    // Sensors 1 and 2 of site 9, same minute.
    let to_site = |s: u32| [Some(s), Some(9)];
    st.merge(&[bp(1, DAY0, 10.0), bp(2, DAY0, 20.0)], to_site);
    let out = st.advance(DAY0 + MIN);
    let site = out.iter().find(|c| c.series == 9).unwrap();
    assert_eq!(site.stats.mean, Some(15.0));
    assert_eq!(site.stats.count, 2);
    st.merge(&[bp(1, DAY0 + MIN, 1.0)], to_site);
    st.advance(DAY0 + HOUR_MS);
    // Two sensors in one minute cover one minute of the site's hour.
    let (mean, valid) = st.hour_mean(9, 0, DAY0).unwrap();
    assert_eq!((mean, valid), (31.0 / 3.0, false));
}

#[test]
fn eight_hour_means_need_six_valid_hours() {
    let mut st = State::new(spec());
    let mut parts = Vec::new();
    for h in 0..8 {
        if h == 3 || h == 5 {
            continue; // two hours missing
        }
        for m in 0..60 {
            parts.push(bp(0, DAY0 + h * HOUR_MS + m * MIN, h as f64));
        }
    }
    st.merge(&parts, alone);
    st.advance(DAY0 + 8 * HOUR_MS);
    let (mean, valid) = st.eight_hour_mean(0, 0, DAY0 + 7 * HOUR_MS).unwrap();
    assert_eq!(mean, 20.0 / 6.0); // hours 0 1 2 4 6 7
    assert!(valid);
    let (_, valid) = st.eight_hour_mean(0, 0, DAY0 + 8 * HOUR_MS).unwrap();
    assert!(!valid, "hours 1..8: five valid");
}

#[test]
fn memory_stays_flat_as_hours_pass() {
    let mut st = State::new(spec());
    let mut held = Vec::new();
    for h in 0..72 {
        let parts: Vec<_> = (0..60)
            .flat_map(|m| (0..10).map(move |s| bp(s, DAY0 + h * HOUR_MS + m * MIN, 1.0)))
            .collect();
        st.merge(&parts, alone);
        st.advance(DAY0 + (h + 1) * HOUR_MS);
        held.push(st.windows_held());
    }
    // Per series: 2 h + of minutes, up to a day and 9 h of hours, 1–2 days.
    let max = *held.iter().max().unwrap();
    assert!(max <= 10 * (120 + 60 + 34 + 2), "{max}");
    assert_eq!(held[71], held[47], "day 3 holds what day 2 held");
}

#[test]
fn each_source_closes_only_its_own_windows() {
    let mut st = State::new(spec());
    st.set_source(0, 0);
    st.set_source(1, 1);
    st.merge(&[bp(0, DAY0, 1.0), bp(1, DAY0, 2.0)], alone);
    // Source 0 is an hour on; source 1 (a station uploading late) is not.
    let out = st.close(|s| if s == 0 { DAY0 + HOUR_MS } else { DAY0 });
    assert!(out.iter().all(|c| c.series == 0), "{out:?}");
    assert_eq!(out.len(), 2, "minute and hour: {out:?}");
    assert_eq!(st.watermark_of(1), DAY0);
    let out = st.close(|_| DAY0 + HOUR_MS);
    assert!(
        out.iter().all(|c| c.series == 1 && !c.correction),
        "{out:?}"
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn past_the_fine_horizon_a_reading_still_corrects_its_hour() {
    let mut st = State::new(Spec {
        horizon_ms: 48 * HOUR_MS,
        fine_horizon_ms: HOUR_MS,
        ..spec()
    });
    let parts: Vec<_> = (0..60).map(|m| bp(0, DAY0 + m * MIN, 10.0)).collect();
    st.merge(&parts, alone);
    st.advance(DAY0 + 5 * HOUR_MS);
    // The minutes are gone; the hour and the day are held.
    assert_eq!(st.windows_held(), 2);
    let m = st.merge(&[bp(0, DAY0 + 30 * MIN, 40.0)], alone);
    assert_eq!(m.corrections, 1);
    let out = st.advance(DAY0 + 5 * HOUR_MS);
    let h = hour_of(&out, DAY0).unwrap();
    assert!(h.correction);
    assert_eq!(h.stats.count, 61);
    // The minute is written anew with the late reading only.
    let minute = out.iter().find(|c| c.level == 0).unwrap();
    assert_eq!(minute.stats.mean, Some(40.0));
    assert_eq!(st.windows_held(), 2, "pruned again");
}
