use super::*;
use std::sync::atomic::Ordering::Relaxed;

fn limits(max_bytes: u64, segment_bytes: u64) -> Limits {
    Limits {
        max_bytes,
        segment_bytes,
        batch_bytes: 64 << 10,
        max_payload: 65536,
    }
}

fn msg(i: u32) -> Message {
    Message {
        topic: format!("env/dongcheng/dongsi/air/aq-{}", i % 7),
        payload: Bytes::from(format!(
            "{{\"ts\":{},\"pm25\":{i}}}",
            1_764_144_000_000u64 + i as u64
        )),
        ack: Ack::Mqtt(AckToken::detached((i % 60000) as u16 + 1)),
        received_ms: 1_764_144_000_000 + i as i64,
        payload_len: 0,
        corrupt: None,
    }
}

/// Writes `msgs` through a writer thread; returns how many were acked.
fn write_all(w: Writer, msgs: Vec<Message>) -> usize {
    let (tx, rx) = mpsc::channel(64);
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = acked.clone();
    let t = std::thread::spawn(move || {
        w.run(rx, |t| {
            a.fetch_add(t.len(), Relaxed);
        })
    });
    for m in msgs {
        tx.blocking_send(m).unwrap();
    }
    drop(tx);
    t.join().unwrap().unwrap();
    acked.load(Relaxed)
}

/// Reads everything the reader hands on until the writer is gone.
fn read_all(r: Reader, rt: &tokio::runtime::Runtime) -> Vec<Message> {
    let (tx, mut rx) = mpsc::channel(1 << 16);
    let h = rt.handle().clone();
    let t = std::thread::spawn(move || r.run(tx, h));
    let mut out = Vec::new();
    while let Some(m) = rx.blocking_recv() {
        out.push(m);
    }
    t.join().unwrap();
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn pos(m: &Message) -> Pos {
    match m.ack {
        Ack::Spool(p) => p,
        Ack::Mqtt(_) | Ack::Ticket(_) => panic!("reader hands on spool positions"),
    }
}

#[test]
fn messages_come_back_in_order_and_delivered_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    let (w, r, cursor) = open(dir.path(), limits(1 << 30, 64 << 10), m.clone(), None).unwrap();
    let acked = write_all(w, (0..5000).map(msg).collect());
    assert_eq!(acked, 5000);
    let got = read_all(r, &rt);
    assert_eq!(got.len(), 5000);
    for (i, g) in got.iter().enumerate() {
        let want = msg(i as u32);
        assert_eq!(
            (&g.topic, &g.payload, g.received_ms),
            (&want.topic, &want.payload, want.received_ms)
        );
    }
    let segs = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    assert!(segs() > 3, "small segments roll over");
    cursor.delivered(pos(got.last().unwrap()));
    assert_eq!(segs(), 1, "all but the one being written are deleted");
}

#[test]
fn a_restart_replays_what_was_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    let (w, r, cursor) = open(dir.path(), limits(1 << 30, 64 << 10), m.clone(), None).unwrap();
    write_all(w, (0..3000).map(msg).collect());
    let got = read_all(r, &rt);
    cursor.delivered(pos(&got[999]));
    cursor.save();
    drop(cursor);
    // Restart: the reader starts after the 1000th record.
    let (w, r, _) = open(dir.path(), limits(1 << 30, 64 << 10), m.clone(), None).unwrap();
    drop(w);
    let again = read_all(r, &rt);
    assert_eq!(again.len(), 2000);
    assert_eq!(again[0].payload, msg(1000).payload);
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    let (w, _r, _c) = open(dir.path(), limits(1 << 30, 1 << 30), m.clone(), None).unwrap();
    write_all(w, (0..100).map(msg).collect());
    // A crash in the middle of a write: half a record at the end.
    let seg = seg_path(dir.path(), 0);
    let mut half = Vec::new();
    format::encode(
        &mut half,
        &format::Record {
            received_ms: 1,
            payload_len: 8,
            topic: "t",
            payload: b"xxxxxxxx",
        },
    );
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&half[..half.len() / 2]).unwrap();
    drop(f);
    let before = fs::metadata(&seg).unwrap().len();
    let (w, r, _) = open(dir.path(), limits(1 << 30, 1 << 30), m.clone(), None).unwrap();
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        before - (half.len() / 2) as u64
    );
    drop(w);
    let got = read_all(r, &rt);
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|g| g.corrupt.is_none()));
}

#[test]
fn corruption_inside_a_segment_is_quarantined_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    let (w, _r, _c) = open(dir.path(), limits(1 << 30, 1 << 30), m.clone(), None).unwrap();
    write_all(w, (0..100).map(msg).collect());
    // Flip a byte inside the 11th record's payload.
    let seg = seg_path(dir.path(), 0);
    let mut bytes = fs::read(&seg).unwrap();
    let mut enc = Vec::new();
    let sizes: Vec<usize> = (0..11)
        .map(|i| {
            enc.clear();
            let m = msg(i);
            format::encode(
                &mut enc,
                &format::Record {
                    received_ms: m.received_ms,
                    payload_len: m.payload.len() as u32,
                    topic: &m.topic,
                    payload: &m.payload,
                },
            )
        })
        .collect();
    let at = 8 + sizes[..10].iter().sum::<usize>() + sizes[10] - 3;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let (w, r, _) = open(dir.path(), limits(1 << 30, 1 << 30), m.clone(), None).unwrap();
    drop(w);
    let got = read_all(r, &rt);
    assert_eq!(
        got.len(),
        100,
        "99 good records and one corrupt-bytes message"
    );
    assert!(
        got[10]
            .corrupt
            .as_deref()
            .unwrap()
            .contains("corrupt bytes in spool segment")
    );
    assert_eq!(got[10].payload.len(), sizes[10]);
    assert_eq!(got[11].payload, msg(11).payload);
    assert_eq!(m.spool_corrupt_bytes.load(Relaxed), sizes[10] as u64);
}

#[test]
fn a_full_spool_holds_the_writer_until_delivery_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    // ~70 bytes a record: 1 MiB holds ~15,000; write 60,000.
    let (w, r, cursor) = open(dir.path(), limits(1 << 20, 128 << 10), m.clone(), None).unwrap();
    let (ptx, mut prx) = mpsc::channel(1 << 17);
    let h = rt.handle().clone();
    let reader = std::thread::spawn(move || r.run(ptx, h));
    let writer = std::thread::spawn(move || write_all(w, (0..60_000).map(msg).collect()));
    // Nothing delivered yet: the writer must stall at the limit.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.spool_full.load(Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(m.spool_full.load(Relaxed), "writer reported full");
    assert!(m.spool_bytes.load(Relaxed) <= 1 << 20);
    let stalled = m.spool_records.load(Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        m.spool_records.load(Relaxed),
        stalled,
        "no progress while full"
    );
    // Deliver as we read: everything gets through.
    while let Some(msg) = prx.blocking_recv() {
        cursor.delivered(pos(&msg));
        seen.push(msg.received_ms);
    }
    assert_eq!(writer.join().unwrap(), 60_000);
    reader.join().unwrap();
    assert_eq!(seen.len(), 60_000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert!(!m.spool_full.load(Relaxed));
}

#[test]
fn an_unwritable_directory_is_a_clear_error() {
    let err = open(
        Path::new("/proc/lantian-spool"),
        limits(1 << 20, 1 << 16),
        Arc::new(Metrics::default()),
        None,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("set spool.dir or LANTIAN__SPOOL__DIR"),
        "{err}"
    );
}

/// The arrival time of the oldest message handed on and not yet delivered
/// is known (to the second) and follows the cursor; nothing waiting is 0.
#[test]
fn the_oldest_waiting_message_is_known_and_follows_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let m = Arc::new(Metrics::default());
    let (w, r, cursor) = open(dir.path(), limits(1 << 30, 64 << 10), m.clone(), None).unwrap();
    let base = 1_764_144_000_000i64;
    // 3,000 messages, 10 ms of arrival time apart.
    let msgs: Vec<Message> = (0..3000)
        .map(|i| Message {
            received_ms: base + 10 * i as i64,
            ..msg(i)
        })
        .collect();
    assert_eq!(write_all(w, msgs), 3000);
    assert_eq!(m.spool_oldest_ms(), None, "nothing handed on yet");
    let got = read_all(r, &rt);
    assert_eq!(got.len(), 3000);
    assert_eq!(m.spool_oldest_ms(), Some(base));
    assert_eq!(m.spool_oldest_age_seconds(base + 90_000), 90.0);
    // The first 1,000 written: the 1,001st (10 s later) is the oldest.
    cursor.delivered(pos(&got[999]));
    assert_eq!(m.spool_oldest_ms(), Some(base + 10_000));
    // Where the oldest falls between samples: the next sample, less than
    // a second younger.
    cursor.delivered(pos(&got[1049]));
    let oldest = m.spool_oldest_ms().unwrap();
    assert!(
        (base + 10_500..base + 11_500).contains(&oldest),
        "{}",
        oldest - base
    );
    cursor.delivered(pos(&got[2999]));
    assert_eq!(m.spool_oldest_ms(), None);
    assert_eq!(m.spool_oldest_age_seconds(base + 90_000), 0.0);
}
