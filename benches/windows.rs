//! The window path and AQI evaluation.
//!
//! - `window_flush`: one flush of a 10 s micro-batch from 1,000 air
//!   sensors (6 pollutants each, a reading every second: 60,000 readings):
//!   buffer, reduce with polars, merge, close windows, AQI, encode lines.
//! - `aqi_evaluate`: one HJ 633-2026 evaluation of 7 concentrations.
//! - `alert_points`: the alert engine's per-reading work (deadman and
//!   flatline bookkeeping) on the same 60,000 readings, shipped rules.
//! - `alert_observe`: one hour's observations of 500 sites (hourly means
//!   of 6 pollutants and the hourly AQI) judged by the shipped rules.
//! - Before criterion runs, a memory sweep feeds 1,000 sensors a reading a
//!   minute for 96 simulated hours (twice the 48 h correction horizon) and
//!   prints windows held and RSS by hour (`cargo bench --bench windows`;
//!   3 hours under `cargo test --benches`; `LANTIAN_SWEEP_HOURS` to set).
//! - Then the size of a cluster partition's checkpoint (window and alert
//!   state, deflated) for 1,000, 12,500 and 100,000 sensors.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use lantian::config::{AqiConfig, HumanDuration, WindowsConfig};
use lantian::evaluate::aqi::{Standard, evaluate};
use lantian::reading::Point;
use lantian::row::Rows;
use lantian::window::{Engine, Plan};

/// 2026-11-26 00:00 Beijing.
const DAY0: i64 = 1_795_622_400_000;
const SENSORS: usize = 1000;
const FIELDS: [&str; 6] = ["pm25", "pm10", "so2", "no2", "co", "o3"];

fn engine() -> Engine {
    let w = WindowsConfig {
        allowed_lateness: HumanDuration::from_secs(0),
        ..WindowsConfig::default()
    };
    Engine::new(Plan::new(&w, &AqiConfig::default()).unwrap())
}

fn points(t0: i64, seconds: i64, step_s: i64) -> Vec<Point> {
    points_of(SENSORS, t0, seconds, step_s)
}

fn points_of(sensors: usize, t0: i64, seconds: i64, step_s: i64) -> Vec<Point> {
    let mut out = Vec::with_capacity(sensors * (seconds / step_s) as usize);
    for s in (0..seconds).step_by(step_s as usize) {
        for i in 0..sensors {
            out.push(Point {
                kind: "air".into(),
                coverage: Default::default(),
                tags: vec![
                    ("district".into(), format!("d{}", i % 16)),
                    ("sensor".into(), format!("aq-{i:04}")),
                    ("site".into(), format!("site-{:03}", i / 2)),
                ],
                time_ms: t0 + s * 1000,
                fields: FIELDS
                    .iter()
                    .enumerate()
                    .map(|(k, f)| {
                        (
                            f.to_string(),
                            10.0 + ((i * 7 + k * 13 + s as usize) % 90) as f64,
                        )
                    })
                    .collect(),
            });
        }
    }
    out
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn memory_sweep(hours: i64) {
    let mut e = engine();
    println!("memory sweep: {SENSORS} sensors x 6 pollutants, one reading a minute");
    println!("{:>6} {:>14} {:>10}", "hours", "windows held", "RSS MiB");
    for h in 0..hours {
        // One flush per simulated 10 minutes.
        for m in (0..60).step_by(10) {
            let t0 = DAY0 + h * 3_600_000 + m * 60_000;
            e.add(&points(t0, 600, 60), t0);
            let mut lines = Rows::default();
            e.flush(t0 + 600_000, &mut lines).unwrap();
        }
        let h = h + 1;
        if h <= 3 || h % 6 == 0 {
            println!(
                "{h:>6} {:>14} {:>10.1}",
                e.state().windows_held(),
                rss_kib() as f64 / 1024.0
            );
        }
    }
}

/// What a cluster partition's checkpoint weighs (`cluster::state`: the
/// window engine's snapshot and the alert engine's state, deflated) for
/// the sensors a partition holds: a reading every 5 minutes for `hours`
/// hours (the shipped windows: sensor and site minute, hour and day; the
/// shipped rules), saved at the end, with everything still open.
fn checkpoint_sizes(fleet: &[usize], hours: i64) {
    use lantian::alert::Engine as Alerts;
    use lantian::alert::engine::Rule;
    use lantian::cluster::state::{Saved, encode};
    println!("checkpoint sizes: 6 pollutants, a reading every 5 min for {hours} h, then saved");
    println!(
        "{:>8} {:>10} {:>13} {:>13} {:>13} {:>10}",
        "sensors", "windows", "windows raw", "alerts raw", "checkpoint", "B/sensor"
    );
    let cal = lantian::calendar::Calendar {
        tz: chrono_tz::Asia::Shanghai,
    };
    for &sensors in fleet {
        let mut e = engine();
        let mut a = Alerts::new(
            Rule::from_targets(
                &lantian::evaluate::targets::shipped(),
                std::time::Duration::from_secs(4 * 3600),
            ),
            cal,
        );
        for step in 0..hours * 12 {
            let t0 = DAY0 + step * 300_000;
            let batch = points_of(sensors, t0, 1, 1);
            a.points(&batch);
            e.add(&batch, t0);
            let mut lines = Rows::default();
            e.flush(t0 + 300_000, &mut lines).unwrap();
        }
        let saved = Saved {
            seq: 1,
            windows: e.snapshot(lantian::envelope::Pos { seq: 1, offset: 0 }),
            alerts: a.save(),
        };
        let bytes = encode(&saved).len();
        println!(
            "{sensors:>8} {:>10} {:>13} {:>13} {:>13} {:>10.0}",
            e.state().windows_held(),
            saved.windows.len(),
            saved.alerts.len(),
            bytes,
            bytes as f64 / sensors as f64
        );
    }
}

fn window_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    let batch = points(DAY0, 10, 1);
    g.throughput(Throughput::Elements((batch.len() * FIELDS.len()) as u64));
    g.sample_size(20);
    g.bench_function("flush_60k_readings", |b| {
        let mut e = engine();
        let clock = std::cell::Cell::new(DAY0);
        b.iter_batched(
            || {
                clock.set(clock.get() + 10_000);
                let mut p = batch.clone();
                for x in &mut p {
                    x.time_ms += clock.get() - DAY0;
                }
                p
            },
            |p| {
                let t = clock.get();
                e.add(&p, t);
                let mut lines = Rows::default();
                e.flush(t + 10_000, &mut lines).unwrap();
                black_box(lines.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn aqi(c: &mut Criterion) {
    let inputs = [
        ("pm25_24h", 83.96),
        ("pm10_24h", 131.9),
        ("so2_24h", 9.58),
        ("no2_24h", 54.19),
        ("co_24h", 1.08),
        ("o3_1h", 240.08),
        ("o3_8h", 175.16),
    ];
    let mut g = c.benchmark_group("aqi");
    g.throughput(Throughput::Elements(1));
    g.bench_function("evaluate_hj633_2026_7_pollutants", |b| {
        b.iter(|| evaluate(Standard::Hj633_2026, black_box(&inputs)).unwrap())
    });
    g.finish();
}

fn alerts(c: &mut Criterion) {
    use lantian::alert::engine::Rule;
    use lantian::alert::{Engine as Alerts, Observation};
    let rules = || {
        Rule::from_targets(
            &lantian::evaluate::targets::shipped(),
            std::time::Duration::from_secs(4 * 3600),
        )
    };
    let cal = lantian::calendar::Calendar {
        tz: chrono_tz::Asia::Shanghai,
    };
    let mut batch = points(DAY0, 10, 1);
    let mut g = c.benchmark_group("alert");
    g.throughput(Throughput::Elements(batch.len() as u64));
    let mut e = Alerts::new(rules(), cal);
    g.bench_function("points_60k_readings", |b| {
        b.iter(|| {
            // Each round 10 s later, so every reading is new (an integer
            // add per reading, against the work measured).
            for p in batch.iter_mut() {
                p.time_ms += 10_000;
            }
            e.points(black_box(&batch));
        })
    });
    let obs: Vec<Observation> = (0..500)
        .flat_map(|s| {
            let labels = vec![
                ("district".to_owned(), format!("d{}", s % 16)),
                ("site".to_owned(), format!("site-{s:03}")),
            ];
            FIELDS
                .iter()
                .map(|f| format!("{f}.hour"))
                .chain(["aqi.hour".to_owned()])
                .map(move |metric| Observation {
                    kind: "air".into(),
                    labels: labels.clone(),
                    metric,
                    start_ms: DAY0,
                    end_ms: DAY0 + 3_600_000,
                    value: 150.0 + (s % 120) as f64,
                    valid: true,
                    details: Default::default(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    g.throughput(Throughput::Elements(obs.len() as u64));
    let mut hour = 0i64;
    let mut e = Alerts::new(rules(), cal);
    g.bench_function("observe_500_sites_hour", |b| {
        b.iter(|| {
            hour += 1;
            let shifted: Vec<Observation> = obs
                .iter()
                .map(|o| Observation {
                    start_ms: o.start_ms + hour * 3_600_000,
                    end_ms: o.end_ms + hour * 3_600_000,
                    ..o.clone()
                })
                .collect();
            e.observe(black_box(&shifted));
            e.take_notices().len()
        })
    });
    g.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let hours = std::env::var("LANTIAN_SWEEP_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(if full { 96 } else { 3 });
    memory_sweep(hours);
    // 100,000 sensors over 8 partitions: 12,500 a partition; over one.
    // `CHECKPOINT_SENSORS=1000 CHECKPOINT_HOURS=50`: another case (50 h
    // fills the 48 h correction horizon: the steady state).
    let fleet: Vec<usize> = std::env::var("CHECKPOINT_SENSORS").map_or_else(
        |_| match full {
            true => vec![1_000, 12_500, 100_000],
            false => vec![1_000],
        },
        |v| v.split(',').map(|x| x.trim().parse().unwrap()).collect(),
    );
    let hours = std::env::var("CHECKPOINT_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(if full { 2 } else { 1 });
    checkpoint_sizes(&fleet, hours);
    let mut c = Criterion::default().configure_from_args();
    window_flush(&mut c);
    aqi(&mut c);
    alerts(&mut c);
    c.final_summary();
}
