//! End-to-end throughput: real Mosquitto → the real `lantian` binary (spool
//! on, as configured by default) → real InfluxDB 1.x, against the broker's
//! own ceiling. N QoS 1 messages (one air-station reading each, 1,000
//! sensors) are queued at the broker for two persistent sessions: a plain
//! `mosquitto_sub -c -q 1 -C N > /dev/null`, timed first, and lantian,
//! timed from start-up until InfluxDB holds all N. Also lantian's CPU time
//! per message and peak RSS (from /proc).
//!
//!   cargo bench --bench e2e            # N = 200,000
//!   N=50000 cargo bench --bench e2e
//!   SENSORS=100000 cargo bench --bench e2e   # default 1,000
//!
//! Under `cargo test` it runs once with N = 2,000 as a smoke test.

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 200_000 } else { 2_000 });
    let sensors: usize = std::env::var("SENSORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let Rig {
        broker: _broker,
        influx,
        lantian,
        mut publisher,
    } = Rig::start().await;
    // Both consumers get the same backlog: lantian (persistent session,
    // stopped) and a plain `mosquitto_sub -c` baseline that discards.
    let port = _broker.port;
    let mut lantian = lantian;
    lantian.proc.signal("TERM");
    lantian
        .proc
        .wait_timeout(Duration::from_secs(30))
        .expect("lantian stops on SIGTERM");
    let sub = |extra: &[&str]| {
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args([
            "-p",
            &port.to_string(),
            "-c",
            "-i",
            "baseline",
            "-q",
            "1",
            "-t",
            "env/#",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null());
        c
    };
    assert!(sub(&["-E"]).status().unwrap().success(), "baseline session");

    let base = now_ms() - 3_000_000;
    let topics: Vec<String> = (0..sensors)
        .map(|s| format!("env/d{}/site{}/air/aq-{s:06}", s % 16, s % 100))
        .collect();
    let start = Instant::now();
    for k in 0..n {
        let payload = format!(
            r#"{{"ts":{},"pm25":{},"pm10":{},"no2":{}}}"#,
            base + (k / sensors) as i64 * 10,
            k % 500,
            k % 700,
            k % 90
        );
        publisher.publish(&topics[k % sensors], payload).await;
    }
    publisher.flush().await;
    let published = start.elapsed();

    // Baseline: the broker's own ceiling for a QoS 1 subscriber here.
    let t = Instant::now();
    let status = sub(&["-C", &n.to_string()]).status().unwrap();
    let baseline = t.elapsed();
    assert!(status.success());

    // lantian: from start-up until InfluxDB holds every reading.
    let t = Instant::now();
    lantian.restart();
    let pid = lantian.pid();
    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            n as i64,
            Duration::from_secs(600),
        )
        .await;
    let total = t.elapsed();
    let (cpu, rss_kb) = (cpu_seconds(pid), peak_rss_kib(pid));
    assert_eq!(got, n as i64, "lost or extra readings: {}", lantian.logs());
    println!(
        "e2e: {n} QoS 1 messages from {sensors} sensors queued at the broker (published in {:.2}s)\n\
         e2e: mosquitto_sub -c -q 1 -C {n} > /dev/null: {:.2}s = {:.0} msg/s (the broker's ceiling)\n\
         e2e: lantian, start-up to all stored in InfluxDB: {:.2}s = {:.0} msg/s = {:.0}% of the baseline; \
         CPU {:.2}s = {:.1} µs/msg; peak RSS {:.1} MB",
        published.as_secs_f64(),
        baseline.as_secs_f64(),
        n as f64 / baseline.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        100.0 * baseline.as_secs_f64() / total.as_secs_f64(),
        cpu,
        cpu * 1e6 / n as f64,
        rss_kb as f64 / 1024.0
    );
}
