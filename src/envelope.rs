//! The message envelope every stage passes along: a message as it came
//! from the broker (or back from the spool), and how it is acknowledged
//! once handled. A leaf: imports nothing else of the crate, so the source,
//! the spool and the pipeline can all speak it without knowing each other.

use bytes::Bytes;
use rumqttc::QoS;

/// A position in a log: in the spool, segment and byte offset (the end
/// of a record); in a cluster partition, the JetStream stream sequence
/// (offset 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub seq: u64,
    pub offset: u64,
}

/// What a message needs to be acknowledged to the broker later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckToken {
    /// The QoS it was delivered with (QoS 0 needs no acknowledgement).
    pub qos: QoS,
    /// The broker's packet id.
    pub pkid: u16,
    /// Connection generation the message arrived on: an ack from an
    /// earlier connection must not reach the current one (ids are reused).
    pub generation: u64,
}

impl AckToken {
    /// A token for tests and benchmarks (acknowledges nothing real).
    #[doc(hidden)]
    pub fn detached(pkid: u16) -> Self {
        AckToken {
            qos: QoS::AtLeastOnce,
            pkid,
            generation: u64::MAX,
        }
    }
}

/// How a message is acknowledged once handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// To the broker (no spool, or the spool writer's input).
    Mqtt(AckToken),
    /// To the spool: delivered up to here (the pipeline's input with a
    /// spool; a cluster partition's, whose checkpoint says it).
    Spool(Pos),
    /// To a sender waiting on [`Tickets`] (an HJ 212 data logger, whose
    /// ACK is sent only once its packet is durable).
    Ticket(u64),
}

/// Senders waiting to hear that their message is durable (in the synced
/// spool, or stored when there is none), by ticket. Process-wide: tickets
/// are unique, so several pipelines in one process cannot mix them up.
#[derive(Debug, Default)]
pub struct Tickets {
    next: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
}

impl Tickets {
    pub fn global() -> &'static Tickets {
        static TICKETS: std::sync::LazyLock<Tickets> = std::sync::LazyLock::new(Tickets::default);
        &TICKETS
    }

    /// A new ticket, and what tells its holder that the message is durable
    /// (an error if it never will be: the stage holding it failed).
    pub fn issue(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Tells the holders of `ids`.
    pub fn done(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut waiting = self.lock();
        for id in ids {
            if let Some(tx) = waiting.remove(id) {
                let _ = tx.send(());
            }
        }
    }

    /// Forgets `id` (its holder went away before it was done).
    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, tokio::sync::oneshot::Sender<()>>>
    {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One message from the broker (or replayed from the spool).
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub ack: Ack,
    /// Wall-clock arrival time, ms since the epoch.
    pub received_ms: i64,
    /// Length of the payload as published (the spool keeps only the start
    /// of an oversized one). 0: `payload.len()`.
    pub payload_len: usize,
    /// Set for spool bytes that failed their checksum: the detail for the
    /// quarantine record (`payload` holds the bad bytes).
    pub corrupt: Option<String>,
}
