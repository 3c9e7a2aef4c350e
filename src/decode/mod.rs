//! Decode and validate one MQTT message: topic → measurement and tags,
//! payload → readings, each reading checked against the quantity registry
//! and the time window. Pure: the clock is a parameter.

pub mod hj212;
pub mod payload;
pub mod time;
pub mod topic;

#[cfg(test)]
mod fuzz;

use std::collections::BTreeMap;

pub use topic::{Template, TemplateError, TopicError, TopicInfo, TopicMap};

use crate::reading::{Decoded, Point, Reason, Reject};
use crate::validate::Registry;

/// Everything needed to turn a message into points and rejects.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// Topic templates and accepted kinds.
    pub topics: TopicMap,
    /// Quantity registry with the config's overrides.
    pub registry: Registry,
    /// Larger payloads are quarantined unread.
    pub max_payload_bytes: usize,
    /// Tolerance for clocks running ahead, ms.
    pub max_future_ms: i64,
    /// Oldest accepted reading, ms before now.
    pub max_age_ms: i64,
    /// HJ 212 devices (empty: every packet is `unknown_device`).
    pub hj212: std::sync::Arc<hj212::devices::Devices>,
}

impl Decoder {
    /// The reject for a payload of `len` bytes over the limit.
    pub fn oversized(&self, len: usize) -> Decoded {
        Decoded::rejected(
            Reason::Oversized,
            format!(
                "payload of {len} bytes exceeds validation.max_payload_bytes = {}",
                self.max_payload_bytes
            ),
        )
    }

    pub fn decode(&self, topic: &str, payload: &[u8], now_ms: i64) -> Decoded {
        if payload.len() > self.max_payload_bytes {
            return self.oversized(payload.len());
        }
        if topic.starts_with(hj212::TCP_TOPIC) {
            return self.decode_hj212(payload, now_ms);
        }
        let info = match self.topics.resolve(topic) {
            Ok(info) if info.payload == topic::Payload::Hj212 => {
                return self.decode_hj212(payload, now_ms);
            }
            Ok(info) => info,
            Err(TopicError::NoTemplate) => {
                return Decoded::rejected(Reason::UnknownTopic, "no topic template matches");
            }
            Err(TopicError::UnknownKind(k)) => {
                return Decoded::rejected(
                    Reason::UnknownKind,
                    format!("kind {k:?} is not in topics.kinds"),
                );
            }
            Err(TopicError::ControlChars) => {
                return Decoded::rejected(Reason::BadTopic, "topic contains control characters");
            }
        };
        let parsed = match payload::parse(payload, now_ms) {
            Ok(p) => p,
            Err(reject) => {
                return Decoded {
                    points: vec![],
                    rejects: vec![reject],
                };
            }
        };
        let mut rejects = parsed.rejects;
        // Group fields by time: one point per instant.
        let mut by_time: BTreeMap<i64, Vec<(String, f64)>> = BTreeMap::new();
        let mut bad_times: BTreeMap<i64, Reject> = BTreeMap::new();
        for r in parsed.readings {
            let t = r.time_ms.unwrap_or(now_ms);
            if let Err(reject) = self.check_time(t, now_ms) {
                bad_times.entry(t).or_insert(reject);
                continue;
            }
            if let Err(reject) = check_field_name(&r.name) {
                rejects.push(reject);
                continue;
            }
            // A field named like one of the topic's tags would be a second
            // `site` (say): InfluxDB keeps both, the archive's one column
            // cannot, and queries could not tell them apart.
            if info.tags.iter().any(|(k, _)| *k == r.name) {
                rejects.push(Reject::new(
                    Reason::BadFieldName,
                    format!("field {:?} has the name of a tag of the topic", r.name),
                ));
                continue;
            }
            match self.registry.check(&r.name, r.value, r.unit.as_deref()) {
                Ok(v) => {
                    let fields = by_time.entry(t).or_default();
                    // A repeated name at one instant: the last value wins,
                    // as it would in InfluxDB.
                    fields.retain(|(n, _)| *n != r.name);
                    fields.push((r.name, v));
                }
                Err(reject) => rejects.push(reject),
            }
        }
        rejects.extend(bad_times.into_values());
        let points: Vec<Point> = by_time
            .into_iter()
            .map(|(time_ms, mut fields)| {
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Point {
                    kind: info.kind.clone(),
                    coverage: Default::default(),
                    tags: info.tags.clone(),
                    time_ms,
                    fields,
                }
            })
            .collect();
        if points.is_empty() && rejects.is_empty() {
            rejects.push(Reject::new(Reason::Empty, "the payload holds no readings"));
        }
        Decoded { points, rejects }
    }

    /// An HJ 212 packet: checked against its device (CRC, password), its
    /// data values as points at `DataTime` (Beijing time; the start of the
    /// period for minute, hour and day data). A packet without readings
    /// (equipment state, restart time, ACKs) gives nothing and no reject.
    pub fn decode_hj212(&self, payload: &[u8], now_ms: i64) -> Decoded {
        let (packet, device) = match self.hj212.check(payload) {
            Ok(x) => x,
            Err(reject) => return Decoded::rejected(reject.reason, reject.detail),
        };
        let cn = packet.cn.as_deref().unwrap_or_default();
        let Some((coverage, suffix)) = hj212::devices::route(cn, device) else {
            return Decoded::default();
        };
        let Some(time) = packet.data_time else {
            return Decoded::rejected(
                Reason::BadTimestamp,
                format!(
                    "MN {:?} CN {cn}: no readable DataTime ({})",
                    device.mn,
                    packet.fields.get("DataTime").map_or("none", String::as_str)
                ),
            );
        };
        let time_ms = time.timestamp_millis();
        if let Err(reject) = self.check_time(time_ms, now_ms) {
            return Decoded::rejected(reject.reason, reject.detail);
        }
        let mut rejects = Vec::new();
        let points = hj212::devices::points(
            &packet,
            device,
            time_ms,
            coverage,
            suffix,
            |name, v, unit| self.registry.check(name, v, unit),
            &mut rejects,
        );
        if points.is_empty() && rejects.is_empty() {
            rejects.push(Reject::new(Reason::Empty, "the packet holds no values"));
        }
        Decoded { points, rejects }
    }

    fn check_time(&self, t: i64, now_ms: i64) -> Result<(), Reject> {
        if t > now_ms + self.max_future_ms {
            Err(Reject::new(
                Reason::InFuture,
                format!(
                    "reading time is {} s ahead of the clock",
                    (t - now_ms) / 1000
                ),
            ))
        } else if t < now_ms - self.max_age_ms {
            Err(Reject::new(
                Reason::TooOld,
                format!(
                    "reading is {} s old (validation.max_age)",
                    (now_ms - t) / 1000
                ),
            ))
        } else {
            Ok(())
        }
    }
}

/// Field keys InfluxDB cannot store: empty, control characters, `time`,
/// or longer than 256 bytes.
fn check_field_name(name: &str) -> Result<(), Reject> {
    let problem = if name.is_empty() {
        "a field name is empty"
    } else if name.len() > 256 {
        "a field name is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "a field name contains control characters"
    } else if name == "time" {
        "a field cannot be called \"time\""
    } else {
        return Ok(());
    };
    Err(Reject::new(Reason::BadFieldName, problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnknownFields;

    const NOW: i64 = 1_764_144_000_000;

    fn decoder() -> Decoder {
        Decoder {
            topics: TopicMap::new(
                vec![Template::parse("env/{district}/{site}/{kind}/{sensor}").unwrap()],
                vec!["air".into(), "sewage".into()],
            ),
            registry: Registry::new(&BTreeMap::new(), UnknownFields::Store).unwrap(),
            max_payload_bytes: 1024,
            max_future_ms: 300_000,
            max_age_ms: 7 * 86_400_000,
            hj212: Default::default(),
        }
    }

    const TOPIC: &str = "env/dongcheng/dongsi/air/aq-0012";

    #[test]
    fn good_message_becomes_one_point_with_converted_fields() {
        let d = decoder().decode(
            TOPIC,
            br#"{"pm25":35,"no2":10,"units":{"no2":"ppb"},"ts":1764144000}"#,
            NOW,
        );
        assert!(d.rejects.is_empty());
        assert_eq!(d.points.len(), 1);
        let p = &d.points[0];
        assert_eq!(p.kind, "air");
        assert_eq!(p.time_ms, NOW);
        assert_eq!(p.fields[0].0, "no2");
        assert!((p.fields[0].1 - 10.0 * 46.0055 / 24.465).abs() < 1e-9);
        assert_eq!(p.fields[1], ("pm25".into(), 35.0));
    }

    #[test]
    fn one_bad_field_does_not_spoil_the_others() {
        let d = decoder().decode(TOPIC, br#"{"pm25":-3,"pm10":40}"#, NOW);
        assert_eq!(d.points[0].fields, vec![("pm10".into(), 40.0)]);
        assert_eq!(d.points[0].time_ms, NOW, "no ts: arrival time");
        assert_eq!(d.rejects[0].reason, Reason::OutOfRange);
    }

    #[test]
    fn message_level_rejects() {
        let dec = decoder();
        let reason =
            |topic: &str, payload: &[u8]| dec.decode(topic, payload, NOW).rejects[0].reason;
        assert_eq!(reason(TOPIC, &[b' '; 2000]), Reason::Oversized);
        assert_eq!(reason("env/x", b"{}"), Reason::UnknownTopic);
        assert_eq!(reason("env/a/b/noise/c", b"{}"), Reason::UnknownKind);
        assert_eq!(reason(TOPIC, b"{}"), Reason::Empty);
        assert_eq!(
            reason(TOPIC, br#"{"pm25":1,"ts":1764150000}"#),
            Reason::InFuture
        );
        assert_eq!(
            reason(TOPIC, br#"{"pm25":1,"ts":1600000000}"#),
            Reason::TooOld
        );
        assert_eq!(reason(TOPIC, br#"{"time":1}"#), Reason::BadFieldName);
        // A field named like a tag of the topic (here `site`).
        assert_eq!(
            reason(TOPIC, br#"{"site":1,"pm25":2}"#),
            Reason::BadFieldName
        );
        assert_eq!(reason(TOPIC, br#"{"pm25":"NaN"}"#), Reason::NotFinite);
    }

    #[test]
    fn senml_with_several_times_gives_several_points() {
        let d = decoder().decode(
            TOPIC,
            br#"[{"bt":1764144000,"n":"pm25","v":1},{"n":"pm25","v":2,"t":60}]"#,
            NOW,
        );
        assert_eq!(d.points.len(), 2);
        assert_eq!(d.points[1].time_ms, NOW + 60_000);
        assert_eq!(d.points[1].fields, vec![("pm25".into(), 2.0)]);
    }
}
