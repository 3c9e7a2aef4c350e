//! The durable spool between the MQTT source and the sinks.
//!
//! ```text
//! source ──► Writer (thread)  group commit: append records, fdatasync,
//!            │                then acknowledge the MQTT messages
//!            ▼ segments on disk (format.rs), committed position (watch)
//!            Reader (thread)  reads committed records in order ──► pipeline
//!            Cursor           the pipeline marks what InfluxDB accepted;
//!                             whole delivered segments are deleted
//! ```
//!
//! A message is acknowledged to the broker only once it is in the spool
//! and synced, so a crash at any instant loses nothing: what was synced is
//! replayed from the spool at start-up, what was not was never
//! acknowledged and the broker redelivers it. Replays and redeliveries
//! rewrite the same points (same series and time), so InfluxDB ends with
//! each reading once.
//!
//! The spool is bounded by `spool.max_bytes`. When full, the writer stops
//! taking messages; the source channel fills, the source stops reading the
//! socket, and the broker holds the rest (logged, and `spool_full` in
//! metrics) until delivery frees whole segments.
//!
//! Files in `spool.dir`: segments `<seq:016x>.seg` and `cursor` (the
//! delivered position: seq u64 LE, offset u64 LE, CRC-32 of both; written
//! to `cursor.tmp`, synced, renamed). The cursor is saved at most once a
//! second, so after a crash up to a second of delivered records is
//! delivered again — harmless, as above.
//!
//! Recovery at start-up: segments before the cursor are deleted; a torn
//! tail of the last segment (a write cut by the crash) is cut off — those
//! messages were never acknowledged; a new segment is started for new
//! writes. Corruption inside a segment (bad CRC, bad length) is found by
//! the reader: the bad bytes go to quarantine (reason `spool_corrupt`) and
//! reading resumes at the next record that checks out.

pub mod format;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::durable::{sync_dir, write_atomically};
pub use crate::envelope::Pos;
use crate::envelope::{Ack, AckToken, Message};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "spool directory {0}: {1} (set spool.dir or LANTIAN__SPOOL__DIR to a writable directory)"
    )]
    Dir(PathBuf, std::io::Error),
    #[error("spool {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Most bytes written per group commit.
    pub batch_bytes: usize,
    /// Payloads are stored up to this many bytes plus one: a longer one is
    /// quarantined as oversized anyway, and the spool must not hold it.
    pub max_payload: usize,
}

struct State {
    /// Segment sizes by seq (the last one is being written).
    segments: BTreeMap<u64, u64>,
    total: u64,
    delivered: Pos,
    /// Delivered, saved to `cursor` when.
    saved: Option<Instant>,
    /// Segments from here on are kept even if delivered: the window
    /// snapshot covers only up to here, and a restart replays the rest.
    hold: Option<Pos>,
    /// Arrival times of records handed on and not yet delivered, sampled
    /// (at most one per second of arrival time): (record end, received
    /// ms). The front is the oldest record waiting, within a second; the
    /// records not yet read are newer. Bounded by what the pipeline holds.
    arrivals: std::collections::VecDeque<(Pos, i64)>,
}

impl State {
    /// Segments before this may go.
    fn reclaimable(&self) -> Pos {
        self.hold.map_or(self.delivered, |h| h.min(self.delivered))
    }
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when space is freed.
    space: Condvar,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record ending at `end`, received at `received_ms`, was handed on.
    fn arrived(&self, end: Pos, received_ms: i64) {
        let mut st = self.lock();
        if end <= st.delivered {
            return;
        }
        if st.arrivals.is_empty() {
            self.metrics.spool_oldest(Some(received_ms));
        }
        st.arrivals.push_back((end, received_ms));
    }
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

fn read_cursor(dir: &Path) -> Option<Pos> {
    let b = fs::read(dir.join("cursor")).ok()?;
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
    if crc32fast::hash(&b[..16]) != crc {
        return None;
    }
    Some(Pos {
        seq: u64::from_le_bytes(b[..8].try_into().ok()?),
        offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
    })
}

fn write_cursor(dir: &Path, p: Pos) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&p.seq.to_le_bytes());
    b.extend_from_slice(&p.offset.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    write_atomically(&dir.join("cursor"), &b)
}

/// Saves the cursor; a failure only means more replay after a crash.
fn save_cursor(dir: &Path, p: Pos) {
    if let Err(e) = write_cursor(dir, p) {
        warn!(error = %e, "cannot save the spool cursor (delivered records may be replayed)");
    }
}

/// Opens (and recovers) the spool in `dir`.
/// `keep_from`: replay from here even if delivered (the window snapshot's
/// position), when it is before the saved cursor.
pub fn open(
    dir: &Path,
    limits: Limits,
    metrics: Arc<Metrics>,
    keep_from: Option<Pos>,
) -> Result<(Writer, Reader, Cursor), Error> {
    let mut segments = list_segments(dir)?;
    let header = format::HEADER.len() as u64;
    let cursor = read_cursor(dir);
    let first = segments.keys().next().copied().unwrap_or(0);
    let delivered = match cursor {
        Some(c) => c,
        None => {
            if !segments.is_empty() {
                warn!(dir = %dir.display(), "spool cursor missing or damaged; replaying every segment");
            }
            Pos {
                seq: first,
                offset: header,
            }
        }
    };
    let delivered = keep_from.map_or(delivered, |k| k.min(delivered));
    // Delivered segments (a crash between cursor save and deletion).
    let done: Vec<u64> = segments.range(..delivered.seq).map(|(s, _)| *s).collect();
    for seq in done {
        let _ = fs::remove_file(seg_path(dir, seq));
        segments.remove(&seq);
    }
    cut_torn_tail(dir, &mut segments)?;
    let pending: u64 = segments.values().sum();
    let next_seq = segments
        .keys()
        .next_back()
        .map_or(delivered.seq.max(first), |s| s + 1);
    let file = new_segment(dir, next_seq)?;
    segments.insert(next_seq, header);
    let total: u64 = segments.values().sum();
    if pending > 0 {
        info!(
            dir = %dir.display(),
            segments = segments.len() - 1,
            bytes = pending,
            "spool: replaying what was not yet delivered"
        );
    }
    metrics.spool_size(total);
    let start = if segments.contains_key(&delivered.seq) {
        delivered
    } else {
        let seq = *segments.keys().next().unwrap_or(&next_seq);
        Pos {
            seq,
            offset: header,
        }
    };
    let shared = Arc::new(Shared {
        dir: dir.into(),
        state: Mutex::new(State {
            segments,
            total,
            delivered: start,
            saved: None,
            hold: keep_from,
            arrivals: Default::default(),
        }),
        space: Condvar::new(),
        metrics,
    });
    let (committed_tx, committed_rx) = watch::channel(Pos {
        seq: next_seq,
        offset: header,
    });
    Ok((
        Writer {
            shared: shared.clone(),
            file,
            seq: next_seq,
            size: header,
            limits,
            committed: committed_tx,
        },
        Reader {
            shared: shared.clone(),
            pos: start,
            committed: committed_rx,
            chunk: chunk_bytes(limits.max_payload),
            sampled_ms: i64::MIN,
        },
        Cursor { shared },
    ))
}

/// The segments in `dir` (seq → size), once `dir` is known to be writable.
fn list_segments(dir: &Path) -> Result<BTreeMap<u64, u64>, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::Dir(dir.into(), e))?;
    let probe = dir.join(".probe");
    fs::write(&probe, b"").map_err(|e| Error::Dir(dir.into(), e))?;
    let _ = fs::remove_file(probe);
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::Dir(dir.into(), e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        segments.insert(seq, size);
    }
    Ok(segments)
}

/// A torn tail of the last segment (a write cut by a crash): cut it off.
fn cut_torn_tail(dir: &Path, segments: &mut BTreeMap<u64, u64>) -> Result<(), Error> {
    let header = format::HEADER.len() as u64;
    if let Some((&last, size)) = segments.iter_mut().next_back() {
        let path = seg_path(dir, last);
        let bytes = fs::read(&path).map_err(|e| Error::Io(path.clone(), e))?;
        let valid = if bytes.len() >= format::HEADER.len() && bytes.starts_with(format::HEADER) {
            header as usize + format::valid_prefix(&bytes[header as usize..])
        } else {
            0
        };
        if valid < bytes.len() {
            warn!(
                segment = %path.display(),
                cut_bytes = bytes.len() - valid,
                "spool: cut a torn tail (a write interrupted by a crash; those messages were never acknowledged and the broker redelivers them)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::Io(path.clone(), e))?;
            f.set_len(valid as u64)
                .map_err(|e| Error::Io(path.clone(), e))?;
            f.sync_all().map_err(|e| Error::Io(path.clone(), e))?;
            *size = valid as u64;
        }
    }
    Ok(())
}

/// Whether a write error may pass with time: no space (ENOSPC), over
/// quota (EDQUOT), too many open files (EMFILE, ENFILE).
fn may_pass(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122 | 24 | 23))
}

/// A new, empty segment (its header synced, and its directory entry).
fn new_segment(dir: &Path, seq: u64) -> Result<File, Error> {
    let path = seg_path(dir, seq);
    let mut file = File::create(&path).map_err(|e| Error::Io(path.clone(), e))?;
    file.write_all(format::HEADER)
        .map_err(|e| Error::Io(path.clone(), e))?;
    file.sync_all().map_err(|e| Error::Io(path.clone(), e))?;
    sync_dir(dir);
    Ok(file)
}

/// Appends messages with group commit, then acknowledges them.
pub struct Writer {
    shared: Arc<Shared>,
    file: File,
    seq: u64,
    size: u64,
    limits: Limits,
    committed: watch::Sender<Pos>,
}

impl Writer {
    /// Runs on its own thread until the source closes `rx`; `ack` gets
    /// each batch's MQTT ack tokens once the batch is synced. A write that
    /// fails stops intake: the error is returned (nothing of the batch was
    /// acknowledged; the broker redelivers it).
    pub fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        mut ack: impl FnMut(&[AckToken]),
    ) -> Result<(), String> {
        let mut buf = Vec::with_capacity(self.limits.batch_bytes + 4096);
        let mut acks = Vec::new();
        let mut tickets = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(m) = next.take() {
                let payload = &m.payload[..m.payload.len().min(self.limits.max_payload + 1)];
                format::encode(
                    &mut buf,
                    &format::Record {
                        received_ms: m.received_ms,
                        // The length as published (the source may have
                        // cut an oversized payload already).
                        payload_len: u32::try_from(m.payload_len.max(m.payload.len()))
                            .unwrap_or(u32::MAX),
                        topic: &m.topic,
                        payload,
                    },
                );
                match m.ack {
                    Ack::Mqtt(t) => acks.push(t),
                    Ack::Ticket(id) => tickets.push(id),
                    Ack::Spool(_) => {}
                }
                if buf.len() < self.limits.batch_bytes {
                    next = rx.try_recv().ok();
                }
            }
            self.wait_for_space(buf.len() as u64);
            self.append_or_wait(&buf)?;
            ack(&acks);
            crate::envelope::Tickets::global().done(&tickets);
            self.shared
                .metrics
                .spooled((acks.len() + tickets.len()) as u64);
            buf.clear();
            acks.clear();
            tickets.clear();
        }
        Ok(())
    }

    fn wait_for_space(&self, need: u64) {
        let mut st = self.shared.lock();
        let mut warned = false;
        // A batch always fits an empty spool (no deadlock on a tiny limit).
        while st.total + need > self.limits.max_bytes && st.total > self.size.max(64) {
            if !warned {
                warn!(
                    bytes = st.total,
                    max_bytes = self.limits.max_bytes,
                    "spool full: pausing MQTT intake until InfluxDB catches up (the broker holds new messages)"
                );
                self.shared.metrics.spool_full(true);
                warned = true;
            }
            st = self
                .shared
                .space
                .wait_timeout(st, Duration::from_millis(500))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if warned {
            info!(
                bytes = st.total,
                "spool has room again: MQTT intake resumed"
            );
            self.shared.metrics.spool_full(false);
        }
    }

    /// Appends and syncs `bytes`. A full disk or file system, or too many
    /// open files, may pass: intake pauses (nothing is acknowledged, the
    /// channel fills, the source stops reading the broker), the process
    /// says it is not ready, and the write is retried until it succeeds.
    /// Any other error ends the stage (and the process, non-zero); the
    /// broker redelivers what was not acknowledged.
    fn append_or_wait(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut failures = 0u32;
        loop {
            let e = match self.append(bytes) {
                Ok(()) => break,
                Err(e) => e,
            };
            // A torn tail of this attempt goes; the retry starts clean.
            let (size, file) = (self.size, &mut self.file);
            let _ = file
                .set_len(size)
                .and_then(|()| std::io::Seek::seek(file, std::io::SeekFrom::Start(size)));
            if !may_pass(&e) {
                return Err(format!(
                    "spool write in {} failed: {e}; stopping intake (nothing unsynced was acknowledged)",
                    self.shared.dir.display()
                ));
            }
            if failures == 0 {
                error!(dir = %self.shared.dir.display(), error = %e, "cannot write the spool; MQTT intake paused until it can (the broker holds new messages)");
                self.shared.metrics.spool_blocked(true);
            }
            failures += 1;
            std::thread::sleep(crate::backoff::wait_after(
                Duration::from_millis(100),
                Duration::from_secs(5),
                failures,
            ));
        }
        if failures > 0 {
            info!(failures, "spool writable again: MQTT intake resumed");
            self.shared.metrics.spool_blocked(false);
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size >= self.limits.segment_bytes {
            self.roll()?;
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.size += bytes.len() as u64;
        {
            let mut st = self.shared.lock();
            st.segments.insert(self.seq, self.size);
            st.total += bytes.len() as u64;
            self.shared.metrics.spool_size(st.total);
        }
        self.committed.send_replace(Pos {
            seq: self.seq,
            offset: self.size,
        });
        Ok(())
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let seq = self.seq + 1;
        let mut f = File::create(seg_path(&self.shared.dir, seq))?;
        f.write_all(format::HEADER)?;
        f.sync_data()?;
        sync_dir(&self.shared.dir);
        let header = format::HEADER.len() as u64;
        {
            let mut st = self.shared.lock();
            st.segments.insert(seq, header);
            st.total += header;
            reclaim(&self.shared, &mut st);
        }
        self.file = f;
        self.seq = seq;
        self.size = header;
        self.committed.send_replace(Pos {
            seq,
            offset: header,
        });
        Ok(())
    }
}

/// Reads committed records in order and hands them to the pipeline.
pub struct Reader {
    shared: Arc<Shared>,
    pos: Pos,
    committed: watch::Receiver<Pos>,
    chunk: usize,
    /// Arrival time of the last record sampled into `State::arrivals`.
    sampled_ms: i64,
}

/// Bytes read per chunk: more than the largest record.
fn chunk_bytes(max_payload: usize) -> usize {
    (4 << 20).max(2 * (max_payload + (64 << 10) + 64))
}

impl Reader {
    /// Runs on its own thread until the writer has stopped and everything
    /// committed was handed on (or the pipeline is gone).
    pub fn run(mut self, tx: mpsc::Sender<Message>, rt: tokio::runtime::Handle) {
        let mut file: Option<(u64, File)> = None;
        let mut buf = Vec::new();
        loop {
            let committed = *self.committed.borrow_and_update();
            let end = if self.pos.seq < committed.seq {
                self.shared.lock().segments.get(&self.pos.seq).copied()
            } else {
                Some(committed.offset)
            };
            let Some(end) = end else {
                // Segment gone (cannot happen: only delivered ones are
                // deleted); move on.
                self.next_segment(committed);
                continue;
            };
            if self.pos.offset < end {
                if file.as_ref().map(|f| f.0) != Some(self.pos.seq) {
                    match File::open(seg_path(&self.shared.dir, self.pos.seq)) {
                        Ok(f) => file = Some((self.pos.seq, f)),
                        Err(e) => {
                            error!(seq = self.pos.seq, error = %e, "spool segment unreadable; skipping it");
                            self.next_segment(committed);
                            continue;
                        }
                    }
                }
                let Some((_, f)) = &file else { continue };
                let n = ((end - self.pos.offset) as usize).min(self.chunk);
                buf.resize(n, 0);
                if let Err(e) = f.read_exact_at(&mut buf, self.pos.offset) {
                    error!(seq = self.pos.seq, error = %e, "spool read failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                // The last chunk of a range is complete; an earlier one may
                // end inside a record.
                let complete = self.pos.offset + n as u64 == end;
                if !self.hand_on(&buf, complete, &tx) {
                    return;
                }
            } else if self.pos.seq < committed.seq {
                self.next_segment(committed);
            } else if rt.block_on(self.committed.changed()).is_err() {
                // Writer gone: hand on what is left, then stop.
                let last = *self.committed.borrow();
                if self.pos >= last {
                    return;
                }
            }
        }
    }

    fn next_segment(&mut self, committed: Pos) {
        let st = self.shared.lock();
        let seq = st
            .segments
            .range(self.pos.seq + 1..)
            .next()
            .map_or(committed.seq, |(s, _)| *s);
        self.pos = Pos {
            seq,
            offset: format::HEADER.len() as u64,
        };
    }

    /// Sends the records in `chunk`; false when the pipeline is gone.
    fn hand_on(&mut self, chunk: &[u8], complete: bool, tx: &mpsc::Sender<Message>) -> bool {
        let mut at = 0;
        while at < chunk.len() {
            // A chunk that ends inside a record is read again from that
            // record; unless nothing at all parsed, which only corruption
            // longer than a chunk does.
            let next = match format::next(&chunk[at..], complete) {
                format::Next::Incomplete if at == 0 && !complete => format::next(chunk, true),
                other => other,
            };
            let msg = match next {
                format::Next::Record(r, n) => {
                    at += n;
                    if r.received_ms >= self.sampled_ms.saturating_add(1000)
                        || self.shared.metrics.spool_oldest_ms().is_none()
                    {
                        self.sampled_ms = r.received_ms;
                        self.shared.arrived(self.at(at), r.received_ms);
                    }
                    Message {
                        topic: r.topic.to_owned(),
                        payload: Bytes::copy_from_slice(r.payload),
                        received_ms: r.received_ms,
                        payload_len: r.payload_len as usize,
                        ack: Ack::Spool(self.at(at)),
                        corrupt: None,
                    }
                }
                format::Next::Incomplete => break,
                format::Next::Corrupt(n) => {
                    let bad = &chunk[at..at + n];
                    at += n;
                    let offset = self.pos.offset + (at - n) as u64;
                    self.shared.metrics.spool_corrupt(self.pos.seq, offset, n);
                    Message {
                        topic: String::new(),
                        payload: Bytes::copy_from_slice(&bad[..bad.len().min(4096)]),
                        received_ms: chrono::Utc::now().timestamp_millis(),
                        payload_len: n,
                        ack: Ack::Spool(self.at(at)),
                        corrupt: Some(format!(
                            "{n} corrupt bytes in spool segment {:016x} at offset {}",
                            self.pos.seq,
                            self.pos.offset + (at - n) as u64
                        )),
                    }
                }
            };
            if tx.blocking_send(msg).is_err() {
                return false;
            }
        }
        self.pos.offset += at as u64;
        true
    }

    fn at(&self, in_chunk: usize) -> Pos {
        Pos {
            seq: self.pos.seq,
            offset: self.pos.offset + in_chunk as u64,
        }
    }
}

/// Deletes the segments wholly delivered up to `pos`, except the one being
/// written; true if any was.
fn reclaim(shared: &Shared, st: &mut State) -> bool {
    let pos = st.reclaimable();
    let writing = st.segments.keys().next_back().copied().unwrap_or(0);
    let done: Vec<(u64, u64)> = st
        .segments
        .range(..=pos.seq)
        .filter(|(s, n)| **s < pos.seq || (**s == pos.seq && pos.offset >= **n))
        .filter(|(s, _)| **s != writing)
        .map(|(s, n)| (*s, *n))
        .collect();
    for (seq, size) in &done {
        let _ = fs::remove_file(seg_path(&shared.dir, *seq));
        st.segments.remove(seq);
        st.total -= size;
    }
    if !done.is_empty() {
        shared.metrics.spool_size(st.total);
        shared.space.notify_all();
    }
    !done.is_empty()
}

/// Marks records delivered; deletes whole delivered segments.
#[derive(Clone)]
pub struct Cursor {
    shared: Arc<Shared>,
}

impl Cursor {
    /// Everything up to `pos` is stored in InfluxDB (or quarantined).
    pub fn delivered(&self, pos: Pos) {
        let mut st = self.shared.lock();
        if pos <= st.delivered {
            return;
        }
        st.delivered = pos;
        while st.arrivals.front().is_some_and(|(end, _)| *end <= pos) {
            st.arrivals.pop_front();
        }
        let oldest = st.arrivals.front().map(|(_, ms)| *ms);
        self.shared.metrics.spool_oldest(oldest);
        let freed = reclaim(&self.shared, &mut st);
        if st
            .saved
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            || freed
        {
            st.saved = Some(Instant::now());
            save_cursor(&self.shared.dir, pos);
        }
    }

    /// Keeps segments from `pos` on (the window snapshot now covers
    /// everything before it).
    pub fn hold(&self, pos: Pos) {
        let mut st = self.shared.lock();
        st.hold = Some(pos);
        reclaim(&self.shared, &mut st);
    }

    /// Saves the cursor now (at shutdown).
    pub fn save(&self) {
        let st = self.shared.lock();
        save_cursor(&self.shared.dir, st.delivered);
    }
}

#[cfg(test)]
mod tests;
