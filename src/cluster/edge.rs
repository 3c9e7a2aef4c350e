//! The edge: MQTT messages decoded and validated (to route them and to
//! count what is bad), published to JetStream on their site's partition
//! with a deduplication id, and acknowledged to the broker only once
//! JetStream has acknowledged them. Publishes are pipelined (up to
//! `WINDOW` awaiting their acknowledgement) and MQTT acknowledgements go
//! out in the order the messages came. A publish that fails is sent again
//! (same id: JetStream keeps one) until it is acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::route;
use crate::decode::Decoder;
use crate::envelope::{Ack, Message, Tickets};
use crate::metrics::Metrics;
use crate::source::mqtt::Acker;

/// Publishes awaiting JetStream's acknowledgement.
const WINDOW: usize = 1024;

pub struct Edge {
    pub js: jetstream::Context,
    pub decoder: Decoder,
    pub acker: Acker,
    pub partitions: u32,
    pub metrics: Arc<Metrics>,
}

/// One message on its way.
struct Sent {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    ack: Ack,
    future: Option<PublishAckFuture>,
}

impl Edge {
    /// Forwards until `rx` closes (the source stopped), then finishes what
    /// is in flight.
    pub async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut flight: VecDeque<Sent> = VecDeque::with_capacity(WINDOW);
        loop {
            // Take what is there without waiting; wait only when nothing
            // is in flight.
            let msg = if flight.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.settle(&mut flight, 1).await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(msg) = msg else { break };
            let mut sent = self.prepare(msg);
            sent.future = Some(self.publish(&sent).await);
            flight.push_back(sent);
            if flight.len() >= WINDOW {
                self.settle(&mut flight, WINDOW / 2).await;
            }
        }
        let n = flight.len();
        self.settle(&mut flight, n).await;
    }

    fn prepare(&self, msg: Message) -> Sent {
        let decoded = if msg.payload_len > 0 {
            self.decoder.oversized(msg.payload_len)
        } else {
            self.decoder
                .decode(&msg.topic, &msg.payload, msg.received_ms)
        };
        for r in &decoded.rejects {
            self.metrics.quarantined(r.reason, &msg.topic, &r.detail);
        }
        let r = route::route(&decoded, &msg.topic, &msg.payload, self.partitions);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.id.as_str());
        headers.insert(route::TOPIC_HEADER, msg.topic.as_str());
        headers.insert(route::RECEIVED_HEADER, msg.received_ms.to_string().as_str());
        if msg.payload_len > 0 {
            headers.insert(route::LENGTH_HEADER, msg.payload_len.to_string().as_str());
        }
        Sent {
            subject: r.subject,
            headers,
            payload: msg.payload,
            ack: msg.ack,
            future: None,
        }
    }

    /// Sends one publish, retrying until the server takes it.
    async fn publish(&self, s: &Sent) -> PublishAckFuture {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self
                .js
                .publish_with_headers(s.subject.clone(), s.headers.clone(), s.payload.clone())
                .await
            {
                Ok(f) => return f,
                Err(e) => {
                    warn!(error = %e, subject = %s.subject, "JetStream publish failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }

    /// Waits for the oldest `n` publishes' acknowledgements, resending any
    /// that failed, and acknowledges them to MQTT in order.
    async fn settle(&self, flight: &mut VecDeque<Sent>, n: usize) {
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(mut s) = flight.pop_front() else {
                break;
            };
            loop {
                let future = match s.future.take() {
                    Some(f) => f,
                    None => self.publish(&s).await,
                };
                match future.await {
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, subject = %s.subject, "no JetStream acknowledgement; publishing again");
                    }
                }
            }
            self.metrics.forwarded();
            match s.ack {
                Ack::Mqtt(t) => tokens.push(t),
                Ack::Ticket(id) => Tickets::global().done(&[id]),
                Ack::Spool(_) => {}
            }
        }
        self.acker.ack(&tokens);
    }
}
