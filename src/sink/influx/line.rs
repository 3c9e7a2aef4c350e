//! Line protocol encoding: pure functions, tested against exact strings.
//!
//! Escaping is done by InfluxData's `influxdb-line-protocol` builder
//! (commas, spaces, `=` and backslashes in tags and keys; quotes and
//! backslashes in string fields). What no crate handles is sanitised here:
//! line breaks and other control characters (a newline would end the line —
//! injection) become U+FFFD in names and are written as `\n`-style text in
//! string fields; so does a trailing backslash in a name; empty tag values are left out (InfluxDB rejects them);
//! a measurement cannot start with `#` (a comment line); NaN and infinity
//! never get here (validation rejects them) and are dropped if they do.

use influxdb_line_protocol::LineProtocolBuilder;
use influxdb_line_protocol::builder::{AfterField, AfterMeasurement};

use crate::reading::Point;
use crate::row::{Derived, Quarantined, Row, Value};

/// Names: control characters replaced so a name can never break a line,
/// and a trailing backslash too (line protocol cannot end a key or tag
/// value with one: found by the decoder fuzz test).
fn clean_name(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) || s.ends_with('\\') {
        let mut out: String = s
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect();
        if out.ends_with('\\') {
            out.pop();
            out.push('\u{FFFD}');
        }
        out.into()
    } else {
        s.into()
    }
}

fn clean_measurement(s: &str) -> String {
    let s = clean_name(s);
    if s.is_empty() || s.starts_with('#') {
        format!("_{s}")
    } else {
        s.into_owned()
    }
}

/// Text for string fields: control characters written as escapes.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn start<'a, 't>(
    buf: &'a mut Vec<u8>,
    measurement: &str,
    tags: impl Iterator<Item = (&'t str, &'t str)>,
) -> LineProtocolBuilder<&'a mut Vec<u8>, AfterMeasurement> {
    let mut b = LineProtocolBuilder::new_with(buf).measurement(&clean_measurement(measurement));
    for (k, v) in tags {
        if !k.is_empty() && !v.is_empty() {
            b = b.tag(&clean_name(k), &clean_name(v));
        }
    }
    b
}

/// Append one row as a line at `time_ns`; `false` (nothing written) if
/// it has no field left to write.
pub fn encode_row(buf: &mut Vec<u8>, row: &Row, time_ns: i64) -> bool {
    match row {
        Row::Reading(p) => encode_point(buf, p, time_ns),
        Row::Derived(d) => encode_derived(buf, d, time_ns),
        Row::Quarantined(q) => {
            encode_quarantine(buf, q, time_ns);
            true
        }
    }
}

fn encode_point(buf: &mut Vec<u8>, p: &Point, time_ns: i64) -> bool {
    let mut fields = p
        .fields
        .iter()
        .filter(|(k, v)| v.is_finite() && !k.is_empty());
    let Some((k0, v0)) = fields.next() else {
        return false;
    };
    let tags = p.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut b: LineProtocolBuilder<&mut Vec<u8>, AfterField> =
        start(buf, &p.kind, tags).field(&clean_name(k0), *v0);
    for (k, v) in fields {
        b = b.field(&clean_name(k), *v);
    }
    b.timestamp(time_ns).close_line();
    true
}

/// Non-finite floats are left out.
fn encode_derived(buf: &mut Vec<u8>, d: &Derived, time_ns: i64) -> bool {
    let mut fields = d
        .fields
        .iter()
        .filter(|(k, v)| !k.is_empty() && !matches!(v, Value::F(f) if !f.is_finite()));
    let Some(first) = fields.next() else {
        return false;
    };
    // The builder's first field and later fields are different types.
    macro_rules! add {
        ($b:expr, $k:expr, $v:expr) => {{
            let k = clean_name($k);
            match $v {
                Value::F(f) => $b.field(&k, *f),
                Value::I(i) => $b.field(&k, *i),
                Value::B(x) => $b.field(&k, *x),
                Value::S(s) => $b.field(&k, printable(s).as_str()),
            }
        }};
    }
    let tags = d.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let b = start(buf, &d.measurement, tags);
    let mut b = add!(b, &first.0, &first.1);
    for (k, v) in fields {
        b = add!(b, k, v);
    }
    b.timestamp(time_ns).close_line();
    true
}

/// A record of the `quarantine` measurement. `reason` is a tag (few
/// values, good for GROUP BY); topic, detail and payload are string fields
/// (unbounded values would explode series cardinality as tags).
fn encode_quarantine(buf: &mut Vec<u8>, q: &Quarantined, time_ns: i64) {
    let sample = printable(&String::from_utf8_lossy(&q.sample));
    start(
        buf,
        "quarantine",
        [("reason", q.reason.as_str())].into_iter(),
    )
    .field("topic", printable(&q.topic).as_str())
    .field("detail", printable(&q.detail).as_str())
    .field("payload", sample.as_str())
    .field("payload_bytes", q.payload_bytes as i64)
    .timestamp(time_ns)
    .close_line();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(kind: &str, tags: &[(&str, &str)], fields: &[(&str, f64)]) -> Point {
        Point {
            kind: kind.into(),
            coverage: Default::default(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_ms: 1_764_144_000_123,
            fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn encode(p: &Point) -> (bool, Vec<u8>) {
        let mut buf = Vec::new();
        let row = Row::Reading(p.clone());
        let written = encode_row(&mut buf, &row, p.time_ms * 1_000_000);
        (written, buf)
    }

    fn line(p: &Point) -> String {
        let (written, buf) = encode(p);
        assert!(written);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_trailing_backslash_cannot_end_a_name() {
        let p = point(
            "air",
            &[("sensor", "aq\\"), ("site", "a\\b")],
            &[("x\\", 1.0)],
        );
        assert_eq!(
            line(&p),
            "air,sensor=aq\u{FFFD},site=a\\\\b x\u{FFFD}=1 1764144000123000000\n"
        );
    }

    #[test]
    fn plain_point() {
        let p = point(
            "air",
            &[
                ("district", "dongcheng"),
                ("sensor", "aq-0012"),
                ("site", "dongsi"),
            ],
            &[("no2", 21.5), ("pm25", 35.0)],
        );
        assert_eq!(
            line(&p),
            "air,district=dongcheng,sensor=aq-0012,site=dongsi no2=21.5,pm25=35 1764144000123000000\n"
        );
    }

    #[test]
    fn special_characters_are_escaped() {
        let p = point(
            "a ir,x",
            &[("dis trict", "a,b=c d"), ("site", r"back\slash")],
            &[("f=1 x", 1.0)],
        );
        assert_eq!(
            line(&p),
            "a\\ ir\\,x,dis\\ trict=a\\,b\\=c\\ d,site=back\\\\slash f\\=1\\ x=1 1764144000123000000\n"
        );
    }

    #[test]
    fn newlines_cannot_inject_lines_and_empty_tags_are_dropped() {
        let p = point(
            "air",
            &[("site", "x\nevil,site=y v=1"), ("sensor", "")],
            &[("pm25", 1.0)],
        );
        let l = line(&p);
        assert_eq!(l.matches('\n').count(), 1);
        assert_eq!(
            l,
            "air,site=x\u{FFFD}evil\\,site\\=y\\ v\\=1 pm25=1 1764144000123000000\n"
        );
        assert_eq!(
            line(&point("#air", &[], &[("v", 1.0)])),
            "_#air v=1 1764144000123000000\n"
        );
    }

    #[test]
    fn non_finite_fields_are_dropped() {
        let p = point(
            "air",
            &[],
            &[("a", f64::NAN), ("b", 2.0), ("c", f64::INFINITY)],
        );
        assert_eq!(line(&p), "air b=2 1764144000123000000\n");
        let (written, buf) = encode(&point("air", &[], &[("a", f64::NAN)]));
        assert!(!written);
        assert!(buf.is_empty());
    }

    #[test]
    fn quarantine_record() {
        let mut buf = Vec::new();
        let row = Row::Quarantined(Quarantined {
            reason: crate::reading::Reason::BadJson,
            detail: "not JSON: \"x\"".into(),
            topic: "env/a/b/air/c".into(),
            sample: b"{\"pm25\":\n\\\x00\xff".to_vec(),
            payload_bytes: 999,
            time_ns: None,
        });
        assert!(encode_row(&mut buf, &row, 5));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "quarantine,reason=bad_json topic=\"env/a/b/air/c\",detail=\"not JSON: \\\"x\\\"\",\
             payload=\"{\\\"pm25\\\":\\\\n\\\\\\\\u{0}\u{FFFD}\",payload_bytes=999i 5\n"
        );
    }
}
