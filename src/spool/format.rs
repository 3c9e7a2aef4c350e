//! The on-disk format of spool segments. Pure functions over bytes.
//!
//! A segment file `<seq as 16 hex digits>.seg` is an 8-byte header
//! `LTSPOOL1` followed by records:
//!
//! ```text
//! magic  u32 LE  0x3152544C ("LTR1")
//! len    u32 LE  length of body
//! crc    u32 LE  CRC-32 (IEEE) of len's 4 bytes followed by body
//! body   len bytes:
//!        received_ms i64 LE | payload_len u32 LE | topic_len u16 LE |
//!        topic (UTF-8) | payload
//! ```
//!
//! `payload_len` is the length the message had: payloads are stored only
//! up to `validation.max_payload_bytes` + 1 (a longer one is quarantined
//! as oversized anyway, with its real length).
//!
//! ```text
//! ```
//!
//! The CRC covers the length, so a corrupted length is caught too. A
//! reader that meets a bad record skips ahead to the next magic whose
//! record checks out (resynchronisation); the bytes skipped are reported.

/// Segment file header.
pub const HEADER: &[u8; 8] = b"LTSPOOL1";
/// Record magic.
pub const MAGIC: u32 = 0x3152_544C;
/// magic + len + crc.
pub const RECORD_HEADER: usize = 12;
/// received_ms + payload_len + topic_len.
const BODY_FIXED: usize = 14;
/// Largest body accepted when reading (a larger length is corruption).
pub const MAX_BODY: usize = 16 << 20;
/// The largest `validation.max_payload_bytes` a record holds: the body's
/// fixed part, the longest topic (u16 length) and the payload's extra byte
/// (kept to tell an oversized payload) must fit in `MAX_BODY`.
pub const MAX_PAYLOAD: usize = MAX_BODY - BODY_FIXED - u16::MAX as usize - 1;

/// One spooled MQTT message.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    pub received_ms: i64,
    /// Length of the original payload (≥ `payload.len()`).
    pub payload_len: u32,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Appends the record to `buf`; returns its encoded length.
pub fn encode(buf: &mut Vec<u8>, r: &Record<'_>) -> usize {
    let topic = &r.topic.as_bytes()[..r.topic.len().min(u16::MAX as usize)];
    let len = BODY_FIXED + topic.len() + r.payload.len();
    let start = buf.len();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&r.received_ms.to_le_bytes());
    buf.extend_from_slice(&r.payload_len.to_le_bytes());
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(r.payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&(len as u32).to_le_bytes());
    h.update(&buf[start + RECORD_HEADER..]);
    buf[start + 8..start + 12].copy_from_slice(&h.finalize().to_le_bytes());
    buf.len() - start
}

/// What is at the start of `bytes`.
#[derive(Debug, PartialEq)]
pub enum Next<'a> {
    /// A good record and its encoded length.
    Record(Record<'a>, usize),
    /// Not enough bytes for a whole record (a torn tail, or the writer's
    /// next record not yet complete).
    Incomplete,
    /// Corruption: this many bytes up to the next record that checks out
    /// (or to the end of `bytes` if there is none).
    Corrupt(usize),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks one record at the start of `bytes` without resynchronising.
fn check(bytes: &[u8]) -> Result<(Record<'_>, usize), bool> {
    // Err(true): incomplete; Err(false): corrupt.
    if bytes.len() < RECORD_HEADER {
        return Err(true);
    }
    if u32_at(bytes, 0) != MAGIC {
        return Err(false);
    }
    let len = u32_at(bytes, 4) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Err(false);
    }
    if bytes.len() < RECORD_HEADER + len {
        return Err(true);
    }
    let body = &bytes[RECORD_HEADER..RECORD_HEADER + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[4..8]);
    h.update(body);
    if h.finalize() != u32_at(bytes, 8) {
        return Err(false);
    }
    let received_ms = i64::from_le_bytes(body[..8].try_into().map_err(|_| false)?);
    let payload_len = u32_at(body, 8);
    let tlen = u16::from_le_bytes([body[12], body[13]]) as usize;
    if BODY_FIXED + tlen > len {
        return Err(false);
    }
    let topic = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + tlen]).map_err(|_| false)?;
    Ok((
        Record {
            received_ms,
            payload_len,
            topic,
            payload: &body[BODY_FIXED + tlen..],
        },
        RECORD_HEADER + len,
    ))
}

/// Reads the record at the start of `bytes`. `complete` says whether
/// `bytes` runs to the end of what was written (so a short record there
/// is a torn write, not one still being written).
pub fn next(bytes: &[u8], complete: bool) -> Next<'_> {
    match check(bytes) {
        Ok((r, n)) => Next::Record(r, n),
        Err(true) if !complete => Next::Incomplete,
        Err(_) => {
            // Resynchronise: the next magic whose record checks out.
            let mut at = 1;
            while at + 4 <= bytes.len() {
                if u32_at(bytes, at) == MAGIC && check(&bytes[at..]).is_ok() {
                    return Next::Corrupt(at);
                }
                at += 1;
            }
            if complete {
                Next::Corrupt(bytes.len())
            } else {
                // Whatever follows may complete a record: wait for it.
                Next::Incomplete
            }
        }
    }
}

/// Where a torn tail of a segment's records (after the header) starts:
/// the end of the good records, if nothing good follows (a good record
/// further on means corruption inside, left for the reader to report).
pub fn valid_prefix(records: &[u8]) -> usize {
    let mut at = 0;
    while let Ok((_, n)) = check(&records[at..]) {
        at += n;
    }
    match next(&records[at..], true) {
        Next::Corrupt(n) if at + n < records.len() => records.len(),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> Record<'static> {
        Record {
            received_ms: 1_764_144_000_000 + i,
            payload_len: 11,
            topic: "env/dongcheng/dongsi/air/aq-1",
            payload: br#"{"pm25":35}"#,
        }
    }

    fn encoded(n: i64) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            encode(&mut buf, &rec(i));
            ends.push(buf.len());
        }
        (buf, ends)
    }

    #[test]
    fn round_trip() {
        let (buf, ends) = encoded(3);
        let mut at = 0;
        for i in 0..3 {
            match next(&buf[at..], true) {
                Next::Record(r, n) => {
                    assert_eq!(r, rec(i));
                    at += n;
                    assert_eq!(at, ends[i as usize]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(next(&buf[at..], true), Next::Corrupt(0));
        assert_eq!(valid_prefix(&buf), buf.len());
    }

    #[test]
    fn a_torn_tail_is_incomplete_while_writing_and_cut_at_recovery() {
        let (buf, ends) = encoded(3);
        let torn = &buf[..ends[1] + 7];
        assert_eq!(valid_prefix(torn), ends[1]);
        assert_eq!(next(&torn[ends[1]..], false), Next::Incomplete);
        assert_eq!(next(&torn[ends[1]..], true), Next::Corrupt(7));
    }

    #[test]
    fn a_flipped_bit_is_detected_and_skipped_to_the_next_record() {
        let (buf, ends) = encoded(3);
        for pos in [0, 5, 9, 20, ends[0] - 1] {
            let mut bad = buf.clone();
            bad[pos] ^= 0x10;
            assert_eq!(next(&bad, true), Next::Corrupt(ends[0]), "bit at {pos}");
            assert!(matches!(next(&bad[ends[0]..], true), Next::Record(r, _) if r == rec(1)));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let n = rng.usize(0..200);
            let mut b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if n > 4 && rng.bool() {
                b[..4].copy_from_slice(&MAGIC.to_le_bytes());
            }
            let _ = next(&b, rng.bool());
            let _ = valid_prefix(&b);
        }
    }
}
