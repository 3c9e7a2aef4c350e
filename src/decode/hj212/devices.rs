//! The HJ 212 device registry (`[[hj212.devices]]`) and what a device's
//! packet becomes: points tagged from the registry, fields named by the
//! code map, values converted from the device's units; or a reject with an
//! HJ 212 reason (`bad_packet`, `bad_crc`, `unknown_device`,
//! `bad_password`, `encrypted`).

use std::collections::HashMap;

use super::{CrcPolicy, Error, Packet, check_crc, crypt, parse_data, split};
use crate::reading::{Coverage, Point, Reason, Reject};

/// Pollutant code → (field, default unit). The units are what the
/// equipment sends in practice, not the appendix's defaults (which print
/// ng/m³ for particulates); a device's `units` overrides them.
pub const CODE_MAP: &[(&str, &str, &str)] = &[
    ("w00000", "flow_m3h", "l/s"),
    ("w01018", "cod", "mg/l"),
    ("w21003", "nh3n", "mg/l"),
    ("w21011", "tp", "mg/l"),
    ("w21001", "tn", "mg/l"),
    ("w01017", "bod5", "mg/l"),
    ("w01012", "ss", "mg/l"),
    ("a34002", "pm10", "ug/m3"),
    ("a34004", "pm25", "ug/m3"),
    ("a21026", "so2", "ug/m3"),
    ("a21004", "no2", "ug/m3"),
    ("a21005", "co", "mg/m3"),
    ("a05024", "o3", "ug/m3"),
    ("a24088", "nmhc", "mg/m3"),
    ("a99054", "tvoc", "mg/m3"),
    ("a01001", "temperature", "cel"),
    ("a01002", "humidity", "%"),
];

/// Which of a device's data feeds the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Hour,
    Minute,
    Day,
    Realtime,
    None,
}

impl Aggregate {
    pub const NAMES: [&'static str; 5] = ["hour", "minute", "day", "realtime", "none"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Self::Hour,
            "minute" => Self::Minute,
            "day" => Self::Day,
            "realtime" => Self::Realtime,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// One configured device.
#[derive(Clone, Debug)]
pub struct Device {
    pub mn: String,
    pub password: Option<String>,
    /// Its SM4 key, for an encrypted data area.
    pub key: Option<crypt::Key>,
    pub kind: String,
    /// district, sensor and site, sorted by key.
    pub tags: Vec<(String, String)>,
    pub crc: CrcPolicy,
    pub units: HashMap<String, String>,
    pub fields: HashMap<String, String>,
    pub aggregate: Aggregate,
    pub minute_ms: i64,
}

/// The devices by MN.
#[derive(Clone, Debug, Default)]
pub struct Devices {
    by_mn: HashMap<String, Device>,
}

impl Devices {
    /// From the configuration; every problem with its key path.
    pub fn from_config(cfg: &crate::config::Hj212Config) -> Result<Self, Vec<(String, String)>> {
        let mut by_mn = HashMap::new();
        let mut errors = Vec::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            let key = |k: &str| format!("hj212.devices[{i}].{k}");
            if d.mn.is_empty() {
                errors.push((key("mn"), "is empty".into()));
            }
            let crc = CrcPolicy::parse(&d.crc).unwrap_or_else(|| {
                errors.push((
                    key("crc"),
                    format!("{:?} is not one of {:?}", d.crc, CrcPolicy::NAMES),
                ));
                CrcPolicy::default()
            });
            let aggregate = Aggregate::parse(&d.aggregate).unwrap_or_else(|| {
                errors.push((
                    key("aggregate"),
                    format!("{:?} is not one of {:?}", d.aggregate, Aggregate::NAMES),
                ));
                Aggregate::Hour
            });
            for (code, unit) in &d.units {
                if crate::validate::Unit::parse(unit).is_none() {
                    errors.push((
                        key(&format!("units.{code}")),
                        format!("unknown unit {unit:?}"),
                    ));
                }
            }
            let password = match crate::units::Secret::resolve(
                d.password.as_ref(),
                d.password_file.as_deref(),
            ) {
                Ok(p) => p.map(|p| p.expose().to_owned()),
                Err(e) => {
                    errors.push((key("password"), e));
                    None
                }
            };
            let sm4_key =
                match crate::units::Secret::resolve(d.sm4_key.as_ref(), d.sm4_key_file.as_deref())
                    .and_then(|k| k.map(|k| crypt::Key::parse(k.expose())).transpose())
                {
                    Ok(k) => k,
                    Err(e) => {
                        errors.push((key("sm4_key"), e));
                        None
                    }
                };
            let mut tags = vec![
                ("district".to_owned(), d.district.clone()),
                (
                    "sensor".to_owned(),
                    d.sensor.clone().unwrap_or_else(|| d.mn.clone()),
                ),
                ("site".to_owned(), d.site.clone()),
            ];
            for (k, v) in &d.tags {
                if matches!(
                    k.as_str(),
                    "district" | "site" | "sensor" | "cn" | "data_flag"
                ) {
                    errors.push((
                        key(&format!("tags.{k}")),
                        "is set by lantian; use the device's own key for it".into(),
                    ));
                } else {
                    tags.push((k.clone(), v.clone()));
                }
            }
            tags.sort();
            for (k, v) in &tags {
                if v.is_empty() || v.chars().any(char::is_control) {
                    errors.push((key(k), "must be a non-empty tag value".into()));
                }
            }
            let device = Device {
                mn: d.mn.clone(),
                password,
                key: sm4_key,
                kind: d.kind.clone(),
                tags,
                crc,
                units: d.units.clone().into_iter().collect(),
                fields: d.fields.clone().into_iter().collect(),
                aggregate,
                minute_ms: i64::try_from(d.minute_interval.get().as_millis()).unwrap_or(600_000),
            };
            if by_mn.insert(d.mn.clone(), device).is_some() {
                errors.push((key("mn"), format!("{:?} is configured twice", d.mn)));
            }
        }
        if errors.is_empty() {
            Ok(Self { by_mn })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, mn: &str) -> Option<&Device> {
        self.by_mn.get(mn)
    }

    pub fn len(&self) -> usize {
        self.by_mn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mn.is_empty()
    }

    /// A packet checked against its device: framed, from a known MN, with
    /// the CRC of the device's policy and its password. The reject says
    /// which check failed.
    pub fn check(&self, raw: &[u8]) -> Result<(Packet, &Device), Reject> {
        let segment = split(raw).map_err(|e| Reject::new(Reason::BadPacket, e.to_string()))?;
        let device_of = |mn: &str| {
            self.get(mn).ok_or_else(|| {
                Reject::new(
                    Reason::UnknownDevice,
                    format!("MN {mn:?} is not in [[hj212.devices]]"),
                )
            })
        };
        // An encrypted data area needs the device's key; the header, with
        // the MN, is in clear.
        let data = if crypt::is_encrypted(segment.data) {
            let mn = segment
                .data
                .split(';')
                .find_map(|kv| kv.strip_prefix("MN="))
                .unwrap_or_default();
            let device = device_of(mn)?;
            crypt::clear(segment.data, device.key.as_ref()).map_err(|e| match e {
                Error::Encrypted => Reject::new(
                    Reason::Encrypted,
                    format!(
                        "MN {mn:?} sends an encrypted data area (HJ 212-2025 SM4); no sm4_key is configured for it"
                    ),
                ),
                Error::Key => Reject::new(
                    Reason::Encrypted,
                    format!("MN {mn:?}: {e}; is its sm4_key the device's?"),
                ),
                e => Reject::new(Reason::BadPacket, format!("MN {mn:?}: {e}")),
            })?
        } else {
            std::borrow::Cow::Borrowed(segment.data)
        };
        let mut notes = Vec::new();
        segment.check_length(&data, &mut notes);
        let mut packet =
            parse_data(&data, notes).map_err(|e| Reject::new(Reason::BadPacket, e.to_string()))?;
        packet.encrypted = matches!(data, std::borrow::Cow::Owned(_));
        let mn = packet.mn.clone().unwrap_or_default();
        let device = device_of(&mn)?;
        let crc_ok = match check_crc(&data, segment.received, device.crc) {
            Ok(ok) => ok,
            Err(e @ Error::Crc { .. }) => {
                return Err(Reject::new(Reason::BadCrc, format!("MN {mn:?}: {e}")));
            }
            Err(e) => return Err(Reject::new(Reason::BadPacket, e.to_string())),
        };
        if let Some(pw) = &device.password
            && packet.pw.as_deref() != Some(pw.as_str())
        {
            return Err(Reject::new(
                Reason::BadPassword,
                format!("MN {mn:?}: PW is not the device's password"),
            ));
        }
        packet.crc_ok = crc_ok;
        Ok((packet, device))
    }
}

/// Where a packet's values go: (coverage, value suffix), or `None` for a
/// packet that carries no readings (status, restart time, ACKs…).
pub fn route(cn: &str, device: &Device) -> Option<(Coverage, &'static str)> {
    let (aggregate, suffix, coverage) = match cn {
        "2011" => (Aggregate::Realtime, "Rtd", Coverage::Kind),
        "2051" => (
            Aggregate::Minute,
            "Avg",
            Coverage::Interval(device.minute_ms),
        ),
        "2061" => (Aggregate::Hour, "Avg", Coverage::Interval(3_600_000)),
        "2031" => (Aggregate::Day, "Avg", Coverage::Interval(86_400_000)),
        _ => return None,
    };
    let coverage = if device.aggregate == aggregate {
        coverage
    } else {
        Coverage::Raw
    };
    Some((coverage, suffix))
}

/// The field name and unit of a pollutant code for `device`.
pub fn field_of<'a>(device: &'a Device, code: &'a str) -> (&'a str, Option<&'a str>) {
    let builtin = CODE_MAP.iter().find(|(c, _, _)| *c == code);
    let name = device
        .fields
        .get(code)
        .map(String::as_str)
        .or(builtin.map(|(_, f, _)| *f))
        .unwrap_or(code);
    let unit = device
        .units
        .get(code)
        .map(String::as_str)
        .or(builtin.map(|(_, _, u)| *u));
    (name, unit)
}

/// The points of a checked packet at `time_ms`: one of the normal values
/// (flag `N` or none) and one per other flag, tagged `data_flag`, stored
/// but not aggregated. `check` validates each field (the registry).
pub fn points(
    packet: &Packet,
    device: &Device,
    time_ms: i64,
    coverage: Coverage,
    suffix: &str,
    mut check: impl FnMut(&str, f64, Option<&str>) -> Result<f64, Reject>,
    rejects: &mut Vec<Reject>,
) -> Vec<Point> {
    let cn = packet.cn.clone().unwrap_or_default();
    let mut groups: std::collections::BTreeMap<&str, Vec<(String, f64)>> = Default::default();
    for (code, values) in &packet.values {
        let Some(&v) = values
            .numbers
            .get(suffix)
            .or_else(|| values.numbers.get("Rtd"))
        else {
            continue;
        };
        let (name, unit) = field_of(device, code);
        if matches!(
            name,
            "district" | "site" | "sensor" | "cn" | "data_flag" | "time"
        ) {
            rejects.push(Reject::new(
                Reason::BadFieldName,
                format!("code {code:?} maps to {name:?}, a tag or reserved name"),
            ));
            continue;
        }
        match check(name, v, unit) {
            Ok(v) => {
                let flag = values.flag().unwrap_or("N");
                let fields = groups
                    .entry(if flag.is_empty() { "N" } else { flag })
                    .or_default();
                fields.retain(|(n, _)| n != name);
                fields.push((name.to_owned(), v));
            }
            Err(r) => rejects.push(Reject::new(r.reason, format!("{code}: {}", r.detail))),
        }
    }
    groups
        .into_iter()
        .map(|(flag, mut fields)| {
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            let mut tags = device.tags.clone();
            tags.push(("cn".into(), cn.clone()));
            let coverage = if flag == "N" {
                coverage
            } else {
                tags.push(("data_flag".into(), flag.to_owned()));
                Coverage::Raw
            };
            tags.sort();
            Point {
                kind: device.kind.clone(),
                coverage,
                tags,
                time_ms,
                fields,
            }
        })
        .collect()
}
