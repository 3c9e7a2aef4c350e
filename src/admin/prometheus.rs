//! `/metrics` in the Prometheus text exposition format (0.0.4): every
//! counter in [`Metrics`], with HELP and TYPE lines.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::{Metrics, WRITE_BUCKETS};
use crate::reading::Reason;

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP lantian_{name} {help}");
    let _ = writeln!(out, "# TYPE lantian_{name} {kind}");
    let _ = writeln!(out, "lantian_{name} {v}");
}

pub fn render(m: &Metrics, ready: bool) -> String {
    let mut o = String::with_capacity(8 << 10);
    let c = |x: &std::sync::atomic::AtomicU64| x.load(Relaxed);
    let b = |x: &std::sync::atomic::AtomicBool| u8::from(x.load(Relaxed));
    let _ = writeln!(o, "# HELP lantian_build_info lantian version");
    let _ = writeln!(o, "# TYPE lantian_build_info gauge");
    let _ = writeln!(
        o,
        "lantian_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    one(
        &mut o,
        "ready",
        "gauge",
        "1 when /readyz answers 200",
        u8::from(ready),
    );
    one(
        &mut o,
        "messages_received_total",
        "counter",
        "MQTT messages received (redeliveries included)",
        c(&m.messages_in),
    );
    one(
        &mut o,
        "messages_acked_total",
        "counter",
        "MQTT messages acknowledged to the broker once stored",
        c(&m.messages_acked),
    );
    one(
        &mut o,
        "readings_written_total",
        "counter",
        "Reading points InfluxDB accepted",
        c(&m.points_written),
    );
    one(
        &mut o,
        "lines_written_total",
        "counter",
        "Lines InfluxDB accepted (readings, windows, AQI, alerts, quarantine)",
        c(&m.lines_written),
    );
    let _ = writeln!(
        o,
        "# HELP lantian_quarantined_total Inputs quarantined, by reason"
    );
    let _ = writeln!(o, "# TYPE lantian_quarantined_total counter");
    for r in Reason::ALL {
        let _ = writeln!(
            o,
            "lantian_quarantined_total{{reason=\"{}\"}} {}",
            r.as_str(),
            m.quarantined_count(r)
        );
    }
    one(
        &mut o,
        "influx_write_requests_total",
        "counter",
        "HTTP write requests to InfluxDB",
        c(&m.write_requests),
    );
    one(
        &mut o,
        "influx_write_retries_total",
        "counter",
        "InfluxDB writes retried (network, 429, 5xx, auth)",
        c(&m.write_retries),
    );
    one(
        &mut o,
        "influx_batch_splits_total",
        "counter",
        "Batches split because InfluxDB rejected part of them",
        c(&m.batch_splits),
    );
    one(
        &mut o,
        "influx_quarantine_refused_total",
        "counter",
        "Quarantine records InfluxDB refused",
        c(&m.quarantine_refused),
    );
    let (buckets, sum) = m.write_histogram();
    let _ = writeln!(
        o,
        "# HELP lantian_influx_write_duration_seconds InfluxDB write request latency"
    );
    let _ = writeln!(o, "# TYPE lantian_influx_write_duration_seconds histogram");
    for (i, n) in buckets.iter().enumerate() {
        let le = WRITE_BUCKETS
            .get(i)
            .map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            o,
            "lantian_influx_write_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(o, "lantian_influx_write_duration_seconds_sum {sum}");
    let _ = writeln!(
        o,
        "lantian_influx_write_duration_seconds_count {}",
        buckets.last().copied().unwrap_or(0)
    );
    one(
        &mut o,
        "influx_writable",
        "gauge",
        "1 when the last InfluxDB request was answered",
        b(&m.sink_ok),
    );
    one(
        &mut o,
        "mqtt_connected",
        "gauge",
        "1 while connected to the broker",
        b(&m.mqtt_connected),
    );
    one(
        &mut o,
        "mqtt_subscribed",
        "gauge",
        "1 while subscribed on the current connection",
        b(&m.mqtt_subscribed),
    );
    one(
        &mut o,
        "mqtt_connects_total",
        "counter",
        "Broker connections established",
        c(&m.mqtt_connects),
    );
    one(
        &mut o,
        "spool_bytes",
        "gauge",
        "Bytes in the spool on disk",
        c(&m.spool_bytes),
    );
    one(
        &mut o,
        "spool_records_total",
        "counter",
        "Messages written to the spool",
        c(&m.spool_records),
    );
    one(
        &mut o,
        "spool_full",
        "gauge",
        "1 while intake is paused because the spool is full",
        b(&m.spool_full),
    );
    one(
        &mut o,
        "spool_corrupt_bytes_total",
        "counter",
        "Corrupt spool bytes skipped and quarantined",
        c(&m.spool_corrupt_bytes),
    );
    one(
        &mut o,
        "window_readings_total",
        "counter",
        "Readings reduced into windows",
        c(&m.window_readings),
    );
    one(
        &mut o,
        "windows_written_total",
        "counter",
        "Window points written",
        c(&m.windows_written),
    );
    one(
        &mut o,
        "window_corrections_total",
        "counter",
        "Late readings that rewrote closed windows",
        c(&m.window_corrections),
    );
    one(
        &mut o,
        "window_too_late_total",
        "counter",
        "Readings older than the correction horizon",
        c(&m.window_too_late),
    );
    one(
        &mut o,
        "aqi_points_total",
        "counter",
        "AQI points written",
        c(&m.aqi_points),
    );
    one(
        &mut o,
        "alerts_firing",
        "gauge",
        "Alert instances firing",
        c(&m.alerts_firing),
    );
    one(
        &mut o,
        "alerts_pending",
        "gauge",
        "Alert instances pending (waiting out `for`)",
        c(&m.alerts_pending),
    );
    one(
        &mut o,
        "alert_notices_total",
        "counter",
        "Alert notices produced",
        c(&m.alert_notices),
    );
    one(
        &mut o,
        "alerts_sent_total",
        "counter",
        "Webhook deliveries accepted",
        c(&m.alerts_sent),
    );
    one(
        &mut o,
        "alerts_failed_total",
        "counter",
        "Webhook attempts that failed (retried)",
        c(&m.alerts_failed),
    );
    one(
        &mut o,
        "alerts_dead_total",
        "counter",
        "Notices a receiver refused for good",
        c(&m.alerts_dead),
    );
    one(
        &mut o,
        "alerts_queued",
        "gauge",
        "Notices waiting in the outbox",
        c(&m.alerts_queued),
    );
    o
}
