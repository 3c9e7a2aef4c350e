//! The MQTT source: subscribe with a persistent session, hand each message
//! to the pipeline, acknowledge it only when the pipeline says its readings
//! are stored or quarantined, and reconnect with capped backoff.
//!
//! One task owns the rumqttc `EventLoop` and only polls it; the pipeline
//! acknowledges through an [`Acker`]. When the pipeline is full the task
//! waits to hand over the next message and stops reading the socket, so
//! the broker holds the rest (backpressure, not loss).
//!
//! Acks from before a reconnect must not reach the new connection: packet
//! ids are reused, and a stale ack could acknowledge a message we have not
//! stored. Each message carries the connection generation it arrived on;
//! on a connection error the task bumps the generation and purges queued
//! acks (both under the [`Acker`]'s lock), and the [`Acker`] drops acks of
//! older generations. The broker then redelivers those messages; their
//! points carry the same series and timestamp, so InfluxDB overwrites
//! rather than duplicates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::MqttConfig;
pub use crate::envelope::{Ack, AckToken, Message};
use crate::metrics::Metrics;
use crate::units::Secret;

/// Capacity of rumqttc's request channel, which carries our acks. Larger
/// than the number of QoS 1/2 messages a broker can have unacknowledged
/// (packet ids are 16-bit), so queuing an ack never fails.
const REQUEST_CHANNEL: usize = 1 << 17;

/// Acks waiting in rumqttc's request channel go out together, up to this
/// many in one write (4 bytes each), instead of one `write` each: the
/// pipeline acknowledges whole batches at once. (rumqttc 0.25 flushes
/// after every request; `patches/rumqttc` adds the batch.)
const ACK_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mqtt.{0}: {1}")]
    Config(&'static str, String),
}

/// Acknowledges messages to the broker (cheap to clone).
#[derive(Clone)]
pub struct Acker {
    client: AsyncClient,
    /// Current connection generation; also serialises acks with purges.
    generation: Arc<Mutex<u64>>,
    metrics: Arc<Metrics>,
}

impl Acker {
    /// Acknowledge, in order. Acks of messages from an earlier connection
    /// are dropped (the broker redelivers those).
    pub fn ack(&self, tokens: &[AckToken]) {
        let generation = match self.generation.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut acked = 0;
        for t in tokens {
            if t.generation != *generation {
                continue;
            }
            acked += 1;
            if t.qos == QoS::AtMostOnce {
                continue;
            }
            let mut p = Publish::new("", t.qos, Vec::new());
            p.pkid = t.pkid;
            if let Err(e) = self.client.try_ack(&p) {
                // Cannot happen with REQUEST_CHANNEL sized as it is; if it
                // did, the broker would redeliver, not lose.
                error!(pkid = t.pkid, error = %e, "could not queue MQTT ack");
            }
        }
        self.metrics.acked(acked);
    }
}

/// The source task's state.
pub struct MqttSource {
    client: AsyncClient,
    eventloop: EventLoop,
    subscriptions: Vec<SubscribeFilter>,
    clean_session: bool,
    reconnect_min: Duration,
    reconnect_max: Duration,
    generation: Arc<Mutex<u64>>,
    metrics: Arc<Metrics>,
    /// For log lines.
    broker: String,
    /// Payload bytes kept of a message (`validation.max_payload_bytes` +
    /// 1): a longer one is quarantined as oversized anyway, and must not
    /// hold its whole size in memory while it waits in the channel.
    keep_payload: usize,
    /// Arrival times, guarded against steps of the system clock.
    clock: crate::clock::ArrivalClock,
}

/// The first `keep` bytes of `payload`, copied so the rest of a large one
/// is freed, and its length (0 when kept whole: `Message::payload_len`).
fn cut(payload: bytes::Bytes, keep: usize) -> (bytes::Bytes, usize) {
    if payload.len() <= keep {
        return (payload, 0);
    }
    (
        bytes::Bytes::copy_from_slice(&payload[..keep]),
        payload.len(),
    )
}

impl MqttSource {
    pub fn new(cfg: &MqttConfig, metrics: Arc<Metrics>) -> Result<(Self, Acker), Error> {
        crate::tls::install_crypto_provider();
        let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        opts.set_keep_alive(cfg.keep_alive.get())
            .set_clean_session(cfg.clean_session)
            .set_manual_acks(true)
            .set_max_request_batch(ACK_BATCH)
            .set_max_packet_size(
                usize::try_from(cfg.max_packet_size.get()).unwrap_or(usize::MAX),
                64 << 10,
            );
        if let Some(user) = &cfg.username {
            let pw = Secret::resolve(cfg.password.as_ref(), cfg.password_file.as_deref())
                .map_err(|e| Error::Config("password", e))?;
            opts.set_credentials(user, pw.as_ref().map(Secret::expose).unwrap_or_default());
        }
        if let Some(tls) = &cfg.tls {
            let read = |key: &'static str, p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| Error::Config(key, format!("cannot read {}: {e}", p.display())))
            };
            let ca = read("tls.ca_file", &tls.ca_file)?;
            let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(c), Some(k)) => Some((
                    read("tls.client_cert_file", c)?,
                    read("tls.client_key_file", k)?,
                )),
                (None, None) => None,
                _ => {
                    return Err(Error::Config(
                        "tls",
                        "client_cert_file and client_key_file go together".into(),
                    ));
                }
            };
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CHANNEL);
        let mut net = eventloop.network_options();
        net.set_connection_timeout(cfg.connect_timeout.get().as_secs().max(1));
        eventloop.set_network_options(net);
        let generation = Arc::new(Mutex::new(0));
        let acker = Acker {
            client: client.clone(),
            generation: generation.clone(),
            metrics: metrics.clone(),
        };
        let subscriptions = cfg
            .subscriptions
            .iter()
            .map(|s| {
                SubscribeFilter::new(
                    s.filter.clone(),
                    rumqttc::qos(s.qos).unwrap_or(QoS::AtLeastOnce),
                )
            })
            .collect();
        Ok((
            Self {
                client,
                eventloop,
                subscriptions,
                clean_session: cfg.clean_session,
                reconnect_min: cfg.reconnect_min.get(),
                reconnect_max: cfg.reconnect_max.get(),
                generation,
                metrics,
                broker: format!("{}:{}", cfg.host, cfg.port),
                keep_payload: usize::MAX,
                clock: Default::default(),
            },
            acker,
        ))
    }

    fn generation(&self) -> u64 {
        match self.generation.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// Poll until shut down. After `shutdown` no new message is handed on;
    /// after `pipeline_done` (everything handed on was acked) the task
    /// disconnects cleanly, which flushes the queued acks first.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Message>,
        shutdown: CancellationToken,
        pipeline_done: CancellationToken,
    ) {
        let mut tx = Some(tx);
        let mut disconnecting = false;
        let mut link = Link {
            backoff: Backoff::new(self.reconnect_min, self.reconnect_max),
            down_since: Some(Instant::now()),
            failures: 0,
        };
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if tx.is_some() => {
                    info!("shutting down: no new messages are taken; finishing those in hand");
                    tx = None;
                    continue;
                }
                _ = pipeline_done.cancelled(), if tx.is_none() && !disconnecting => {
                    disconnecting = true;
                    if link.down_since.is_some() || self.client.try_disconnect().is_err() {
                        return;
                    }
                    continue;
                }
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.connected(&ack, &mut link),
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.subscribed(&ack),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.metrics.received();
                    let Some(sender) = &tx else {
                        // Shutting down: not acked, so the broker redelivers.
                        continue;
                    };
                    let msg = self.message(p);
                    tokio::select! {
                        r = sender.send(msg) => if r.is_err() { tx = None },
                        _ = shutdown.cancelled() => {}
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    debug!("disconnected from MQTT broker");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    self.lost();
                    if disconnecting {
                        return;
                    }
                    link.failed(&e, &self.broker);
                    let wait = link.backoff.next_wait();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = pipeline_done.cancelled(), if tx.is_none() => return,
                    }
                }
            }
        }
    }

    /// A CONNACK: log it, and subscribe unless the session was resumed.
    fn connected(&self, ack: &rumqttc::ConnAck, link: &mut Link) {
        link.backoff.reset();
        self.metrics.broker_connected(
            &self.broker,
            ack.session_present,
            ack.session_present && !self.clean_session,
            link.down_since.take().map(|t| t.elapsed()),
            link.failures + 1,
        );
        link.failures = 0;
        // A resumed session keeps its subscriptions; subscribing again
        // would make the broker resend retained messages.
        if (!ack.session_present || self.clean_session)
            && let Err(e) = self.client.try_subscribe_many(self.subscriptions.clone())
        {
            error!(error = %e, "could not queue MQTT subscribe");
        }
    }

    fn subscribed(&self, ack: &rumqttc::SubAck) {
        for (i, code) in ack.return_codes.iter().enumerate() {
            match (code, self.subscriptions.get(i)) {
                (SubscribeReasonCode::Failure, Some(s)) => {
                    error!(filter = %s.path, "broker refused the subscription")
                }
                (SubscribeReasonCode::Success(q), Some(s)) => self.metrics.subscribed(&s.path, q),
                _ => {}
            }
        }
    }

    /// Keep at most `max + 1` payload bytes of each message (see
    /// `keep_payload`); by default everything.
    pub fn keep_payload(mut self, max: usize) -> Self {
        self.keep_payload = max.saturating_add(1);
        self
    }

    fn message(&self, p: Publish) -> Message {
        let (payload, payload_len) = cut(p.payload, self.keep_payload);
        Message {
            ack: Ack::Mqtt(AckToken {
                qos: p.qos,
                pkid: p.pkid,
                generation: self.generation(),
            }),
            topic: p.topic,
            payload,
            received_ms: self.clock.now_ms(),
            payload_len,
            corrupt: None,
        }
    }

    /// A connection error: acks queued for the old connection are purged
    /// and the generation bumped, atomically w.r.t. [`Acker::ack`].
    fn lost(&mut self) {
        {
            let mut g = match self.generation.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *g += 1;
            self.eventloop.clean();
        }
        self.metrics.broker_lost();
    }
}

/// The connection's ups and downs, for backoff and for the log.
struct Link {
    backoff: Backoff,
    /// Since when the broker has been unreachable (`None` while connected).
    down_since: Option<Instant>,
    /// Connection attempts failed in a row.
    failures: u32,
}

impl Link {
    /// Logs a failure: the first of an outage at warn, the rest at debug.
    fn failed(&mut self, e: &rumqttc::ConnectionError, broker: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(broker = %broker, reason = %describe(e), "lost connection to MQTT broker; reconnecting");
        } else if self.failures == 0 {
            warn!(broker = %broker, reason = %describe(e), "cannot connect to MQTT broker; retrying with backoff");
        } else {
            debug!(reason = %describe(e), attempt = self.failures + 1, "MQTT connect failed");
        }
        self.failures += 1;
    }
}

fn describe(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "broker refused: bad user name or password".into()
        }
        rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "broker refused: not authorised".into()
        }
        rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            "broker refused the client id".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod cut_tests {
    use super::cut;

    /// A large payload waits in the channel as its first bytes only (a
    /// copy: the big buffer is freed), with its real length for the
    /// quarantine record; a small one is kept whole, as it is.
    #[test]
    fn an_oversized_payload_is_cut_to_what_validation_reads() {
        let big = bytes::Bytes::from(vec![b'x'; 1 << 20]);
        let (kept, len) = cut(big.clone(), 65_537);
        assert_eq!((kept.len(), len), (65_537, 1 << 20));
        assert_ne!(
            kept.as_ptr(),
            big.as_ptr(),
            "a copy, not a view of the big buffer"
        );
        let small = bytes::Bytes::from_static(b"{\"pm25\":1}");
        let (kept, len) = cut(small.clone(), 65_537);
        assert_eq!((kept, len), (small, 0));
    }
}

#[cfg(test)]
mod ack_batch_tests {
    use std::sync::Arc;

    use rumqttc::{Event, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The pipeline acknowledges a batch at once; those acks leave in one
    /// turn of rumqttc's event loop (one flush), not one write each. A
    /// broker's side of the socket sends 100 QoS 1 publishes; after the
    /// 100 acks are handed over, the event loop is polled **once** and
    /// dropped: the broker must have all 100 PUBACKs, in order.
    #[tokio::test]
    async fn acks_handed_over_together_leave_in_one_turn_of_the_event_loop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = MqttConfig {
            port: listener.local_addr().unwrap().port(),
            ..Default::default()
        };
        let (mut source, acker) = MqttSource::new(&cfg, Arc::new(Metrics::default())).unwrap();
        let broker = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            // CONNECT (short: a one-byte remaining length), then CONNACK.
            let mut head = [0u8; 2];
            sock.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], 0x10, "CONNECT first");
            let mut rest = vec![0u8; usize::from(head[1])];
            sock.read_exact(&mut rest).await.unwrap();
            sock.write_all(&[0x20, 2, 0, 0]).await.unwrap();
            let mut publishes = Vec::new();
            for pkid in 1u16..=100 {
                // PUBLISH, QoS 1: topic "t", packet id, payload "x".
                publishes.extend_from_slice(&[0x32, 6, 0, 1, b't']);
                publishes.extend_from_slice(&pkid.to_be_bytes());
                publishes.push(b'x');
            }
            sock.write_all(&publishes).await.unwrap();
            let mut acks = Vec::new();
            sock.read_to_end(&mut acks).await.unwrap();
            acks
        });
        let mut tokens = Vec::new();
        while tokens.len() < 100 {
            match source.eventloop.poll().await.unwrap() {
                Event::Incoming(Packet::Publish(p)) => tokens.push(AckToken {
                    qos: p.qos,
                    pkid: p.pkid,
                    generation: 0,
                }),
                Event::Incoming(Packet::ConnAck(_)) | Event::Outgoing(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        acker.ack(&tokens);
        let first = source.eventloop.poll().await.unwrap();
        assert!(matches!(
            first,
            Event::Outgoing(rumqttc::Outgoing::PubAck(1))
        ));
        drop(source);
        let acks = broker.await.unwrap();
        let want: Vec<u8> = (1u16..=100)
            .flat_map(|pkid| {
                let [hi, lo] = pkid.to_be_bytes();
                [0x40, 2, hi, lo]
            })
            .collect();
        assert_eq!(acks, want, "all 100 PUBACKs from one poll, in order");
    }
}
