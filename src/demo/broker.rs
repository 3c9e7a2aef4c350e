//! A small MQTT 3.1.1 broker for `lantian demo`, so the demo needs no
//! services: loopback only, in memory, QoS 0 and 1, no retained messages,
//! no persistent sessions (every CONNACK says session_present = false, so
//! clients subscribe again). Packets are encoded and decoded by rumqttc's
//! own codec. A subscriber that falls behind holds up its publishers
//! (bounded queues), so nothing is dropped in the demo; one that takes
//! nothing for `stall_limit` (30 s) is disconnected, so a stopped client
//! cannot stall every publisher.
//!
//! Not for production: use Mosquitto (deploy/mosquitto/).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

const MAX_PACKET: usize = 1 << 20;
const QUEUE: usize = 4096;

/// How long a publish may wait for a subscriber's full queue before the
/// subscriber is disconnected.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

struct Sub {
    client: u64,
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Packet>,
    pkid: Arc<AtomicU16>,
    /// Ends the client's connection.
    cut: CancellationToken,
}

#[derive(Default)]
struct Shared {
    stall_limit: std::time::Duration,
    subs: Mutex<Vec<Sub>>,
    next_client: AtomicU64,
    /// Messages routed (for the demo's summary).
    pub routed: AtomicU64,
}

pub struct Broker {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Broker {
    /// Binds `addr` (port 0: any free port) and serves until `stop`.
    pub async fn start(addr: SocketAddr, stop: CancellationToken) -> std::io::Result<Broker> {
        Self::start_with(addr, stop, STALL_LIMIT).await
    }

    /// [`Broker::start`], disconnecting a subscriber whose queue stays full
    /// for `stall_limit`.
    pub async fn start_with(
        addr: SocketAddr,
        stop: CancellationToken,
        stall_limit: std::time::Duration,
    ) -> std::io::Result<Broker> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stall_limit,
            ..Shared::default()
        });
        let s = shared.clone();
        tokio::spawn(async move {
            let mut backoff = crate::backoff::Backoff::new(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_secs(1),
            );
            loop {
                let sock = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((sock, _)) => sock,
                        // Out of file descriptors, say: wait, do not spin.
                        Err(_) => {
                            tokio::time::sleep(backoff.next_wait()).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                backoff.reset();
                let _ = sock.set_nodelay(true);
                let (s, stop) = (s.clone(), stop.clone());
                tokio::spawn(async move {
                    let id = s.next_client.fetch_add(1, Relaxed);
                    if let Err(e) = client(sock, id, &s, stop).await {
                        debug!(client = id, error = %e, "demo broker: client ended");
                    }
                    s.subs.lock().expect("subs").retain(|x| x.client != id);
                });
            }
        });
        Ok(Broker { addr, shared })
    }

    /// Messages routed to subscribers so far.
    pub fn routed(&self) -> u64 {
        self.shared.routed.load(Relaxed)
    }
}

async fn client(
    sock: TcpStream,
    id: u64,
    shared: &Shared,
    stop: CancellationToken,
) -> Result<(), String> {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Packet>(QUEUE);
    let cut = CancellationToken::new();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(p) = rx.recv().await {
            buf.clear();
            if p.write(&mut buf, MAX_PACKET).is_err() || wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let pkid = Arc::new(AtomicU16::new(0));
    let mut buf = BytesMut::with_capacity(64 << 10);
    let result = loop {
        let packet = match Packet::read(&mut buf, MAX_PACKET) {
            Ok(p) => p,
            Err(CodecError::InsufficientBytes(_)) => {
                let n = tokio::select! {
                    r = rd.read_buf(&mut buf) => r.map_err(|e| e.to_string())?,
                    _ = stop.cancelled() => break Ok(()),
                    _ = cut.cancelled() => break Err("took nothing for the stall limit: disconnected".into()),
                };
                if n == 0 {
                    break Ok(());
                }
                continue;
            }
            Err(e) => break Err(format!("bad packet: {e:?}")),
        };
        let send = |p: Packet| {
            let tx = tx.clone();
            async move { tx.send(p).await.map_err(|_| "client gone".to_owned()) }
        };
        match packet {
            Packet::Connect(_) => {
                send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                )))
                .await?
            }
            Packet::Subscribe(s) => {
                let codes = subscribe(shared, id, &s, &tx, &pkid, &cut);
                send(Packet::SubAck(SubAck::new(s.pkid, codes))).await?
            }
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    break Err("QoS 2 is not supported by the demo broker".into());
                }
                route(shared, &p).await;
                if p.qos == QoS::AtLeastOnce {
                    send(Packet::PubAck(PubAck::new(p.pkid))).await?
                }
            }
            Packet::PingReq => send(Packet::PingResp).await?,
            Packet::Disconnect => break Ok(()),
            // Acks from subscribers: nothing is kept to retransmit.
            Packet::PubAck(_) | Packet::Unsubscribe(_) => {}
            other => debug!(?other, "demo broker: ignored"),
        }
    };
    drop(tx);
    writer.abort();
    result
}

/// Registers the client's filters; the granted QoS of each.
fn subscribe(
    shared: &Shared,
    id: u64,
    s: &rumqttc::Subscribe,
    tx: &mpsc::Sender<Packet>,
    pkid: &Arc<AtomicU16>,
    cut: &CancellationToken,
) -> Vec<SubscribeReasonCode> {
    let mut codes = Vec::new();
    {
        let mut subs = shared.subs.lock().expect("subs");
        for f in &s.filters {
            let qos = if f.qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            subs.retain(|x| !(x.client == id && x.filter == f.path));
            subs.push(Sub {
                client: id,
                filter: f.path.clone(),
                qos,
                tx: tx.clone(),
                pkid: pkid.clone(),
                cut: cut.clone(),
            });
            codes.push(SubscribeReasonCode::Success(qos));
        }
    }
    codes
}

/// Whether `topic` matches the subscription `filter` (MQTT 3.1.1 §4.7):
/// `+` is one level, `#` the rest and the parent, and a topic starting
/// with `$` is not matched by a leading wildcard. Any text is safe: a
/// topic is compared level by level, never indexed by bytes (rumqttc's
/// `matches` panics on a topic starting with a multi-byte character, and
/// did so holding the subscription lock, poisoning it for every client).
fn topic_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (mut t, mut f) = (topic.split('/'), filter.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Sends a publish on to every matching subscription.
async fn route(shared: &Shared, p: &rumqttc::Publish) {
    type Target = (
        mpsc::Sender<Packet>,
        QoS,
        Arc<AtomicU16>,
        u64,
        CancellationToken,
    );
    let targets: Vec<Target> = shared
        .subs
        .lock()
        .expect("subs")
        .iter()
        .filter(|x| topic_matches(&p.topic, &x.filter))
        .map(|x| {
            let qos = if x.qos == QoS::AtMostOnce || p.qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            (x.tx.clone(), qos, x.pkid.clone(), x.client, x.cut.clone())
        })
        .collect();
    for (to, qos, ids, client, cut) in targets {
        let mut out = p.clone();
        out.qos = qos;
        out.dup = false;
        out.retain = false;
        out.pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            // 1..=65535, wrapping (0 is not a packet id).
            let n = ids.fetch_add(1, Relaxed).wrapping_add(1);
            if n == 0 {
                ids.fetch_add(1, Relaxed).wrapping_add(1)
            } else {
                n
            }
        };
        // A closed subscriber is simply skipped; one that has taken
        // nothing for the stall limit is disconnected.
        match tokio::time::timeout(shared.stall_limit, to.send(Packet::Publish(out))).await {
            Ok(_) => {
                shared.routed.fetch_add(1, Relaxed);
            }
            Err(_) => {
                tracing::warn!(
                    client,
                    "demo broker: a subscriber took nothing for {:?}; disconnected",
                    shared.stall_limit
                );
                shared
                    .subs
                    .lock()
                    .expect("subs")
                    .retain(|x| x.client != client);
                cut.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    /// A subscriber that stops reading (a paused `mosquitto_sub`) is
    /// disconnected after the stall limit instead of holding up every
    /// publisher: 20,000 publishes of 1 KB (more than its queue and socket
    /// buffers hold) are all acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_that_stops_reading_does_not_stall_publishers() {
        use bytes::BytesMut;
        use rumqttc::mqttbytes::v4::{Connect, Subscribe};
        use tokio::io::AsyncWriteExt;
        let stop = tokio_util::sync::CancellationToken::new();
        let broker = super::Broker::start_with(
            "127.0.0.1:0".parse().unwrap(),
            stop.clone(),
            std::time::Duration::from_millis(500),
        )
        .await
        .unwrap();
        // The stalled subscriber: connects, subscribes, never reads.
        let mut stalled = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        let mut buf = BytesMut::new();
        Connect::new("stalled").write(&mut buf).unwrap();
        Subscribe::new("env/#", rumqttc::mqttbytes::QoS::AtLeastOnce)
            .write(&mut buf)
            .unwrap();
        stalled.write_all(&buf).await.unwrap();
        // Subscribed once a publish is routed to it.
        let mut p = crate::demo::Publisher::connect("127.0.0.1", broker.addr.port(), "pub").await;
        while broker.routed() == 0 {
            p.publish("env/a/b/air/c".into(), "{}".into())
                .await
                .unwrap();
            assert!(p.flush(std::time::Duration::from_secs(60)).await);
        }
        let body = "x".repeat(1000);
        // A guard against hanging for ever, not a timing assumption: the
        // publishes wait only while the subscriber is given its chance.
        let all = tokio::time::timeout(std::time::Duration::from_secs(300), async {
            for _ in 0..20_000 {
                p.publish("env/a/b/air/c".into(), body.clone())
                    .await
                    .unwrap();
            }
            while p.acked() < p.sent {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(all.is_ok(), "{} of {} acknowledged", p.acked(), p.sent);
        println!(
            "routed to the stalled subscriber before it was cut: {}",
            broker.routed()
        );
        stop.cancel();
        drop(stalled);
    }

    #[test]
    fn topics_match_filters_and_any_text_is_safe() {
        for (topic, filter, want) in [
            ("env/a/b/air/s1", "env/#", true),
            ("env", "env/#", true),
            ("env/a/b", "env/+/b", true),
            ("env/a/c", "env/+/b", false),
            ("env/a", "env/a/b", false),
            ("env/a/b", "env/a", false),
            ("$SYS/x", "#", false),
            ("$SYS/x", "$SYS/#", true),
            ("北京/站", "北京/+", true),
            ("é", "#", true),
            ("é/x", "e/x", false),
            ("", "#", true),
        ] {
            assert_eq!(topic_matches(topic, filter), want, "{topic} vs {filter}");
        }
    }
}
