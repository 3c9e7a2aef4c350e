//! Test data: Beijing days, PM2.5 hours, the simulated fleet.

use std::process::Command;

use super::*;

/// Local (Beijing) midnight two days ago, as epoch ms.
#[allow(dead_code)]
pub fn two_days_ago_beijing() -> i64 {
    const HOUR: i64 = 3_600_000;
    let local = now_ms() + 8 * HOUR;
    local - local.rem_euclid(24 * HOUR) - 8 * HOUR - 48 * HOUR
}

/// Publishes minute readings of PM2.5 for `stations` (topics
/// `env/dongcheng/{station}/air/aq1`), hour by hour from `from_hour`: the
/// hourly means are `hours[s][h]`, with a little variation so nothing
/// flat-lines. Then one reading 3 minutes into the next hour moves the
/// watermark past the last hour. Returns how many were published.
#[allow(dead_code, clippy::needless_range_loop)]
pub async fn publish_pm25_hours(
    p: &mut Publisher,
    start: i64,
    stations: &[&str],
    hours: &[Vec<f64>],
    from_hour: usize,
) -> u64 {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    let mut sent = 0;
    let n = hours[0].len();
    for h in from_hour..n {
        for m in 0..60 {
            for (s, name) in stations.iter().enumerate() {
                let v = hours[s][h] + [-1.0, 0.5, 0.0, 1.0, -0.5][m % 5];
                let ts = start + h as i64 * HOUR + m as i64 * MIN;
                p.publish(
                    &format!("env/dongcheng/{name}/air/aq1"),
                    format!("{{\"ts\":{ts},\"pm25\":{v}}}"),
                )
                .await;
                sent += 1;
            }
        }
    }
    for name in stations {
        let ts = start + n as i64 * HOUR + 3 * MIN;
        p.publish(
            &format!("env/dongcheng/{name}/air/aq1"),
            format!("{{\"ts\":{ts},\"pm25\":20}}"),
        )
        .await;
        sent += 1;
    }
    p.flush().await;
    sent
}

/// Runs `lantian simulate --rate 0 --history HISTORY --no-live` against the
/// broker on `port`; returns how many messages it published (it says so).
#[allow(dead_code)]
pub fn simulate(port: u16, history: &str) -> i64 {
    let sim = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args([
            "simulate",
            "--rate",
            "0",
            "--history",
            history,
            "--no-live",
            "--broker",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sim.stderr).into_owned();
    assert!(sim.status.success(), "{said}");
    eprintln!("{said}");
    // "history: N messages in ..."
    said.split("history: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}
