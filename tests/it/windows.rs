//! Windows and the AQI through the running daemon: a simulated day for
//! Beijing stations, checked against the same computation done here,
//! independently, from the raw points read back from InfluxDB; then late
//! readings that rewrite the affected windows and AQI.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::aqi_ref;
use crate::harness::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const POLLUTANTS: [&str; 6] = ["pm25", "pm10", "so2", "no2", "co", "o3"];
/// The keys of the hourly (real-time) AQI and the field of each.
const HOURLY: [(&str, &str); 6] = [
    ("pm25_24h", "pm25"),
    ("pm10_24h", "pm10"),
    ("so2_1h", "so2"),
    ("no2_1h", "no2"),
    ("co_1h", "co"),
    ("o3_1h", "o3"),
];

/// (district, site, sensor, fields it reports).
const SENSORS: [(&str, &str, &str, &[&str]); 5] = [
    ("dongcheng", "dongsi", "pm", &["pm25", "pm10"]),
    ("dongcheng", "dongsi", "gas", &["so2", "no2", "co", "o3"]),
    ("dongcheng", "tiantan", "aq1", &POLLUTANTS),
    ("xicheng", "guanyuan", "aq1", &POLLUTANTS),
    ("haidian", "wanliu", "aq1", &POLLUTANTS),
];

/// Local (Beijing) midnight starting yesterday, as epoch ms.
fn yesterday_beijing() -> i64 {
    let local = now_ms() + 8 * HOUR;
    local - local.rem_euclid(24 * HOUR) - 8 * HOUR - 24 * HOUR
}

/// A value with a daily cycle, an afternoon episode, and noise.
fn value(rng: &mut fastrand::Rng, field: &str, minute: i64, site: usize) -> f64 {
    let h = (minute as f64 / 60.0) % 24.0;
    let cycle = (std::f64::consts::PI * (h - 4.0) / 12.0).sin();
    let episode = if (13.0..19.0).contains(&h) { 1.8 } else { 1.0 };
    let base = match field {
        "pm25" => 70.0 + 45.0 * cycle,
        "pm10" => 110.0 + 60.0 * cycle,
        "so2" => 8.0 + 4.0 * cycle,
        "no2" => 45.0 - 20.0 * cycle,
        "co" => 0.9 + 0.4 * cycle,
        _ => 90.0 + 70.0 * cycle, // o3
    };
    let noise = 1.0 + (rng.f64() - 0.5) * 0.2;
    let site_factor = 1.0 + site as f64 * 0.15;
    let v = base.max(0.5) * episode * noise * site_factor;
    (v * 1000.0).round() / 1000.0
}

/// Whether sensor `s` reports at `minute` of the day (gaps on purpose).
fn reports(s: usize, minute: i64) -> bool {
    match SENSORS[s].1 {
        // 40 minutes in hour 5: that hour is incomplete.
        "guanyuan" => !(5 * 60 + 20..5 * 60 + 40).contains(&minute),
        // Silent 02:00–08:00: 18 hours, the day is incomplete.
        "wanliu" => !(2 * 60..8 * 60).contains(&minute),
        _ => true,
    }
}

fn config(rig_broker: u16, influx: &Influx) -> String {
    Lantian::config(
        rig_broker,
        &format!(
            "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"",
            influx.url()
        ),
        "[windows]\nflush_interval = \"200ms\"\ncorrection_horizon = \"3h\"\n",
    )
}

/// Rows of a query as maps column → value.
async fn rows(influx: &Influx, q: &str) -> Vec<BTreeMap<String, Value>> {
    let mut out = Vec::new();
    for s in influx.query(q).await {
        let cols: Vec<String> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        for v in s["values"].as_array().unwrap() {
            out.push(
                cols.iter()
                    .cloned()
                    .zip(v.as_array().unwrap().iter().cloned())
                    .collect(),
            );
        }
    }
    out
}

/// The independent computation: hourly means per site and pollutant from
/// raw rows, with validity (≥ 45 distinct minutes).
#[derive(Default, Debug)]
struct Hour {
    sum: f64,
    n: u64,
    minutes: BTreeSet<i64>,
}

type Hours = BTreeMap<(String, String, i64), Hour>; // (site, field, hour)

fn hours_of(raw: &[BTreeMap<String, Value>]) -> Hours {
    let mut hours = Hours::new();
    for r in raw {
        let t = r["time"].as_i64().unwrap();
        let site = r["site"].as_str().unwrap().to_owned();
        for f in POLLUTANTS {
            if let Some(v) = r.get(f).and_then(Value::as_f64) {
                let h = hours
                    .entry((site.clone(), f.to_owned(), t - t.rem_euclid(HOUR)))
                    .or_default();
                h.sum += v;
                h.n += 1;
                h.minutes.insert(t - t.rem_euclid(MIN));
            }
        }
    }
    hours
}

fn hour_mean(hours: &Hours, site: &str, f: &str, h: i64) -> Option<(f64, bool)> {
    let x = hours.get(&(site.to_owned(), f.to_owned(), h))?;
    Some((x.sum / x.n as f64, x.minutes.len() >= 45))
}

fn eight_hour(hours: &Hours, site: &str, f: &str, h: i64) -> Option<(f64, bool)> {
    let v: Vec<f64> = (0..8)
        .filter_map(|k| hour_mean(hours, site, f, h - k * HOUR))
        .filter(|x| x.1)
        .map(|x| x.0)
        .collect();
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len() >= 6))
}

/// `c` in units of 10^-decimals, rounded half up, after rounding to 9
/// places (a computed mean's float noise is not a concentration).
fn round_half_up(c: f64, decimals: u32) -> i64 {
    let nanos: i64 = format!("{c:.9}").replace('.', "").parse().unwrap();
    let p = 10i64.pow(9 - decimals);
    (nanos + p / 2) / p
}

/// The IAQI of `n` × 10^-d on breakpoints `bp`, rounded up, in integers.
fn iaqi_exact(bp: &[i64], n: i64, d: u32) -> Option<i64> {
    let idx = [0, 50, 100, 150, 200, 300, 400, 500];
    let p = 10i64.pow(d);
    let seg = (1..bp.len()).find(|&i| n <= bp[i] * p)?;
    let (lo, hi) = (bp[seg - 1] * p, bp[seg] * p);
    let num = (idx[seg] - idx[seg - 1]) * (n - lo);
    Some(idx[seg - 1] + (num + (hi - lo) - 1) / (hi - lo))
}

/// Reference AQI (HJ 633-2026) for valid inputs key → concentration,
/// each rounded first (to an integer; CO to 0.1 mg/m³).
fn reference_aqi(inputs: &BTreeMap<&str, f64>) -> (Option<i64>, BTreeMap<String, i64>) {
    let table = aqi_ref::hj_table(2026);
    let mut out = BTreeMap::new();
    for (key, bp) in &table {
        if let Some(c) = inputs.get(key) {
            let d = if key.starts_with("co_") { 1 } else { 0 };
            let n = round_half_up(*c, d);
            out.insert(key.to_string(), iaqi_exact(bp, n, d).unwrap_or(500));
        }
    }
    (out.values().copied().max(), out)
}

fn hourly_inputs(hours: &Hours, site: &str, h: i64) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    for (key, f) in HOURLY {
        if let Some((v, true)) = hour_mean(hours, site, f, h) {
            m.insert(key, v);
        }
    }
    // The real-time AQI has no 8 h O3.
    m
}

fn daily_inputs(hours: &Hours, site: &str, day: i64) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    let valid_hours = |f: &str| -> Vec<f64> {
        (0..24)
            .filter_map(|k| hour_mean(hours, site, f, day + k * HOUR))
            .filter(|x| x.1)
            .map(|x| x.0)
            .collect()
    };
    for (key, f) in [
        ("pm25_24h", "pm25"),
        ("pm10_24h", "pm10"),
        ("so2_24h", "so2"),
        ("no2_24h", "no2"),
        ("co_24h", "co"),
    ] {
        let v = valid_hours(f);
        if v.len() >= 20 {
            m.insert(key, v.iter().sum::<f64>() / v.len() as f64);
        }
    }
    // 2026: the day's highest 8 h O3 only (not its highest hour).
    let o3 = valid_hours("o3");
    if o3.len() >= 20 {
        let max8 = (7..24)
            .filter_map(|k| eight_hour(hours, site, "o3", day + k * HOUR))
            .filter(|x| x.1)
            .map(|x| x.0)
            .fold(f64::MIN, f64::max);
        m.insert("o3_8h", max8);
    }
    m
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Compares every site hour in `air_1h` and every `aqi` point with the
/// independent computation from the raw points.
async fn verify(influx: &Influx, day: i64) -> (usize, usize) {
    let range = format!("time >= {}ms AND time < {}ms", day, day + 24 * HOUR);
    let raw = rows(
        influx,
        &format!(
            "SELECT * FROM air WHERE time >= {}ms AND time < {}ms",
            day,
            day + 25 * HOUR
        ),
    )
    .await;
    let hours = hours_of(&raw);

    let site_hours = rows(
        influx,
        &format!("SELECT * FROM air_1h WHERE scope = 'site' AND {range}"),
    )
    .await;
    let mut checked = 0;
    for r in &site_hours {
        let (site, t) = (r["site"].as_str().unwrap(), r["time"].as_i64().unwrap());
        for f in POLLUTANTS {
            let Some(mean) = r.get(&format!("{f}_mean")).and_then(Value::as_f64) else {
                continue;
            };
            let x = &hours[&(site.to_owned(), f.to_owned(), t)];
            assert!(
                close(mean, x.sum / x.n as f64),
                "{site} {f} {t}: {mean} vs {}",
                x.sum / x.n as f64
            );
            assert_eq!(
                r[&format!("{f}_count")].as_u64(),
                Some(x.n),
                "{site} {f} {t}"
            );
            assert_eq!(
                r[&format!("{f}_received")].as_u64(),
                Some(x.minutes.len() as u64)
            );
            assert_eq!(
                r[&format!("{f}_valid")].as_bool(),
                Some(x.minutes.len() >= 45),
                "{site} {f} {t}"
            );
            checked += 1;
        }
    }

    // The stations' points (the city-wide ones, scope=city, have no site).
    let aqi = rows(
        influx,
        &format!("SELECT * FROM aqi WHERE {range} AND scope != 'city'"),
    )
    .await;
    let mut aqi_checked = 0;
    for r in &aqi {
        let (site, t) = (r["site"].as_str().unwrap(), r["time"].as_i64().unwrap());
        assert_eq!(r["standard"], "hj633-2026");
        let inputs = if r["period"] == "hour" {
            hourly_inputs(&hours, site, t)
        } else {
            assert_eq!(t, day);
            daily_inputs(&hours, site, t)
        };
        let (want, want_iaqi) = reference_aqi(&inputs);
        assert_eq!(
            r["aqi"].as_i64(),
            want,
            "{} {site} {t}: {r:?} inputs {inputs:?}",
            r["period"]
        );
        for (k, v) in &want_iaqi {
            assert_eq!(r[&format!("iaqi_{k}")].as_i64(), Some(*v), "{site} {t} {k}");
            assert!(
                close(r[k.as_str()].as_f64().unwrap(), inputs[k.as_str()]),
                "{site} {t} {k}"
            );
        }
        aqi_checked += 1;
    }
    verify_city(influx, &range, &hours).await;
    (checked, aqi_checked)
}

/// The city-wide hourly AQI (all four sites are among `aqi.city_sites`):
/// each pollutant the mean of the sites' valid hourly means, the AQI
/// computed on those means, `sites` the number of sites with data.
async fn verify_city(influx: &Influx, range: &str, hours: &Hours) {
    let city = rows(
        influx,
        &format!("SELECT * FROM aqi WHERE {range} AND scope = 'city' AND period = 'hour'"),
    )
    .await;
    // Every hour of the day has data at some site.
    assert_eq!(city.len(), 24);
    let sites = ["dongsi", "tiantan", "guanyuan", "wanliu"];
    for r in &city {
        let t = r["time"].as_i64().unwrap();
        let mut inputs = BTreeMap::new();
        let mut with_data = BTreeSet::new();
        for (key, f) in HOURLY {
            let v: Vec<f64> = sites
                .iter()
                .filter_map(|s| match hour_mean(hours, s, f, t) {
                    Some((v, true)) => {
                        with_data.insert(*s);
                        Some(v)
                    }
                    _ => None,
                })
                .collect();
            if !v.is_empty() {
                inputs.insert(key, v.iter().sum::<f64>() / v.len() as f64);
            }
        }
        let (want, _) = reference_aqi(&inputs);
        assert_eq!(r["aqi"].as_i64(), want, "city {t}: {r:?} inputs {inputs:?}");
        assert_eq!(
            r["sites"].as_i64(),
            Some(with_data.len() as i64),
            "city {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_stations_gives_windows_and_aqi_equal_to_an_independent_computation() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&config(broker.port, &influx));
    let mut publisher = Publisher::connect(broker.port, "day-publisher").await;
    lantian.wait_subscribed().await;

    let day = yesterday_beijing();
    let mut rng = fastrand::Rng::with_seed(20200);
    // A day and 10 minutes: the watermark passes midnight + 2 min lateness.
    let mut published = 0;
    for minute in 0..24 * 60 + 10 {
        for (s, (district, site, sensor, fields)) in SENSORS.iter().enumerate() {
            if !reports(s, minute) {
                continue;
            }
            let site_no = ["dongsi", "tiantan", "guanyuan", "wanliu"]
                .iter()
                .position(|x| x == site)
                .unwrap();
            let body: Vec<String> = fields
                .iter()
                .map(|f| format!("\"{f}\":{}", value(&mut rng, f, minute, site_no)))
                .collect();
            let ts = day + minute * MIN;
            publisher
                .publish(
                    &format!("env/{district}/{site}/air/{sensor}"),
                    format!("{{\"ts\":{ts},{}}}", body.join(",")),
                )
                .await;
            published += 1;
        }
    }
    publisher.flush().await;
    // Every AQI point (hourly for each site hour with data, 4 daily) is
    // acknowledged by InfluxDB, and with it every window before it: the
    // windows are written no later than the AQI of their hours. (Waiting
    // for the daily points in InfluxDB is not enough: on a busy machine
    // the whole day is one flush, one write, and InfluxDB shows part of a
    // write before all of it.)
    lantian
        .wait_metric(
            "lantian_aqi_points_total",
            (4 * 24 - 6 + 4) as f64,
            Duration::from_secs(300),
        )
        .await;
    // 4 stations' daily AQI points (wanliu's without an AQI: invalid day).
    let daily = influx
        .wait_count(
            "SELECT count(invalid) FROM aqi WHERE period = 'day' AND scope != 'city'",
            4,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(daily, 4, "{}", lantian.logs());

    // Minute windows: one per sensor and minute that had data.
    let raw_n = influx.scalar("SELECT count(pm25) FROM air").await
        + influx
            .scalar("SELECT count(so2) FROM air WHERE sensor = 'gas'")
            .await;
    assert_eq!(published, raw_n as usize);
    let minutes = influx
        .scalar(&format!(
            "SELECT count(so2_mean) FROM air_1m WHERE scope = 'sensor' AND time < {}ms",
            day + 24 * HOUR
        ))
        .await;
    let want_minutes = (0..24 * 60)
        .map(|m| {
            (0..SENSORS.len())
                .filter(|s| SENSORS[*s].3.contains(&"so2") && reports(*s, m))
                .count() as i64
        })
        .sum::<i64>();
    assert_eq!(
        minutes,
        want_minutes,
        "minute windows\n{}\n{}",
        lantian.admin("/metrics").await.1,
        lantian.logs()
    );

    let (hours_checked, aqi_checked) = verify(&influx, day).await;
    // 4 sites × 24 hours × 6 pollutants, less wanliu's 6 silent hours.
    assert_eq!(hours_checked, (4 * 24 - 6) * 6);
    // Hourly AQI for every site hour with data, plus 4 daily points.
    assert_eq!(aqi_checked, 4 * 24 - 6 + 4);
    let row = rows(
        &influx,
        "SELECT * FROM aqi WHERE period = 'day' AND site = 'wanliu'",
    )
    .await;
    assert!(row[0]["aqi"].is_null());
    assert_eq!(
        row[0]["invalid"],
        "pm25_24h,pm10_24h,so2_24h,no2_24h,co_24h,o3_8h"
    );
    let row = rows(
        &influx,
        &format!(
            "SELECT * FROM air_1h WHERE scope = 'site' AND site = 'guanyuan' AND time = {}ms",
            day + 5 * HOUR
        ),
    )
    .await;
    assert_eq!(row[0]["pm25_valid"], false);
    assert_eq!(row[0]["pm25_received"], 40);

    // Late readings for 22:30–22:39 at guanyuan (within the 3 h horizon),
    // half a minute off the originals so the raw points are new ones.
    let before = rows(
        &influx,
        &format!(
            "SELECT * FROM aqi WHERE site = 'guanyuan' AND period = 'hour' AND time = {}ms",
            day + 22 * HOUR
        ),
    )
    .await;
    for m in 0..10 {
        let ts = day + 22 * HOUR + (30 + m) * MIN + 30_000;
        publisher
            .publish(
                "env/xicheng/guanyuan/air/aq1",
                format!("{{\"ts\":{ts},\"pm25\":480.5,\"o3\":300}}"),
            )
            .await;
    }
    // ...and 5 older than the horizon (01:00), stored raw only.
    for m in 0..5 {
        let ts = day + HOUR + m * MIN + 30_000;
        publisher
            .publish(
                "env/xicheng/guanyuan/air/aq1",
                format!("{{\"ts\":{ts},\"pm25\":480.5}}"),
            )
            .await;
    }
    publisher.flush().await;
    let q = format!(
        "SELECT pm25_count FROM air_1h WHERE scope = 'site' AND site = 'guanyuan' AND time = {}ms",
        day + 22 * HOUR
    );
    let n = influx.wait_count(&q, 70, Duration::from_secs(30)).await;
    assert_eq!(n, 70, "corrected hour has the late readings");
    // Rewritten in place: still one point per series and time.
    let points = influx
        .scalar(&format!(
            "SELECT count(pm25_mean) FROM air_1h WHERE scope = 'site' AND site = 'guanyuan' AND time = {}ms",
            day + 22 * HOUR
        ))
        .await;
    assert_eq!(points, 1);
    // Everything still equals the independent computation, which now sees
    // the late raw points (the AQI of 22:00 and the day changed).
    let after = rows(
        &influx,
        &format!(
            "SELECT * FROM aqi WHERE site = 'guanyuan' AND period = 'hour' AND time = {}ms",
            day + 22 * HOUR
        ),
    )
    .await;
    assert_eq!(after.len(), 1);
    assert_ne!(
        before[0]["aqi"], after[0]["aqi"],
        "the late readings raise the 22:00 AQI"
    );
    let raw_late = influx
        .scalar(&format!(
            "SELECT count(pm25) FROM air WHERE site = 'guanyuan' AND time >= {}ms AND time < {}ms",
            day + HOUR,
            day + 2 * HOUR
        ))
        .await;
    assert_eq!(raw_late, 65, "the too-late readings are stored raw");
    // ...but 01:00's windows are unchanged (beyond the horizon): verify()
    // would see them, so check that hour on its own.
    let h1 = rows(&influx, &format!("SELECT pm25_count FROM air_1h WHERE scope = 'site' AND site = 'guanyuan' AND time = {}ms", day + HOUR)).await;
    assert_eq!(h1[0]["pm25_count"], 60);
    let (hours_checked, aqi_checked) = verify_excluding_hour(&influx, day, day + HOUR).await;
    assert_eq!(
        (hours_checked, aqi_checked),
        ((4 * 24 - 6) * 6, 4 * 24 - 6 + 4)
    );
    drop(broker);
}

/// `verify`, with the raw points of one hour (late beyond the horizon)
/// left out of the reference.
async fn verify_excluding_hour(influx: &Influx, day: i64, hour: i64) -> (usize, usize) {
    // Drop the too-late raw points (second 30 of minutes 0–4 of `hour`):
    // they were never aggregated, by design.
    let late: Vec<i64> = (0..5).map(|m| hour + m * MIN + 30_000).collect();
    for t in late {
        influx
            .exec(&format!(
                "DELETE FROM air WHERE site = 'guanyuan' AND time = {t}ms"
            ))
            .await;
    }
    verify(influx, day).await
}
