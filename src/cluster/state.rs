//! Partition checkpoints in a JetStream key-value bucket (`lt_state`, key
//! `p<N>`): the stream sequence a partition's state includes everything
//! up to, its window state (the engine's snapshot) and its alert state
//! (the alert engine's), deflated.
//!
//! Written with compare-and-set on the revision the writer last read or
//! wrote, so an owner that lost its partition cannot overwrite what the
//! next owner saved: its write fails ([`SaveError::Conflict`]) and it
//! starts the partition again from what is stored.

use std::io::{Read, Write};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

pub const STATE: &str = "lt_state";
const MAGIC: &[u8; 8] = b"LTCKPT02";

/// A partition's stored checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Saved {
    /// The stream sequence it includes everything up to (0: nothing).
    pub seq: u64,
    /// The window engine's snapshot (empty with windows off).
    pub windows: Vec<u8>,
    /// The alert engine's state (empty with alerts off).
    pub alerts: Vec<u8>,
}

#[derive(Debug)]
pub enum SaveError {
    /// Someone else wrote the partition's checkpoint since we read it.
    Conflict,
    Other(String),
}

impl std::fmt::Display for SaveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaveError::Conflict => {
                f.write_str("another worker wrote this partition's checkpoint (its lease moved on)")
            }
            SaveError::Other(e) => f.write_str(e),
        }
    }
}

pub fn encode(saved: &Saved) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + saved.windows.len() / 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&saved.seq.to_le_bytes());
    out.extend_from_slice(&(saved.windows.len() as u64).to_le_bytes());
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    z.write_all(&saved.windows).expect("writing to memory");
    z.write_all(&saved.alerts).expect("writing to memory");
    z.finish().expect("writing to memory")
}

pub fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a lantian checkpoint")?;
    let (seq, rest) = rest
        .split_first_chunk::<8>()
        .ok_or("checkpoint truncated")?;
    let (len, body) = rest
        .split_first_chunk::<8>()
        .ok_or("checkpoint truncated")?;
    let mut windows = Vec::new();
    flate2::read::DeflateDecoder::new(body)
        .read_to_end(&mut windows)
        .map_err(|e| format!("checkpoint's state unreadable: {e}"))?;
    let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    if len > windows.len() {
        return Err("checkpoint truncated".into());
    }
    let alerts = windows.split_off(len);
    Ok(Saved {
        seq: u64::from_le_bytes(*seq),
        windows,
        alerts,
    })
}

/// The checkpoints of every partition.
#[derive(Clone)]
pub struct Checkpoints {
    kv: kv::Store,
    /// The largest message the NATS server takes (its `max_payload`): a
    /// checkpoint is one message.
    max_payload: usize,
}

fn key(p: u32) -> String {
    format!("p{p}")
}

impl Checkpoints {
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Checkpoints {
        let kv = super::bucket(js, STATE, None, replicas).await;
        Checkpoints {
            kv,
            max_payload: js.client().server_info().max_payload,
        }
    }

    /// Partition `p`'s checkpoint and its revision (0 and nothing when
    /// none was saved). A checkpoint that cannot be read is an error: the
    /// partition is not worked rather than started from nothing.
    pub async fn load(&self, p: u32) -> Result<(u64, Saved), String> {
        match self.kv.entry(key(p)).await {
            Ok(None) => Ok((0, Saved::default())),
            Ok(Some(e)) if e.operation != kv::Operation::Put => Ok((e.revision, Saved::default())),
            Ok(Some(e)) => decode(&e.value)
                .map(|s| (e.revision, s))
                .map_err(|why| format!("checkpoint of partition {p}: {why}")),
            Err(e) => Err(format!("checkpoint of partition {p}: {e}")),
        }
    }

    /// Saves over `revision` (0: none yet); the new revision.
    pub async fn save(&self, p: u32, revision: u64, saved: &Saved) -> Result<u64, SaveError> {
        let value = Bytes::from(encode(saved));
        too_large(value.len(), self.max_payload).map_err(SaveError::Other)?;
        if revision == 0 {
            return self
                .kv
                .create(key(p), value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => SaveError::Conflict,
                    _ => SaveError::Other(e.to_string()),
                });
        }
        self.kv
            .update(key(p), value, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => SaveError::Conflict,
                _ => SaveError::Other(e.to_string()),
            })
    }
}

/// A checkpoint is one NATS message: one over the server's
/// `max_payload` cannot be saved, and says what to change. (About 1.1 KB
/// a sensor of 6 pollutants two hours in, deflated; more once the 48 h
/// correction horizon fills: `cargo bench --bench windows`.)
fn too_large(bytes: usize, max_payload: usize) -> Result<(), String> {
    if max_payload == 0 || bytes <= max_payload {
        return Ok(());
    }
    Err(format!(
        "the checkpoint is {bytes} bytes, over the NATS server's max_payload of {max_payload}: \
         raise max_payload in the NATS configuration (up to 64MB) or spread the sensors over \
         more partitions (cluster.partitions)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_over_the_servers_max_payload_says_what_to_change() {
        assert!(too_large(8 << 20, 8 << 20).is_ok());
        assert!(too_large(10, 0).is_ok(), "unknown: let the server answer");
        let e = too_large(13_741_032, 8 << 20).unwrap_err();
        assert!(e.contains("13741032 bytes"), "{e}");
        assert!(e.contains("max_payload of 8388608"), "{e}");
        assert!(e.contains("cluster.partitions"), "{e}");
    }

    #[test]
    fn a_checkpoint_reads_back_and_a_damaged_one_is_refused() {
        let saved = Saved {
            seq: 123_456_789,
            windows: (0..50_000u32)
                .flat_map(|i| (i % 97).to_le_bytes())
                .collect(),
            alerts: br#"{"instances":{}}"#.to_vec(),
        };
        let bytes = encode(&saved);
        assert!(bytes.len() < saved.windows.len() / 4, "{}", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), saved);
        assert_eq!(
            decode(&encode(&Saved::default())).unwrap(),
            Saved::default()
        );
        assert!(decode(b"LTCKPT02").is_err());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode(b"something else entirely").is_err());
    }
}
