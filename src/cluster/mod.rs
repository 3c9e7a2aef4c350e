//! Past one process: NATS JetStream as the log between edges and workers
//! (`[cluster]`).
//!
//! ```text
//! MQTT ($share/lantian/…) ──► edge: decode, validate, route ──► JetStream LT_IN
//!                                  ack MQTT after JetStream's   lt.in.<p>.<district>.<site>
//!                                                                   │ ordered, after the checkpoint
//! leases (KV lt_leases, CAS) ──► worker: a lane per partition held: pipeline → sinks
//!                                  windows, alerts ──► checkpoint (KV lt_state, CAS)
//!                                  notices ──► LT_ALERTS ──► notifier (lease) ──► outbox
//!                                  city readings ──► LT_SCOPE ──► city unit (lease)
//! ```
//!
//! A site always lands on one partition (`route`), a partition is worked
//! by one worker at a time (`lease`), and its state is checkpointed once
//! what it covers is stored (`state`, `worker`), so a worker's death loses
//! nothing: the next holder goes on from the checkpoint. Points are pure
//! functions of their message (no instance id, no processing time), so a
//! message stored twice overwrites itself; notices and city-scope readings
//! carry deduplication ids (`notify`, `scope`).

pub mod edge;
pub mod lease;
pub mod notify;
pub mod route;
pub mod scope;
pub mod state;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream;
use tracing::warn;

use crate::config::ClusterConfig;

/// The stream of readings.
pub const STREAM: &str = "LT_IN";

/// This process's name in leases and logs.
pub fn instance(c: &ClusterConfig) -> String {
    let name = if c.instance.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "lantian".into());
        format!("{host}-{}", std::process::id())
    } else {
        c.instance.clone()
    };
    // A key-value key: letters, digits, `-`, `_`, `=`, `.`, `/`.
    name.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "-_=".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect()
}

/// Connects to NATS (retrying until a server answers) and makes sure the
/// stream exists.
pub async fn connect(
    c: &ClusterConfig,
    name: &str,
) -> anyhow::Result<(jetstream::Context, jetstream::stream::Stream)> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(c.nats.clone())
        .await
        .map_err(|e| anyhow::anyhow!("NATS {}: {e}", c.nats.join(",")))?;
    let js = jetstream::new(client);
    let stream = ensure_stream(
        &js,
        jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![route::SUBJECTS.into()],
            num_replicas: c.replicas,
            duplicate_window: c.duplicate_window.get(),
            max_age: Duration::from_secs(7 * 86_400),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await;
    Ok((js, stream))
}

/// The stream, made if missing. JetStream may still be electing its
/// leaders (a cluster starting with us), or slow to form a replicated
/// stream that several processes ask for at once: retried until it
/// answers, with a warning each time.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> jetstream::stream::Stream {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return stream,
            Err(e) => {
                warn!(stream = %config.name, error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// A key-value bucket (created if missing) keeping one value per key,
/// whose entries live `ttl` (None: until replaced). Its stream is made
/// here as the key-value convention has it (`KV_<bucket>`, subjects
/// `$KV.<bucket>.>`, one message per key): the client's own bucket
/// creation asks for account details that NATS 2.9 (Debian 12's)
/// answers in a form it cannot read.
pub async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Option<Duration>,
    replicas: usize,
) -> jetstream::kv::Store {
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl.unwrap_or_default(),
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: ttl.unwrap_or(Duration::MAX).min(Duration::from_secs(120)),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    ensure_stream(js, config).await;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match js.get_key_value(name).await {
            Ok(store) => return store,
            Err(e) => {
                warn!(bucket = name, error = %e, "JetStream bucket not ready; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// A stream of `subject` named `name` (made if missing) with the
/// cluster's replicas and deduplication window, kept `days`.
pub async fn log_stream(
    js: &jetstream::Context,
    c: &ClusterConfig,
    (name, subject): (&str, &str),
    days: u64,
) -> jetstream::stream::Stream {
    ensure_stream(
        js,
        jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            num_replicas: c.replicas,
            duplicate_window: c.duplicate_window.get(),
            max_age: Duration::from_secs(days * 86_400),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
}

/// Publishes `body` on `subject` with the deduplication id `id`, sending
/// it again until JetStream acknowledges it (a copy it already has is
/// dropped); `what` names it in the warning.
pub async fn publish_until_acked(
    js: &jetstream::Context,
    subject: &'static str,
    id: &str,
    body: bytes::Bytes,
    what: &str,
) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let acked = match js
            .publish_with_headers(subject, headers, body.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(()) => return,
            Err(e) => {
                warn!(id, error = %e, "cannot publish {what} to JetStream; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}
