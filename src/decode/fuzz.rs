//! Property-based fuzzing of the decoders (proptest; runs with the unit
//! tests, so every CI run fuzzes). For each input, whatever it is:
//! decoding does not panic; every point has finite values within the
//! registry's ranges and a plausible time; every point and quarantine
//! record encodes to exactly one line that InfluxData's parser reads back.
//!
//! More cases: `PROPTEST_CASES=100000 cargo test --lib fuzz`.

use proptest::prelude::*;

use super::*;
use crate::row::{Quarantined, Row};
use crate::sink::influx::line::encode_row;

const NOW: i64 = 1_764_144_000_000;

fn decoder() -> Decoder {
    let mut d = crate::app::decoder(&crate::config::Settings::default()).unwrap();
    d.max_payload_bytes = 4096;
    d
}

/// Checks the invariants for one message.
fn check(d: &Decoder, topic: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    let out = d.decode(topic, payload, NOW);
    for p in &out.points {
        prop_assert!(p.time_ms >= NOW - d.max_age_ms && p.time_ms <= NOW + d.max_future_ms);
        prop_assert!(!p.fields.is_empty());
        for (name, v) in &p.fields {
            prop_assert!(v.is_finite(), "{name} = {v}");
            if let Some(q) = d.registry.get(name) {
                prop_assert!(*v >= q.min && *v <= q.max, "{name} = {v} outside its range");
            }
        }
        let mut buf = Vec::new();
        prop_assert!(encode_row(
            &mut buf,
            &Row::Reading(p.clone()),
            p.time_ms.saturating_mul(1_000_000)
        ));
        one_line(&buf)?;
    }
    for r in &out.rejects {
        let record = Row::Quarantined(Quarantined {
            reason: r.reason,
            detail: r.detail.clone(),
            topic: topic.to_owned(),
            sample: payload[..payload.len().min(256)].to_vec(),
            payload_bytes: payload.len(),
            time_ns: None,
        });
        let mut buf = Vec::new();
        prop_assert!(encode_row(&mut buf, &record, NOW * 1_000_000));
        one_line(&buf)?;
    }
    prop_assert!(
        !out.points.is_empty() || !out.rejects.is_empty(),
        "every message has an outcome"
    );
    Ok(())
}

fn one_line(buf: &[u8]) -> Result<(), TestCaseError> {
    let text = std::str::from_utf8(buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(text.matches('\n').count(), 1, "one line: {:?}", text);
    let parsed: Vec<_> = influxdb_line_protocol::parse_lines(text).collect();
    prop_assert_eq!(parsed.len(), 1);
    prop_assert!(parsed[0].is_ok(), "{:?}: {:?}", text, parsed[0]);
    Ok(())
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        // Well-formed, with odd characters in the captures.
        (
            "[a-z]{1,8}",
            "[a-zA-Z0-9 ,=\"\\\\\n\t#-]{0,10}",
            prop_oneof![
                Just("air"),
                Just("dust"),
                Just("voc"),
                Just("sewage"),
                Just("noise")
            ],
            "\\PC{0,12}"
        )
            .prop_map(|(d, s, k, x)| format!("env/{d}/{s}/{k}/{x}")),
        // Anything.
        "\\PC{0,40}",
        any::<String>(),
    ]
}

/// A JSON value that is sometimes a plausible reading.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| format!("{v:?}")),
        (-1e6..1e6f64).prop_map(|v| v.to_string()),
        (0u32..1000).prop_map(|v| v.to_string()),
        Just("\"NaN\"".to_owned()),
        Just("1e400".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        "\"\\PC{0,8}\"".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        Just("{\"a\":1}".to_owned()),
        Just("[1,2]".to_owned()),
    ]
}

fn reading() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("pm25".to_owned()),
        Just("pm10".to_owned()),
        Just("no2".to_owned()),
        Just("co".to_owned()),
        Just("flow_m3h".to_owned()),
        Just("ts".to_owned()),
        Just("time".to_owned()),
        Just("".to_owned()),
        "\\PC{1,6}",
    ];
    let ts = prop_oneof![
        Just(NOW),
        Just(NOW / 1000),
        NOW - 10 * 86_400_000..NOW + 86_400_000,
        any::<i64>(),
    ];
    (
        proptest::collection::vec((key, json_value()), 0..8),
        proptest::option::of(ts),
        proptest::option::of(prop_oneof![
            Just("{\"no2\":\"ppb\"}"),
            Just("{\"co\":\"ppm\",\"pm25\":\"mg/m3\"}"),
            Just("{\"pm25\":\"furlongs\"}"),
            Just("7")
        ]),
    )
        .prop_map(|(fields, ts, units)| {
            let mut parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap_or_default()))
                .collect();
            if let Some(ts) = ts {
                parts.push(format!("\"ts\":{ts}"));
            }
            if let Some(u) = units {
                parts.push(format!("\"units\":{u}"));
            }
            format!("{{{}}}", parts.join(","))
        })
}

fn senml() -> impl Strategy<Value = String> {
    let rec = (
        proptest::option::of("\\PC{0,10}"),
        proptest::option::of(prop_oneof![
            Just("pm25"),
            Just("pm10"),
            Just("no2"),
            Just("x")
        ]),
        proptest::option::of(json_value()),
        proptest::option::of(prop_oneof![
            Just("ug/m3"),
            Just("ppb"),
            Just("%"),
            Just("?")
        ]),
        proptest::option::of(prop_oneof![
            Just((NOW / 1000) as f64),
            Just(-5.0),
            any::<f64>()
        ]),
    )
        .prop_map(|(bn, n, v, u, t)| {
            let mut p = Vec::new();
            if let Some(bn) = bn {
                p.push(format!(
                    "\"bn\":{}",
                    serde_json::to_string(&bn).unwrap_or_default()
                ));
            }
            if let Some(n) = n {
                p.push(format!("\"n\":\"{n}\""));
            }
            if let Some(v) = v {
                p.push(format!("\"v\":{v}"));
            }
            if let Some(u) = u {
                p.push(format!("\"u\":\"{u}\""));
            }
            if let Some(t) = t {
                p.push(format!("\"bt\":{t:?}"));
            }
            format!("{{{}}}", p.join(","))
        });
    proptest::collection::vec(rec, 0..5).prop_map(|r| format!("[{}]", r.join(",")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(topic in topic(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&decoder(), &topic, &payload)?;
    }

    #[test]
    fn json_readings(topic in topic(), payload in reading()) {
        check(&decoder(), &topic, payload.as_bytes())?;
    }

    #[test]
    fn senml_packs(payload in senml()) {
        check(&decoder(), "env/dongcheng/dongsi/air/aq-1", payload.as_bytes())?;
    }

    #[test]
    fn mangled_readings(payload in reading(), cut in 0usize..200, flip in 0usize..200) {
        // Truncated and bit-flipped versions of plausible messages.
        let mut b = payload.into_bytes();
        if !b.is_empty() {
            let i = flip % b.len();
            b[i] ^= 0x20;
            b.truncate(cut.min(b.len()));
        }
        check(&decoder(), "env/dongcheng/dongsi/air/aq-1", &b)?;
    }

    #[test]
    fn spool_records_round_trip_and_garbage_is_survived(
        topic in "\\PC{0,30}",
        payload in proptest::collection::vec(any::<u8>(), 0..500),
        received_ms in any::<i64>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        use crate::spool::format::{self, Next, Record};
        let rec = Record { received_ms, payload_len: payload.len() as u32, topic: &topic, payload: &payload };
        let mut buf = Vec::new();
        let n = format::encode(&mut buf, &rec);
        match format::next(&buf, true) {
            Next::Record(r, m) => { prop_assert_eq!(&r, &rec); prop_assert_eq!(m, n); }
            other => prop_assert!(false, "{:?}", other),
        }
        // Garbage in front: skipped to the record, never a panic.
        let mut g = garbage.clone();
        g.extend_from_slice(&buf);
        let mut at = 0;
        let mut found = false;
        while at < g.len() {
            match format::next(&g[at..], true) {
                Next::Record(r, m) => { found |= r == rec; at += m; }
                Next::Corrupt(m) => { prop_assert!(m > 0); at += m; }
                Next::Incomplete => break,
            }
        }
        prop_assert!(found);
    }

    /// HJ 212: arbitrary bytes after `##` and a length, and real packets
    /// cut and bit-flipped: never a panic; whatever decodes under `any`
    /// round-trips its values through the JSON of `lantian hj212 parse`.
    #[test]
    fn hj212_packets_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        which in 0usize..1000, cut in 0usize..2000, flip in 0usize..2000, bit in 0u8..8,
    ) {
        use super::hj212::{crypt::Key, decode, decode_with_key, to_json, CrcPolicy};
        let key = Key::parse("0000000000000000").unwrap();
        let mut raw = b"##0100".to_vec();
        raw.extend_from_slice(&tail);
        for policy in [CrcPolicy::Hj212, CrcPolicy::Any] {
            let _ = decode(&raw, policy);
        }
        // An "encrypted" data area of arbitrary bytes and a key.
        let mut sealed = b"##0100QN=1;MN=X;Flag=9;CP=&&{".to_vec();
        sealed.extend_from_slice(&tail);
        let _ = decode_with_key(&sealed, CrcPolicy::Any, Some(&key));
        let lines: Vec<&str> = HJ212_SAMPLES.lines().filter(|l| l.starts_with("##")).collect();
        let mut b = lines[which % lines.len()].as_bytes().to_vec();
        let i = flip % b.len();
        b[i] ^= 1 << bit;
        b.truncate(cut.min(b.len()));
        if let Ok(p) = decode(&b, CrcPolicy::Any) {
            let json = to_json(&p);
            for (code, v) in &p.values {
                for (k, x) in &v.numbers {
                    prop_assert_eq!(json["values"][code][k].as_f64(), Some(*x));
                }
            }
        }
    }
}

/// Every sample packet, for the HJ 212 fuzzing.
const HJ212_SAMPLES: &str = concat!(
    include_str!("../../tests/data/hj212/samples-verified.txt"),
    include_str!("../../tests/data/hj212/samples-other-crc.txt"),
    include_str!("../../tests/data/hj212/samples-from-the-standard.txt"),
);
