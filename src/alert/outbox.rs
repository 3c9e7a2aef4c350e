//! The durable outbox: one ordered queue per receiver, on disk.
//!
//! ```text
//! <alerts.dir>/outbox/<receiver>/00000000000000000042.json   a notice, synced
//!                               /delivered.log               ids delivered (recent)
//!                               /dead/                       refused for good
//! ```
//!
//! A notice is written (tmp + fsync + rename) before the alert state that
//! produced it is saved, so a crash can only produce it again — and a
//! notice whose event id is already queued or recently delivered is not
//! queued twice. Each receiver's worker sends its queue strictly in order,
//! removing a file only once the receiver answered 2xx; failures are
//! retried with capped exponential backoff and jitter, for as long as it
//! takes. A receiver that answers 4xx (other than 408 and 429) five times
//! in a row for one notice has that notice moved to `dead/` (logged at
//! error level, counted), so one malformed request cannot block the rest.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::webhook::{self, Format};
use super::{Alert, Notice};
use crate::config::AlertsConfig;
use crate::evaluate::targets::Severity;
use crate::metrics::Metrics;
use crate::units::Secret;

/// Event ids remembered per receiver (for deduplication).
const RECENT: usize = 10_000;
/// 4xx answers in a row after which a notice is moved to `dead/`.
const MAX_REFUSALS: u32 = 5;

/// A webhook receiver, validated.
#[derive(Clone, Debug)]
pub struct Receiver {
    pub name: String,
    pub url: reqwest::Url,
    pub format: Format,
    /// HMAC key, when signing.
    pub key: Option<Vec<u8>>,
    pub timeout: Duration,
    pub min_severity: Severity,
    /// Rule ids (or prefixes ending in `*`); empty: all.
    pub rules: Vec<String>,
    /// Labels that must be equal.
    pub matchers: BTreeMap<String, String>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// The receivers of `[[alerts.receivers]]`, validated (secrets read from
/// their files); otherwise every problem with its key path.
pub fn receivers(cfg: &AlertsConfig) -> Result<Vec<Receiver>, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    for (i, r) in cfg.receivers.iter().enumerate() {
        let at = |k: &str| format!("alerts.receivers[{i}].{k}");
        let name_ok = !r.name.is_empty()
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            errs.push((
                at("name"),
                format!("{:?} must be letters, digits, - or _", r.name),
            ));
        }
        if cfg.receivers[..i].iter().any(|o| o.name == r.name) {
            errs.push((at("name"), format!("{:?} is used twice", r.name)));
        }
        let url = match reqwest::Url::parse(&r.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                errs.push((at("url"), format!("{:?} is not an http(s) URL", r.url)));
                None
            }
        };
        let key = match Secret::resolve(r.secret.as_ref(), r.secret_file.as_deref()) {
            Ok(None) => None,
            Ok(Some(s)) => match webhook::key(s.expose()) {
                Ok(k) => Some(k),
                Err(e) => {
                    errs.push((at("secret"), e));
                    None
                }
            },
            Err(e) => {
                errs.push((at("secret"), e));
                None
            }
        };
        if r.timeout.get().is_zero() {
            errs.push((at("timeout"), "must be above 0".into()));
        }
        if r.retry_initial.get().is_zero() || r.retry_initial > r.retry_max {
            errs.push((
                at("retry_initial"),
                "must be above 0 and at most retry_max".into(),
            ));
        }
        if let Some(url) = url {
            out.push(Receiver {
                name: r.name.clone(),
                url,
                format: r.format,
                key,
                timeout: r.timeout.get(),
                min_severity: r.min_severity,
                rules: r.rules.clone(),
                matchers: r.matchers.clone(),
                retry_initial: r.retry_initial.get(),
                retry_max: r.retry_max.get(),
            });
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

impl Receiver {
    /// Whether this receiver wants the alert.
    pub fn routes(&self, a: &Alert) -> bool {
        a.severity >= self.min_severity
            && (self.rules.is_empty()
                || self.rules.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => a.rule.starts_with(prefix),
                    None => a.rule == *p,
                }))
            && self
                .matchers
                .iter()
                .all(|(k, v)| a.labels.get(k) == Some(v))
    }
}

struct Queue {
    /// Replaced on reload (same name: same queue).
    receiver: Mutex<Receiver>,
    dir: PathBuf,
    inner: Mutex<Inner>,
    notify: Notify,
    /// The outbox's: woken when a notice leaves this queue.
    room: Arc<Notify>,
    /// Stops this queue's worker (the receiver was removed on reload).
    stop: CancellationToken,
}

impl Queue {
    fn receiver(&self) -> Receiver {
        self.receiver.lock().expect("receiver lock").clone()
    }
}

struct Inner {
    next_seq: u64,
    pending: VecDeque<(u64, String)>,
    recent: HashSet<String>,
    order: VecDeque<String>,
}

impl Inner {
    fn remember(&mut self, id: String) {
        if self.recent.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }
}

pub struct Outbox {
    dir: PathBuf,
    queues: Mutex<Vec<Arc<Queue>>>,
    max_queued: usize,
    metrics: Arc<Metrics>,
    /// Set by `spawn_delivery`: the base URL and the stop token.
    delivery: Mutex<Option<(String, CancellationToken)>>,
    /// Woken whenever a notice leaves a queue (or a queue goes), for
    /// [`Outbox::room`].
    room: Arc<Notify>,
}

fn open_queue(dir: &Path, r: Receiver, room: Arc<Notify>) -> std::io::Result<Queue> {
    let qdir = dir.join("outbox").join(&r.name);
    std::fs::create_dir_all(qdir.join("dead"))?;
    let seqs_in = |d: &Path| -> std::io::Result<Vec<u64>> {
        let mut seqs: Vec<u64> = std::fs::read_dir(d)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    };
    let seqs = seqs_in(&qdir)?;
    // Numbers are never reused, dead letters' included: a notice moved to
    // dead/ must not overwrite an earlier one there.
    let dead_max = seqs_in(&qdir.join("dead"))?.last().copied().unwrap_or(0);
    let mut inner = Inner {
        next_seq: seqs.last().copied().unwrap_or(0).max(dead_max) + 1,
        pending: VecDeque::new(),
        recent: HashSet::new(),
        order: VecDeque::new(),
    };
    let log = std::fs::read_to_string(qdir.join("delivered.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    for id in &lines[lines.len().saturating_sub(RECENT)..] {
        inner.remember((*id).to_owned());
    }
    if lines.len() > 2 * RECENT {
        let keep = lines[lines.len() - RECENT..].join("\n") + "\n";
        crate::durable::write_atomically(&qdir.join("delivered.log"), keep.as_bytes())?;
    }
    for seq in seqs {
        match std::fs::read(file(&qdir, seq))
            .ok()
            .and_then(|b| serde_json::from_slice::<Notice>(&b).ok())
        {
            Some(n) => {
                inner.remember(n.event_id.clone());
                inner.pending.push_back((seq, n.event_id));
            }
            None => {
                warn!(receiver = %r.name, seq, "unreadable outbox file moved to dead/");
                let _ = std::fs::rename(file(&qdir, seq), dead(&qdir, seq));
            }
        }
    }
    if !inner.pending.is_empty() {
        info!(receiver = %r.name, queued = inner.pending.len(), "webhook notices waiting from before");
    }
    Ok(Queue {
        receiver: Mutex::new(r),
        dir: qdir,
        inner: Mutex::new(inner),
        notify: Notify::new(),
        room,
        stop: CancellationToken::new(),
    })
}

fn dead(dir: &Path, seq: u64) -> PathBuf {
    dir.join("dead").join(format!("{seq:020}.json"))
}

fn file(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.json"))
}

impl Outbox {
    /// Opens (creating) the queues under `dir`, picking up what a previous
    /// run left.
    pub fn open(
        dir: &Path,
        receivers: Vec<Receiver>,
        max_queued: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Outbox> {
        let room = Arc::new(Notify::new());
        let mut queues = Vec::new();
        for r in receivers {
            queues.push(Arc::new(open_queue(dir, r, room.clone())?));
        }
        for q in &queues {
            let n = q.inner.lock().expect("outbox lock").pending.len();
            metrics.notices_queued(&q.receiver().name, n as u64);
        }
        Ok(Outbox {
            dir: dir.to_owned(),
            queues: Mutex::new(queues),
            max_queued,
            metrics,
            delivery: Mutex::new(None),
            room,
        })
    }

    /// A reload: receivers with a known name get the new settings (their
    /// queue stays), new ones get a queue and a worker, removed ones stop
    /// (their notices stay on disk). Returns the new workers.
    pub fn reconfigure(&self, receivers: Vec<Receiver>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut queues = self.queues.lock().expect("outbox lock");
        let mut started = Vec::new();
        queues.retain(|q| {
            let name = q.receiver().name;
            let keep = receivers.iter().any(|r| r.name == name);
            if !keep {
                let left = q.inner.lock().expect("outbox lock").pending.len();
                info!(receiver = %name, left, "receiver removed; its queued notices stay in the outbox directory");
                self.metrics.receiver_removed(&name);
                q.stop.cancel();
            }
            keep
        });
        self.room.notify_waiters();
        for r in receivers {
            if let Some(q) = queues.iter().find(|q| q.receiver().name == r.name) {
                *q.receiver.lock().expect("receiver lock") = r;
                q.notify.notify_one();
                continue;
            }
            match open_queue(&self.dir, r.clone(), self.room.clone()) {
                Ok(q) => {
                    let q = Arc::new(q);
                    let found = q.inner.lock().expect("outbox lock").pending.len();
                    self.metrics.notices_queued(&r.name, found as u64);
                    if let Some(h) = self.spawn_one(&q) {
                        started.push(h);
                    }
                    info!(receiver = %r.name, "receiver added");
                    queues.push(q);
                }
                Err(e) => {
                    error!(receiver = %r.name, error = %e, "cannot open the new receiver's queue")
                }
            }
        }
        started
    }

    /// Returns once no receiver's queue is at its bound (at once if none
    /// is): woken by deliveries, never polled.
    pub async fn room(&self) {
        loop {
            let freed = self.room.notified();
            tokio::pin!(freed);
            // Registered before the check, so a delivery between the two
            // still wakes us.
            freed.as_mut().enable();
            if !self.full() {
                return;
            }
            freed.await;
        }
    }

    /// Whether some receiver's queue is at its bound (the alert stage then
    /// waits, and backpressure reaches the broker).
    pub fn full(&self) -> bool {
        self.queues
            .lock()
            .expect("outbox lock")
            .iter()
            .any(|q| q.inner.lock().expect("outbox lock").pending.len() >= self.max_queued)
    }

    /// Queues `n` for every receiver that routes it (blocking file I/O:
    /// call from a blocking thread). Returns how many queues took it.
    pub fn enqueue(&self, n: &Notice) -> std::io::Result<usize> {
        let mut taken = 0;
        let mut bytes = None;
        let queues = self.queues.lock().expect("outbox lock").clone();
        for q in &queues {
            let r = q.receiver();
            if !r.routes(&n.alert) {
                continue;
            }
            let mut inner = q.inner.lock().expect("outbox lock");
            if inner.recent.contains(&n.event_id) {
                debug!(receiver = %r.name, id = %n.event_id, "notice already queued or delivered");
                continue;
            }
            let b = bytes.get_or_insert_with(|| serde_json::to_vec(n).unwrap_or_default());
            let seq = inner.next_seq;
            crate::durable::write_atomically(&file(&q.dir, seq), b)?;
            inner.next_seq += 1;
            inner.pending.push_back((seq, n.event_id.clone()));
            inner.remember(n.event_id.clone());
            drop(inner);
            q.notify.notify_one();
            self.metrics.notices_queued(&r.name, 1);
            taken += 1;
        }
        Ok(taken)
    }

    /// Starts one delivery task per receiver; they stop on `stop`.
    pub fn spawn_delivery(
        &self,
        external_url: String,
        stop: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        *self.delivery.lock().expect("outbox lock") = Some((external_url, stop));
        let queues = self.queues.lock().expect("outbox lock").clone();
        queues.iter().filter_map(|q| self.spawn_one(q)).collect()
    }

    fn spawn_one(&self, q: &Arc<Queue>) -> Option<tokio::task::JoinHandle<()>> {
        let (url, stop) = self.delivery.lock().expect("outbox lock").clone()?;
        let (q, m) = (q.clone(), self.metrics.clone());
        Some(tokio::spawn(async move { deliver(q, m, url, stop).await }))
    }

    /// Notices waiting, per receiver name.
    pub fn queued(&self) -> Vec<(String, usize)> {
        self.queues
            .lock()
            .expect("outbox lock")
            .iter()
            .map(|q| {
                (
                    q.receiver().name,
                    q.inner.lock().expect("outbox lock").pending.len(),
                )
            })
            .collect()
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Retry(String),
    Refused(String),
}

async fn deliver(q: Arc<Queue>, m: Arc<Metrics>, external_url: String, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("lantian/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            error!(receiver = %q.receiver().name, error = %e, "cannot build the webhook HTTP client; this receiver gets nothing");
            return;
        }
    };
    let mut failures: u32 = 0;
    let mut refusals: u32 = 0;
    loop {
        // Read each time: a reload may have changed it.
        let r = &q.receiver();
        let head = q
            .inner
            .lock()
            .expect("outbox lock")
            .pending
            .front()
            .cloned();
        let Some((seq, id)) = head else {
            tokio::select! {
                _ = q.notify.notified() => continue,
                _ = stop.cancelled() => return,
                _ = q.stop.cancelled() => return,
            }
        };
        let path = file(&q.dir, seq);
        let notice = match tokio::fs::read(&path)
            .await
            .map(|b| serde_json::from_slice::<Notice>(&b))
        {
            Ok(Ok(n)) => n,
            other => {
                error!(receiver = %r.name, seq, ?other, "outbox file unreadable; moved to dead/");
                let _ =
                    tokio::fs::rename(&path, q.dir.join("dead").join(format!("{seq:020}.json")))
                        .await;
                pop(&q, &m);
                continue;
            }
        };
        let body = webhook::body(r.format, &notice, &r.name, &external_url);
        let outcome = attempt(&client, r, &id, body).await;
        match outcome {
            Attempt::Delivered => {
                append_delivered(&q.dir, &id);
                let _ = tokio::fs::remove_file(&path).await;
                pop(&q, &m);
                m.notice_delivered(&r.name, &id, failures);
                failures = 0;
                refusals = 0;
                continue;
            }
            Attempt::Refused(why) => {
                refusals += 1;
                if refusals >= MAX_REFUSALS {
                    m.notice_dead(&r.name, &id, MAX_REFUSALS, &why);
                    let _ = tokio::fs::rename(
                        &path,
                        q.dir.join("dead").join(format!("{seq:020}.json")),
                    )
                    .await;
                    pop(&q, &m);
                    refusals = 0;
                    failures = 0;
                    continue;
                }
                m.notice_refused(&r.name, &id, &why);
            }
            Attempt::Retry(why) => m.notice_failed(&r.name, &id, failures, &why),
        }
        failures += 1;
        let wait = crate::backoff::wait_after(r.retry_initial, r.retry_max, failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = q.notify.notified() => {} // reconfigured: try at once
            _ = stop.cancelled() => return,
            _ = q.stop.cancelled() => return,
        }
    }
}

fn pop(q: &Queue, m: &Metrics) {
    q.inner.lock().expect("outbox lock").pending.pop_front();
    q.room.notify_waiters();
    m.notice_dequeued(&q.receiver().name);
}

fn append_delivered(dir: &Path, id: &str) {
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("delivered.log"))
        .and_then(|mut f| writeln!(f, "{id}"));
    if let Err(e) = res {
        warn!(error = %e, "cannot append to delivered.log (a restart may resend this notice, with the same webhook-id)");
    }
}

async fn attempt(client: &reqwest::Client, r: &Receiver, id: &str, body: Vec<u8>) -> Attempt {
    let ts = chrono::Utc::now().timestamp();
    let mut req = client
        .post(r.url.clone())
        .timeout(r.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string());
    if let Some(key) = &r.key {
        req = req.header("webhook-signature", webhook::sign(key, id, ts, &body));
    }
    match req.body(body).send().await {
        Ok(resp) if resp.status().is_success() => Attempt::Delivered,
        Ok(resp) => {
            let s = resp.status();
            let why = format!("HTTP {s}");
            if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 {
                Attempt::Refused(why)
            } else {
                Attempt::Retry(why)
            }
        }
        // Without the URL: webhook URLs carry tokens (DingTalk's
        // access_token, WeCom's key, Slack's path), and this is logged.
        Err(e) => Attempt::Retry(e.without_url().to_string()),
    }
}
