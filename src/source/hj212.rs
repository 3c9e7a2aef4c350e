//! The HJ 212 TCP listener. Data loggers connect (in HJ 212 the logger is
//! the client) and send packets; each packet goes to the spool like an MQTT
//! message (topic `$hj212/tcp/<peer>`; the pipeline decodes it and
//! quarantines what fails a check), and when the packet asks for one
//! (Flag bit A) and passes its device's checks, the data ACK (CN=9014) is
//! sent once the packet is durable — the promise an MQTT PUBACK makes.
//! A logger that gets no ACK sends again; the same packet gives the same
//! points, which overwrite.
//!
//! Bounded: at most `max_connections` (more wait in the kernel's backlog),
//! a packet at most `max_packet_bytes`, a silent connection closed after
//! `idle_timeout`, and at most `max_packets_per_second` taken from one
//! device: a faster sender is read more slowly (TCP pushes back).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::decode::hj212::{self, devices::Devices};
use crate::envelope::{Ack, Message, Tickets};
use crate::metrics::Metrics;

/// The listener's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_packet_bytes: usize,
    pub max_packets_per_second: f64,
}

impl Limits {
    pub fn from_config(c: &crate::config::Hj212Config) -> Self {
        Self {
            max_connections: c.max_connections.max(1),
            idle_timeout: c.idle_timeout.get(),
            max_packet_bytes: c.max_packet_bytes,
            max_packets_per_second: c.max_packets_per_second,
        }
    }
}

/// What every connection shares.
struct Shared {
    limits: Limits,
    devices: Arc<Devices>,
    tx: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
    /// Per device (MN): when its next packet may be taken.
    next_slot: Mutex<HashMap<String, Instant>>,
    clock: crate::clock::ArrivalClock,
}

/// Binds `addr` and serves until `stop`; the bound address (with port 0,
/// the kernel's choice) and the task. Every connection's handle on `tx`
/// is dropped before the task ends.
pub async fn serve(
    addr: SocketAddr,
    limits: Limits,
    devices: Arc<Devices>,
    tx: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    info!(%addr, devices = devices.len(), "HJ 212 listener taking data loggers");
    let shared = Arc::new(Shared {
        limits,
        devices,
        tx,
        metrics,
        next_slot: Mutex::new(HashMap::new()),
        clock: Default::default(),
    });
    let task = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(shared.limits.max_connections));
        let mut conns = tokio::task::JoinSet::new();
        let mut failures = 0u32;
        loop {
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => { failures = 0; x }
                    Err(e) => {
                        failures += 1;
                        let wait = crate::backoff::wait_after(
                            Duration::from_millis(10), Duration::from_secs(1), failures);
                        warn!(error = %e, retry_in = ?wait, "HJ 212 listener cannot accept a connection");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = stop.cancelled() => break,
                        }
                    }
                },
                _ = stop.cancelled() => break,
            };
            let (shared, stop) = (shared.clone(), stop.clone());
            conns.spawn(async move {
                let _slot = slot;
                shared
                    .metrics
                    .hj212_connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(%peer, "HJ 212 logger connected");
                let why = connection(sock, peer, &shared, &stop).await;
                debug!(%peer, why, "HJ 212 logger disconnected");
                shared
                    .metrics
                    .hj212_connections
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
            while conns.try_join_next().is_some() {}
        }
        // Intake stops: connections end with it (a packet not yet durable
        // was not acknowledged; the logger sends it again).
        conns.shutdown().await;
    });
    Ok((addr, task))
}

/// Serves one logger until it goes, falls silent, or intake stops. The
/// reading half hands packets to the spool as they come; the writing half
/// sends their ACKs in order, each once its packet is durable (a logger
/// sending several before waiting shares a sync among them).
async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    stop: &CancellationToken,
) -> &'static str {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let (taken_tx, mut taken_rx) = mpsc::channel::<Taken>(64);
    let reading = async move {
        let topic = format!("{}/{peer}", hj212::TCP_TOPIC);
        let max = shared.limits.max_packet_bytes;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if is_http(&buf) {
                return Err(("an HTTP request", true));
            }
            while let Some(frame) = next_frame(&mut buf, max, &shared.metrics) {
                let t = take(&topic, frame, shared).await.map_err(|w| (w, false))?;
                if taken_tx.send(t).await.is_err() {
                    return Err(("connection error", false));
                }
            }
            if buf.len() > max {
                // No packet start within the bound: drop what was read.
                shared
                    .metrics
                    .hj212_frame_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(%peer, bytes = buf.len(), max, "HJ 212 input with no packet within hj212.max_packet_bytes; skipped");
                buf.clear();
            }
            match tokio::time::timeout(shared.limits.idle_timeout, rd.read_buf(&mut buf)).await {
                Err(_) => return Err(("idle timeout", false)),
                Ok(Ok(0)) => return Ok("closed by the logger"),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(("connection error", false)),
            }
        }
    };
    let writing = async move {
        while let Some(t) = taken_rx.recv().await {
            acknowledge(&mut wr, t, shared).await?;
        }
        Ok::<_, &'static str>(wr)
    };
    let both = async {
        let (read, write) = tokio::join!(reading, writing);
        match (read, write) {
            (_, Err(why)) => why,
            (Ok(why), Ok(_)) => why,
            (Err((why, http)), Ok(mut wr)) => {
                if http {
                    // Someone pointed a browser or curl here: say what this is.
                    let _ = wr.write_all(NOT_HTTP.as_bytes()).await;
                }
                why
            }
        }
    };
    tokio::select! {
        why = both => why,
        _ = stop.cancelled() => "lantian is stopping",
    }
}

const NOT_HTTP: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n\
    This port takes HJ 212 packets (##<length><data><CRC>), not HTTP. \
    lantian's admin endpoint (/healthz, /metrics, the status page) is at admin.listen.\n";

/// Whether a connection opened with an HTTP request line.
fn is_http(buf: &[u8]) -> bool {
    ["GET ", "HEAD ", "POST ", "PUT ", "OPTIONS ", "DELETE "]
        .iter()
        .any(|m| buf.starts_with(m.as_bytes()))
}

/// A packet handed to the spool: what tells when it is durable, and the
/// packet to acknowledge then (when it asked and passed its checks).
struct Taken {
    durable: tokio::sync::oneshot::Receiver<()>,
    ack: Option<hj212::Packet>,
}

/// One packet: paced per device, handed to the spool.
async fn take(topic: &str, frame: bytes::Bytes, shared: &Shared) -> Result<Taken, &'static str> {
    let checked = shared.devices.check(&frame).ok();
    if let Some((packet, _)) = &checked {
        pace(shared, packet.mn.as_deref().unwrap_or_default()).await;
    }
    let ack = checked.and_then(|(p, _)| p.flag.ack().then_some(p));
    let (ticket, durable) = Tickets::global().issue();
    let msg = Message {
        topic: topic.to_owned(),
        payload: frame,
        ack: Ack::Ticket(ticket),
        received_ms: shared.clock.now_ms(),
        payload_len: 0,
        corrupt: None,
    };
    shared
        .metrics
        .hj212_packets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if shared.tx.send(msg).await.is_err() {
        Tickets::global().forget(ticket);
        return Err("lantian is stopping");
    }
    Ok(Taken { durable, ack })
}

/// Waits for a taken packet to be durable, then sends its data ACK.
async fn acknowledge(
    sock: &mut tokio::net::tcp::OwnedWriteHalf,
    taken: Taken,
    shared: &Shared,
) -> Result<(), &'static str> {
    if taken.durable.await.is_err() {
        return Err("the spool failed");
    }
    if let Some(packet) = taken.ack {
        let ack = hj212::data_ack(&packet);
        sock.write_all(ack.as_bytes())
            .await
            .map_err(|_| "connection error")?;
        shared
            .metrics
            .hj212_acks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Waits until device `mn` may send again (`max_packets_per_second`).
async fn pace(shared: &Shared, mn: &str) {
    let gap = Duration::from_secs_f64(1.0 / shared.limits.max_packets_per_second);
    let at = {
        let mut next = shared.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slot = next.entry(mn.to_owned()).or_insert(now);
        let (at, following) = next_slot(*slot, now, gap);
        *slot = following;
        at
    };
    tokio::time::sleep_until(at.into()).await;
}

/// When a device's packet may be taken, given its `slot` (when the one
/// after its last may be), and its next slot: one packet a `gap`, and
/// after a pause a burst of up to a second's worth at once.
fn next_slot(slot: Instant, now: Instant, gap: Duration) -> (Instant, Instant) {
    let earliest = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
    let at = slot.max(earliest);
    (at, at + gap)
}

/// The next packet in `buf`, consumed with its CR LF: from `##`, by its
/// length field when that ends in 4 hex digits after `&&`, otherwise up to
/// the CR LF (senders whose length is wrong), resyncing at a later `##`
/// before it. Bytes before a `##`, and packets over `max`, are dropped
/// (counted). `None` until a whole packet is there.
pub fn next_frame(buf: &mut BytesMut, max: usize, metrics: &Metrics) -> Option<bytes::Bytes> {
    let junk = || {
        metrics
            .hj212_frame_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
    loop {
        let start = find(buf, b"##", 0);
        let skip = start.unwrap_or(buf.len().saturating_sub(1));
        if skip > 0 {
            if buf[..skip].iter().any(|b| !b.is_ascii_whitespace()) {
                junk();
            }
            buf.advance(skip);
        }
        start?;
        let digits = buf[2..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if buf.len() < 2 + digits + 1 {
            return None;
        }
        if digits >= 2 {
            let len: usize = std::str::from_utf8(&buf[2..2 + digits])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end = 2 + digits + len + 4;
            if buf.len() >= end {
                let data = &buf[2 + digits..2 + digits + len];
                let crc = &buf[end - 4..end];
                if data.ends_with(b"&&") && crc.iter().all(u8::is_ascii_hexdigit) {
                    let frame = buf.split_to(end).freeze();
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    }
                    if frame.len() > max {
                        junk();
                        continue;
                    }
                    return Some(frame);
                }
            } else if end <= max && find(buf, b"\r\n", 0).is_none() {
                return None;
            }
        }
        // The length field is wrong (or absent): the packet ends at CR LF,
        // unless another packet starts before it (this one was cut off).
        let crlf = find(buf, b"\r\n", 2)?;
        if let Some(next) = find(&buf[..crlf], b"##", 2) {
            junk();
            buf.advance(next);
            continue;
        }
        let frame = buf.split_to(crlf).freeze();
        buf.advance(2);
        if frame.len() > max {
            junk();
            continue;
        }
        return Some(frame);
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packets framed from `input`, read in its chunks, and the
    /// stretches of junk counted.
    fn framed(input: &[&[u8]]) -> (Vec<String>, u64) {
        let m = Metrics::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = next_frame(&mut buf, 10_000, &m) {
                out.push(String::from_utf8_lossy(&f).into_owned());
            }
        }
        let junk = m
            .hj212_frame_errors
            .load(std::sync::atomic::Ordering::Relaxed);
        (out, junk)
    }

    fn frames(input: &[&[u8]]) -> Vec<String> {
        framed(input).0
    }

    const A: &str = "##0087QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&3240";

    /// One packet a gap from a steady sender; after a pause, a second's
    /// worth at once, then one a gap again.
    #[test]
    fn a_device_is_paced_to_its_packet_rate() {
        let gap = Duration::from_millis(100);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut slot = t0;
        let mut at = Vec::new();
        for _ in 0..3 {
            let (a, next) = next_slot(slot, t0, gap);
            at.push(a - t0);
            slot = next;
        }
        assert_eq!(at, [0, 100, 200].map(Duration::from_millis));
        // Silent for a minute: the next 11 are taken at once (not later
        // than now), the 12th a gap after.
        let now = t0 + Duration::from_secs(60);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let (a, next) = next_slot(slot, now, gap);
            waits.push(a.saturating_duration_since(now));
            slot = next;
        }
        assert!(waits[..11].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[11], gap);
    }

    #[test]
    fn packets_are_framed_across_reads_and_garbage() {
        let two = format!("{A}\r\n{A}\r\n");
        // Whole, byte by byte, and with junk before and between.
        assert_eq!(frames(&[two.as_bytes()]), [A, A]);
        let bytes: Vec<&[u8]> = two.as_bytes().chunks(1).collect();
        assert_eq!(frames(&bytes), [A, A]);
        let junk = format!("xx\r\n{A}\r\nGARBAGE{A}");
        assert_eq!(
            framed(&[junk.as_bytes()]),
            (vec![A.to_owned(), A.to_owned()], 2)
        );
        // Line ends between packets are not junk.
        assert_eq!(framed(&[two.as_bytes()]).1, 0);
        // A packet cut off by the next one: dropped (counted), the next
        // taken.
        let cut = &A[..40];
        assert_eq!(
            framed(&[format!("{cut}{A}\r\n").as_bytes()]),
            (vec![A.to_owned()], 1)
        );
        // A wrong length field: cut at CR LF instead.
        let wrong = A.replace("##0087", "##0099");
        assert_eq!(
            frames(&[format!("{wrong}\r\n{A}\r\n").as_bytes()]),
            [wrong.as_str(), A]
        );
        // A 3-digit length.
        let short = "##299ST=22;CN=2011;PW=;MN=100000000AM1975;CP=&&DataTime=20171220040009;PM10-Rtd=69&&d042";
        assert_eq!(frames(&[format!("{short}\r\n").as_bytes()]), [short]);
    }
}

#[cfg(test)]
mod listener_tests {
    //! The listener on a real loopback socket, with the test standing in
    //! for the spool: it receives the messages and says when each is
    //! durable.

    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const MN: &str = "LOGGER-0001";

    fn devices() -> Arc<Devices> {
        let toml = format!(
            "[[hj212.devices]]\nmn = \"{MN}\"\ndistrict = \"d\"\nsite = \"s\"\nkind = \"dust\"\n"
        );
        let s = crate::app::load_from_str(&toml).unwrap();
        Arc::new(Devices::from_config(&s.hj212).unwrap())
    }

    fn packet(qn: u32) -> String {
        let data = format!(
            "QN=20261201080000{qn:03};ST=39;CN=2061;PW=123456;MN={MN};Flag=5;CP=&&DataTime=20261201080000;a34002-Avg=61&&"
        );
        hj212::build(&data).trim_end().to_owned()
    }

    async fn start(limits: Limits) -> (SocketAddr, mpsc::Receiver<Message>, CancellationToken) {
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let (addr, _task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            devices(),
            tx,
            Arc::new(Metrics::default()),
            stop.clone(),
        )
        .await
        .unwrap();
        (addr, rx, stop)
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(600),
            max_packet_bytes: hj212::MAX_PACKET,
            max_packets_per_second: 1000.0,
        }
    }

    fn ticket(m: &Message) -> u64 {
        match m.ack {
            Ack::Ticket(t) => t,
            other => panic!("{other:?}"),
        }
    }

    /// The ACK waits for the packet to be durable: a packet the spool has
    /// not synced gets none (without the wait it would be answered at
    /// once); once synced, the ACK comes, echoing QN.
    #[tokio::test]
    async fn the_ack_comes_only_once_the_packet_is_durable() {
        let (addr, mut rx, stop) = start(limits()).await;
        let sock = TcpStream::connect(addr).await.unwrap();
        let mut sock = BufReader::new(sock);
        sock.get_mut()
            .write_all(format!("{}\r\n", packet(1)).as_bytes())
            .await
            .unwrap();
        let msg = rx.recv().await.unwrap();
        assert!(msg.topic.starts_with("$hj212/tcp/127.0.0.1:"));
        assert_eq!(&msg.payload[..], packet(1).as_bytes());
        let mut line = String::new();
        let early =
            tokio::time::timeout(Duration::from_millis(300), sock.read_line(&mut line)).await;
        assert!(early.is_err(), "acknowledged before durable: {line:?}");
        Tickets::global().done(&[ticket(&msg)]);
        sock.read_line(&mut line).await.unwrap();
        assert!(
            line.contains("QN=20261201080000001;ST=91;CN=9014"),
            "{line}"
        );
        assert!(line.ends_with("\r\n"));
        stop.cancel();
    }

    /// A packet start with no packet within `max_packet_bytes` is
    /// dropped and counted; the logger's next packet is taken.
    #[tokio::test]
    async fn an_endless_packet_is_dropped_and_the_next_taken() {
        let metrics = Arc::new(Metrics::default());
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let (addr, _task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Limits {
                max_packet_bytes: 256,
                ..limits()
            },
            devices(),
            tx,
            metrics.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let endless = format!("##0999{}", "x".repeat(400));
        sock.write_all(endless.as_bytes()).await.unwrap();
        sock.write_all(format!("{}\r\n", packet(1)).as_bytes())
            .await
            .unwrap();
        let m = rx.recv().await.unwrap();
        assert_eq!(&m.payload[..], packet(1).as_bytes());
        assert!(
            metrics
                .hj212_frame_errors
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        stop.cancel();
    }

    /// A logger that falls silent is disconnected after `idle_timeout`.
    #[tokio::test]
    async fn a_silent_logger_is_disconnected() {
        let (addr, _rx, stop) = start(Limits {
            idle_timeout: Duration::from_millis(200),
            ..limits()
        })
        .await;
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        // The bound is only so a regression fails instead of hanging.
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
            .await
            .expect("never disconnected");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        stop.cancel();
    }

    /// Past `max_connections`, a logger waits for a free slot: its packet
    /// is taken once another logger goes.
    #[tokio::test]
    async fn loggers_past_the_cap_wait_for_a_free_slot() {
        let (addr, mut rx, stop) = start(Limits {
            max_connections: 1,
            ..limits()
        })
        .await;
        let first = TcpStream::connect(addr).await.unwrap();
        // The first is served (its packet is taken).
        let mut first = first;
        first
            .write_all(format!("{}\r\n", packet(1)).as_bytes())
            .await
            .unwrap();
        let m = rx.recv().await.unwrap();
        Tickets::global().done(&[ticket(&m)]);
        let mut second = TcpStream::connect(addr).await.unwrap();
        second
            .write_all(format!("{}\r\n", packet(2)).as_bytes())
            .await
            .unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(early.is_err(), "a second logger served past the cap");
        drop(first);
        let m = rx.recv().await.unwrap();
        assert_eq!(&m.payload[..], packet(2).as_bytes());
        stop.cancel();
    }
}
