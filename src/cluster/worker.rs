//! The worker's source: each partition it holds a lease on runs in a lane
//! of its own (a pipeline and a window engine, built by the process:
//! [`Lanes`]), resumed from the partition's checkpoint.
//!
//! A lane's state — its open windows and the stream sequence they include
//! everything up to — is checkpointed to `lt_state` (`state`) with
//! compare-and-set, and only after everything up to that sequence is
//! stored. A new owner loads the checkpoint and reads the partition from
//! the sequence after it, in order (an ordered consumer: nothing to
//! acknowledge, the checkpoint is the acknowledgement), so a worker's
//! death loses nothing and counts nothing twice: what it stored after its
//! last checkpoint is stored again (the same points, overwritten) and
//! aggregated once, by the next owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::route;
use super::state::{Checkpoints, SaveError, Saved};
use crate::envelope::{Ack, Message, Pos};
use crate::metrics::Metrics;
use crate::reading::Point;
use crate::window::stage::Checkpoint;

/// A partition's way through the pipeline.
pub struct Lane {
    /// Its messages, in stream order, each acknowledged as
    /// `Ack::Spool(Pos { seq: <stream sequence>, offset: 0 })`.
    pub input: mpsc::Sender<Message>,
    /// Finishes once the input is closed and what it took is stored and
    /// checkpointed.
    pub done: tokio::task::JoinHandle<()>,
}

/// Builds the lane of each partition a worker starts.
pub trait Lanes: Send + Sync + 'static {
    /// Partition `p`'s lane, its windows and alerts restored from
    /// `saved`; its checkpoints go to `save`, each once everything up to
    /// its position is stored.
    fn start(&self, p: u32, saved: &Saved, save: mpsc::Sender<Checkpoint>) -> Lane;
}

/// How often a partition's lag is updated (in messages) while it has a
/// backlog; at once when it has caught up.
const LAG_EVERY: u64 = 256;
/// A partition's consumer idle for a whole period of this while its lag
/// shows more than 0: the lag is checked against the stream (`drained`). The per-message
/// count can end above 0 on a drained partition (seen under load: stuck
/// at 1 with every message taken).
const LAG_CHECK_IDLE: Duration = Duration::from_secs(2);

pub struct Source {
    pub stream: jetstream::stream::Stream,
    /// The city scope's stream, when the city unit is worked
    /// (`scope::city_unit`).
    pub scope: Option<(u32, jetstream::stream::Stream)>,
    pub checkpoints: Checkpoints,
    pub lanes: Arc<dyn Lanes>,
    pub metrics: Arc<Metrics>,
}

impl Source {
    /// Works the partitions `owned` names until stopped; `working` says
    /// which are running (a lease is freed only once its partition
    /// stopped and saved its checkpoint).
    pub async fn run(
        self,
        mut owned: watch::Receiver<BTreeSet<u32>>,
        working: watch::Sender<BTreeSet<u32>>,
        stop: CancellationToken,
    ) {
        let mut running: BTreeMap<u32, (CancellationToken, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        loop {
            let want = owned.borrow_and_update().clone();
            let gone: Vec<u32> = running
                .keys()
                .filter(|p| !want.contains(p))
                .copied()
                .collect();
            for p in gone {
                if let Some((cancel, task)) = running.remove(&p) {
                    cancel.cancel();
                    let _ = task.await;
                    info!(partition = p, "partition stopped");
                }
            }
            let new: Vec<u32> = want
                .iter()
                .filter(|p| !running.contains_key(p))
                .copied()
                .collect();
            for p in new {
                let cancel = stop.child_token();
                let (stream, filter) = match &self.scope {
                    Some((unit, scope)) if *unit == p => {
                        (scope.clone(), super::scope::SUBJECT.to_owned())
                    }
                    _ => (self.stream.clone(), route::partition_filter(p)),
                };
                let task = tokio::spawn(partition(
                    Partition {
                        stream,
                        filter,
                        p,
                        checkpoints: self.checkpoints.clone(),
                        lanes: self.lanes.clone(),
                        metrics: self.metrics.clone(),
                    },
                    cancel.clone(),
                ));
                running.insert(p, (cancel, task));
                info!(partition = p, "partition started");
            }
            let now: BTreeSet<u32> = running.keys().copied().collect();
            self.metrics.partitions_owned(now.len() as u64);
            working.send_replace(now);
            tokio::select! {
                changed = owned.changed() => if changed.is_err() { break },
                _ = stop.cancelled() => break,
            }
        }
        for (_, (cancel, task)) in running {
            cancel.cancel();
            let _ = task.await;
        }
        working.send_replace(BTreeSet::new());
    }
}

struct Partition {
    stream: jetstream::stream::Stream,
    /// The subjects it reads.
    filter: String,
    p: u32,
    checkpoints: Checkpoints,
    lanes: Arc<dyn Lanes>,
    metrics: Arc<Metrics>,
}

/// Works partition `p` until cancelled: from its checkpoint, through a
/// lane, and again from the stored checkpoint whenever another worker
/// turns out to have written it.
async fn partition(w: Partition, cancel: CancellationToken) {
    let p = w.p;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !cancel.is_cancelled() {
        let (revision, saved) = match w.checkpoints.load(p).await {
            Ok(x) => x,
            Err(e) => {
                warn!(partition = p, error = %e, "cannot load the partition's checkpoint; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => continue,
                    _ = cancel.cancelled() => break,
                }
            }
        };
        let (save_tx, save_rx) = mpsc::channel(1);
        let lane = w.lanes.start(p, &saved, save_tx);
        let moved_on = CancellationToken::new();
        let saver = tokio::spawn(keep_checkpoints(
            w.checkpoints.clone(),
            p,
            revision,
            save_rx,
            moved_on.clone(),
        ));
        info!(
            partition = p,
            after = saved.seq,
            "partition resumed from its checkpoint"
        );
        let either = CancellationToken::new();
        let (a, b, e) = (cancel.clone(), moved_on.clone(), either.clone());
        let watch = tokio::spawn(async move {
            tokio::select! { _ = a.cancelled() => {}, _ = b.cancelled() => {} }
            e.cancel();
        });
        consume(&w, saved.seq, &lane.input, &either).await;
        watch.abort();
        drop(lane.input);
        let _ = lane.done.await;
        let _ = saver.await;
        if moved_on.is_cancelled() && !cancel.is_cancelled() {
            warn!(
                partition = p,
                "another worker saved this partition's checkpoint; starting again from it"
            );
        }
    }
    w.metrics.partition_lag(p, None);
}

/// Saves each checkpoint the lane hands over, over the revision last read
/// or written; on a conflict, cancels `moved_on` (the lane is stopped and
/// the partition starts again from what is stored).
async fn keep_checkpoints(
    store: Checkpoints,
    p: u32,
    mut revision: u64,
    mut rx: mpsc::Receiver<Checkpoint>,
    moved_on: CancellationToken,
) {
    while let Some(c) = rx.recv().await {
        let saved = Saved {
            seq: c.pos.seq,
            windows: c.bytes,
            alerts: c.alerts,
        };
        let result = if moved_on.is_cancelled() {
            Err(SaveError::Conflict)
        } else {
            store.save(p, revision, &saved).await
        };
        let answer = match result {
            Ok(r) => {
                revision = r;
                Ok(())
            }
            Err(e) => {
                if matches!(e, SaveError::Conflict) {
                    moved_on.cancel();
                }
                Err(format!("checkpoint of partition {p}: {e}"))
            }
        };
        let _ = c.saved.send(answer);
    }
}

/// Reads partition `p` from the sequence after `last`, in order, into the
/// lane until `stop`.
async fn consume(
    w: &Partition,
    mut last: u64,
    input: &mpsc::Sender<Message>,
    stop: &CancellationToken,
) {
    let p = w.p;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut taken = 0u64;
    // The lag last shown, and the count taken at the last idle check (no
    // timer per message: a check every LAG_CHECK_IDLE, acting only when
    // nothing was taken since the one before).
    let mut shown = 0u64;
    let mut taken_at_check = 0u64;
    let mut idle_check = tokio::time::interval(LAG_CHECK_IDLE);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'consume: while !stop.is_cancelled() {
        let deliver_policy = match last {
            0 => consumer::DeliverPolicy::All,
            seq => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        let consumer = w
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: w.filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string());
        let messages = match consumer {
            Ok(c) => {
                // What is waiting now (messages update it as they come).
                shown = c.cached_info().num_pending;
                w.metrics.partition_lag(p, Some(shown));
                c.messages().await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(partition = p, error = %e, "cannot read the partition; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => continue 'consume,
                    _ = stop.cancelled() => break 'consume,
                }
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'consume,
                next = messages.next() => next,
                _ = idle_check.tick() => {
                    let idle = std::mem::replace(&mut taken_at_check, taken) == taken;
                    if idle && shown > 0 {
                        match drained(&w.stream, &w.filter, last).await {
                            Ok(true) => {
                                shown = 0;
                                w.metrics.partition_lag(p, Some(0));
                            }
                            Ok(false) => {}
                            Err(e) => debug!(partition = p, error = %e, "cannot check the partition's lag"),
                        }
                    }
                    continue;
                }
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(partition = p, error = %e, "partition consumer error; reading again from the last sequence taken");
                    continue 'consume;
                }
                None => continue 'consume,
            };
            backoff =
                crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            let Ok(info) = m.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq <= last {
                continue;
            }
            let msg = lane_message(&m, seq);
            tokio::select! {
                sent = input.send(msg) => if sent.is_err() { break 'consume },
                _ = stop.cancelled() => break 'consume,
            }
            last = seq;
            taken += 1;
            if pending == 0 || taken % LAG_EVERY == 0 {
                shown = pending;
                w.metrics.partition_lag(p, Some(pending));
            }
        }
    }
}

/// Whether the newest message on `filter` is one taken already (sequence
/// `last` or before), or there is none: asked of the stream itself, not of
/// a consumer's count.
pub async fn drained(
    stream: &jetstream::stream::Stream,
    filter: &str,
    last: u64,
) -> Result<bool, String> {
    use jetstream::stream::LastRawMessageErrorKind;
    let newest = tokio::time::timeout(
        Duration::from_secs(5),
        stream.get_last_raw_message_by_subject(filter),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_owned())?;
    match newest {
        Ok(m) => Ok(m.sequence <= last),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// A partition's message as the pipeline takes it (the edge's headers:
/// the MQTT topic, its arrival time and its length as published).
fn lane_message(m: &jetstream::Message, seq: u64) -> Message {
    let header = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    Message {
        topic: header(route::TOPIC_HEADER).unwrap_or_default(),
        payload: Bytes::clone(&m.payload),
        ack: Ack::Spool(Pos { seq, offset: 0 }),
        received_ms: header(route::RECEIVED_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        payload_len: header(route::LENGTH_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        corrupt: None,
    }
}

/// A lane's checkpoints with windows off: the newest position stored,
/// every `every` and when the lane closes.
pub async fn progress(
    mut rx: mpsc::Receiver<(Vec<Point>, Option<Pos>)>,
    save: mpsc::Sender<Checkpoint>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last, mut saved) = (None, None);
    loop {
        let closed = tokio::select! {
            next = rx.recv() => match next {
                Some((_, pos)) => { last = last.max(pos); continue }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if let Some(pos) = last.filter(|_| last != saved) {
            let (tx, answer) = tokio::sync::oneshot::channel();
            let c = Checkpoint {
                pos,
                bytes: Vec::new(),
                alerts: Vec::new(),
                saved: tx,
            };
            if save.send(c).await.is_ok() && matches!(answer.await, Ok(Ok(()))) {
                saved = last;
            }
        }
        if closed {
            break;
        }
    }
}
