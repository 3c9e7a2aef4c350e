//! Nothing is lost when InfluxDB goes away or lantian restarts: messages
//! are acknowledged only once stored, so the broker keeps the rest.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Reading `n`: pm25 = n mod 1000 (inside the plausible range).
fn reading(ts: i64, n: usize) -> String {
    format!(r#"{{"ts":{ts},"pm25":{}}}"#, n % 1000)
}

/// Publish readings `range` of one sensor, reading `n` stamped `base + n` ms.
async fn publish_range(
    publisher: &mut Publisher,
    topic: &str,
    base: i64,
    range: std::ops::Range<usize>,
) {
    for n in range {
        publisher.publish(topic, reading(base + n as i64, n)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_for_sixty_seconds_loses_nothing() {
    let Rig {
        broker: _broker,
        mut influx,
        lantian,
        mut publisher,
    } = Rig::start().await;
    let base = now_ms() - 600_000;
    let topic = |s: usize| format!("env/fengtai/yungang/air/aq-{s:02}");
    let mut n = 0;
    for _ in 0..1000 {
        publisher
            .publish(&topic(n % 10), reading(base + n as i64, n))
            .await;
        n += 1;
    }
    publisher.flush().await;
    let t = Duration::from_secs(60);
    assert_eq!(
        influx
            .wait_count("SELECT count(pm25) FROM air", 1000, t)
            .await,
        1000
    );

    // InfluxDB stops; the stream goes on for the whole minute.
    influx.proc.signal("TERM");
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(60) {
        for _ in 0..50 {
            publisher
                .publish(&topic(n % 10), reading(base + n as i64, n))
                .await;
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    publisher.flush().await;
    influx.restart().await;
    for _ in 0..1000 {
        publisher
            .publish(&topic(n % 10), reading(base + n as i64, n))
            .await;
        n += 1;
    }
    publisher.flush().await;

    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            n as i64,
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(got, n as i64, "{}", lantian.logs());
    // And the values are the published ones.
    let sum = influx.query("SELECT sum(pm25) FROM air").await[0]["values"][0][1]
        .as_f64()
        .unwrap();
    assert_eq!(sum, (0..n).map(|k| (k % 1000) as f64).sum::<f64>());
    assert_eq!(
        influx
            .scalar("SELECT count(payload_bytes) FROM quarantine")
            .await,
        0
    );
    assert!(
        lantian
            .logs()
            .contains("InfluxDB write failed; retrying until it succeeds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_the_persistent_session_keeps_messages_while_stopped() {
    let Rig {
        broker: _broker,
        influx,
        mut lantian,
        mut publisher,
    } = Rig::start().await;
    let base = now_ms() - 600_000;
    publish_range(
        &mut publisher,
        "env/haidian/wanliu/air/aq-01",
        base,
        0..2000,
    )
    .await;
    publisher.flush().await;

    // SIGTERM mid-stream: exit 0 within the deadline.
    lantian.proc.signal("TERM");
    let status = lantian
        .proc
        .wait_timeout(Duration::from_secs(25))
        .expect("lantian did not stop in time");
    assert!(status.success(), "exit {status:?}: {}", lantian.logs());

    // Published while lantian is down: the broker queues them for the session.
    publish_range(
        &mut publisher,
        "env/haidian/wanliu/air/aq-01",
        base,
        2000..3000,
    )
    .await;
    publisher.flush().await;
    lantian.restart();
    let got = influx
        .wait_count("SELECT count(pm25) FROM air", 3000, Duration::from_secs(60))
        .await;
    assert_eq!(got, 3000, "{}", lantian.logs());
    let logs = lantian.logs();
    assert!(logs.contains("session_present=true"), "{logs}");
    assert!(logs.contains("lantian stopped"), "{logs}");
}
