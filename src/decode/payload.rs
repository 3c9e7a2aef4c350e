//! Payload formats: a flat JSON object, or a SenML pack (RFC 8428).
//!
//! Both decode to [`RawReading`]s — name, value, optional unit, optional
//! time — which [`super::Decoder`] then validates. Structural problems of
//! single fields become rejects here; the rest of the message still counts.

use serde_json::{Map, Value};

use super::time;
use crate::reading::{Reason, Reject};

/// A field as the sensor sent it, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct RawReading {
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
    /// Milliseconds since the epoch; `None` = not given (use arrival time).
    pub time_ms: Option<i64>,
}

/// What a payload held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub readings: Vec<RawReading>,
    pub rejects: Vec<Reject>,
}

/// SenML times below 2^28 are relative to now (RFC 8428 §4.5.3).
const SENML_RELATIVE_BELOW: f64 = 268_435_456.0;

/// Parse a payload. `Err` means the whole message is unusable.
pub fn parse(payload: &[u8], now_ms: i64) -> Result<Parsed, Reject> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Reject::new(Reason::BadJson, format!("not JSON: {e}")))?;
    match value {
        Value::Object(obj) => parse_object(obj),
        Value::Array(records) => parse_senml(records, now_ms),
        other => Err(Reject::new(
            Reason::BadPayload,
            format!(
                "expected a JSON object or a SenML array, got {}",
                type_name(&other)
            ),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"pm25": 35, "no2": 21.5, "ts": ..., "units": {"no2": "ppb"}}`
fn parse_object(mut obj: Map<String, Value>) -> Result<Parsed, Reject> {
    let time_ms = match obj.remove("ts") {
        None => None,
        Some(Value::Number(n)) => Some(
            time::from_epoch_number(n.as_f64().unwrap_or(f64::NAN))
                .map_err(|d| Reject::new(Reason::BadTimestamp, d))?,
        ),
        Some(Value::String(s)) => {
            Some(time::from_rfc3339(&s).map_err(|d| Reject::new(Reason::BadTimestamp, d))?)
        }
        Some(other) => {
            return Err(Reject::new(
                Reason::BadTimestamp,
                format!("ts must be a string or a number, got {}", type_name(&other)),
            ));
        }
    };
    let mut units = match obj.remove("units") {
        None => Map::new(),
        Some(Value::Object(u)) => u,
        Some(other) => {
            return Err(Reject::new(
                Reason::BadPayload,
                format!("units must be an object, got {}", type_name(&other)),
            ));
        }
    };
    let mut parsed = Parsed::default();
    for (name, value) in obj {
        let unit = match units.remove(&name) {
            None => None,
            Some(Value::String(u)) => Some(u),
            Some(other) => {
                parsed.rejects.push(Reject::new(
                    Reason::BadUnit,
                    format!("unit of {name} must be a string, got {}", type_name(&other)),
                ));
                continue;
            }
        };
        match number(&value) {
            Some(v) => parsed.readings.push(RawReading {
                name,
                value: v,
                unit,
                time_ms,
            }),
            None => parsed.rejects.push(non_number(&name, &value)),
        }
    }
    Ok(parsed)
}

/// A JSON number, or one of the strings some encoders write for non-finite
/// floats (which then fail validation as `not_finite`, not `wrong_type`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn non_number(name: &str, v: &Value) -> Reject {
    Reject::new(
        Reason::WrongType,
        format!("{name} must be a number, got {}", type_name(v)),
    )
}

/// A SenML pack. Base fields (`bn`, `bt`, `bu`) carry over to later
/// records. The quantity is the resolved name (`bn` + `n`) after its last
/// `:` or `/`, so `{"bn":"urn:dev:mac:0024befffe804ff1:","n":"pm25"}` is
/// `pm25` (tags come from the topic, not from SenML names). Times below
/// 2^28 are relative to now.
fn parse_senml(records: Vec<Value>, now_ms: i64) -> Result<Parsed, Reject> {
    let mut parsed = Parsed::default();
    let mut bn = String::new();
    let mut bt = 0.0_f64;
    let mut bu: Option<String> = None;
    for (i, rec) in records.into_iter().enumerate() {
        let Value::Object(mut rec) = rec else {
            return Err(Reject::new(
                Reason::BadPayload,
                format!("SenML record {i} is not an object"),
            ));
        };
        if let Some(v) = rec.remove("bn") {
            bn = senml_str(v, i, "bn")?;
        }
        if let Some(v) = rec.remove("bt") {
            bt = senml_num(v, i, "bt")?;
        }
        if let Some(v) = rec.remove("bu") {
            bu = Some(senml_str(v, i, "bu")?);
        }
        let n = match rec.remove("n") {
            Some(v) => senml_str(v, i, "n")?,
            None => String::new(),
        };
        let full = format!("{bn}{n}");
        let name = full
            .rsplit([':', '/'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let t = match rec.remove("t") {
            Some(v) => senml_num(v, i, "t")?,
            None => 0.0,
        };
        let unit = match rec.remove("u") {
            Some(v) => Some(senml_str(v, i, "u")?),
            None => bu.clone(),
        };
        let value = match (
            rec.remove("v"),
            ["vs", "vb", "vd", "s"]
                .iter()
                .find(|k| rec.contains_key(**k)),
        ) {
            (Some(v), _) => match number(&v) {
                Some(x) => x,
                None => {
                    parsed.rejects.push(non_number(&name, &v));
                    continue;
                }
            },
            (None, Some(k)) => {
                parsed.rejects.push(Reject::new(
                    Reason::WrongType,
                    format!("SenML record {i} ({name}) has {k}, only numeric v is stored"),
                ));
                continue;
            }
            // A record with only base fields is legal SenML.
            (None, None) if n.is_empty() => continue,
            (None, None) => {
                parsed.rejects.push(Reject::new(
                    Reason::BadPayload,
                    format!("SenML record {i} ({name}) has no value"),
                ));
                continue;
            }
        };
        let abs = bt + t;
        let time_ms = if abs.abs() < SENML_RELATIVE_BELOW {
            now_ms + (abs * 1000.0).round() as i64
        } else {
            time::from_epoch_number(abs).map_err(|d| Reject::new(Reason::BadTimestamp, d))?
        };
        parsed.readings.push(RawReading {
            name,
            value,
            unit,
            time_ms: Some(time_ms),
        });
    }
    Ok(parsed)
}

fn senml_str(v: Value, i: usize, key: &str) -> Result<String, Reject> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(Reject::new(
            Reason::BadPayload,
            format!(
                "SenML record {i}: {key} must be a string, got {}",
                type_name(&other)
            ),
        )),
    }
}

fn senml_num(v: Value, i: usize, key: &str) -> Result<f64, Reject> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| Reject::new(Reason::BadPayload, "bad number")),
        other => Err(Reject::new(
            Reason::BadPayload,
            format!(
                "SenML record {i}: {key} must be a number, got {}",
                type_name(&other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_144_000_000;

    #[test]
    fn flat_object_with_ts_and_units() {
        let p = parse(
            br#"{"pm25": 35, "no2": 21.5, "ts": 1764144000, "units": {"no2": "ppb"}}"#,
            NOW,
        )
        .unwrap();
        assert!(p.rejects.is_empty());
        assert_eq!(
            p.readings,
            vec![
                RawReading {
                    name: "no2".into(),
                    value: 21.5,
                    unit: Some("ppb".into()),
                    time_ms: Some(NOW)
                },
                RawReading {
                    name: "pm25".into(),
                    value: 35.0,
                    unit: None,
                    time_ms: Some(NOW)
                },
            ]
        );
    }

    #[test]
    fn wrong_types_are_rejected_per_field() {
        let p = parse(
            br#"{"pm25": "high", "pm10": 40, "ok": true, "x": null}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.rejects.len(), 3);
        assert!(p.rejects.iter().all(|r| r.reason == Reason::WrongType));
    }

    #[test]
    fn whole_message_failures() {
        assert_eq!(parse(b"{pm25: 3", NOW).unwrap_err().reason, Reason::BadJson);
        assert_eq!(
            parse(&[0xff, 0xfe, 0x00, 0x13], NOW).unwrap_err().reason,
            Reason::BadJson
        );
        assert_eq!(parse(b"42", NOW).unwrap_err().reason, Reason::BadPayload);
        assert_eq!(
            parse(br#"{"pm25":1,"ts":true}"#, NOW).unwrap_err().reason,
            Reason::BadTimestamp
        );
        assert_eq!(
            parse(br#"{"pm25":1,"ts":"noon"}"#, NOW).unwrap_err().reason,
            Reason::BadTimestamp
        );
        // serde_json refuses numbers beyond f64 and nesting beyond 128.
        assert_eq!(
            parse(br#"{"pm25":1e999}"#, NOW).unwrap_err().reason,
            Reason::BadJson
        );
        let deep = "[".repeat(10_000);
        assert_eq!(
            parse(deep.as_bytes(), NOW).unwrap_err().reason,
            Reason::BadJson
        );
    }

    #[test]
    fn senml_resolves_base_name_time_and_unit() {
        let pack = br#"[
            {"bn":"urn:dev:mac:0024befffe804ff1:","bt":1764144000,"bu":"ug/m3","n":"pm25","v":35},
            {"n":"no2","u":"ppb","v":20,"t":60},
            {"n":"pm10","v":50}
        ]"#;
        let p = parse(pack, NOW).unwrap();
        assert!(p.rejects.is_empty(), "{:?}", p.rejects);
        assert_eq!(
            p.readings,
            vec![
                RawReading {
                    name: "pm25".into(),
                    value: 35.0,
                    unit: Some("ug/m3".into()),
                    time_ms: Some(NOW)
                },
                RawReading {
                    name: "no2".into(),
                    value: 20.0,
                    unit: Some("ppb".into()),
                    time_ms: Some(NOW + 60_000)
                },
                RawReading {
                    name: "pm10".into(),
                    value: 50.0,
                    unit: Some("ug/m3".into()),
                    time_ms: Some(NOW)
                },
            ]
        );
    }

    #[test]
    fn senml_relative_times_and_non_numeric_values() {
        let p = parse(
            br#"[{"n":"pm25","v":10,"t":-30},{"n":"door","vb":true}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!(p.readings[0].time_ms, Some(NOW - 30_000));
        assert_eq!(p.rejects[0].reason, Reason::WrongType);
        assert_eq!(
            parse(br#"[1,2]"#, NOW).unwrap_err().reason,
            Reason::BadPayload
        );
    }
}
