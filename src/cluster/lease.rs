//! Partition leases in a JetStream key-value bucket: each worker claims
//! partitions (`create`: only if no one holds it), renews them
//! (`update` with the revision it holds: compare-and-set), and releases
//! what is beyond its share. The bucket's `max_age` is the lease's life: a
//! lease not renewed lapses and its key goes. A holder stops working a
//! partition before its lease can lapse (a local deadline three quarters
//! of the way), so two workers never hold one partition at once, even a
//! worker that was paused or cut off from NATS.
//!
//! Shares: live workers heartbeat into a second bucket (same `max_age`);
//! each takes `ceil(partitions / live)`, claiming free partitions up to it
//! and releasing those above it, so the partitions spread evenly and move
//! when a worker joins or dies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const LEASES: &str = "lt_leases";
pub const MEMBERS: &str = "lt_members";

/// A worker's leases.
pub struct Leases {
    leases: kv::Store,
    members: kv::Store,
    me: String,
    partitions: u32,
    ttl: Duration,
    /// Held partitions: revision of our last write, when it was sent.
    held: BTreeMap<u32, (u64, Instant)>,
    owned: watch::Sender<BTreeSet<u32>>,
    /// The partitions the worker is working now (it follows `owned`): a
    /// lease is freed only once its partition has stopped.
    working: Option<watch::Receiver<BTreeSet<u32>>>,
}

fn key(p: u32) -> String {
    format!("p{p}")
}

/// The buckets (created if missing), with `ttl` as their entries' life.
/// Their streams are made here as the key-value convention has them
/// (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one message per key): the
/// client's own bucket creation asks for account details that NATS 2.9
/// (Debian 12's) answers in a form it cannot read.
pub async fn buckets(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> (kv::Store, kv::Store) {
    let mut out = Vec::new();
    for bucket in [LEASES, MEMBERS] {
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            duplicate_window: ttl.min(Duration::from_secs(120)),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        super::ensure_stream(js, config).await;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let store = loop {
            match js.get_key_value(bucket).await {
                Ok(store) => break store,
                Err(e) => {
                    warn!(bucket, error = %e, "JetStream bucket not ready; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        };
        out.push(store);
    }
    let members = out.pop().expect("two buckets");
    let leases = out.pop().expect("two buckets");
    (leases, members)
}

impl Leases {
    pub fn new(
        (leases, members): (kv::Store, kv::Store),
        me: String,
        partitions: u32,
        ttl: Duration,
    ) -> (Leases, watch::Receiver<BTreeSet<u32>>) {
        let (owned, rx) = watch::channel(BTreeSet::new());
        (
            Leases {
                leases,
                members,
                me,
                partitions,
                ttl,
                held: BTreeMap::new(),
                owned,
                working: None,
            },
            rx,
        )
    }

    /// What the worker is working now (without it, a lease is freed as
    /// soon as it is dropped from the owned set).
    pub fn follow(&mut self, working: watch::Receiver<BTreeSet<u32>>) {
        self.working = Some(working);
    }

    /// Renews, balances and claims every third of a lease's life until
    /// stopped; then releases every lease (another worker takes over at
    /// once instead of after the lease's life).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.round().await,
                _ = stop.cancelled() => break,
            }
        }
        let held: Vec<u32> = self.held.keys().copied().collect();
        self.owned.send_replace(BTreeSet::new());
        for p in held {
            self.release(p, "stopping").await;
        }
    }

    /// One round: fence what could have lapsed, heartbeat, renew, then
    /// give up or claim towards this worker's share.
    async fn round(&mut self) {
        // A lease whose last renewal went out more than 3/4 of its life
        // ago may lapse before the next: stop working it now.
        let deadline = self.ttl * 3 / 4;
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, (_, sent))| sent.elapsed() >= deadline)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.lose(p, "not renewed in time");
        }
        let _ = self.members.put(&self.me, self.me.clone().into()).await;
        let held: Vec<(u32, u64)> = self.held.iter().map(|(p, (r, _))| (*p, *r)).collect();
        for (p, revision) in held {
            let sent = Instant::now();
            match self
                .leases
                .update(key(p), self.me.clone().into(), revision)
                .await
            {
                Ok(r) => {
                    self.held.insert(p, (r, sent));
                }
                Err(e) => self.lose(p, &e.to_string()),
            }
        }
        let live = self.live().await.max(1);
        let share = self.partitions.div_ceil(live) as usize;
        while self.held.len() > share {
            let Some(&p) = self.held.keys().next_back() else {
                break;
            };
            self.release(p, "rebalancing").await;
        }
        if self.held.len() < share {
            // Start at a different place per worker, so that joiners do
            // not all race for partition 0.
            let start = fastrand::u32(..self.partitions);
            for i in 0..self.partitions {
                if self.held.len() >= share {
                    break;
                }
                let p = (start + i) % self.partitions;
                if self.held.contains_key(&p) {
                    continue;
                }
                let sent = Instant::now();
                if let Ok(r) = self.leases.create(key(p), self.me.clone().into()).await {
                    self.held.insert(p, (r, sent));
                    info!(partition = p, instance = %self.me, live, share, "lease acquired");
                }
            }
        }
        self.publish();
    }

    /// Live workers: those whose heartbeat has not lapsed.
    async fn live(&self) -> u32 {
        let Ok(keys) = self.members.keys().await else {
            return 1;
        };
        keys.filter(|k| std::future::ready(k.is_ok())).count().await as u32
    }

    fn publish(&self) {
        let set: BTreeSet<u32> = self.held.keys().copied().collect();
        self.owned.send_if_modified(|old| {
            let changed = *old != set;
            *old = set;
            changed
        });
    }

    /// Stops working `p` (it is, or may soon be, someone else's).
    fn lose(&mut self, p: u32, why: &str) {
        if self.held.remove(&p).is_some() {
            self.publish();
            warn!(partition = p, instance = %self.me, why, "lease lost");
        }
    }

    /// Stops working `p`, then frees its lease for another worker.
    async fn release(&mut self, p: u32, why: &str) {
        let Some((revision, _)) = self.held.remove(&p) else {
            return;
        };
        self.publish();
        if let Some(working) = &mut self.working {
            let stopped = working.wait_for(|w| !w.contains(&p));
            if tokio::time::timeout(self.ttl / 2, stopped).await.is_err() {
                // Still working: let the lease lapse instead.
                warn!(partition = p, instance = %self.me, "partition slow to stop; its lease lapses instead of being freed");
                return;
            }
        }
        info!(partition = p, instance = %self.me, why, "lease released");
        let _ = self
            .leases
            .delete_expect_revision(key(p), Some(revision))
            .await;
    }
}
