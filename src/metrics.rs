//! Counters shared by the stages. Each notable event is one method that both
//! counts and logs, so logs and (later) `/metrics` never disagree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tracing::{debug, info, warn};

/// Quarantine records per reason logged at warn level.
const LOUD_QUARANTINE: u64 = 10;

use crate::reading::Reason;

/// Process-wide counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received (including redeliveries).
    pub messages_in: AtomicU64,
    /// Messages acknowledged to the broker after their readings were stored.
    pub messages_acked: AtomicU64,
    /// Points (lines) InfluxDB accepted, readings and quarantine alike.
    pub lines_written: AtomicU64,
    /// Reading points accepted (excluding quarantine records).
    pub points_written: AtomicU64,
    /// Quarantine records, by reason ([`Reason::index`]).
    quarantined: [AtomicU64; Reason::ALL.len()],
    /// HTTP write requests sent.
    pub write_requests: AtomicU64,
    /// Writes retried (network error, 429, 5xx, auth or not found).
    pub write_retries: AtomicU64,
    /// Batches split because InfluxDB rejected something in them.
    pub batch_splits: AtomicU64,
    /// Quarantine records InfluxDB itself refused (logged at error level;
    /// the only thing lantian ever gives up on).
    pub quarantine_refused: AtomicU64,
    /// Broker connections established.
    pub mqtt_connects: AtomicU64,
    /// Whether the broker link is up.
    pub mqtt_connected: AtomicBool,
    /// Whether our subscriptions are in place (granted, or resumed with
    /// the persistent session) on the current connection.
    pub mqtt_subscribed: AtomicBool,
    /// Readings reduced into windows.
    pub window_readings: AtomicU64,
    /// Window points written (first writes and corrections).
    pub windows_written: AtomicU64,
    /// Readings that arrived for a window already closed, within the
    /// correction horizon (their windows were rewritten).
    pub window_corrections: AtomicU64,
    /// Readings older than the correction horizon: stored raw, not
    /// aggregated.
    pub window_too_late: AtomicU64,
    /// AQI points written (hourly and daily, including corrections).
    pub aqi_points: AtomicU64,
    /// Bytes in the spool (segments on disk).
    pub spool_bytes: AtomicU64,
    /// Messages written to the spool (and then acknowledged).
    pub spool_records: AtomicU64,
    /// Whether intake is paused because the spool is full.
    pub spool_full: AtomicBool,
    /// Corrupt spool bytes skipped (and quarantined).
    pub spool_corrupt_bytes: AtomicU64,
    /// Alert instances firing now, and pending (waiting out `for`).
    pub alerts_firing: AtomicU64,
    pub alerts_pending: AtomicU64,
    /// Notices produced (firing, changed, reminder, resolved).
    pub alert_notices: AtomicU64,
    /// Webhook deliveries accepted by a receiver.
    pub alerts_sent: AtomicU64,
    /// Webhook attempts that failed (each is retried).
    pub alerts_failed: AtomicU64,
    /// Notices given up on (a receiver refused them with a 4xx five times);
    /// kept in the receiver's `dead` directory.
    pub alerts_dead: AtomicU64,
    /// Notices waiting in the outbox, all receivers.
    pub alerts_queued: AtomicU64,
    /// InfluxDB POSTs by duration, cumulative per `WRITE_BUCKETS` bound
    /// (plus +Inf), and their total in microseconds.
    write_buckets: [AtomicU64; WRITE_BUCKETS.len() + 1],
    write_micros: AtomicU64,
    /// Whether the last InfluxDB POST got an answer other than "retry"
    /// (the sink is writable).
    pub sink_ok: AtomicBool,
    /// Whether a write has been attempted yet.
    pub sink_tried: AtomicBool,
}

/// Upper bounds (seconds) of the write-latency histogram.
pub const WRITE_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// One InfluxDB POST took `d`; `answered`: not a failure to retry.
    pub fn observe_write(&self, d: std::time::Duration, answered: bool) {
        let s = d.as_secs_f64();
        for (i, b) in WRITE_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.write_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.write_buckets[WRITE_BUCKETS.len()].fetch_add(1, Relaxed);
        self.write_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
        self.sink_ok.store(answered, Relaxed);
        self.sink_tried.store(true, Relaxed);
    }

    /// Cumulative bucket counts (the last is +Inf) and the sum in seconds.
    pub fn write_histogram(&self) -> (Vec<u64>, f64) {
        (
            self.write_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            self.write_micros.load(Relaxed) as f64 / 1e6,
        )
    }

    /// Count a quarantine record. The first few of each reason are logged
    /// at warn level, the rest at debug (a misbehaving fleet must not flood
    /// the journal); the periodic summary carries the counts.
    pub fn quarantined(&self, reason: Reason, topic: &str, detail: &str) {
        let n = self.quarantined[reason.index()].fetch_add(1, Relaxed) + 1;
        if n <= LOUD_QUARANTINE {
            warn!(reason = reason.as_str(), topic, detail, "quarantined");
            if n == LOUD_QUARANTINE {
                warn!(
                    reason = reason.as_str(),
                    "further quarantine records of this reason are logged at debug level"
                );
            }
        } else {
            debug!(reason = reason.as_str(), topic, detail, "quarantined");
        }
    }

    pub fn quarantined_count(&self, reason: Reason) -> u64 {
        self.quarantined[reason.index()].load(Relaxed)
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The one-line summary logged periodically and at exit.
    pub fn log_summary(&self, what: &str) {
        let by_reason: Vec<String> = Reason::ALL
            .iter()
            .filter(|r| self.quarantined_count(**r) > 0)
            .map(|r| format!("{}={}", r.as_str(), self.quarantined_count(*r)))
            .collect();
        info!(
            messages_in = self.messages_in.load(Relaxed),
            messages_acked = self.messages_acked.load(Relaxed),
            points_written = self.points_written.load(Relaxed),
            quarantined = self.quarantined_total(),
            quarantined_by_reason = %by_reason.join(","),
            write_requests = self.write_requests.load(Relaxed),
            write_retries = self.write_retries.load(Relaxed),
            windows_written = self.windows_written.load(Relaxed),
            window_corrections = self.window_corrections.load(Relaxed),
            window_too_late = self.window_too_late.load(Relaxed),
            aqi_points = self.aqi_points.load(Relaxed),
            spool_bytes = self.spool_bytes.load(Relaxed),
            "{what}"
        );
    }
}
