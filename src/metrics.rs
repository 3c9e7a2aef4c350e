//! Counters shared by the stages. Each notable event is one method that both
//! counts and logs, so logs and (later) `/metrics` never disagree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tracing::{debug, info, warn};

/// Quarantine records per reason logged at warn level.
const LOUD_QUARANTINE: u64 = 10;

use crate::reading::Reason;

/// Declares the metrics once: each field's doc comment is its HELP text on
/// `/metrics`, next to its exposed name and type, so the struct, the
/// exposition and the docs cannot drift apart.
macro_rules! metrics {
    (
        $(
            $(#[doc = $doc:literal])+
            $field:ident: $ty:ident => $kind:ident $name:literal,
        )*
        @private
        $(
            $(#[doc = $pdoc:literal])+
            $pfield:ident: $pty:ty,
        )*
    ) => {
        /// Process-wide counters and gauges. Cheap to bump from any task.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
            $( $(#[doc = $pdoc])+ $pfield: $pty, )*
        }

        /// Every plain metric: exposed name (without the `lantian_`
        /// prefix), type, HELP text and how to read it.
        pub const CATALOG: &[Entry] = &[
            $(
                Entry {
                    name: $name,
                    kind: Kind::$kind,
                    help: concat!($($doc),+),
                    read: |m| Value::value(&m.$field),
                },
            )*
        ];
    };
}

/// A Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One entry of [`CATALOG`].
pub struct Entry {
    pub name: &'static str,
    pub kind: Kind,
    /// The field's doc comment, lines joined.
    pub help: &'static str,
    pub read: fn(&Metrics) -> u64,
}

/// An atomic read as a number.
trait Value {
    fn value(&self) -> u64;
}

impl Value for AtomicU64 {
    fn value(&self) -> u64 {
        self.load(Relaxed)
    }
}

impl Value for AtomicBool {
    fn value(&self) -> u64 {
        u64::from(self.load(Relaxed))
    }
}

metrics! {
    /// MQTT messages received (redeliveries included).
    messages_in: AtomicU64 => Counter "messages_received_total",
    /// MQTT messages acknowledged to the broker once stored.
    messages_acked: AtomicU64 => Counter "messages_acked_total",
    /// Reading points InfluxDB accepted (quarantine records excluded).
    points_written: AtomicU64 => Counter "readings_written_total",
    /// Lines InfluxDB accepted (readings, windows, AQI, alerts, quarantine).
    lines_written: AtomicU64 => Counter "lines_written_total",
    /// HTTP write requests to InfluxDB.
    write_requests: AtomicU64 => Counter "influx_write_requests_total",
    /// InfluxDB writes retried (network error, 429, 5xx, auth or not found).
    write_retries: AtomicU64 => Counter "influx_write_retries_total",
    /// Batches split because InfluxDB rejected part of them.
    batch_splits: AtomicU64 => Counter "influx_batch_splits_total",
    /// Quarantine records InfluxDB itself refused (logged at error level;
    /// the only thing lantian ever gives up on).
    quarantine_refused: AtomicU64 => Counter "influx_quarantine_refused_total",
    /// 1 when the last InfluxDB request was answered (not a failure to
    /// retry): the sink is writable.
    sink_ok: AtomicBool => Gauge "influx_writable",
    /// 1 while connected to the broker.
    mqtt_connected: AtomicBool => Gauge "mqtt_connected",
    /// 1 while our subscriptions are in place (granted, or resumed with the
    /// persistent session) on the current connection.
    mqtt_subscribed: AtomicBool => Gauge "mqtt_subscribed",
    /// Broker connections established.
    mqtt_connects: AtomicU64 => Counter "mqtt_connects_total",
    /// Bytes in the spool on disk.
    spool_bytes: AtomicU64 => Gauge "spool_bytes",
    /// Messages written to the spool (and then acknowledged).
    spool_records: AtomicU64 => Counter "spool_records_total",
    /// 1 while intake is paused because the spool is full.
    spool_full: AtomicBool => Gauge "spool_full",
    /// Corrupt spool bytes skipped (and quarantined).
    spool_corrupt_bytes: AtomicU64 => Counter "spool_corrupt_bytes_total",
    /// Readings reduced into windows.
    window_readings: AtomicU64 => Counter "window_readings_total",
    /// Window points written (first writes and corrections).
    windows_written: AtomicU64 => Counter "windows_written_total",
    /// Late readings that rewrote windows already closed (within the
    /// correction horizon).
    window_corrections: AtomicU64 => Counter "window_corrections_total",
    /// Readings older than the correction horizon: stored raw, not
    /// aggregated.
    window_too_late: AtomicU64 => Counter "window_too_late_total",
    /// AQI points written (hourly and daily, corrections included).
    aqi_points: AtomicU64 => Counter "aqi_points_total",
    /// Alert instances firing.
    alerts_firing: AtomicU64 => Gauge "alerts_firing",
    /// Alert instances pending (waiting out `for`).
    alerts_pending: AtomicU64 => Gauge "alerts_pending",
    /// Alert notices produced (firing, changed, reminder, resolved).
    alert_notices: AtomicU64 => Counter "alert_notices_total",
    /// Webhook deliveries a receiver accepted.
    alerts_sent: AtomicU64 => Counter "alerts_sent_total",
    /// Webhook attempts that failed (each is retried).
    alerts_failed: AtomicU64 => Counter "alerts_failed_total",
    /// Notices a receiver refused for good (a 4xx five times; kept in its
    /// dead directory).
    alerts_dead: AtomicU64 => Counter "alerts_dead_total",
    /// Notices waiting in the outbox, all receivers.
    alerts_queued: AtomicU64 => Gauge "alerts_queued",
    @private
    /// Quarantine records, by reason ([`Reason::index`]).
    quarantined: [AtomicU64; Reason::ALL.len()],
    /// InfluxDB POSTs by duration, cumulative per `WRITE_BUCKETS` bound
    /// (plus +Inf).
    write_buckets: [AtomicU64; WRITE_BUCKETS.len() + 1],
    /// Their total duration in microseconds.
    write_micros: AtomicU64,
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
