//! The worker's source: for each partition it holds a lease on, a durable
//! pull consumer (`p<N>`, shared by whoever holds the partition) whose
//! messages go into the pipeline like MQTT messages; each is acknowledged
//! to JetStream once the pipeline has stored it (its ticket is done). A
//! partition whose lease goes is stopped: nothing more is taken from it,
//! and what was taken but not stored is redelivered to the next holder
//! after `cluster.ack_wait`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::route;
use crate::envelope::{Ack, Message, Tickets};
use crate::metrics::Metrics;

/// Messages a partition may have handed on and not yet stored.
const IN_FLIGHT: i64 = 20_000;
/// How often a partition's lag is asked of JetStream.
const LAG_EVERY: Duration = Duration::from_secs(5);

pub struct Source {
    pub stream: jetstream::stream::Stream,
    pub ack_wait: Duration,
    pub metrics: Arc<Metrics>,
}

impl Source {
    /// Works the partitions `owned` names until stopped; `working` says
    /// which are running (a lease is freed only once its partition
    /// stopped).
    pub async fn run(
        self,
        mut owned: watch::Receiver<BTreeSet<u32>>,
        working: watch::Sender<BTreeSet<u32>>,
        tx: mpsc::Sender<Message>,
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
                let task = tokio::spawn(partition(
                    self.stream.clone(),
                    p,
                    self.ack_wait,
                    tx.clone(),
                    cancel.clone(),
                    self.metrics.clone(),
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

/// Takes partition `p`'s messages into the pipeline until cancelled.
async fn partition(
    stream: jetstream::stream::Stream,
    p: u32,
    ack_wait: Duration,
    tx: mpsc::Sender<Message>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let name = format!("p{p}");
    // Acknowledged in order once stored, by a task of its own.
    let (acks, mut pending) =
        mpsc::unbounded_channel::<(tokio::sync::oneshot::Receiver<()>, jetstream::Message)>();
    let acker = tokio::spawn(async move {
        while let Some((stored, m)) = pending.recv().await {
            if stored.await.is_ok()
                && let Err(e) = m.ack().await
            {
                warn!(error = %e, "JetStream ack failed; the message will be redelivered (and rewritten)");
            }
        }
    });
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    'consume: while !cancel.is_cancelled() {
        let consumer = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: route::partition_filter(p),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_ack_pending: IN_FLIGHT,
                    ..Default::default()
                },
            )
            .await;
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                warn!(partition = p, error = %e, "cannot consume the partition; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => continue 'consume,
                    _ = cancel.cancelled() => break 'consume,
                }
            }
        };
        let messages = consumer.messages().await.map_err(|e| e.to_string());
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(partition = p, error = %e, "cannot consume the partition; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => continue 'consume,
                    _ = cancel.cancelled() => break 'consume,
                }
            }
        };
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'consume,
                _ = lag_tick.tick() => {
                    if let Ok(info) = consumer.get_info().await {
                        metrics.partition_lag(p, Some(info.num_pending + info.num_ack_pending as u64));
                    }
                    continue;
                }
                next = messages.next() => next,
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(partition = p, error = %e, "partition consumer error; resubscribing");
                    continue 'consume;
                }
                None => continue 'consume,
            };
            backoff =
                crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            let topic = header(route::TOPIC_HEADER).unwrap_or_default();
            let received_ms = header(route::RECEIVED_HEADER)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            let payload_len = header(route::LENGTH_HEADER)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (ticket, stored) = Tickets::global().issue();
            let msg = Message {
                topic,
                payload: Bytes::clone(&m.payload),
                ack: Ack::Ticket(ticket),
                received_ms,
                payload_len,
                corrupt: None,
            };
            if tx.send(msg).await.is_err() {
                Tickets::global().forget(ticket);
                break 'consume;
            }
            let _ = acks.send((stored, m));
        }
    }
    drop(acks);
    let _ = acker.await;
    metrics.partition_lag(p, None);
}
