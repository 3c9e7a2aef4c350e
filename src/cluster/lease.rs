//! Partition leases in a JetStream key-value bucket: each worker claims
//! partitions (`create`: only if no one holds it), renews them
//! (`update` with the revision it holds: compare-and-set), and gives up
//! what is beyond its share: it stops working the partition but renews
//! the lease until the partition has stopped (its lane drained and its
//! checkpoint saved), and only then frees it. The bucket's `max_age` is the lease's life: a
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
    /// Held partitions.
    held: BTreeMap<u32, Held>,
    owned: watch::Sender<BTreeSet<u32>>,
    /// The partitions the worker is working now (it follows `owned`): a
    /// lease is freed only once its partition has stopped.
    working: Option<watch::Receiver<BTreeSet<u32>>>,
    /// Live workers, as last counted.
    live: u32,
    /// When the current round's requests must have answered: a round
    /// never outlasts a third of a lease's life, so the fence runs on
    /// time whatever JetStream does (a request left waiting is dropped
    /// and counts as failed). A lease loop once stood still for 90 s under
    /// load while its lanes ran on, and another worker took its lapsed
    /// leases.
    deadline: tokio::time::Instant,
}

/// A lease this worker holds.
struct Held {
    /// The revision of our last write, and when it was sent.
    revision: u64,
    sent: Instant,
    /// Being given up: no longer to be worked, but renewed until the
    /// worker has stopped it (then freed). Since which round.
    releasing: Option<u64>,
}

fn key(p: u32) -> String {
    format!("p{p}")
}

/// The lease and member buckets (created if missing), with `ttl` as
/// their entries' life.
pub async fn buckets(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> (kv::Store, kv::Store) {
    (
        super::bucket(js, LEASES, Some(ttl), replicas).await,
        super::bucket(js, MEMBERS, Some(ttl), replicas).await,
    )
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
                live: 1,
                deadline: tokio::time::Instant::now(),
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
    /// stopped; then gives every lease up (renewing each until its
    /// partition has stopped, then freeing it: another worker takes over
    /// at once instead of after the lease's life).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.deadline = tokio::time::Instant::now() + self.ttl / 3;
                    self.round(round).await
                }
                _ = stop.cancelled() => break,
            }
            round += 1;
        }
        let all: Vec<u32> = self.held.keys().copied().collect();
        for p in all {
            self.give_up(p, round, "stopping");
        }
        self.publish();
        while !self.held.is_empty() {
            tick.tick().await;
            self.deadline = tokio::time::Instant::now() + self.ttl / 3;
            round += 1;
            self.fence();
            self.renew().await;
            self.free_stopped(round).await;
        }
    }

    /// One round: fence what could have lapsed, heartbeat, renew, free
    /// what was given up and has stopped, then give up or claim towards
    /// this worker's share.
    async fn round(&mut self, round: u64) {
        self.fence();
        let _ = self
            .bounded(self.members.put(&self.me, self.me.clone().into()))
            .await;
        self.renew().await;
        self.free_stopped(round).await;
        let live = self.live().await.max(1);
        let share = self.partitions.div_ceil(live) as usize;
        let active = |held: &BTreeMap<u32, Held>| -> Vec<u32> {
            held.iter()
                .filter(|(_, h)| h.releasing.is_none())
                .map(|(p, _)| *p)
                .collect()
        };
        let mut working = active(&self.held);
        while working.len() > share {
            let p = working.pop().expect("more than the share");
            self.give_up(p, round, "rebalancing");
        }
        if working.len() < share {
            // Start at a different place per worker, so that joiners do
            // not all race for partition 0.
            let start = fastrand::u32(..self.partitions);
            for i in 0..self.partitions {
                if active(&self.held).len() >= share {
                    break;
                }
                let p = (start + i) % self.partitions;
                if self.held.contains_key(&p) {
                    continue;
                }
                let sent = Instant::now();
                let create = self.leases.create(key(p), self.me.clone().into());
                if let Some(Ok(revision)) = self.bounded(create).await {
                    let held = Held {
                        revision,
                        sent,
                        releasing: None,
                    };
                    self.held.insert(p, held);
                    info!(partition = p, instance = %self.me, live, share, "lease acquired");
                }
            }
        }
        self.publish();
    }

    /// A lease whose last renewal went out more than 3/4 of its life ago
    /// may lapse before the next: stop working it now.
    fn fence(&mut self) {
        let deadline = self.ttl * 3 / 4;
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.sent.elapsed() >= deadline)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.lose(p, "not renewed in time");
        }
    }

    /// Renews every lease held (those being given up too).
    async fn renew(&mut self) {
        // All at once: a round has a third of a lease's life.
        let (leases, me, deadline) = (&self.leases, &self.me, self.deadline);
        let updates = self.held.iter().map(|(p, h)| {
            let (p, sent) = (*p, Instant::now());
            let update = leases.update(key(p), me.clone().into(), h.revision);
            async move {
                let answer = tokio::time::timeout_at(deadline, update).await.ok();
                (p, sent, answer)
            }
        });
        let answers = futures_util::future::join_all(updates).await;
        for (p, sent, answer) in answers {
            match answer {
                Some(Ok(r)) => {
                    if let Some(h) = self.held.get_mut(&p) {
                        (h.revision, h.sent) = (r, sent);
                    }
                }
                Some(Err(e)) => self.lose(p, &e.to_string()),
                // Unanswered: it may have been renewed or not; the fence
                // stops working it if no renewal answers in time.
                None => {}
            }
        }
    }

    /// Live workers: those whose heartbeat has not lapsed (the member
    /// bucket's keys, each one message that lapses with a lease's life),
    /// from the stream's state in one request rather than by listing the
    /// keys through a consumer; the last count when it does not answer in
    /// time.
    async fn live(&mut self) -> u32 {
        if let Some(Ok(info)) = self.bounded(self.members.stream.get_info()).await {
            self.live = u32::try_from(info.state.subjects_count).unwrap_or(u32::MAX);
        }
        self.live
    }

    /// `request`'s answer, unless the round's deadline passes first.
    async fn bounded<T>(&self, request: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.deadline, request).await.ok()
    }

    /// Tells the worker what to work: the leases held and not given up.
    fn publish(&self) {
        let set: BTreeSet<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_none())
            .map(|(p, _)| *p)
            .collect();
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

    /// Stops working `p`; its lease is kept (renewed) until the worker has
    /// stopped it, then freed.
    fn give_up(&mut self, p: u32, round: u64, why: &str) {
        if let Some(h) = self.held.get_mut(&p).filter(|h| h.releasing.is_none()) {
            h.releasing = Some(round);
            info!(partition = p, instance = %self.me, why, "lease being given up");
        }
        self.publish();
    }

    /// Frees the leases given up whose partitions the worker has stopped
    /// (given up in an earlier round: the worker has seen the change).
    async fn free_stopped(&mut self, round: u64) {
        let done: Vec<(u32, u64)> = self
            .held
            .iter()
            .filter(|(p, h)| {
                h.releasing.is_some_and(|r| r < round)
                    && self
                        .working
                        .as_ref()
                        .is_none_or(|w| !w.borrow().contains(p))
            })
            .map(|(p, h)| (*p, h.revision))
            .collect();
        for (p, revision) in done {
            self.held.remove(&p);
            info!(partition = p, instance = %self.me, "lease released");
            let delete = self.leases.delete_expect_revision(key(p), Some(revision));
            let _ = self.bounded(delete).await;
        }
    }
}
