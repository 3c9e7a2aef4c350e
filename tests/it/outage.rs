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
    // The outage was logged: as unreachable (a warning), or, when the
    // write met InfluxDB while it was shutting down and it answered with
    // an HTTP error, as refused (an error line); both keep the data.
    let logs = lantian.logs();
    assert!(
        logs.contains("InfluxDB write failed; retrying until it succeeds")
            || logs.contains(
                "InfluxDB refused the write; keeping the data and retrying until it succeeds"
            ),
        "{logs}"
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

/// A gateway in front of InfluxDB that answers 400 for its own reasons
/// (here: every request, with no InfluxDB headers) is not InfluxDB
/// refusing points: lantian keeps the data, says the sink is not writable
/// (/readyz 503, the metric, an error line) and retries; once the path is
/// fixed, every reading arrives and nothing was quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_answering_400_is_not_bad_data_and_loses_nothing() {
    let broker = Mosquitto::start().await;
    let gateway = Receiver::start().await;
    gateway
        .status
        .store(400, std::sync::atomic::Ordering::Relaxed);
    let section = format!(
        "api = \"v1\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"env\"\ngzip = false\nretry_initial = \"50ms\"",
        gateway.port
    );
    let lantian = Lantian::start(&Lantian::config(broker.port, &section, ""));
    let mut publisher = Publisher::connect(broker.port, "gateway-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 60_000;
    for j in 0..50 {
        publisher
            .publish(
                "env/haidian/site01/dust/d-001",
                format!(r#"{{"ts":{},"pm10":{j}}}"#, base + j * 1000),
            )
            .await;
    }
    publisher.flush().await;
    // The gateway keeps refusing: retried, not split into quarantine.
    lantian
        .wait_metric(
            "lantian_influx_write_retries_total",
            5.0,
            Duration::from_secs(60),
        )
        .await;
    let (code, why) = lantian.admin("/readyz").await;
    assert_eq!(code, 503, "{why}");
    assert_eq!(lantian.metric("lantian_influx_writable").await, Some(0.0));
    assert!(
        lantian
            .logs()
            .contains("InfluxDB refused the write; keeping the data"),
        "{}",
        lantian.logs()
    );
    // The path is fixed.
    gateway
        .status
        .store(204, std::sync::atomic::Ordering::Relaxed);
    let stored = |g: &Receiver| -> std::collections::BTreeSet<String> {
        g.requests()
            .iter()
            .filter(|r| r.status == 204)
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .filter(|l| l.starts_with("dust,"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        "all 50 readings written",
        Duration::from_secs(60),
        async || stored(&gateway).len() >= 50,
    )
    .await;
    assert_eq!(stored(&gateway).len(), 50);
    let quarantined = gateway
        .requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("quarantine"));
    assert!(!quarantined, "nothing is quarantined");
    assert_eq!(
        lantian
            .metric("lantian_quarantined_total{reason=\"rejected\"}")
            .await,
        Some(0.0)
    );
}

/// A TCP fault proxy between lantian and InfluxDB first stalls every
/// request (reads it, never answers), then resets every connection, then
/// forwards. The request timeout ends each stalled write; lantian retries,
/// says it is not ready, logs why, and in the end stores every reading
/// once, with nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influxdb_path_that_stalls_then_resets_loses_nothing() {
    use std::sync::atomic::Ordering::Relaxed;
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let proxy = FaultProxy::start(influx.port).await;
    proxy.set(Fault::Stall);
    let section = format!(
        "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"\nretry_initial = \"50ms\"\n\
         request_timeout = \"2s\"",
        proxy.url()
    );
    let lantian = Lantian::start(&Lantian::config(broker.port, &section, ""));
    let mut publisher = Publisher::connect(broker.port, "stall-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 60_000;
    for sensor in 0..50 {
        let topic = format!("env/haidian/site01/dust/d-{sensor:03}");
        publish_range(&mut publisher, &topic, base, 0..10).await;
    }
    publisher.flush().await;

    let retries = async || {
        lantian
            .metric("lantian_influx_write_retries_total")
            .await
            .unwrap_or(0.0)
    };
    wait_for(
        "writes stalled, timed out and retried",
        Duration::from_secs(120),
        async || proxy.met.stalled.load(Relaxed) >= 2 && retries().await >= 2.0,
    )
    .await;
    let (code, why) = lantian.admin("/readyz").await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("influxdb"), "{why}");
    assert_eq!(influx.scalar("SELECT count(pm25) FROM dust").await, 0);

    let before = retries().await;
    proxy.set(Fault::Reset);
    wait_for(
        "connections reset and writes retried",
        Duration::from_secs(120),
        async || proxy.met.reset.load(Relaxed) >= 2 && retries().await >= before + 2.0,
    )
    .await;
    assert_eq!(lantian.admin("/readyz").await.0, 503);

    proxy.set(Fault::Forward);
    let stored = influx
        .wait_count(
            "SELECT count(pm25) FROM dust",
            500,
            Duration::from_secs(120),
        )
        .await;
    println!(
        "stalled {} requests, reset {} connections, {} retries; then {stored} of 500 readings stored",
        proxy.met.stalled.load(Relaxed),
        proxy.met.reset.load(Relaxed),
        retries().await
    );
    assert_eq!(stored, 500, "{}", lantian.logs());
    let per_sensor = influx
        .query("SELECT count(pm25) FROM dust GROUP BY sensor")
        .await;
    assert_eq!(per_sensor.len(), 50);
    assert!(
        per_sensor
            .iter()
            .all(|s| s["values"][0][1].as_i64() == Some(10))
    );
    assert_eq!(
        lantian
            .metric("lantian_quarantined_total{reason=\"rejected\"}")
            .await,
        Some(0.0)
    );
    lantian.wait_ready().await;
    assert!(
        lantian.logs().contains("InfluxDB write failed; retrying"),
        "{}",
        lantian.logs()
    );
}
