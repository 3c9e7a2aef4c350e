//! The system clock steps a day ahead under a running lantian (libfaketime
//! preloaded, its offset read from a file on every call; the monotonic
//! clock is left alone, as a real step leaves it). Readings without a
//! timestamp keep their true arrival time and the windows of the current
//! hour stay open.

use std::time::Duration;

use crate::harness::*;

fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .unwrap_or_else(|| panic!("libfaketime is not installed: run scripts/test.sh"))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_a_day_ahead_moves_no_arrival_time_and_closes_no_window() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    // Event time alone cannot close the hour during the test (lateness 30
    // min), nor can real idleness (10 min): only a clock that jumped can.
    let config = Lantian::v1(broker.port, &influx)
        + "[windows]\nallowed_lateness = \"30m\"\nidle_timeout = \"10m\"\n";
    let lantian = Lantian::start_with_env(
        &config,
        &[
            ("LD_PRELOAD", &libfaketime()),
            ("FAKETIME_TIMESTAMP_FILE", &offset.display().to_string()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut p = Publisher::connect(broker.port, "clock-publisher").await;
    lantian.wait_subscribed().await;
    let round = async |p: &mut Publisher, site: &str, value: u32| {
        for s in 0..10 {
            p.publish(
                &format!("env/haidian/{site}/dust/{site}-{s:02}"),
                format!(r#"{{"pm10":{value}}}"#),
            )
            .await;
        }
    };
    // Points written (readings stamped in the same millisecond overwrite
    // each other in InfluxDB, so its count can be lower).
    let stored = async |n: f64| {
        lantian
            .wait_metric("lantian_readings_written_total", n, Duration::from_secs(60))
            .await;
    };
    // Site 1 sends three readings a sensor (each is now known to the
    // deadman rule), then falls silent.
    for v in [40, 41, 42] {
        round(&mut p, "site01", v).await;
    }
    p.flush().await;
    stored(30.0).await;
    let written = lantian.metric("lantian_windows_written_total").await;

    std::fs::write(&offset, "+1d\n").unwrap();
    // Site 2 reports after the step. Its arrival times meet the stepped
    // clock (the guard says so in a log line dated tomorrow), and the
    // window flush that reduces them is one whose wall clock reads
    // tomorrow: were that clock believed, site 1 would have been silent a
    // day and its windows would close.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::hours(23))
        .format("%Y-%m-%d")
        .to_string();
    let reduced = lantian
        .metric("lantian_window_readings_total")
        .await
        .unwrap_or(0.0);
    round(&mut p, "site02", 43).await;
    p.flush().await;
    stored(40.0).await;
    wait_for(
        "the step seen (a log line dated tomorrow)",
        Duration::from_secs(60),
        async || {
            let logs = lantian.logs();
            logs.contains("system clock stepped") && logs.lines().any(|l| l.starts_with(&tomorrow))
        },
    )
    .await;
    lantian
        .wait_metric(
            "lantian_window_readings_total",
            reduced + 10.0,
            Duration::from_secs(60),
        )
        .await;

    let ahead = influx
        .scalar("SELECT count(pm10) FROM dust WHERE time > now() + 10m")
        .await;
    let after = lantian.metric("lantian_windows_written_total").await;
    let firing = lantian.metric("lantian_alerts_firing").await;
    let pending = lantian.metric("lantian_alerts_pending").await;
    println!(
        "after a +1 day step: {ahead} readings stamped ahead of the true clock; \
         windows written {written:?} before the step, {after:?} after; \
         alerts firing {firing:?}, pending {pending:?}"
    );
    // Checked against main with each guard taken out: without the
    // arrival-time guard, readings are stamped a day ahead; without the
    // window stage's, "windows written Some(0.0) before the step,
    // Some(33.0) after".
    assert_eq!(ahead, 0, "{}", lantian.logs());
    assert_eq!(after, written, "windows closed early");
    // Not shown able to fail: while any source reports, the alert clock
    // follows event time, so deadman stayed quiet even with both guards
    // out. It is checked all the same.
    assert_eq!((firing, pending), (Some(0.0), Some(0.0)), "deadman woke");
}
