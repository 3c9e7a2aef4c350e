//! The alert engine with a controlled clock: time is what the test says
//! (observation windows and `tick`), never a sleep.

use std::collections::BTreeMap;

use super::engine::{Engine, Rule, fingerprint};
use super::{Event, Notice, Observation, derive};
use crate::calendar::Calendar;
use crate::evaluate::targets::{Target, TargetPatch, merge, shipped};
use crate::reading::Point;

const H: i64 = 3_600_000;
const MIN: i64 = 60_000;
/// 2026-01-05 00:00 Asia/Shanghai.
const DAY0: i64 = 1_767_542_400_000;

fn cal() -> Calendar {
    Calendar {
        tz: chrono_tz::Asia::Shanghai,
    }
}

fn targets(patches: &[TargetPatch]) -> Vec<Target> {
    merge(shipped(), patches).unwrap()
}

fn engine_with(patches: &[TargetPatch]) -> Engine {
    Engine::new(
        Rule::from_targets(&targets(patches), std::time::Duration::from_secs(4 * 3600)),
        cal(),
    )
}

fn engine() -> Engine {
    engine_with(&[])
}

fn site(name: &str) -> Vec<(String, String)> {
    vec![
        ("district".into(), "dongcheng".into()),
        ("site".into(), name.into()),
    ]
}

fn obs(
    kind: &str,
    labels: &[(String, String)],
    metric: &str,
    start: i64,
    end: i64,
    v: f64,
) -> Observation {
    Observation {
        kind: kind.into(),
        labels: labels.to_vec(),
        metric: metric.into(),
        start_ms: start,
        end_ms: end,
        value: v,
        valid: true,
        details: BTreeMap::new(),
    }
}

fn hour_aqi(e: &mut Engine, name: &str, hour: i64, aqi: f64) -> Vec<Notice> {
    let t = DAY0 + hour * H;
    e.observe(&[obs("air", &site(name), "aqi.hour", t, t + H, aqi)]);
    e.tick(t + H + 2 * MIN);
    e.take_notices()
}

fn of_rule<'a>(n: &'a [Notice], rule: &str) -> Vec<&'a Notice> {
    n.iter().filter(|n| n.alert.rule == rule).collect()
}

#[test]
fn two_hours_above_200_fire_once_after_for_and_resolve_once() {
    let mut e = engine();
    let mut all = Vec::new();
    // 09:00 fine, 10:00 and 11:00 heavily polluted, 12:00 fine again.
    for (h, aqi) in [
        (9, 150.0),
        (10, 230.0),
        (11, 245.0),
        (12, 180.0),
        (13, 120.0),
    ] {
        let n = hour_aqi(&mut e, "dongsi", h, aqi);
        if h == 10 {
            assert!(n.is_empty(), "pending during `for`: {n:?}");
            assert_eq!(e.counts().pending, 1);
        }
        all.extend(n);
    }
    let heavy = of_rule(&all, "air.aqi.hour.heavy");
    assert_eq!(heavy.len(), 2, "{all:#?}");
    let (fire, resolve) = (heavy[0], heavy[1]);
    assert_eq!(fire.event, Event::Firing);
    assert_eq!(fire.alert.value, 245.0);
    assert_eq!(fire.alert.starts_at_ms, DAY0 + 10 * H);
    assert_eq!(fire.alert.labels["site"], "dongsi");
    assert_eq!(fire.alert.labels["alertname"], "air.aqi.hour.heavy");
    assert!(fire.alert.report.starts_with("§5"));
    assert!(fire.alert.standard.contains("HJ 633-2026"));
    assert_eq!(resolve.event, Event::Resolved);
    assert_eq!(resolve.alert.id, fire.alert.id);
    assert_eq!(resolve.alert.ends_at_ms, Some(DAY0 + 13 * H));
    assert_ne!(resolve.event_id, fire.event_id);
    // Nothing above 300: the severe rule never opened.
    assert!(of_rule(&all, "air.aqi.hour.severe").is_empty());
}

#[test]
fn one_hour_above_200_stays_pending_and_fires_nothing() {
    let mut e = engine();
    let mut all = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 150.0)] {
        all.extend(hour_aqi(&mut e, "dongsi", h, aqi));
    }
    assert!(all.is_empty(), "{all:?}");
    assert_eq!(e.counts(), Default::default());
}

#[test]
fn hysteresis_keeps_firing_until_the_clear_threshold() {
    let patch = TargetPatch {
        id: "air.aqi.hour.heavy".into(),
        clear: Some(150.0),
        for_: Some(crate::config::HumanDuration::from_secs(0)),
        ..Default::default()
    };
    let mut e = engine_with(&[patch]);
    let mut all = Vec::new();
    for (h, aqi) in [(1, 210.0), (2, 190.0), (3, 205.0), (4, 160.0), (5, 140.0)] {
        all.extend(hour_aqi(&mut e, "tiantan", h, aqi));
    }
    let ev: Vec<Event> = of_rule(&all, "air.aqi.hour.heavy")
        .iter()
        .map(|n| n.event)
        .collect();
    assert_eq!(ev, [Event::Firing, Event::Resolved], "{all:#?}");
    let resolved = of_rule(&all, "air.aqi.hour.heavy")[1];
    assert_eq!(resolved.alert.value, 140.0);
}

#[test]
fn reminders_follow_the_repeat_interval_on_the_stream_clock() {
    let mut e = engine();
    for h in 0..10 {
        hour_aqi(&mut e, "wanliu", h, 260.0);
    }
    let t = DAY0 + 10 * H + 2 * MIN;
    // Fired at hour 1's flush (01:00 window, ticked at 02:02); reminders
    // every 4 h after the last notice: at 06:02 and 10:02.
    e.tick(t + 4 * H);
    let n = e.take_notices();
    let r = of_rule(&n, "air.aqi.hour.heavy");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].event, Event::Reminder);
    e.tick(t + 4 * H + MIN);
    assert!(e.take_notices().is_empty());
}

#[test]
fn a_replayed_or_corrected_window_changes_nothing() {
    let mut e = engine();
    let mut all = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 245.0)] {
        all.extend(hour_aqi(&mut e, "dongsi", h, aqi));
    }
    assert_eq!(all.len(), 1);
    // The same hours again (a replay after a restart), and a correction of
    // hour 10 that would clear it.
    for (h, aqi) in [(10, 230.0), (11, 245.0), (10, 20.0)] {
        assert!(hour_aqi(&mut e, "dongsi", h, aqi).is_empty());
    }
    assert_eq!(e.counts().firing, 1);
}

#[test]
fn state_survives_a_restart_and_ids_are_stable() {
    let mut e = engine();
    let mut first = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 245.0)] {
        first.extend(hour_aqi(&mut e, "dongsi", h, aqi));
    }
    let saved = e.save();
    let mut again = engine();
    again.load(&saved).unwrap();
    assert_eq!(again.counts().firing, 1);
    let n = hour_aqi(&mut again, "dongsi", 12, 100.0);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].event, Event::Resolved);
    assert_eq!(n[0].alert.id, first[0].alert.id);
    assert_eq!(
        first[0].alert.id,
        fingerprint("air.aqi.hour.heavy", &site("dongsi"))
    );
    // Ids are the same in a second engine fed the same data.
    let mut other = engine();
    let mut second = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 245.0)] {
        second.extend(hour_aqi(&mut other, "dongsi", h, aqi));
    }
    assert_eq!(second[0].event_id, first[0].event_id);
    assert!(engine().load(b"{nonsense").is_err());
}

/// A daily AQI of the city (the observed alert level is judged on the
/// city-wide AQI, as the plan uses it).
fn daily(e: &mut Engine, day: i64, aqi: f64) -> Vec<Notice> {
    let s = DAY0 + day * 24 * H;
    let city = vec![("scope".to_owned(), "city".to_owned())];
    e.observe(&[obs("air", &city, "aqi.day", s, s + 24 * H, aqi)]);
    e.take_notices()
}

#[test]
fn four_days_above_200_raise_the_2016_level_step_by_step() {
    let mut e = engine();
    let mut levels = Vec::new();
    // Day 3 is above 300.
    for (d, aqi) in [
        (0, 120.0),
        (1, 220.0),
        (2, 240.0),
        (3, 320.0),
        (4, 260.0),
        (5, 90.0),
    ] {
        for n in of_rule(&daily(&mut e, d, aqi), "air.alert-level.2016") {
            levels.push((
                d,
                n.event,
                n.alert.value,
                n.alert.details["level_name"].clone(),
            ));
        }
    }
    let lv = |n: &str| n.to_owned();
    assert_eq!(
        levels,
        [
            (1, Event::Firing, 1.0, lv("blue")),
            (2, Event::Changed, 2.0, lv("yellow")),
            (3, Event::Changed, 3.0, lv("orange")),
            (5, Event::Resolved, 0.0, lv("none")),
        ],
        "day 4 (4 days > 200, one > 300) stays orange"
    );
}

#[test]
fn the_2023_rule_set_is_selectable_and_counts_days_above_150() {
    let on = |id: &str, enabled: bool| TargetPatch {
        id: id.into(),
        enabled: Some(enabled),
        ..Default::default()
    };
    let mut e = engine_with(&[
        on("air.alert-level.2023", true),
        on("air.alert-level.2016", false),
    ]);
    let mut levels = Vec::new();
    for (d, aqi) in [
        (0, 160.0),
        (1, 170.0),
        (2, 180.0),
        (3, 220.0),
        (4, 230.0),
        (5, 330.0),
    ] {
        for n in daily(&mut e, d, aqi) {
            assert_eq!(n.alert.rule, "air.alert-level.2023");
            levels.push((d, n.alert.value));
        }
    }
    // 2 days 151–200: yellow; 3: orange; 3 days > 200 with one > 300: red.
    assert_eq!(levels, [(1, 2.0), (2, 3.0), (5, 4.0)]);
    // The level functions themselves, on both rule sets.
    assert_eq!(derive::level("beijing-2016", &[210, 220, 230, 240]), 2);
    assert_eq!(derive::level("beijing-2016", &[310, 320, 230, 240]), 4);
    assert_eq!(derive::level("beijing-2016", &[100, 500]), 4);
    assert_eq!(derive::level("beijing-2023", &[205]), 2);
    assert_eq!(derive::level("beijing-2023", &[100, 150]), 0);
}

fn plant(name: &str) -> Vec<(String, String)> {
    vec![
        ("district".into(), "chaoyang".into()),
        ("site".into(), name.into()),
    ]
}

fn flows(
    e: &mut Engine,
    name: &str,
    day: i64,
    inflow: f64,
    treated: f64,
    reclaimed: f64,
) -> Vec<Notice> {
    let s = DAY0 + day * 24 * H;
    let p = plant(name);
    e.observe(&[
        obs("sewage", &p, "inflow_m3h.day", s, s + 24 * H, inflow),
        obs("sewage", &p, "treated_m3h.day", s, s + 24 * H, treated),
        obs("sewage", &p, "reclaimed_m3h.day", s, s + 24 * H, reclaimed),
    ]);
    e.take_notices()
}

/// An inflow meter downstream of an overflow sees only what was not
/// bypassed: 9,000 m³/h in and treated, 1,000 m³/h bypassed is 90 %, not
/// 100 %.
#[test]
fn bypassed_sewage_counts_against_the_treatment_rate() {
    let mut e = engine();
    let s = DAY0;
    let p = plant("gaobeidian");
    e.observe(&[
        obs("sewage", &p, "inflow_m3h.day", s, s + 24 * H, 9_000.0),
        obs("sewage", &p, "treated_m3h.day", s, s + 24 * H, 9_000.0),
        obs("sewage", &p, "bypass_m3h.day", s, s + 24 * H, 1_000.0),
    ]);
    let n = e.take_notices();
    let day = of_rule(&n, "water.treatment-rate.day");
    let plant = day
        .iter()
        .find(|n| n.alert.labels.contains_key("site"))
        .unwrap_or_else(|| panic!("{n:#?}"));
    assert!(
        (plant.alert.value - 90.0).abs() < 1e-9,
        "{}",
        plant.alert.value
    );
    assert_eq!(plant.alert.details["bypass_m3"], "24000");
    let city = day
        .iter()
        .find(|n| n.alert.labels.contains_key("scope"))
        .unwrap();
    assert_eq!(
        city.alert.details["basis"],
        "metered plants' treatment ratio"
    );
}

#[test]
fn a_plant_treating_90_percent_for_a_day_fires_the_95_percent_target() {
    let mut e = engine();
    // 10,000 m³/h in; the plant treats 99 % on day 0, 90 % on day 1.
    assert!(
        of_rule(
            &flows(&mut e, "gaobeidian", 0, 10_000.0, 9_900.0, 0.0),
            "water.treatment-rate.day"
        )
        .is_empty()
    );
    let n = flows(&mut e, "gaobeidian", 1, 10_000.0, 9_000.0, 0.0);
    let day: Vec<_> = of_rule(&n, "water.treatment-rate.day");
    // The plant, and the city (the only plant) both fall to 90 %.
    assert_eq!(day.len(), 2, "{n:#?}");
    let p = day
        .iter()
        .find(|n| n.alert.labels.contains_key("site"))
        .unwrap();
    assert_eq!(p.event, Event::Firing);
    assert!((p.alert.value - 90.0).abs() < 1e-9);
    assert_eq!(p.alert.details["treated_m3"], "216000");
    assert_eq!(p.alert.details["inflow_m3"], "240000");
    let city = day
        .iter()
        .find(|n| n.alert.labels.contains_key("scope"))
        .unwrap();
    assert_eq!(city.alert.labels["scope"], "city");
    // Month to date: (237,600 + 216,000) / 480,000 = 94.5 %: below 95.
    let mtd = of_rule(&n, "water.treatment-rate.month");
    assert_eq!(mtd.len(), 2);
    assert!(
        (mtd[0].alert.value - 94.5).abs() < 1e-9,
        "{}",
        mtd[0].alert.value
    );
    // A second plant at 100 % lifts the city-wide day rate back over 95 %.
    let n = flows(&mut e, "qinghe", 1, 10_000.0, 10_000.0, 0.0);
    assert!(
        of_rule(&n, "water.treatment-rate.day").is_empty(),
        "day 1 of the city was judged already"
    );
    let n = flows(&mut e, "gaobeidian", 2, 10_000.0, 9_990.0, 0.0);
    let resolved = of_rule(&n, "water.treatment-rate.day");
    assert!(
        resolved.iter().all(|n| n.event == Event::Resolved),
        "{n:#?}"
    );
}

#[test]
fn reclaimed_water_behind_the_pace_to_1_2_billion_fires() {
    let mut e = engine();
    // 1.2e9 m³/year is 136,986 m³/h on average. One plant reclaiming
    // 100,000 m³/h is behind; then a second one brings the city ahead.
    let n = flows(&mut e, "gaobeidian", 0, 200_000.0, 200_000.0, 100_000.0);
    let pace = of_rule(&n, "water.reclaimed.pace");
    assert_eq!(pace.len(), 1, "{n:#?}");
    assert_eq!(pace[0].event, Event::Firing);
    let ytd: f64 = pace[0].alert.details["year_to_date_m3"].parse().unwrap();
    // Days 1–4 of January are not in the data: the pace counts from 1 Jan.
    assert_eq!(ytd, 2_400_000.0);
    let fraction: f64 = pace[0].alert.details["elapsed_fraction"].parse().unwrap();
    assert!((fraction - 5.0 / 365.0).abs() < 1e-4, "{fraction}");
    assert!((pace[0].alert.value - 2_400_000.0 / (5.0 / 365.0)).abs() < 1.0);
    // Day 1 with both plants: the year to date is still behind.
    flows(&mut e, "qinghe", 1, 200_000.0, 200_000.0, 150_000.0);
    let n = flows(&mut e, "gaobeidian", 2, 200_000.0, 200_000.0, 100_000.0);
    assert!(
        of_rule(&n, "water.reclaimed.pace").is_empty(),
        "still firing, no new notice"
    );
    // Big days catch up.
    let n = flows(&mut e, "qinghe", 3, 2_000_000.0, 2_000_000.0, 1_500_000.0);
    let pace = of_rule(&n, "water.reclaimed.pace");
    assert_eq!(pace.len(), 1, "{n:#?}");
    assert_eq!(pace[0].event, Event::Resolved);
}

/// The sponge-city 70 % is an annual ratio per catchment: a storm day
/// above the design rainfall is no breach when the year so far captures
/// enough; the year to date below 70 % is.
#[test]
fn sponge_capture_is_judged_on_the_year_to_date() {
    let mut e = engine();
    let p = plant("sponge-1");
    let day = |e: &mut Engine, d: i64, rain: f64, runoff: f64| {
        let s = DAY0 + d * 24 * H;
        e.observe(&[
            obs("sewage", &p, "rainfall_m3h.day", s, s + 24 * H, rain),
            obs("sewage", &p, "runoff_m3h.day", s, s + 24 * H, runoff),
        ]);
        e.take_notices()
    };
    // Day 0: 40 % ran off; the year so far captures 60 %.
    let n = day(&mut e, 0, 1_000.0, 400.0);
    let c = of_rule(&n, "water.sponge.capture");
    assert_eq!(c.len(), 1, "{n:#?}");
    assert!((c[0].alert.value - 60.0).abs() < 1e-9);
    // Day 1: a wet day captured well: (1 − 1,400 / 11,000) = 87 %.
    let n = day(&mut e, 1, 10_000.0, 1_000.0);
    let c = of_rule(&n, "water.sponge.capture");
    assert_eq!(c.len(), 1, "{n:#?}");
    assert_eq!(c[0].event, Event::Resolved);
    // Day 2: a storm above the design rainfall, 10 % captured that day;
    // the year is still at 1 − 2,300 / 12,000 = 81 %: nothing fires.
    let n = day(&mut e, 2, 1_000.0, 900.0);
    assert!(of_rule(&n, "water.sponge.capture").is_empty(), "{n:#?}");
    // A dry day judges nothing new.
    assert!(day(&mut e, 3, 0.0, 0.0).is_empty());
}

/// Volumes integrate the flow over the hours the meter covered: a day
/// with 12 valid hours at 1,000 m³/h is 12,000 m³, not 24,000.
#[test]
fn a_day_volume_covers_only_the_hours_with_data() {
    let cal = cal();
    let mut d = crate::alert::derive::Derived::default();
    let mut out = Vec::new();
    let mut half = obs(
        "sewage",
        &plant("qinghe"),
        "reclaimed_m3h.day",
        DAY0,
        DAY0 + 24 * H,
        1_000.0,
    );
    half.details.insert("hours".into(), "12".into());
    d.absorb(&half, &cal, &mut out);
    d.finish(&cal, true, &mut out);
    let pace = out
        .iter()
        .find(|o| o.metric == "reclaimed.year_to_date_pace")
        .unwrap();
    assert_eq!(pace.details["year_to_date_m3"], "12000");
}

fn point(sensor: &str, t: i64, pm25: f64) -> Point {
    Point {
        kind: "air".into(),
        coverage: Default::default(),
        tags: vec![
            ("district".into(), "dongcheng".into()),
            ("sensor".into(), sensor.into()),
            ("site".into(), "dongsi".into()),
        ],
        time_ms: t,
        fields: vec![("pm25".into(), pm25)],
    }
}

/// Two sensors report each minute up to `last`, ticking the clock each
/// minute; "b" stops after minute 10. The notices, by minute.
fn b_falls_silent(e: &mut Engine, last: i64) -> Vec<(i64, Vec<Notice>)> {
    let mut all = Vec::new();
    for m in 0..=last {
        let t = DAY0 + m * MIN;
        let mut pts = vec![point("a", t, 30.0 + m as f64)];
        if m <= 10 {
            pts.push(point("b", t, 40.0 + m as f64));
        }
        e.points(&pts);
        e.tick(t);
        let n = e.take_notices();
        if !n.is_empty() {
            all.push((m, n));
        }
    }
    all
}

#[test]
fn deadman_fires_after_the_silence_and_resolves_when_the_sensor_returns() {
    let mut e = engine();
    let t0 = DAY0;
    let all = b_falls_silent(&mut e, 40);
    // Silence > 15 min: at minute 26 (16 min after the last reading).
    assert_eq!(all.len(), 1, "{all:#?}");
    let (m, n) = &all[0];
    assert_eq!(*m, 26);
    assert_eq!(n[0].alert.rule, "sensor.deadman");
    assert_eq!(n[0].event, Event::Firing);
    assert_eq!(n[0].alert.labels["sensor"], "b");
    assert_eq!(n[0].alert.starts_at_ms, t0 + 10 * MIN);

    // Backfill: "b" sends its buffered readings from minutes 11–20 (old
    // times). The silence is still 20 min: no resolve.
    let t = t0 + 40 * MIN;
    let backfill: Vec<Point> = (11..=20)
        .map(|m| point("b", t0 + m * MIN, 50.0 + m as f64))
        .collect();
    e.points(&backfill);
    e.tick(t + MIN);
    assert!(
        e.take_notices().is_empty(),
        "backfilled data must not clear deadman"
    );
    // A replay of everything already seen changes nothing either.
    let replay: Vec<Point> = (0..=40)
        .map(|m| point("a", t0 + m * MIN, 30.0 + m as f64))
        .collect();
    e.points(&replay);
    e.tick(t + MIN + 1);
    assert!(e.take_notices().is_empty());
    // Live again.
    e.points(&[point("b", t + 2 * MIN, 42.0)]);
    e.tick(t + 2 * MIN);
    let n = e.take_notices();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].event, Event::Resolved);
    assert_eq!(n[0].alert.rule, "sensor.deadman");
}

/// The silent sensor's return arrives after another sensor's reading of
/// the same minute has already moved the clock there (a flush between the
/// two): the next tick resolves it though the clock does not move.
#[test]
fn deadman_resolves_when_the_sensor_returns_at_the_clock_already_reached() {
    let mut e = engine();
    let all = b_falls_silent(&mut e, 30);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].1[0].event, Event::Firing);
    let t = DAY0 + 31 * MIN;
    e.points(&[point("a", t, 61.0)]);
    e.tick(t);
    assert!(e.take_notices().is_empty());
    e.points(&[point("b", t, 41.0)]);
    e.tick(t);
    let n = e.take_notices();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].event, Event::Resolved);
    assert_eq!(n[0].alert.labels["sensor"], "b");
    // Nothing more at that clock.
    e.tick(t);
    assert!(e.take_notices().is_empty());
}

/// A sensor whose readings each stand for an hour (an HJ 212 hourly
/// value, stamped at the hour's start and sent after it ends) is not
/// silent between them; it is once its next hour is 15 minutes overdue.
#[test]
fn deadman_allows_an_hourly_sensor_its_hour() {
    let mut e = engine();
    let hourly = |h: i64| Point {
        coverage: crate::reading::Coverage::Interval(60 * MIN),
        ..point("h", DAY0 + h * 60 * MIN, 30.0 + h as f64)
    };
    let mut fired = Vec::new();
    // A minute sensor drives the clock; the hourly one sends hours 0–3,
    // each a minute after it ends, then stops (hour 4 never comes).
    for m in 0..=6 * 60 {
        let t = DAY0 + m * MIN;
        let mut pts = vec![point("a", t, 30.0 + (m % 7) as f64)];
        if m % 60 == 1 && (1..=4).contains(&(m / 60)) {
            pts.push(hourly(m / 60 - 1));
        }
        e.points(&pts);
        e.tick(t);
        for n in e.take_notices() {
            fired.push((m, n.alert.labels["sensor"].clone(), n.event));
        }
    }
    // Hour 3 (stamped 03:00) came at 04:01; hour 4 was due by 05:00+;
    // overdue by 15 min at 05:16.
    assert_eq!(
        fired,
        [(5 * 60 + 16, "h".to_owned(), Event::Firing)],
        "{fired:?}"
    );
}

#[test]
fn a_flat_lined_sensor_fires_after_n_identical_readings() {
    let mut e = engine();
    let mut fired_at = None;
    for m in 0..40 {
        e.points(&[point("a", DAY0 + m * MIN, 55.0)]);
        let n = e.take_notices();
        if let Some(x) = n.iter().find(|n| n.alert.rule == "sensor.flatline") {
            assert_eq!(x.event, Event::Firing);
            assert_eq!(x.alert.labels["field"], "pm25");
            fired_at.get_or_insert(m);
        }
    }
    // 31 identical readings (> 30): the 31st, at minute 30.
    assert_eq!(fired_at, Some(30));
    e.points(&[point("a", DAY0 + 40 * MIN, 56.0)]);
    let n = e.take_notices();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].event, Event::Resolved);
}

#[test]
fn rules_match_labels_and_kinds() {
    let on = TargetPatch {
        id: "voc.catering.oil_fume".into(),
        enabled: Some(true),
        ..Default::default()
    };
    let mut e = engine_with(&[on]);
    let with = |industry: &str| {
        vec![
            ("district".into(), "haidian".into()),
            ("industry".into(), industry.to_owned()),
            ("site".into(), "x".into()),
        ]
    };
    e.observe(&[
        obs(
            "voc",
            &with("printing"),
            "oil_fume.hour",
            DAY0,
            DAY0 + H,
            3.0,
        ),
        obs(
            "voc",
            &with("catering"),
            "oil_fume.hour",
            DAY0,
            DAY0 + H,
            3.0,
        ),
        obs(
            "air",
            &with("catering"),
            "oil_fume.hour",
            DAY0,
            DAY0 + H,
            3.0,
        ),
    ]);
    let n = e.take_notices();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].alert.labels["industry"], "catering");
    assert_eq!(n[0].alert.labels["kind"], "voc");
}

/// The site and district dust targets, each with the operator's value:
/// a site's own hour (no scope label) answers to the site's, the
/// district's mean (`scope=district`) to the district's, and neither to
/// the other's.
#[test]
fn site_and_district_dust_targets_each_take_their_own_scope() {
    let on = |id: &str, value: f64| TargetPatch {
        id: id.into(),
        enabled: Some(true),
        value: Some(value),
        ..Default::default()
    };
    let mut e = engine_with(&[on("dust.pm10.site", 150.0), on("dust.pm10.district", 100.0)]);
    let district = vec![
        ("district".to_owned(), "chaoyang".to_owned()),
        ("scope".to_owned(), "district".to_owned()),
    ];
    e.observe(&[
        // A site at 120: under the site's 150; the district at 120: over
        // its 100.
        obs("dust", &site("cy-1"), "pm10.hour", DAY0, DAY0 + H, 120.0),
        obs("dust", &district, "pm10.hour", DAY0, DAY0 + H, 120.0),
    ]);
    let n = e.take_notices();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].alert.rule, "dust.pm10.district");
    assert_eq!(n[0].alert.labels["district"], "chaoyang");
    // A site at 160 and the district at 90: the site's fires, the
    // district's resolves.
    e.observe(&[
        obs(
            "dust",
            &site("cy-1"),
            "pm10.hour",
            DAY0 + H,
            DAY0 + 2 * H,
            160.0,
        ),
        obs("dust", &district, "pm10.hour", DAY0 + H, DAY0 + 2 * H, 90.0),
    ]);
    let n = e.take_notices();
    let mut got: Vec<(&str, &str)> = n
        .iter()
        .map(|n| (n.alert.rule.as_str(), n.event.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("dust.pm10.district", "resolved"),
            ("dust.pm10.site", "firing")
        ],
        "{n:#?}"
    );
}

#[test]
fn invalid_windows_neither_fire_nor_clear() {
    let mut e = engine();
    let mut o = obs(
        "air",
        &site("dongsi"),
        "pm25.day",
        DAY0,
        DAY0 + 24 * H,
        120.0,
    );
    o.valid = false;
    e.observe(&[o]);
    assert!(e.take_notices().is_empty());
    e.observe(&[obs(
        "air",
        &site("dongsi"),
        "pm25.day",
        DAY0,
        DAY0 + 24 * H,
        120.0,
    )]);
    let n = e.take_notices();
    // Both GB 3095 sets: 2012 (75) and the 2026 transition (60).
    let rules: Vec<&str> = n.iter().map(|n| n.alert.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["air.gb3095-2012.pm25_24h", "air.gb3095-2026.pm25_24h"]
    );
}

#[test]
fn operator_patches_are_checked() {
    let bad = [
        TargetPatch {
            id: "new.rule".into(),
            ..Default::default()
        },
        TargetPatch {
            id: "dust.pm10.site".into(),
            enabled: Some(true),
            ..Default::default()
        },
        TargetPatch {
            id: "air.aqi.hour.heavy".into(),
            clear: Some(250.0),
            ..Default::default()
        },
        TargetPatch {
            id: "air.aqi.hour.severe".into(),
            metric: Some("nonsense".into()),
            ..Default::default()
        },
    ];
    let errs = merge(shipped(), &bad).unwrap_err();
    assert_eq!(
        errs.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{errs:#?}"
    );
    let ok = merge(
        shipped(),
        &[TargetPatch {
            id: "dust.pm10.site".into(),
            enabled: Some(true),
            value: Some(150.0),
            ..Default::default()
        }],
    )
    .unwrap();
    let dust = ok.iter().find(|t| t.id == "dust.pm10.site").unwrap();
    assert!(dust.enabled && dust.value == Some(150.0));
    assert!(dust.report.starts_with("§5"), "citations kept");
}

#[test]
fn signatures_match_the_standard_webhooks_test_vector() {
    // From the Standard Webhooks specification's reference tests.
    let key = super::webhook::key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = super::webhook::sign(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert_eq!(super::webhook::key("plain").unwrap(), b"plain");
    assert!(super::webhook::key("whsec_***").is_err());
}

#[test]
fn the_alertmanager_body_has_the_v4_shape() {
    use super::webhook::{Format, body};
    let mut e = engine();
    let mut n = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 245.0), (12, 100.0)] {
        n.extend(hour_aqi(&mut e, "dongsi", h, aqi));
    }
    let b: serde_json::Value =
        serde_json::from_slice(&body(Format::Alertmanager, &n[0], "duty", "http://x/")).unwrap();
    assert_eq!(b["version"], "4");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["receiver"], "duty");
    assert_eq!(b["truncatedAlerts"], 0);
    assert_eq!(b["groupLabels"]["alertname"], "air.aqi.hour.heavy");
    // One group per alert instance: the station is in it.
    assert_eq!(b["groupLabels"], b["alerts"][0]["labels"]);
    assert_eq!(b["groupLabels"]["site"], "dongsi");
    let key = b["groupKey"].as_str().unwrap();
    assert!(
        key.starts_with("{}:{alertname=\"air.aqi.hour.heavy\", ")
            && key.contains("site=\"dongsi\""),
        "{key}"
    );
    let mut other = engine();
    let at_tiantan: Vec<_> = [(10, 230.0), (11, 245.0)]
        .into_iter()
        .flat_map(|(h, aqi)| hour_aqi(&mut other, "tiantan", h, aqi))
        .collect();
    let t: serde_json::Value = serde_json::from_slice(&body(
        Format::Alertmanager,
        &at_tiantan[0],
        "duty",
        "http://x/",
    ))
    .unwrap();
    assert_ne!(
        t["groupKey"], b["groupKey"],
        "stations are separate incidents"
    );
    let a = &b["alerts"][0];
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["startsAt"], "2026-01-05T02:00:00.000Z");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(a["labels"]["severity"], "warning");
    assert!(
        a["annotations"]["standard"]
            .as_str()
            .unwrap()
            .contains("HJ 633")
    );
    let r: serde_json::Value =
        serde_json::from_slice(&body(Format::Alertmanager, &n[1], "duty", "http://x/")).unwrap();
    assert_eq!(r["status"], "resolved");
    assert_eq!(r["alerts"][0]["endsAt"], "2026-01-05T05:00:00.000Z");
    let l: serde_json::Value =
        serde_json::from_slice(&body(Format::Lantian, &n[0], "duty", "http://x/")).unwrap();
    assert_eq!(l["event"], "firing");
    assert_eq!(l["alert"]["threshold"], 200.0);
    assert_eq!(
        l["alert"]["description"],
        "aqi.hour = 245 AQI (threshold > 200 AQI)"
    );
    assert_eq!(
        l["alert"]["citation"]["report"].as_str().unwrap().get(..3),
        Some("§5")
    );
}

#[test]
fn receivers_route_by_rule_severity_and_labels() {
    use super::outbox::Receiver;
    let mut e = engine();
    let mut n = Vec::new();
    for (h, aqi) in [(10, 230.0), (11, 245.0)] {
        n.extend(hour_aqi(&mut e, "dongsi", h, aqi));
    }
    let a = &n[0].alert; // warning, air.aqi.hour.heavy, district dongcheng
    let r = |rules: &[&str], sev, m: &[(&str, &str)]| Receiver {
        name: "r".into(),
        url: "http://x/".parse().unwrap(),
        format: Default::default(),
        key: None,
        timeout: std::time::Duration::from_secs(1),
        min_severity: sev,
        rules: rules.iter().map(|s| s.to_string()).collect(),
        matchers: m
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        retry_initial: std::time::Duration::from_secs(1),
        retry_max: std::time::Duration::from_secs(1),
    };
    use crate::evaluate::targets::Severity::*;
    assert!(r(&[], Info, &[]).routes(a));
    assert!(r(&["air.*"], Warning, &[("district", "dongcheng")]).routes(a));
    assert!(r(&["air.aqi.hour.heavy"], Info, &[]).routes(a));
    assert!(!r(&["water.*"], Info, &[]).routes(a));
    assert!(
        !r(&["air.aqi.hour"], Info, &[]).routes(a),
        "ids match whole"
    );
    assert!(!r(&[], Critical, &[]).routes(a));
    assert!(!r(&[], Info, &[("district", "chaoyang")]).routes(a));
}

/// A notice moved to `dead/` must never overwrite an earlier dead letter:
/// sequence numbers go on from the highest ever used, dead ones included,
/// even when the queue was empty at start.
#[test]
fn dead_letters_never_overwrite_each_other() {
    use super::outbox::{Outbox, Receiver};
    use std::sync::Arc;

    let mut e = engine();
    let s = site("dongsi");
    for h in 0..3 {
        e.observe(&[obs(
            "air",
            &s,
            "aqi.hour",
            DAY0 + h * H,
            DAY0 + (h + 1) * H,
            245.0,
        )]);
    }
    let notice = e
        .take_notices()
        .into_iter()
        .next()
        .expect("a firing notice");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver {
        name: "a".into(),
        url: "http://127.0.0.1:9/hook".parse().unwrap(),
        format: crate::config::WebhookFormat::Lantian,
        key: None,
        timeout: std::time::Duration::from_secs(1),
        min_severity: crate::evaluate::targets::Severity::Info,
        rules: Vec::new(),
        matchers: BTreeMap::new(),
        retry_initial: std::time::Duration::from_millis(10),
        retry_max: std::time::Duration::from_millis(10),
    };
    let queue = dir.path().join("outbox/a");
    let name = |seq: u64| format!("{seq:020}.json");
    let metrics = Arc::new(crate::metrics::Metrics::default());
    for round in 1..=2u64 {
        let outbox = Outbox::open(dir.path(), vec![receiver.clone()], 10, metrics.clone()).unwrap();
        assert_eq!(outbox.enqueue(&notice).unwrap(), 1);
        drop(outbox);
        // Refused for good, as delivery does it: into dead/.
        let file = queue.join(name(round));
        assert!(
            file.exists(),
            "round {round}: {:?}",
            std::fs::read_dir(&queue).unwrap().collect::<Vec<_>>()
        );
        std::fs::rename(&file, queue.join("dead").join(name(round))).unwrap();
    }
    let dead = std::fs::read_dir(queue.join("dead")).unwrap().count();
    assert_eq!(dead, 2, "both dead letters kept");
}

/// GB 18918's NH3-N limit depends on the water temperature: 5 mg/L above
/// 12 °C, 8 mg/L at or below. A plant that publishes `temperature` is
/// judged by the limit of the day's water; one that does not, by 5.
#[test]
fn the_ammonia_limit_follows_the_water_temperature() {
    let mut e = engine();
    let p = plant("gaobeidian");
    let day = |d: i64, nh3n: f64, temp: Option<f64>| {
        let s = DAY0 + d * 24 * H;
        let mut o = vec![obs("sewage", &p, "nh3n.day", s, s + 24 * H, nh3n)];
        if let Some(t) = temp {
            o.push(obs("sewage", &p, "temperature.day", s, s + 24 * H, t));
        }
        o
    };
    // Warm water, 6 mg/L: above 5.
    e.observe(&day(0, 6.0, Some(18.0)));
    let n = e.take_notices();
    assert_eq!(of_rule(&n, "water.effluent.nh3n").len(), 1, "{n:#?}");
    assert!(of_rule(&n, "water.effluent.nh3n.cold").is_empty());
    // Cold water, 6 mg/L: within 8; the warm-water alert resolves.
    e.observe(&day(1, 6.0, Some(10.0)));
    let n = e.take_notices();
    let warm = of_rule(&n, "water.effluent.nh3n");
    assert_eq!(warm.len(), 1, "{n:#?}");
    assert_eq!(warm[0].event, Event::Resolved);
    assert!(of_rule(&n, "water.effluent.nh3n.cold").is_empty());
    // Cold water, 9 mg/L: above 8.
    e.observe(&day(2, 9.0, Some(12.0)));
    let n = e.take_notices();
    assert_eq!(of_rule(&n, "water.effluent.nh3n.cold").len(), 1, "{n:#?}");
    assert!(of_rule(&n, "water.effluent.nh3n").is_empty());
    // No temperature published: the 5 mg/L limit.
    let other = plant("qinghe");
    let s = DAY0;
    e.observe(&[obs("sewage", &other, "nh3n.day", s, s + 24 * H, 6.0)]);
    let n = e.take_notices();
    assert_eq!(of_rule(&n, "water.effluent.nh3n").len(), 1, "{n:#?}");
    assert!(of_rule(&n, "water.effluent.nh3n.cold").is_empty());
}

/// A sensor name published once (a typo, a publisher inventing sensors)
/// never raises a deadman alert, and is forgotten after a week of silence;
/// a sensor that reported a few times is watched.
#[test]
fn deadman_watches_known_sensors_and_forgets_invented_ones() {
    let mut e = engine();
    let t0 = DAY0;
    let mut pts: Vec<Point> = (0..1000)
        .map(|i| point(&format!("fake-{i}"), t0, 1.0))
        .collect();
    pts.extend((0..3).map(|m| point("real", t0 + m * MIN, 30.0 + m as f64)));
    e.points(&pts);
    e.tick(t0 + 60 * MIN);
    let n = e.take_notices();
    let dead: Vec<_> = of_rule(&n, "sensor.deadman");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].alert.labels["sensor"], "real");
    // A week later the invented ones are gone from the state; the real
    // one, with its alert open, is kept.
    e.tick(t0 + 8 * 24 * H);
    let saved: serde_json::Value = serde_json::from_slice(&e.save()).unwrap();
    let sensors = saved["sensors"].as_object().unwrap();
    assert_eq!(sensors.len(), 1, "{:?}", sensors.keys().collect::<Vec<_>>());
}

/// An alert state that cannot be used is kept aside, not overwritten by
/// the next save: the alerts it held as firing are still on record.
#[test]
fn an_unusable_alert_state_is_kept_aside() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, b"{ not the state").unwrap();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let outbox =
        Arc::new(super::outbox::Outbox::open(dir.path(), Vec::new(), 10, metrics.clone()).unwrap());
    let _a = super::stage::Alerting::new(engine(), outbox, path.clone(), metrics);
    assert!(!path.exists());
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.unusable-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&kept[0])).unwrap(),
        b"{ not the state"
    );
}

/// An alert state that turns out unusable does not strand what was
/// firing: the previous save is restored, and the alert it held resolves
/// (receivers get "resolved") when the condition clears.
#[test]
fn a_corrupt_alert_state_falls_back_to_the_previous_save() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let outbox =
        Arc::new(super::outbox::Outbox::open(dir.path(), Vec::new(), 10, metrics.clone()).unwrap());
    let mut a =
        super::stage::Alerting::new(engine(), outbox.clone(), path.clone(), metrics.clone());
    let mut rows = crate::row::Rows::default();
    // Two saves: heavy pollution fires at 11:00; 12:00 is still heavy.
    for h in [10, 11, 12] {
        let t = DAY0 + h * H;
        let o = obs("air", &site("dongsi"), "aqi.hour", t, t + H, 240.0);
        a.step(&[o], None, &mut rows, true);
    }
    assert_eq!(a.engine.counts().firing, 1);
    assert!(dir.path().join("state.json.prev").exists());
    drop(a);
    // The disk corrupts the newest save.
    std::fs::write(&path, b"{ torn").unwrap();
    let mut b = super::stage::Alerting::new(engine(), outbox, path.clone(), metrics);
    assert_eq!(
        b.engine.counts().firing,
        1,
        "the firing alert is known again"
    );
    let t = DAY0 + 13 * H;
    b.step(
        &[obs("air", &site("dongsi"), "aqi.hour", t, t + H, 90.0)],
        None,
        &mut rows,
        true,
    );
    assert_eq!(b.engine.counts().firing, 0);
    let resolved = rows
        .as_slice()
        .iter()
        .filter(|r| {
            matches!(r, crate::row::Row::Derived(d) if d.measurement == "alerts"
            && format!("{d:?}").contains("resolved"))
        })
        .count();
    assert_eq!(resolved, 1, "{rows:?}");
}

/// The observed alert level is the city's: one station's bad days alone
/// raise no level (a worst-station level would overstate).
#[test]
fn a_single_station_does_not_raise_the_city_alert_level() {
    let mut e = engine();
    for d in 0..4 {
        let s = DAY0 + d * 24 * H;
        e.observe(&[obs(
            "air",
            &site("guanyuan"),
            "aqi.day",
            s,
            s + 24 * H,
            320.0,
        )]);
    }
    let n = e.take_notices();
    assert!(of_rule(&n, "air.alert-level.2016").is_empty(), "{n:#?}");
}

/// GB 18918's TP limit depends on the plant's build year: 1 mg/L for a
/// plant built before 2006, 0.5 otherwise. The year comes from a tag
/// `built` or from `[alerts.site_labels]`; a plant with neither is judged
/// by the stricter 0.5.
#[test]
fn the_phosphorus_limit_follows_the_plant_build_year() {
    let mut targets = targets(&[]);
    let site_labels = [(
        "gaobeidian".to_owned(),
        [("built".to_owned(), "1993".to_owned())].into(),
    )]
    .into();
    crate::evaluate::targets::resolve_site_labels(&mut targets, &site_labels);
    let mut e = Engine::new(
        Rule::from_targets(&targets, std::time::Duration::from_secs(4 * 3600)),
        cal(),
    );
    let tp = |labels: &[(String, String)], v: f64| {
        obs("sewage", labels, "tp.day", DAY0, DAY0 + 24 * H, v)
    };
    let mut new_plant = plant("yongfeng");
    new_plant.push(("built".into(), "2012".into()));
    // 0.8 mg/L: within 1 for the 1993 plant (configured), above 0.5 for
    // the 2012 plant (tagged) and for one whose year nobody gave.
    e.observe(&[
        tp(&plant("gaobeidian"), 0.8),
        tp(&new_plant, 0.8),
        tp(&plant("qinghe"), 0.8),
    ]);
    let n = e.take_notices();
    let mut strict: Vec<&str> = of_rule(&n, "water.effluent.tp")
        .iter()
        .map(|a| a.alert.labels["site"].as_str())
        .collect();
    strict.sort();
    assert_eq!(strict, ["qinghe", "yongfeng"], "{n:#?}");
    assert!(of_rule(&n, "water.effluent.tp.pre2006").is_empty());
    // 1.2 mg/L at the 1993 plant: above 1.
    e.observe(&[tp(&plant("gaobeidian"), 1.2)]);
    let n = e.take_notices();
    assert_eq!(of_rule(&n, "water.effluent.tp.pre2006").len(), 1, "{n:#?}");
    assert!(of_rule(&n, "water.effluent.tp").is_empty());
}
