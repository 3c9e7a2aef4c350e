//! Where a message goes in JetStream: its partition (a stable hash of its
//! district and site, so one site's readings always meet in one worker),
//! its subject, and its deduplication id. Pure.

use crate::reading::Decoded;

/// The subjects readings travel on: `lt.in.<partition>.<district>.<site>`;
/// a message with no reading (quarantined) on `lt.in.<partition>.quarantine`
/// (one token fewer, so no site name can take it).
pub const SUBJECTS: &str = "lt.in.>";

/// The MQTT topic a message came on.
pub const TOPIC_HEADER: &str = "Lt-Topic";
/// The payload's length as published, when the edge kept only its start
/// (an oversized message, quarantined as such).
pub const LENGTH_HEADER: &str = "Lt-Payload-Len";
/// When the edge received it (ms): the worker decodes with it, so its
/// validation (too old, too far ahead) is the edge's.
pub const RECEIVED_HEADER: &str = "Lt-Received-Ms";

/// FNV-1a, 64 bits: the same in every process and version.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The partition of a site.
pub fn partition(district: &str, site: &str, partitions: u32) -> u32 {
    (fnv1a(&[district.as_bytes(), site.as_bytes()]) % u64::from(partitions.max(1))) as u32
}

/// A subject token: characters NATS gives meaning to (`.`, `*`, `>`,
/// white space) and anything outside `[A-Za-z0-9_-]` become `_`.
pub fn token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    crate::units::safe_name(s)
}

/// The subject filter of one partition.
pub fn partition_filter(p: u32) -> String {
    format!("lt.in.{p}.>")
}

/// Where one decoded message goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub partition: u32,
    pub subject: String,
    /// `Nats-Msg-Id`: the sensor and reading time(s), and a hash of the
    /// payload. A message redelivered by the broker or sent twice by its
    /// device is stored once; a corrected value (same sensor and time,
    /// another payload) is not taken for a duplicate.
    pub id: String,
}

/// The route of a message: by its first reading's district and site; a
/// message without readings (all quarantined) by its topic.
pub fn route(decoded: &Decoded, topic: &str, payload: &[u8], partitions: u32) -> Route {
    let digest = fnv1a(&[topic.as_bytes(), payload]);
    let Some(first) = decoded.points.first() else {
        let p = (fnv1a(&[topic.as_bytes()]) % u64::from(partitions.max(1))) as u32;
        return Route {
            partition: p,
            subject: format!("lt.in.{p}.quarantine"),
            id: format!("q@{digest:016x}"),
        };
    };
    let tag = |k: &str| {
        first
            .tags
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let (district, site) = (tag("district"), tag("site"));
    let p = partition(district, site, partitions);
    let sensor = match tag("sensor") {
        "" => topic,
        s => s,
    };
    let n = decoded.points.len();
    let last = decoded.points[n - 1].time_ms;
    let times = if n == 1 {
        first.time_ms.to_string()
    } else {
        format!("{}..{last}x{n}", first.time_ms)
    };
    Route {
        partition: p,
        subject: format!("lt.in.{p}.{}.{}", token(district), token(site)),
        id: format!("{}.{sensor}@{times}#{digest:016x}", first.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Point, Reason};

    fn point(site: &str, sensor: &str, t: i64) -> Point {
        Point {
            kind: "air".into(),
            tags: vec![
                ("district".into(), "dongcheng".into()),
                ("sensor".into(), sensor.into()),
                ("site".into(), site.into()),
            ],
            time_ms: t,
            fields: vec![("pm25".into(), 35.0)],
            coverage: Default::default(),
        }
    }

    /// The partition of a site is fixed (these values are what every
    /// process and every later version must compute: changing the hash
    /// would move sites between partitions mid-stream).
    #[test]
    fn a_sites_partition_is_stable_and_spreads() {
        assert_eq!(
            partition("dongcheng", "dongsi", 16),
            partition("dongcheng", "dongsi", 16)
        );
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        let used: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| partition(&format!("d{}", i % 10), &format!("s{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16, "200 sites reach every one of 16 partitions");
        // District and site are told apart ("a/bc" is not "ab/c").
        assert_ne!(fnv1a(&[b"a", b"bc"]), fnv1a(&[b"ab", b"c"]));
    }

    #[test]
    fn a_reading_goes_to_its_sites_subject_with_an_id_of_sensor_time_and_payload() {
        let d = Decoded {
            points: vec![point("dongsi", "aq-1", 1_000)],
            rejects: vec![],
        };
        let r = route(&d, "env/dongcheng/dongsi/air/aq-1", b"{\"pm25\":35}", 16);
        let p = partition("dongcheng", "dongsi", 16);
        assert_eq!(r.partition, p);
        assert_eq!(r.subject, format!("lt.in.{p}.dongcheng.dongsi"));
        assert!(r.id.starts_with("air.aq-1@1000#"), "{}", r.id);
        // The same message again: the same id; another payload: another.
        let again = route(&d, "env/dongcheng/dongsi/air/aq-1", b"{\"pm25\":35}", 16);
        assert_eq!(again, r);
        let corrected = route(&d, "env/dongcheng/dongsi/air/aq-1", b"{\"pm25\":36}", 16);
        assert_ne!(corrected.id, r.id);
        // Several readings in one message: first and last time, count.
        let batch = Decoded {
            points: vec![
                point("dongsi", "aq-1", 1_000),
                point("dongsi", "aq-1", 2_000),
            ],
            rejects: vec![],
        };
        let b = route(&batch, "t", b"x", 16);
        assert!(b.id.starts_with("air.aq-1@1000..2000x2#"), "{}", b.id);
    }

    #[test]
    fn a_message_without_readings_goes_to_the_quarantine_subject() {
        let d = Decoded::rejected(Reason::BadJson, "nope");
        let r = route(&d, "env/x/y/air/z", b"{", 8);
        assert_eq!(r.subject, format!("lt.in.{}.quarantine", r.partition));
        assert!(r.partition < 8);
        assert!(r.id.starts_with("q@"));
    }

    #[test]
    fn tag_values_become_safe_subject_tokens() {
        assert_eq!(token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(token(""), "_");
        assert_eq!(token("东四"), "__");
        assert_eq!(token("site-1_a"), "site-1_a");
    }
}
