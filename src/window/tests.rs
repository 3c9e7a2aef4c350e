use super::*;
use crate::config::{AqiConfig, WindowsConfig};
use crate::evaluate::aqi::Standard;
use crate::row::{Row, Rows};
use crate::sink::influx::Lines;

const MIN: i64 = 60_000;
/// 2026-11-26 00:00 in Beijing.
const DAY0: i64 = 1_795_622_400_000;

fn engine() -> Engine {
    let w = WindowsConfig {
        allowed_lateness: crate::config::HumanDuration::from_secs(0),
        correction_horizon: crate::config::HumanDuration::from_secs(3 * 3600),
        ..WindowsConfig::default()
    };
    Engine::new(Plan::new(&w, &AqiConfig::default()).unwrap())
}

fn point(sensor: &str, t: i64, fields: &[(&str, f64)]) -> Point {
    Point {
        kind: "air".into(),
        coverage: Default::default(),
        tags: vec![
            ("district".into(), "dongcheng".into()),
            ("sensor".into(), sensor.into()),
            ("site".into(), "dongsi".into()),
        ],
        time_ms: t,
        fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

/// The rows as the InfluxDB sink encodes them.
fn text(rows: &Rows) -> String {
    let mut lines = Lines::default();
    for row in rows.as_slice() {
        let Row::Derived(d) = row else {
            panic!("the window stage produced {row:?}")
        };
        lines.push(row, d.time_ms * 1_000_000);
    }
    String::from_utf8(lines.buf).unwrap()
}

#[test]
fn plan_checks_every_size() {
    let bad = WindowsConfig {
        sizes: vec!["1m".into(), "7m".into(), "soon".into()],
        timezone: "Mars/Olympus".into(),
        ..WindowsConfig::default()
    };
    let errs = Plan::new(&bad, &AqiConfig::default()).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        keys,
        ["windows.sizes[2]", "windows.timezone", "windows.sizes[1]"]
    );
    assert!(
        errs[2]
            .1
            .contains("7m must be a multiple of the first size (1m) that divides a day")
    );
    let plan = Plan::new(&WindowsConfig::default(), &AqiConfig::default()).unwrap();
    assert_eq!(
        plan.labels,
        [Some("1m".into()), Some("1h".into()), Some("1d".into())]
    );
    // 1 h is kept for the AQI even when not written.
    let w = WindowsConfig {
        sizes: vec!["1m".into(), "15m".into()],
        ..WindowsConfig::default()
    };
    let plan = Plan::new(&w, &AqiConfig::default()).unwrap();
    assert_eq!(plan.spec.mids, [15 * MIN, HOUR_MS]);
    assert_eq!(
        plan.labels,
        [Some("1m".into()), Some("15m".into()), None, None]
    );
}

#[test]
fn a_day_of_readings_gives_windows_and_hourly_and_daily_aqi() {
    let mut e = engine();
    let mut points = Vec::new();
    // The reading at 23:59 covers the day through midnight: it closes.
    for m in 0..24 * 60 {
        points.push(point("a", DAY0 + m * MIN, &[("pm25", 80.0), ("o3", 120.0)]));
    }
    e.add(&points, DAY0);
    let mut lines = Rows::default();
    let stats = e.flush(DAY0, &mut lines).unwrap();
    let t = text(&lines);
    assert_eq!(stats.readings, 2 * 24 * 60);
    // 1440 minutes, 24 hours, 1 day, per sensor and per site.
    assert_eq!(stats.windows, 2 * (1440 + 24 + 1));
    assert_eq!(t.matches("air_1m,").count(), 2 * 1440);
    let site_hour = t
        .lines()
        .find(|l| l.starts_with("air_1h,district=dongcheng,scope=site,site=dongsi "))
        .unwrap();
    assert!(site_hour.contains(
        " pm25_mean=80,pm25_min=80,pm25_max=80,pm25_count=60i,pm25_received=60i,pm25_expected=60i,pm25_valid=true,"
    ), "{site_hour}");
    assert!(site_hour.ends_with(&format!(" {}", DAY0 * 1_000_000)));
    assert_eq!(
        t.matches("air_1h,district=dongcheng,scope=sensor,sensor=a,site=dongsi ")
            .count(),
        24
    );
    // Hourly AQI: pm25 80 → 119 (HJ 633-2026); o3 1 h 120 → 38; the
    // 8 h O3 mean is no part of it (the real-time AQI has none).
    let hourly: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("period=hour") && l.contains("site="))
        .collect();
    assert_eq!(hourly.len(), 24);
    assert!(hourly[0].starts_with(
        "aqi,district=dongcheng,period=hour,site=dongsi,standard=hj633-2026 aqi=119i,level=3i,category=\"lightly_polluted\",color=\"#FF7E00\",primary=\"pm25_24h\",iaqi_pm25_24h=119i,iaqi_o3_1h=38i"
    ), "{}", hourly[0]);
    assert!(hourly[0].contains("invalid=\"\""), "{}", hourly[0]);
    assert!(
        hourly[0].contains("missing=\"pm10_24h,so2_1h,no2_1h,co_1h\""),
        "{}",
        hourly[0]
    );
    assert!(hourly.iter().all(|h| !h.contains("o3_8h")), "{}", hourly[5]);
    // Daily (2026): the day's highest 8 h O3 mean 120 → 50 + 50·20/60 =
    // 66.7 → 67, and not its highest hour.
    let daily: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("period=day") && l.contains("site="))
        .collect();
    assert_eq!(daily.len(), 1);
    assert!(daily[0].contains("aqi=119i"), "{}", daily[0]);
    assert!(daily[0].contains("iaqi_o3_8h=67i"), "{}", daily[0]);
    assert!(!daily[0].contains("o3_1h"), "{}", daily[0]);
    assert!(daily[0].ends_with(&format!(" {}", DAY0 * 1_000_000)));
}

/// A summer evening: O3 has been high all afternoon (8 h mean 230) and the
/// last hour is 150. The official real-time AQI is the 1-hour O3's 47;
/// with the 8 h mean in it, it would be 165 (moderately polluted).
#[test]
fn the_hourly_aqi_leaves_out_the_8_hour_ozone_mean() {
    let mut e = engine();
    let afternoon = (230.0 * 8.0 - 150.0) / 7.0;
    let points: Vec<Point> = (0..8 * 60 + 1)
        .map(|m| {
            let o3 = if m < 7 * 60 { afternoon } else { 150.0 };
            point("a", DAY0 + m * MIN, &[("o3", o3)])
        })
        .collect();
    e.add(&points, DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let t = text(&rows);
    let hour = |h: i64| {
        let at = format!(" {}", (DAY0 + h * HOUR_MS) * 1_000_000);
        t.lines()
            .find(|l| l.contains("period=hour") && l.contains("site=") && l.ends_with(&at))
            .unwrap_or_else(|| panic!("no hourly AQI for hour {h}:\n{t}"))
            .to_owned()
    };
    let evening = hour(7);
    assert!(evening.contains(" aqi=47i,"), "{evening}");
    assert!(evening.contains("iaqi_o3_1h=47i"), "{evening}");
    assert!(!evening.contains("o3_8h"), "{evening}");
}

#[test]
fn a_backfill_whose_watermark_jumps_days_ahead_still_gives_the_daily_aqi() {
    // Two days of readings in one flush: the watermark ends a day past
    // the first day's end, far beyond the (3 h) correction horizon. The
    // first day's windows must be read for its AQI before they are
    // dropped.
    let mut e = engine();
    let points: Vec<Point> = (0..2 * 24 * 60)
        .map(|m| point("a", DAY0 + m * MIN, &[("pm25", 80.0), ("o3", 120.0)]))
        .collect();
    e.add(&points, DAY0);
    let mut lines = Rows::default();
    e.flush(DAY0, &mut lines).unwrap();
    let t = text(&lines);
    let daily: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("period=day") && l.contains("site="))
        .collect();
    assert_eq!(daily.len(), 2, "{daily:?}");
    assert!(daily[0].contains("aqi=119i"), "{}", daily[0]);
    assert!(daily[0].ends_with(&format!(" {}", DAY0 * 1_000_000)));
    assert_eq!(
        t.lines()
            .filter(|l| l.contains("period=hour") && l.contains("site="))
            .count(),
        2 * 24
    );
    // And then it is dropped (memory stays bounded).
    assert!(e.state().windows_held() < 2 * 24 * 60);
}

#[test]
fn a_late_reading_rewrites_the_windows_and_the_aqi() {
    let mut e = engine();
    let points: Vec<Point> = (0..120)
        .map(|m| point("a", DAY0 + m * MIN, &[("pm25", 50.0)]))
        .collect();
    e.add(&points, DAY0);
    let mut lines = Rows::default();
    e.flush(DAY0, &mut lines).unwrap();
    // Late: a high reading for 00:10, within the horizon.
    e.add(
        &[point("a", DAY0 + 10 * MIN + 5_000, &[("pm25", 500.0)])],
        DAY0,
    );
    let mut lines = Rows::default();
    let stats = e.flush(DAY0, &mut lines).unwrap();
    assert_eq!(stats.corrections, 1);
    let t = text(&lines);
    // The minute and the hour, per sensor and per site; the hour's AQI.
    assert_eq!(stats.windows, 4, "{t}");
    let mean = (59.0 * 50.0 + 50.0 + 500.0) / 61.0;
    assert!(t.contains(&format!("pm25_mean={mean}")), "{t}");
    // The hour's AQI, and the next hour's (its 8 h means take this
    // hour in), unchanged.
    let aqi: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("aqi,") && l.contains("site="))
        .collect();
    assert_eq!(aqi.len(), 2, "{t}");
    assert!(aqi[0].ends_with(&format!(" {}", DAY0 * 1_000_000)));
    assert!(aqi[0].contains(" aqi=94i,"), "{}", aqi[0]);
    assert!(aqi[1].contains(" aqi=80i,"), "{}", aqi[1]);
}

#[test]
fn epa_hourly_aqi_converts_gases_back_to_ppm_and_ppb() {
    let w = WindowsConfig {
        allowed_lateness: crate::config::HumanDuration::from_secs(0),
        ..WindowsConfig::default()
    };
    let a = AqiConfig {
        standard: Standard::Epa2024,
        ..AqiConfig::default()
    };
    let mut e = Engine::new(Plan::new(&w, &a).unwrap());
    // CO 5 mg/m³ = 4.367 ppm → 4.3 → 50·43/44 = 48.9 → 49.
    // NO2 150 µg/m³ = 79.77 ppb → 79 → 51 + 49·25/46 = 77.6 → 78.
    let points: Vec<Point> = (0..61)
        .map(|m| {
            point(
                "a",
                DAY0 + m * MIN,
                &[("co", 5.0), ("no2", 150.0), ("pm25", 12.0)],
            )
        })
        .collect();
    e.add(&points, DAY0);
    let mut lines = Rows::default();
    e.flush(DAY0, &mut lines).unwrap();
    let t = text(&lines);
    let hour = t.lines().find(|l| l.starts_with("aqi,")).unwrap();
    assert!(hour.contains("standard=epa-2024"), "{hour}");
    assert!(hour.contains("iaqi_pm25_24h=56i"), "{hour}");
    assert!(hour.contains("iaqi_no2_1h=78i"), "{hour}");
    assert!(hour.contains("aqi=78i"), "{hour}");
    assert!(hour.contains("category=\"moderate\""), "{hour}");
    // co_8h needs 6 valid hours: listed invalid after one.
    assert!(hour.contains("invalid=\"co_8h\""), "{hour}");
    assert!(
        hour.contains(&format!("no2_1h={}", 150.0 * 24.465 / 46.0055)),
        "{hour}"
    );
}

#[test]
fn a_restored_snapshot_carries_on_exactly_like_the_original() {
    let mut a = engine();
    // Two sensors at one site, 90 minutes; snapshot after 70.
    let pts = |from: i64, to: i64| -> Vec<Point> {
        (from..to)
            .flat_map(|m| {
                [("a", 10.0 + m as f64), ("b", 30.0 - (m % 7) as f64)]
                    .map(|(s, v)| point(s, DAY0 + m * MIN, &[("pm25", v), ("o3", 2.0 * v)]))
            })
            .collect()
    };
    a.add(&pts(0, 70), DAY0);
    let mut first = Rows::default();
    a.flush(DAY0, &mut first).unwrap();
    let pos = crate::envelope::Pos {
        seq: 3,
        offset: 4096,
    };
    let bytes = a.snapshot(pos);
    let (mut b, got) = Engine::restore(a.plan().clone(), &bytes).unwrap();
    assert_eq!(got, pos);
    assert_eq!(b.state().windows_held(), a.state().windows_held());
    // Same input from here on: same output, byte for byte.
    for e in [&mut a, &mut b] {
        e.add(&pts(70, 130), DAY0);
    }
    let (mut la, mut lb) = (Rows::default(), Rows::default());
    a.flush(DAY0, &mut la).unwrap();
    b.flush(DAY0, &mut lb).unwrap();
    assert!(
        text(&la).contains("air_1h,"),
        "the first hour closed after the restore"
    );
    assert_eq!(text(&la), text(&lb));
    // A damaged or foreign snapshot is refused, not half-loaded.
    let mut bad = bytes.clone();
    bad[100] ^= 1;
    assert!(
        Engine::restore(a.plan().clone(), &bad)
            .err()
            .unwrap()
            .contains("checksum")
    );
    let w = WindowsConfig {
        sizes: vec!["1m".into(), "5m".into(), "1h".into()],
        ..WindowsConfig::default()
    };
    let other = Plan::new(&w, &AqiConfig::default()).unwrap();
    assert!(
        Engine::restore(other, &bytes)
            .err()
            .unwrap()
            .contains("changed")
    );
}

#[test]
fn when_every_sensor_goes_quiet_the_watermark_follows_the_wall_clock() {
    let mut e = engine(); // idle_timeout 5 min, no lateness
    let points: Vec<Point> = (0..30)
        .map(|m| point("a", DAY0 + m * MIN, &[("pm25", 40.0)]))
        .collect();
    let arrival = DAY0 + 30 * MIN;
    e.add(&points, arrival);
    let hour_lines = |e: &mut Engine, now: i64| {
        let mut lines = Rows::default();
        e.flush(now, &mut lines).unwrap();
        text(&lines).matches("air_1h,").count()
    };
    // Quiet for less than the idle timeout: the hour stays open.
    assert_eq!(e.watermark(arrival + 4 * MIN), Some(DAY0 + 29 * MIN));
    assert_eq!(hour_lines(&mut e, arrival + 4 * MIN), 0);
    // Quiet for 5 + 31 minutes: the watermark has moved 31 minutes past the
    // last reading, to 01:00, and the (incomplete) hour is written.
    assert_eq!(e.watermark(arrival + 36 * MIN), Some(DAY0 + HOUR_MS));
    assert_eq!(hour_lines(&mut e, arrival + 36 * MIN), 2, "sensor and site");
}

/// A window stage with an archive-only sink and a snapshot at `path`, fed
/// an hour of minute readings and one past it (the hour closes), then
/// closed (the last flush saves the snapshot). Returns the stage's task
/// and what it hands downstream.
async fn run_an_hour(
    dir: &std::path::Path,
    path: &std::path::Path,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
) -> (
    tokio::task::JoinHandle<Result<(), String>>,
    tokio::sync::mpsc::Receiver<stage::Output>,
) {
    use tokio::sync::mpsc;
    let archive =
        crate::sink::archive::Archive::open(&dir.join("archive"), chrono_tz::Asia::Shanghai)
            .unwrap();
    let sinks = crate::sink::Sinks::new(None, Some(archive), metrics.clone());
    let limits = crate::spool::Limits {
        max_bytes: 1 << 20,
        segment_bytes: 64 << 10,
        batch_bytes: 64 << 10,
        max_payload: 65536,
    };
    let (_w, _r, cursor) =
        crate::spool::open(&dir.join("spool"), limits, metrics.clone(), None).unwrap();
    let persist = stage::Persist {
        to: stage::SaveTo::File {
            path: path.to_owned(),
            cursor,
        },
        every: std::time::Duration::from_secs(3600),
    };
    let (down_tx, down_rx) = mpsc::channel(2);
    let downstream = stage::Downstream {
        tx: down_tx,
        points: false,
    };
    let stage = stage::WindowStage::new(
        engine(),
        Some(downstream),
        sinks,
        metrics.clone(),
        Some(persist),
    );
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(stage.run(rx));
    let points: Vec<Point> = (0..=61)
        .map(|m| point("a", DAY0 + m * MIN, &[("pm25", 30.0)]))
        .collect();
    let pos = crate::envelope::Pos {
        seq: 1,
        offset: 100,
    };
    tx.send((points, Some(pos))).await.unwrap();
    (task, down_rx)
}

/// A snapshot that cannot be saved is not a warning in passing: the spool
/// keeps every record behind it and grows, so the process says it is not
/// ready (and logs an error) until a save succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_saved_makes_the_process_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no such dir").join("windows.snapshot");
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let (task, mut down_rx) = run_an_hour(dir.path(), &path, &metrics).await;
    while let Some(out) = down_rx.recv().await {
        if let stage::Output::Flushed(f) = out
            && let Some(c) = f.checkpoint
        {
            let _ = c.send(None);
        }
    }
    task.await.unwrap().unwrap();
    assert!(!path.exists());
    let why = crate::admin::not_ready(&metrics);
    assert!(why.iter().any(|w| w.starts_with("windows:")), "{why:?}");
}

/// A snapshot is a checkpoint of the stage and of everything downstream:
/// the windows it covers are written first, then the alert stage is asked
/// to save its state, and only once it answers is the snapshot saved (a
/// crash in between must not leave alert state older than the snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_follows_the_written_windows_and_waits_for_the_alert_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("windows.snapshot");
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let (task, mut down_rx) = run_an_hour(dir.path(), &path, &metrics).await;
    let checkpoint = loop {
        if let stage::Output::Flushed(f) = down_rx.recv().await.unwrap()
            && let Some(c) = f.checkpoint
        {
            break c;
        }
    };
    assert!(
        dir.path().join("archive").join("air_1m").exists(),
        "the windows are written before the checkpoint"
    );
    assert!(
        !path.exists(),
        "no snapshot before the alert state is saved"
    );
    checkpoint.send(None).unwrap();
    task.await.unwrap().unwrap();
    assert!(path.exists());
}

/// The city-wide AQI is the AQI of the city sites' mean concentrations,
/// not the worst station's: dongsi at 80 µg/m³ PM2.5 (119) and tiantan at
/// 20 (29) make a city mean of 50, AQI 80.
#[test]
fn the_city_wide_aqi_is_computed_on_the_mean_of_the_stations() {
    let mut e = engine();
    let at_site = |site: &str, t: i64, pm25: f64| site_point(site, t, &[("pm25", pm25)]);
    let points: Vec<Point> = (0..=61)
        .flat_map(|m| {
            [
                at_site("dongsi", DAY0 + m * MIN, 80.0),
                at_site("tiantan", DAY0 + m * MIN, 20.0),
            ]
        })
        .collect();
    e.add(&points, DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let t = text(&rows);
    let city: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("aqi,period=hour,scope=city"))
        .collect();
    assert_eq!(city.len(), 1, "{t}");
    // 2026: PM2.5 50 on 35–60 → 50 + 50·15/25 = 80.
    assert!(city[0].contains(" aqi=80i,"), "{}", city[0]);
    assert!(city[0].contains("pm25_24h=50,"), "{}", city[0]);
    assert!(city[0].contains("sites=2i"), "{}", city[0]);
    let dongsi = t
        .lines()
        .find(|l| l.starts_with("aqi,") && l.contains("site=dongsi"))
        .unwrap();
    assert!(dongsi.contains(" aqi=119i,"), "{dongsi}");
}

/// A reading of station `site`'s one sensor.
fn site_point(site: &str, t: i64, fields: &[(&str, f64)]) -> Point {
    Point {
        kind: "air".into(),
        coverage: Default::default(),
        tags: vec![
            ("district".into(), "dongcheng".into()),
            ("sensor".into(), format!("{site}-1")),
            ("site".into(), site.into()),
        ],
        time_ms: t,
        fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

/// Six pollutants that vary by station and minute.
fn station_point(site: &str, t: i64) -> Point {
    let k = (t / MIN) as f64;
    let s = site.len() as f64;
    let wave = |a: f64, b: f64, p: f64| a + b * ((k + 7.0 * s) / p).sin().abs();
    site_point(
        site,
        t,
        &[
            ("pm25", wave(20.0, 90.0, 97.0)),
            ("pm10", wave(40.0, 120.0, 131.0)),
            ("o3", wave(10.0, 220.0, 173.0)),
            ("no2", wave(15.0, 60.0, 59.0)),
            ("so2", wave(2.0, 9.0, 41.0)),
            ("co", wave(0.3, 1.2, 71.0)),
        ],
    )
}

/// Every line written, flush by flush.
type Flushes = Vec<Vec<String>>;

/// 25 hours of readings a minute from three stations, flushed every 5
/// minutes; readings of `late` between `from` and `to` are held back and
/// arrive together at `to` (a station whose uplink was down). Returns the
/// lines of each flush and the corrections counted.
fn run_with_outage(late: &str, from: i64, to: i64) -> (Flushes, u64) {
    let mut e = Engine::new(Plan::new(&WindowsConfig::default(), &AqiConfig::default()).unwrap());
    let sites = ["dongsi", "tiantan", "guanyuan"];
    let mut held = Vec::new();
    let mut flushes = Vec::new();
    let mut corrections = 0;
    let end = DAY0 + 25 * HOUR_MS;
    let mut flush = |e: &mut Engine, now: i64, flushes: &mut Flushes| {
        let mut rows = Rows::default();
        corrections += e.flush(now, &mut rows).unwrap().corrections;
        flushes.push(text(&rows).lines().map(str::to_owned).collect());
    };
    let mut t = DAY0;
    while t < end {
        if t == to {
            e.add(&std::mem::take(&mut held), t);
        }
        for site in sites {
            let p = station_point(site, t);
            if site == late && (from..to).contains(&t) {
                held.push(p);
            } else {
                e.add(&[p], t);
            }
        }
        t += MIN;
        if (t - DAY0) % (5 * MIN) == 0 {
            flush(&mut e, t, &mut flushes);
        }
    }
    // Everything closes once the wall clock has moved on.
    flush(&mut e, end + 3 * HOUR_MS, &mut flushes);
    (flushes, corrections)
}

/// The last value written of each point (InfluxDB keeps the last write of
/// a series and time).
fn last_writes(flushes: &Flushes) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for line in flushes.iter().flatten() {
        let (series, rest) = line.split_once(' ').unwrap();
        let (fields, time) = rest.rsplit_once(' ').unwrap();
        out.insert((series.to_owned(), time.to_owned()), fields.to_owned());
    }
    out
}

use std::collections::BTreeMap;

/// Issue 12 item 7: guanyuan's uplink is down from 02:30 to 05:30 and its
/// buffered readings arrive at 05:30, up to 3 hours late, while dongsi and
/// tiantan stream live. Its hourly means, the AQI and the city-wide AQI
/// end up as in an on-time run, and the other stations' windows are
/// written in the same flushes with the same values as on time.
#[test]
fn a_station_uploading_three_hours_late_gets_the_windows_and_aqi_of_an_on_time_run() {
    let (on_time, none) = run_with_outage("guanyuan", 0, 0);
    let (late, corrections) = run_with_outage("guanyuan", DAY0 + 150 * MIN, DAY0 + 330 * MIN);
    assert_eq!(none, 0);
    assert!(
        corrections > 0,
        "the backlog arrived after its windows closed"
    );
    let (a, b) = (last_writes(&on_time), last_writes(&late));
    let guanyuan_hours = a
        .keys()
        .filter(|(s, _)| {
            s.starts_with("aqi,") && s.contains("site=guanyuan") && s.contains("period=hour")
        })
        .count();
    assert_eq!(guanyuan_hours, 25, "one hourly AQI an hour");
    for (key, fields) in &a {
        assert_eq!(b.get(key), Some(fields), "{key:?}");
    }
    assert_eq!(a.len(), b.len());
    // The others' windows and AQI: the same lines in the same flushes.
    let others = |f: &Flushes| -> Flushes {
        f.iter()
            .map(|lines| {
                lines
                    .iter()
                    .filter(|l| !l.contains("guanyuan") && !l.contains("scope=city"))
                    .cloned()
                    .collect()
            })
            .collect()
    };
    assert_eq!(others(&on_time), others(&late));
}

/// The city-wide rolling 24 h AQI of an hour is the daily composition over
/// the 24 hours ending with it, across midnight: at 11:00 on day 1 it
/// covers 12:00 on day 0 to 12:00 on day 1. Dongsi's hours there average
/// 51.5 µg/m³ PM2.5, tiantan's 60: the city's 55.75 → 56 → 50 + 50·21/25
/// = 92 (HJ 633-2026).
#[test]
fn the_city_rolling_24_hour_aqi_crosses_midnight() {
    let w = WindowsConfig {
        allowed_lateness: crate::config::HumanDuration::from_secs(0),
        intervals: [(
            "air".to_owned(),
            crate::config::HumanDuration::from_secs(3600),
        )]
        .into(),
        ..WindowsConfig::default()
    };
    let mut e = Engine::new(Plan::new(&w, &AqiConfig::default()).unwrap());
    let at = |site: &str, t: i64, pm25: f64| site_point(site, t, &[("pm25", pm25)]);
    let noon = DAY0 + 12 * HOUR_MS;
    let points: Vec<Point> = (0..30)
        .flat_map(|h| {
            let t = noon + h * HOUR_MS;
            [at("dongsi", t, 40.0 + h as f64), at("tiantan", t, 60.0)]
        })
        .collect();
    e.add(&points, DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let t = text(&rows);
    let rolling: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("aqi,period=rolling_24h,scope=city"))
        .collect();
    // From the 20th hour on, the 24 hours have enough valid hours.
    assert_eq!(rolling.len(), 30 - 19, "{t}");
    let eleven = noon + 23 * HOUR_MS;
    let row = rolling
        .iter()
        .find(|l| l.ends_with(&format!(" {}", eleven * 1_000_000)))
        .unwrap();
    assert!(row.contains("pm25_24h=55.75,"), "{row}");
    assert!(row.contains(" aqi=92i,"), "{row}");
    assert!(row.contains("sites=2i"), "{row}");
}

/// The city-wide hour waits for every city station: while tiantan's
/// readings lag dongsi's, no city value is written from dongsi alone; once
/// tiantan's hour closes, one value of both is.
#[test]
fn the_city_hour_waits_for_every_city_station() {
    let mut e = engine();
    let minutes = |site: &str, to: i64, pm25: f64| -> Vec<Point> {
        (0..to)
            .map(|m| site_point(site, DAY0 + m * MIN, &[("pm25", pm25)]))
            .collect()
    };
    let city_hours = |rows: &Rows| -> Vec<String> {
        text(rows)
            .lines()
            .filter(|l| l.starts_with("aqi,period=hour,scope=city"))
            .map(str::to_owned)
            .collect()
    };
    e.add(&minutes("dongsi", 66, 80.0), DAY0);
    e.add(&minutes("tiantan", 59, 20.0), DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    assert!(text(&rows).contains("site=dongsi"), "dongsi's hour closed");
    assert_eq!(city_hours(&rows), Vec::<String>::new());
    e.add(
        &(59..66)
            .map(|m| site_point("tiantan", DAY0 + m * MIN, &[("pm25", 20.0)]))
            .collect::<Vec<_>>(),
        DAY0,
    );
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let city = city_hours(&rows);
    assert_eq!(city.len(), 1, "{city:?}");
    assert!(city[0].contains("sites=2i"), "{}", city[0]);
    assert!(city[0].contains(" aqi=80i,"), "{}", city[0]);
}

/// An hourly value (an HJ 212 hour, `Coverage::Interval`) is the whole
/// hour: the hour is complete and valid from one reading, and stays so
/// when it closes after a restore from a snapshot taken before any later
/// reading set the interval again. Values stored raw (a data flag other
/// than N) are not aggregated.
#[test]
fn an_hourly_value_is_a_whole_hour_across_a_restore() {
    // 30 minutes of lateness: the hour is still open at the snapshot.
    let w = WindowsConfig {
        allowed_lateness: crate::config::HumanDuration::from_secs(1800),
        correction_horizon: crate::config::HumanDuration::from_secs(3 * 3600),
        ..WindowsConfig::default()
    };
    let mut a = Engine::new(Plan::new(&w, &AqiConfig::default()).unwrap());
    let hourly = |t: i64, v: f64| Point {
        coverage: crate::reading::Coverage::Interval(3_600_000),
        ..point("hj212", t, &[("pm25", v)])
    };
    let raw = Point {
        coverage: crate::reading::Coverage::Raw,
        ..point("hj212", DAY0, &[("pm25", 900.0)])
    };
    a.add(&[hourly(DAY0, 40.0), raw], DAY0);
    let mut rows = Rows::default();
    a.flush(DAY0, &mut rows).unwrap();
    let bytes = a.snapshot(crate::envelope::Pos::default());
    let (mut b, _) = Engine::restore(a.plan().clone(), &bytes).unwrap();
    assert!(!text(&rows).contains("air_1h,"), "the hour closed early");
    // A reading of another sensor moves time past the hour.
    let later = point("other", DAY0 + 91 * MIN, &[("pm25", 1.0)]);
    b.add(std::slice::from_ref(&later), DAY0 + 91 * MIN);
    let mut rows = Rows::default();
    b.flush(DAY0 + 91 * MIN, &mut rows).unwrap();
    let out = text(&rows);
    let hour = out
        .lines()
        .find(|l| l.starts_with("air_1h,") && l.contains("sensor=hj212"))
        .unwrap_or_else(|| panic!("no hour for the hourly sensor:\n{out}"));
    assert!(
        hour.contains("pm25_mean=40,"),
        "the raw 900 was not aggregated: {hour}"
    );
    assert!(hour.contains("pm25_valid=true"), "{hour}");
}

/// A snapshot of the format before per-series intervals (LTWIN002) is
/// still read. (Built here from an engine with no series, where the two
/// formats differ only in their magic.)
#[test]
fn a_snapshot_of_the_previous_format_is_still_read() {
    let a = engine();
    let pos = crate::envelope::Pos { seq: 7, offset: 9 };
    let mut bytes = a.snapshot(pos);
    bytes.truncate(bytes.len() - 4);
    assert!(bytes.starts_with(b"LTWIN003"));
    bytes[..8].copy_from_slice(b"LTWIN002");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let (_, got) = Engine::restore(a.plan().clone(), &bytes).unwrap();
    assert_eq!(got, pos);
    // And one older still is refused with its reason.
    bytes.truncate(bytes.len() - 4);
    bytes[..8].copy_from_slice(b"LTWIN001");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let why = Engine::restore(a.plan().clone(), &bytes).err().unwrap();
    assert!(why.contains("earlier lantian version"), "{why}");
}

/// A dust monitor's reading at `site` in `district`.
fn dust_point(district: &str, site: &str, t: i64, pm10: f64) -> Point {
    Point {
        kind: "dust".into(),
        coverage: Default::default(),
        tags: vec![
            ("district".into(), district.into()),
            ("sensor".into(), format!("{site}-d1")),
            ("site".into(), site.into()),
        ],
        time_ms: t,
        fields: vec![("pm10".into(), pm10)],
    }
}

fn district_hours(rows: &Rows) -> Vec<String> {
    text(rows)
        .lines()
        .filter(|l| l.starts_with("dust_1h,district=") && l.contains("scope=district"))
        .map(str::to_owned)
        .collect()
}

/// A district's hour is the mean of its dust sites' hourly means, once
/// every one of them has passed the hour (here the third site is 6
/// minutes behind, then catches up); a site whose hour is not valid (too
/// few minutes) is left out and counted out; other districts are apart;
/// what waits survives a snapshot; the alert engine gets `pm10.hour`
/// labelled `scope=district`.
#[test]
fn a_districts_dust_hour_is_the_mean_of_its_sites_once_all_have_passed_it() {
    let mut e = engine();
    e.collect_observations();
    let minutes = |district: &str, site: &str, from: i64, to: i64, pm10: f64| -> Vec<Point> {
        (from..to)
            .map(|m| dust_point(district, site, DAY0 + m * MIN, pm10))
            .collect()
    };
    e.add(&minutes("chaoyang", "cy-1", 0, 66, 100.0), DAY0);
    e.add(&minutes("chaoyang", "cy-2", 0, 66, 200.0), DAY0);
    // Five minutes of the hour: not a valid hour (45 needed).
    e.add(&minutes("chaoyang", "cy-3", 55, 59, 900.0), DAY0);
    e.add(&minutes("haidian", "hd-1", 0, 66, 50.0), DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let hours = district_hours(&rows);
    assert_eq!(
        hours.len(),
        1,
        "only haidian's sites have all passed: {hours:?}"
    );
    assert!(
        hours[0].starts_with("dust_1h,district=haidian,scope=district "),
        "{}",
        hours[0]
    );
    assert!(hours[0].contains("pm10_mean=50,"), "{}", hours[0]);
    let obs = e.take_observations();
    let district_obs: Vec<&Observation> = obs
        .iter()
        .filter(|o| o.labels.contains(&("scope".into(), "district".into())))
        .collect();
    assert_eq!(district_obs.len(), 1, "{obs:?}");
    assert_eq!(district_obs[0].metric, "pm10.hour");
    assert_eq!(district_obs[0].kind, "dust");

    // Chaoyang waits for cy-3, across a restart from a snapshot.
    let snapshot = e.snapshot(crate::envelope::Pos { seq: 7, offset: 0 });
    let (mut e, _) = Engine::restore(e.plan().clone(), &snapshot).unwrap();
    e.add(&minutes("chaoyang", "cy-3", 59, 66, 900.0), DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    let hours = district_hours(&rows);
    assert_eq!(hours.len(), 1, "{hours:?}");
    let h = &hours[0];
    assert!(
        h.starts_with("dust_1h,district=chaoyang,scope=district "),
        "{h}"
    );
    // cy-3's hour is not valid: the mean of 100 and 200, from 2 sites.
    assert!(h.contains("pm10_mean=150,"), "{h}");
    assert!(h.contains("pm10_site_max=200,"), "{h}");
    assert!(h.contains("sites=2i"), "{h}");
    assert!(h.ends_with(&format!(" {}", DAY0 * 1_000_000)), "{h}");
}

/// A cluster partition holds some of a district's sites: it computes no
/// district figures (the city lane does, from the scope stream).
#[test]
fn without_districts_in_the_plan_there_are_no_district_rows() {
    let w = WindowsConfig {
        allowed_lateness: crate::config::HumanDuration::from_secs(0),
        ..WindowsConfig::default()
    };
    let mut plan = Plan::new(&w, &AqiConfig::default()).unwrap();
    plan.districts = false;
    let mut e = Engine::new(plan);
    let points: Vec<Point> = (0..66)
        .map(|m| dust_point("chaoyang", "cy-1", DAY0 + m * MIN, 100.0))
        .collect();
    e.add(&points, DAY0);
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    assert!(
        text(&rows).contains("dust_1h,district=chaoyang,scope=site"),
        "{}",
        text(&rows)
    );
    assert_eq!(district_hours(&rows), Vec::<String>::new());
}

/// The stage flushes at once when a reading moves its source past an
/// hour's end (the hour's alerts need not wait for the next tick): the
/// engine says so until the next flush; a new source, or readings within
/// the hour, do not.
#[test]
fn a_reading_that_moves_its_source_past_an_hour_asks_for_a_flush() {
    let mut e = engine();
    e.add(&[point("a", DAY0 + 10 * MIN, &[("pm25", 1.0)])], DAY0);
    assert!(!e.hour_passed(), "a new source");
    e.add(&[point("a", DAY0 + 58 * MIN, &[("pm25", 1.0)])], DAY0);
    assert!(!e.hour_passed(), "within the hour");
    e.add(&[point("a", DAY0 + 60 * MIN, &[("pm25", 1.0)])], DAY0);
    assert!(
        e.hour_passed(),
        "its reading covers 60–61: the watermark is past 60"
    );
    let mut rows = Rows::default();
    e.flush(DAY0, &mut rows).unwrap();
    assert!(!e.hour_passed());
    assert!(
        text(&rows).contains("air_1h"),
        "the hour closed: {}",
        text(&rows)
    );
}
