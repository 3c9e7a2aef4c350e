//! The pipeline stage between source and sinks: decode and validate each
//! message into rows (readings and quarantine records), write the batch,
//! then acknowledge its messages.
//!
//! Batching is group commit: the first message opens a batch, everything
//! already waiting joins it (up to the size limits, or until
//! `batch_linger` passes), and the batch is written. While a write is in
//! flight, new messages queue in the bounded channel; when it is full the
//! source stops reading the broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::decode::Decoder;
use crate::envelope::{Ack, AckToken, Message, Pos};
use crate::metrics::Metrics;
use crate::reading::{Decoded, Point, Reason, Reject};
use crate::row::{Quarantined, Row, Rows};
use crate::sink::Sinks;
use crate::source::mqtt::Acker;
use crate::spool;

/// Batch limits.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_lines: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

pub struct Pipeline {
    pub decoder: Decoder,
    pub sinks: Sinks,
    /// Acknowledges to the broker (messages straight from MQTT).
    pub acker: Acker,
    /// Marks spool records delivered (messages read from the spool).
    pub cursor: Option<spool::Cursor>,
    pub limits: BatchLimits,
    /// Leading payload bytes kept in quarantine records.
    pub sample_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// The window stage, which gets every stored point after its batch is
    /// acknowledged. Sending waits while the stage is behind.
    pub windows: Option<mpsc::Sender<(Vec<Point>, Option<Pos>)>>,
    /// The restored window snapshot's position: replayed records up to it
    /// are in the windows already, and are not sent again.
    pub windows_after: Option<Pos>,
    /// The series taken in, bounded (`validation.max_series`).
    pub series: SeriesBound,
    /// Quarantine records are stamped from their message (its arrival
    /// time and log position), not by the sinks' clock: a cluster
    /// partition, replayed from its checkpoint, writes the same records.
    pub stamp_from_log: bool,
}

/// The distinct series (kind and tags) and field names taken in, up to a
/// bound each: a point of a new series, or with a new field name, past it
/// is quarantined as `cardinality`. Both are held as 64-bit hashes (8
/// bytes each, not their names).
#[derive(Debug, Default)]
pub struct SeriesBound {
    known: std::collections::HashSet<u64>,
    /// 0: no bound.
    max: usize,
    fields: std::collections::HashSet<u64>,
    /// 0: no bound.
    max_fields: usize,
}

/// Why a point was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Series,
    Field,
}

impl SeriesBound {
    pub fn new(max: usize, max_fields: usize) -> Self {
        SeriesBound {
            known: Default::default(),
            max,
            fields: Default::default(),
            max_fields,
        }
    }

    fn hash(x: impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher;
        // Fixed seed: the same series hash the same in every process.
        foldhash::fast::FixedState::with_seed(0).hash_one(x)
    }

    /// Whether `p`'s series and field names are known or may still be
    /// added (they are then).
    fn admit(&mut self, p: &Point) -> Result<(), Refused> {
        if self.max_fields > 0 {
            let new: Vec<u64> = p
                .fields
                .iter()
                .map(|(name, _)| Self::hash(name))
                .filter(|h| !self.fields.contains(h))
                .collect();
            if !new.is_empty() && self.fields.len() + new.len() > self.max_fields {
                return Err(Refused::Field);
            }
            if self.max == 0 || self.known.contains(&Self::hash((&p.kind, &p.tags))) {
                self.fields.extend(new);
                return Ok(());
            }
            if self.known.len() >= self.max {
                return Err(Refused::Series);
            }
            self.fields.extend(new);
        }
        if self.max == 0 {
            return Ok(());
        }
        let key = Self::hash((&p.kind, &p.tags));
        if self.known.contains(&key) {
            return Ok(());
        }
        if self.known.len() >= self.max {
            return Err(Refused::Series);
        }
        self.known.insert(key);
        Ok(())
    }
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    rows: Rows,
    /// Rows that are readings (the rest are quarantine records).
    readings: usize,
    /// Per row: whether it goes on to the window stage.
    to_windows: Vec<bool>,
    acks: Vec<AckToken>,
    /// Senders told once the batch is stored (without a spool).
    tickets: Vec<u64>,
    /// Furthest spool position in the batch.
    spooled: Option<Pos>,
}

/// The time of a message's `j`th quarantine record, the same each time
/// it is handled: its arrival time (ms), and within that millisecond its
/// stream sequence (mod 10,000) and `j` (up to 99), so records of
/// different messages do not overwrite each other.
fn log_time_ns(received_ms: i64, pos: Pos, j: usize) -> i64 {
    let within = (pos.seq % 10_000) as i64 * 100 + j.min(99) as i64;
    received_ms.saturating_mul(1_000_000).saturating_add(within)
}

/// The newest reading time per kind among `rows` (few kinds: a list).
fn newest_per_kind(rows: &[Row]) -> Vec<(&str, i64)> {
    let mut newest: Vec<(&str, i64)> = Vec::new();
    for row in rows {
        if let Row::Reading(p) = row {
            match newest.iter_mut().find(|(k, _)| *k == p.kind) {
                Some((_, t)) => *t = (*t).max(p.time_ms),
                None => newest.push((&p.kind, p.time_ms)),
            }
        }
    }
    newest
}

impl Pipeline {
    /// Run until the source closes the channel; every message received is
    /// written and acknowledged before this returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Batch::default();
        while let Some(first) = rx.recv().await {
            self.add(&mut batch, first);
            let deadline = Instant::now() + self.limits.linger;
            while batch.rows.len() < self.limits.max_lines
                && batch.rows.size() < self.limits.max_bytes
            {
                let next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) if self.limits.linger.is_zero() => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::time::timeout_at(deadline, rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                };
                match next {
                    Some(m) => self.add(&mut batch, m),
                    None => break,
                }
            }
            self.flush(&mut batch).await;
        }
    }

    fn add(&mut self, batch: &mut Batch, msg: Message) {
        let payload_len = msg.payload_len.max(msg.payload.len());
        let mut decoded = match &msg.corrupt {
            Some(detail) => Decoded::rejected(Reason::SpoolCorrupt, detail.clone()),
            // Cut short by the spool: too big anyway.
            None if payload_len > msg.payload.len() => self.decoder.oversized(payload_len),
            None => self
                .decoder
                .decode(&msg.topic, &msg.payload, msg.received_ms),
        };
        let (max, max_fields) = (self.series.max, self.series.max_fields);
        decoded.points.retain(|p| match self.series.admit(p) {
            Ok(()) => true,
            Err(why) => {
                decoded.rejects.push(Reject::new(
                    Reason::Cardinality,
                    match why {
                        Refused::Series => format!(
                            "{max} series taken in already (validation.max_series); a new one is not stored"
                        ),
                        Refused::Field => format!(
                            "{max_fields} field names taken in already (validation.max_fields); a reading with a new one is not stored"
                        ),
                    },
                ));
                false
            }
        });
        let in_windows =
            matches!((msg.ack, self.windows_after), (Ack::Spool(p), Some(after)) if p <= after);
        let to_windows = self.windows.is_some() && !in_windows;
        batch.readings += decoded.points.len();
        for p in decoded.points {
            batch.rows.push(Row::Reading(p));
            batch.to_windows.push(to_windows);
        }
        for (j, r) in decoded.rejects.into_iter().enumerate() {
            self.metrics.quarantined(r.reason, &msg.topic, &r.detail);
            let time_ns = match msg.ack {
                Ack::Spool(pos) if self.stamp_from_log => {
                    Some(log_time_ns(msg.received_ms, pos, j))
                }
                _ => None,
            };
            batch.rows.push(Row::Quarantined(Quarantined {
                reason: r.reason,
                detail: r.detail,
                topic: msg.topic.clone(),
                sample: msg.payload[..msg.payload.len().min(self.sample_bytes)].to_vec(),
                payload_bytes: payload_len,
                time_ns,
            }));
            batch.to_windows.push(false);
        }
        match msg.ack {
            Ack::Mqtt(t) => batch.acks.push(t),
            Ack::Spool(p) => batch.spooled = batch.spooled.max(Some(p)),
            Ack::Ticket(id) => batch.tickets.push(id),
        }
    }

    async fn flush(&self, batch: &mut Batch) {
        if !batch.rows.is_empty() {
            let rejected = self.sinks.write(&batch.rows).await;
            // A rejected line is counted under quarantine reason "rejected";
            // assume readings first (quarantine records are rarely refused).
            let stored = batch.readings.saturating_sub(rejected);
            self.metrics.readings_stored(stored as u64);
            self.metrics
                .readings_newest(newest_per_kind(batch.rows.as_slice()));
        }
        self.acker.ack(&batch.acks);
        crate::envelope::Tickets::global().done(&batch.tickets);
        batch.tickets.clear();
        let spooled = batch.spooled.take();
        if let (Some(cursor), Some(pos)) = (&self.cursor, spooled) {
            cursor.delivered(pos);
        }
        batch.acks.clear();
        batch.readings = 0;
        let points: Vec<Point> = batch
            .rows
            .drain()
            .zip(batch.to_windows.drain(..))
            .filter_map(|(row, to_windows)| match row {
                Row::Reading(p) if to_windows => Some(p),
                _ => None,
            })
            .collect();
        // A batch of quarantine records alone still moves the window
        // stage's position on (what its snapshot says is done).
        if let Some(tx) = &self.windows
            && (!points.is_empty() || spooled.is_some())
        {
            // Only fails when the stage has stopped (shutdown).
            let _ = tx.send((points, spooled)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sensor: &str) -> Point {
        Point {
            kind: "air".into(),
            coverage: Default::default(),
            tags: vec![("sensor".into(), sensor.into())],
            time_ms: 0,
            fields: vec![("pm25".into(), 1.0)],
        }
    }

    /// A quarantine record stamped from the log gets the same time each
    /// time its message is handled, and records of other messages (or a
    /// message's other records) in the same millisecond get others.
    #[test]
    fn quarantine_times_from_the_log_repeat_and_do_not_collide() {
        let at = |seq, j| log_time_ns(1_767_542_400_123, Pos { seq, offset: 0 }, j);
        assert_eq!(at(7, 0), at(7, 0));
        assert_eq!(at(7, 0), 1_767_542_400_123_000_700);
        let times: std::collections::HashSet<i64> = (1..=9_999)
            .flat_map(|seq| [at(seq, 0), at(seq, 1)])
            .collect();
        assert_eq!(times.len(), 2 * 9_999);
        assert!(times.iter().all(|t| t / 1_000_000 == 1_767_542_400_123));
    }

    /// Past the bound, a new series is refused; the known ones go on.
    #[test]
    fn new_series_past_the_bound_are_refused_and_known_ones_go_on() {
        let mut b = SeriesBound::new(2, 0);
        assert_eq!(b.admit(&point("a")), Ok(()));
        assert_eq!(b.admit(&point("b")), Ok(()));
        assert_eq!(b.admit(&point("c")), Err(Refused::Series));
        assert_eq!(b.admit(&point("a")), Ok(()));
        assert_eq!(b.admit(&point("b")), Ok(()));
        let mut free = SeriesBound::new(0, 0);
        assert!((0..1000).all(|i| free.admit(&point(&i.to_string())).is_ok()));
    }

    /// Past the field-name bound, a reading with a new field name is
    /// refused, whatever its series; known names go on. A refused series
    /// adds no field names.
    #[test]
    fn new_field_names_past_the_bound_are_refused() {
        let with = |sensor: &str, fields: &[&str]| Point {
            fields: fields.iter().map(|f| (f.to_string(), 1.0)).collect(),
            ..point(sensor)
        };
        let mut b = SeriesBound::new(2, 3);
        assert_eq!(b.admit(&with("a", &["pm25", "pm10"])), Ok(()));
        assert_eq!(
            b.admit(&with("a", &["pm25", "x1", "x2"])),
            Err(Refused::Field)
        );
        assert_eq!(b.admit(&with("b", &["x1"])), Ok(()));
        assert_eq!(b.admit(&with("b", &["x2"])), Err(Refused::Field));
        assert_eq!(b.admit(&with("c", &["pm25"])), Err(Refused::Series));
        assert_eq!(b.admit(&with("a", &["pm10", "x1", "pm25"])), Ok(()));
        let mut free = SeriesBound::new(0, 0);
        assert!((0..1000).all(|i| free.admit(&with("a", &[&i.to_string()])).is_ok()));
    }
}
