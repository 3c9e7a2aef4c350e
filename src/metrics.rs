//! Counters shared by the stages. Each notable event is one method that both
//! counts and logs, so logs and (later) `/metrics` never disagree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tracing::{debug, error, info, warn};

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
    /// 1 while intake is paused because the spool cannot be written (disk
    /// or file system full, too many open files).
    spool_blocked: AtomicBool => Gauge "spool_write_blocked",
    /// Corrupt spool bytes skipped (and quarantined).
    spool_corrupt_bytes: AtomicU64 => Counter "spool_corrupt_bytes_total",
    /// 1 while a window snapshot cannot be saved: the spool (or a cluster
    /// partition's stream) keeps every record since the last one, and a
    /// restart replays them.
    snapshot_failing: AtomicBool => Gauge "window_snapshot_failing",
    /// Bytes in the Parquet archive, as of its last retention pass.
    archive_bytes: AtomicU64 => Gauge "archive_bytes",
    /// Archive date partitions deleted by retention (archive.max_age,
    /// archive.max_bytes).
    archive_pruned: AtomicU64 => Counter "archive_partitions_pruned_total",
    /// Messages an edge published to JetStream and acknowledged to MQTT.
    forwarded: AtomicU64 => Counter "cluster_forwarded_total",
    /// Partitions this worker works now (it holds their leases).
    partitions_owned: AtomicU64 => Gauge "cluster_partitions_owned",
    /// Archive files merged into one per past day (compaction's inputs).
    archive_compacted: AtomicU64 => Counter "archive_files_compacted_total",
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
    /// HJ 212 data loggers connected to the TCP listener.
    hj212_connections: AtomicU64 => Gauge "hj212_connections",
    /// HJ 212 packets taken over TCP (each goes to the spool; bad ones to
    /// quarantine from there).
    hj212_packets: AtomicU64 => Counter "hj212_packets_total",
    /// HJ 212 data ACKs (CN=9014) sent, each after its packet was durable.
    hj212_acks: AtomicU64 => Counter "hj212_acks_total",
    /// Stretches of TCP input that were not a packet (skipped up to the
    /// next `##`), or a packet over `hj212.max_packet_bytes`.
    hj212_frame_errors: AtomicU64 => Counter "hj212_frame_errors_total",
    @private
    /// Where window snapshots cannot be saved now (a worker saves one per
    /// partition: `snapshot_failing` is 1 while any fails).
    snapshot_failures: std::sync::Mutex<std::collections::BTreeSet<std::path::PathBuf>>,
    /// Quarantine records, by reason ([`Reason::index`]).
    quarantined: [AtomicU64; Reason::ALL.len()],
    /// InfluxDB POSTs by duration, cumulative per `WRITE_BUCKETS` bound
    /// (plus +Inf).
    write_buckets: [AtomicU64; WRITE_BUCKETS.len() + 1],
    /// Their total duration in microseconds.
    write_micros: AtomicU64,
    /// Webhook delivery per receiver, by name.
    receivers: std::sync::Mutex<std::collections::BTreeMap<String, ReceiverStats>>,
    /// The reading time of the newest reading written, per kind (ms).
    newest: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    /// Cluster worker: messages of each held partition (and of the city
    /// unit) in JetStream not yet taken.
    partition_lag: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
    /// A cluster worker without the edge role: its intake is JetStream,
    /// not MQTT (readiness does not wait for a broker it does not use).
    jetstream_intake: AtomicBool,
    /// Arrival time (ms) of the oldest record in the spool not yet
    /// delivered; 0: none.
    spool_oldest_ms: std::sync::atomic::AtomicI64,
}

/// One webhook receiver's deliveries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReceiverStats {
    /// Notices it accepted.
    pub sent: u64,
    /// Attempts that failed (each retried).
    pub failed: u64,
    /// Notices it refused for good (moved to its dead/).
    pub dead: u64,
    /// Notices waiting in its queue.
    pub queued: u64,
    /// When it last accepted one (Unix seconds).
    pub last_success: Option<f64>,
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

/// The notable events. Each method counts (and logs where an operator
/// should hear of it), so `/metrics` and the journal never disagree, and no
/// stage touches a counter directly.
impl Metrics {
    /// A message arrived from the broker.
    pub fn received(&self) {
        self.messages_in.fetch_add(1, Relaxed);
    }

    /// `n` messages were acknowledged to the broker.
    pub fn acked(&self, n: u64) {
        self.messages_acked.fetch_add(n, Relaxed);
    }

    /// A CONNACK. `down_for`: how long the broker was unreachable, when
    /// this is a reconnection; `attempts`: how many tries it took.
    pub fn broker_connected(
        &self,
        broker: &str,
        session_present: bool,
        resumed_subscriptions: bool,
        down_for: Option<std::time::Duration>,
        attempts: u32,
    ) {
        let n = self.mqtt_connects.fetch_add(1, Relaxed) + 1;
        self.mqtt_connected.store(true, Relaxed);
        self.mqtt_subscribed.store(resumed_subscriptions, Relaxed);
        match down_for {
            Some(t) if n > 1 => info!(
                broker = %broker,
                session_present,
                down_for = ?t,
                attempts,
                "reconnected to MQTT broker"
            ),
            _ => info!(broker = %broker, session_present, "connected to MQTT broker"),
        }
    }

    /// The broker granted a subscription.
    pub fn subscribed(&self, filter: &str, qos: impl std::fmt::Debug) {
        self.mqtt_subscribed.store(true, Relaxed);
        info!(filter = %filter, qos = ?qos, "subscribed");
    }

    /// The connection to the broker is gone (the source logs the outage).
    pub fn broker_lost(&self) {
        self.mqtt_connected.store(false, Relaxed);
        self.mqtt_subscribed.store(false, Relaxed);
    }

    /// A window flush wrote its windows and AQI points.
    pub fn windows_flushed(&self, f: &WindowFlush) {
        self.window_readings.fetch_add(f.readings, Relaxed);
        self.window_corrections.fetch_add(f.corrections, Relaxed);
        self.window_too_late.fetch_add(f.too_late, Relaxed);
        self.windows_written.fetch_add(f.windows, Relaxed);
        self.aqi_points.fetch_add(f.aqi_points, Relaxed);
        if f.windows + f.aqi_points > 0 || f.too_late > 0 {
            debug!(
                readings = f.readings,
                windows = f.windows,
                corrections = f.corrections,
                too_late = f.too_late,
                aqi = f.aqi_points,
                "windows flushed"
            );
        }
    }

    /// The alert engine's instance counts after a step.
    pub fn alert_instances(&self, firing: usize, pending: usize, notices: usize) {
        self.alerts_firing.store(firing as u64, Relaxed);
        self.alerts_pending.store(pending as u64, Relaxed);
        self.alert_notices.fetch_add(notices as u64, Relaxed);
    }

    fn receiver(&self, name: &str, f: impl FnOnce(&mut ReceiverStats)) {
        let mut all = self.receivers.lock().expect("metrics lock");
        match all.get_mut(name) {
            Some(r) => f(r),
            None => f(all.entry(name.to_owned()).or_default()),
        }
    }

    /// Readings of these kinds, newest at these times (ms), were written.
    pub fn readings_newest<'a>(&self, newest: impl IntoIterator<Item = (&'a str, i64)>) {
        let mut all = self.newest.lock().expect("metrics lock");
        for (kind, ms) in newest {
            match all.get_mut(kind) {
                Some(t) => *t = (*t).max(ms),
                None => {
                    all.insert(kind.to_owned(), ms);
                }
            }
        }
    }

    /// A held partition's lag (None: no longer held).
    /// This process takes its readings from JetStream only (a worker).
    pub fn set_jetstream_intake(&self) {
        self.jetstream_intake.store(true, Relaxed);
    }

    pub fn jetstream_intake(&self) -> bool {
        self.jetstream_intake.load(Relaxed)
    }

    pub fn partition_lag(&self, partition: u32, lag: Option<u64>) {
        let mut m = self.partition_lag.lock().expect("metrics lock");
        match lag {
            Some(n) => {
                m.insert(partition, n);
            }
            None => {
                m.remove(&partition);
            }
        }
    }

    /// Each held partition's lag.
    pub fn partition_lags(&self) -> std::collections::BTreeMap<u32, u64> {
        self.partition_lag.lock().expect("metrics lock").clone()
    }

    /// The reading time of the newest reading written, per kind (ms).
    pub fn newest_readings(&self) -> std::collections::BTreeMap<String, i64> {
        self.newest.lock().expect("metrics lock").clone()
    }

    /// Per receiver, by name.
    pub fn receiver_stats(&self) -> std::collections::BTreeMap<String, ReceiverStats> {
        self.receivers.lock().expect("metrics lock").clone()
    }

    /// Notices waiting in `receiver`'s queue: `n` were added (or, at
    /// start, found).
    pub fn notices_queued(&self, receiver: &str, n: u64) {
        self.alerts_queued.fetch_add(n, Relaxed);
        self.receiver(receiver, |r| r.queued += n);
    }

    /// A receiver was removed by a reload: its queue no longer counts (its
    /// files stay on disk).
    pub fn receiver_removed(&self, receiver: &str) {
        let gone = self
            .receivers
            .lock()
            .expect("metrics lock")
            .remove(receiver)
            .map_or(0, |r| r.queued);
        let _ = self
            .alerts_queued
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(gone)));
    }

    /// A notice left `receiver`'s queue (delivered, or moved to dead/).
    pub fn notice_dequeued(&self, receiver: &str) {
        let _ = self
            .alerts_queued
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        self.receiver(receiver, |r| r.queued = r.queued.saturating_sub(1));
    }

    /// A receiver accepted a notice. `after`: failed attempts before it.
    pub fn notice_delivered(&self, receiver: &str, id: &str, after: u32) {
        self.alerts_sent.fetch_add(1, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.receiver(receiver, |r| {
            r.sent += 1;
            r.last_success = Some(now);
        });
        if after > 0 {
            info!(receiver, after, "webhook receiver accepts again");
        }
        debug!(receiver, id, "webhook delivered");
    }

    /// A delivery attempt failed and will be retried; logged on the first
    /// failure and then at powers of two.
    pub fn notice_failed(&self, receiver: &str, id: &str, failures: u32, why: &str) {
        self.alerts_failed.fetch_add(1, Relaxed);
        self.receiver(receiver, |r| r.failed += 1);
        if failures == 0 || failures.is_power_of_two() {
            warn!(
                receiver,
                id,
                failures = failures + 1,
                why,
                "webhook delivery failed; retrying with backoff (the notice stays queued on disk)"
            );
        }
    }

    /// A receiver refused a notice (4xx); it is retried.
    pub fn notice_refused(&self, receiver: &str, id: &str, why: &str) {
        self.alerts_failed.fetch_add(1, Relaxed);
        self.receiver(receiver, |r| r.failed += 1);
        warn!(receiver, id, why, "webhook refused; retrying");
    }

    /// A notice refused `times` times was moved to the receiver's dead/.
    pub fn notice_dead(&self, receiver: &str, id: &str, times: u32, why: &str) {
        self.alerts_failed.fetch_add(1, Relaxed);
        self.alerts_dead.fetch_add(1, Relaxed);
        self.receiver(receiver, |r| {
            r.failed += 1;
            r.dead += 1;
        });
        error!(
            receiver,
            id, why, "webhook receiver refused this notice {times} times; moved to dead/"
        );
    }

    /// One InfluxDB POST is about to go out.
    pub fn write_sent(&self) {
        self.write_requests.fetch_add(1, Relaxed);
    }

    /// A write failed in a way that is retried.
    pub fn write_retried(&self) {
        self.write_retries.fetch_add(1, Relaxed);
    }

    /// `n` lines are stored (by InfluxDB, or by the archive alone).
    pub fn lines_stored(&self, n: u64) {
        self.lines_written.fetch_add(n, Relaxed);
    }

    /// `n` readings of a batch are stored.
    pub fn readings_stored(&self, n: u64) {
        self.points_written.fetch_add(n, Relaxed);
    }

    /// InfluxDB rejected something in a batch: it is split in two.
    pub fn batch_split(&self) {
        self.batch_splits.fetch_add(1, Relaxed);
    }

    /// InfluxDB refused even the quarantine record for a line.
    pub fn quarantine_refused(&self, error: &str, line: &str) {
        self.quarantine_refused.fetch_add(1, Relaxed);
        error!(
            error,
            line, "InfluxDB refused even the quarantine record; the point is dropped"
        );
    }

    /// Whether the sink takes writes (an answer other than "retry").
    pub fn sink_state(&self, ok: bool) {
        self.sink_ok.store(ok, Relaxed);
    }

    /// Bytes in the spool now.
    pub fn spool_size(&self, bytes: u64) {
        self.spool_bytes.store(bytes, Relaxed);
    }

    /// The arrival time (ms) of the oldest record the spool has not yet
    /// delivered; None when nothing waits.
    pub fn spool_oldest(&self, received_ms: Option<i64>) {
        self.spool_oldest_ms
            .store(received_ms.unwrap_or(0), Relaxed);
    }

    pub fn spool_oldest_ms(&self) -> Option<i64> {
        Some(self.spool_oldest_ms.load(Relaxed)).filter(|ms| *ms != 0)
    }

    /// How long the oldest record waiting in the spool has waited at
    /// `now_ms` (0 when none waits).
    pub fn spool_oldest_age_seconds(&self, now_ms: i64) -> f64 {
        self.spool_oldest_ms()
            .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0)
    }

    /// `n` messages were written to the spool (and are then acknowledged).
    pub fn spooled(&self, n: u64) {
        self.spool_records.fetch_add(n, Relaxed);
    }

    /// `bytes` corrupt bytes at `seq`/`offset` were skipped (and go to
    /// quarantine).
    pub fn spool_corrupt(&self, seq: u64, offset: u64, bytes: usize) {
        self.spool_corrupt_bytes.fetch_add(bytes as u64, Relaxed);
        error!(
            seq,
            offset,
            bytes,
            "spool: corrupt bytes (bad checksum or length) skipped to the next good record; quarantined"
        );
    }

    /// A window snapshot saved to `path` (a file, or a cluster partition's
    /// checkpoint), or not. A place that starts failing is an error line and
    /// makes the process not ready until it saves again.
    pub fn snapshot_saved(&self, ok: bool, path: &std::path::Path, error: &str) {
        let mut failing = self.snapshot_failures.lock().expect("metrics lock");
        let changed = if ok {
            failing.remove(path)
        } else {
            failing.insert(path.to_owned())
        };
        self.snapshot_failing.store(!failing.is_empty(), Relaxed);
        drop(failing);
        if changed && !ok {
            error!(to = %path.display(), error, "cannot save the window snapshot; what came after the last one is kept (in the spool, or a cluster partition's stream) and replayed after a restart");
        } else if changed {
            info!(to = %path.display(), "window snapshot saved again");
        }
    }

    /// An archive retention pass: partitions deleted, bytes left.
    pub fn archive_pruned(&self, partitions: u64, bytes: u64) {
        self.archive_pruned.fetch_add(partitions, Relaxed);
        self.archive_bytes.store(bytes, Relaxed);
    }

    /// An edge handed a message on to JetStream.
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Relaxed);
    }

    /// The partitions this worker works now.
    pub fn partitions_owned(&self, n: u64) {
        self.partitions_owned.store(n, Relaxed);
    }

    /// An archive compaction pass: files merged.
    pub fn archive_compacted(&self, files: u64) {
        self.archive_compacted.fetch_add(files, Relaxed);
    }

    pub fn spool_blocked(&self, blocked: bool) {
        self.spool_blocked.store(blocked, Relaxed);
    }

    pub fn spool_full(&self, full: bool) {
        self.spool_full.store(full, Relaxed);
    }
}

/// What one window flush did, for [`Metrics::windows_flushed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowFlush {
    pub readings: u64,
    /// Window points written (first writes and corrections).
    pub windows: u64,
    pub corrections: u64,
    pub too_late: u64,
    pub aqi_points: u64,
}
