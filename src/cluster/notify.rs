//! Alerts across workers: each partition's alert engine publishes its
//! notices to the stream `LT_ALERTS` with the notice's event id as the
//! deduplication id ([`publisher`]), and one notifier — whoever holds the
//! `notifier` lease — takes them into its durable outbox, which delivers
//! them to the webhook receivers as a single process does ([`Notifier`]).
//!
//! A partition replayed from its checkpoint produces the notices after it
//! again, with the same ids: JetStream drops the second copy within its
//! duplicate window, and the outbox drops an id it already holds or
//! delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alert::Notice;
use crate::alert::outbox::Outbox;
use crate::alert::stage::Forward;
use crate::config::ClusterConfig;

pub const ALERTS: &str = "LT_ALERTS";
pub const SUBJECT: &str = "lt.alerts";
/// The notifier's lease, in the partitions' lease bucket.
const LEASE: &str = "notifier";
/// The notifier's durable consumer.
const CONSUMER: &str = "notifier";

/// The alerts stream, made if missing.
pub async fn stream(js: &jetstream::Context, c: &ClusterConfig) -> jetstream::stream::Stream {
    super::log_stream(js, c, (ALERTS, SUBJECT), 30).await
}

/// Publishes each batch of notices (deduplication id: the event id),
/// answering once JetStream has acknowledged every one; a publish that
/// fails is sent again until it is acknowledged.
pub async fn publisher(js: jetstream::Context, mut rx: mpsc::Receiver<Forward>) {
    while let Some(Forward { notices, done }) = rx.recv().await {
        for n in &notices {
            let body = bytes::Bytes::from(serde_json::to_vec(n).unwrap_or_default());
            super::publish_until_acked(&js, SUBJECT, &n.event_id, body, "a notice").await;
        }
        let _ = done.send(());
    }
}

/// The one process that takes the alerts stream into its outbox, by lease.
pub struct Notifier {
    pub stream: jetstream::stream::Stream,
    pub leases: kv::Store,
    pub me: String,
    pub ttl: Duration,
    pub outbox: Arc<Outbox>,
}

impl Notifier {
    /// Claims the lease whenever it is free; while holding it (renewed
    /// every third of its life, given up at three quarters of it without
    /// a renewal), takes notices into the outbox.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let sent = Instant::now();
            let Ok(revision) = self.leases.create(LEASE, self.me.clone().into()).await else {
                continue;
            };
            info!(instance = %self.me, "notifier lease acquired");
            let lost = CancellationToken::new();
            let taking = tokio::spawn(take(self.stream.clone(), self.outbox.clone(), lost.clone()));
            let why = self.hold(revision, sent, &mut tick, &stop).await;
            lost.cancel();
            let _ = taking.await;
            match why {
                Held::Stopped(revision) => {
                    let _ = self
                        .leases
                        .delete_expect_revision(LEASE, Some(revision))
                        .await;
                    info!(instance = %self.me, "notifier lease released");
                }
                Held::Lost(why) => warn!(instance = %self.me, why, "notifier lease lost"),
            }
        }
    }

    /// Renews the lease until stopped or it is lost.
    async fn hold(
        &self,
        mut revision: u64,
        mut sent: Instant,
        tick: &mut tokio::time::Interval,
        stop: &CancellationToken,
    ) -> Held {
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return Held::Stopped(revision),
            }
            if sent.elapsed() >= self.ttl * 3 / 4 {
                return Held::Lost("not renewed in time".into());
            }
            let at = Instant::now();
            match self
                .leases
                .update(LEASE, self.me.clone().into(), revision)
                .await
            {
                Ok(r) => (revision, sent) = (r, at),
                Err(e) => return Held::Lost(e.to_string()),
            }
        }
    }
}

enum Held {
    Stopped(u64),
    Lost(String),
}

/// Takes notices from the stream into the outbox, each acknowledged once
/// the outbox has it on disk; waits while a receiver's queue is full.
async fn take(stream: jetstream::stream::Stream, outbox: Arc<Outbox>, stop: CancellationToken) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    'consume: while !stop.is_cancelled() {
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string());
        let messages = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the alerts stream; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => continue 'consume,
                    _ = stop.cancelled() => break 'consume,
                }
            }
        };
        loop {
            if outbox.full() {
                tokio::select! {
                    _ = outbox.room() => {}
                    _ = stop.cancelled() => break 'consume,
                }
            }
            let m = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'consume,
                next = messages.next() => match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        warn!(error = %e, "alerts stream consumer error; resubscribing");
                        continue 'consume;
                    }
                    None => continue 'consume,
                },
            };
            let notice: Notice = match serde_json::from_slice(&m.payload) {
                Ok(n) => n,
                Err(e) => {
                    error!(error = %e, "a message on the alerts stream is not a notice; dropped");
                    let _ = m.ack().await;
                    continue;
                }
            };
            let o = outbox.clone();
            let queued = tokio::task::spawn_blocking(move || o.enqueue(&notice))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
            match queued {
                Ok(_) => {
                    if let Err(e) = m.ack().await {
                        warn!(error = %e, "cannot acknowledge a notice; it comes again (the outbox drops the copy)");
                    }
                }
                Err(e) => {
                    // Not acknowledged: JetStream sends it again.
                    error!(error = %e, "cannot write a notice to the outbox; it comes again");
                }
            }
        }
    }
}
