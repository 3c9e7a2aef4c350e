//! HJ 212 packets (HJ/T 212-2005, HJ 212-2017, HJ 212-2025): the text
//! protocol of China's pollution-source and ambient monitoring equipment.
//! Pure: bytes in, a [`Packet`] or an [`Error`] out.
//!
//! A packet is `##` + the data segment's byte length (4 digits; 2–3 digits
//! and values above 1024 are tolerated, as field devices send them) + the
//! data segment + 4 hex digits of CRC (either case) + an optional CR LF.
//! The data segment is `key=value` pairs separated by `;` up to `CP=&&`,
//! then the data area up to the closing `&&`: items `key=value` joined by
//! `;` between pollutants and `,` within one (`w01018-Avg=40.1,
//! w01018-Flag=N`). Keys are read in any order.
//!
//! The CRC of HJ 212 (Appendix A) is not CRC-16/MODBUS: each byte is
//! XORed into the register shifted right by 8. Devices in the field use
//! MODBUS, MODBUS with its bytes swapped, or ARC, so the policy is per
//! device ([`CrcPolicy`]).
//!
//! A split packet (PNUM/PNO) is read part by part: each part is a whole
//! data segment with its own `DataTime`, so its values become fields of
//! the same points as the other parts' (same tags and time), and
//! InfluxDB holds them as one; nothing waits for the missing parts.
//!
//! An HJ 212-2025 data area encrypted with SM4 is decrypted with the
//! device's key ([`crypt`]).

use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDateTime, TimeZone};

pub mod crypt;
pub mod devices;

/// The topic of packets taken by lantian's own TCP listener, in the spool
/// (`$hj212/tcp/<peer address>`): MQTT subscriptions never match a `$`
/// topic, so no publisher can forge one.
pub const TCP_TOPIC: &str = "$hj212/tcp";

/// Beijing time, UTC+8, as HJ 212 times are written (no zone in the text).
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The longest packet taken: `##`, 4 digits, 9999 bytes, CRC, CR LF.
pub const MAX_PACKET: usize = crate::config::HJ212_MAX_PACKET;

/// The HJ 212 CRC (HJ 212-2017 Appendix A, "ANSI CRC16"): each byte is
/// XORed into the register shifted right by 8, not into the register.
pub fn crc_hj212(data: &[u8]) -> u16 {
    data.iter()
        .fold(0xFFFF, |crc, &b| shift8((crc >> 8) ^ u16::from(b)))
}

/// Reflected CRC-16, polynomial 0xA001, from `init`.
fn crc16_reflected(data: &[u8], init: u16) -> u16 {
    data.iter().fold(init, |crc, &b| shift8(crc ^ u16::from(b)))
}

/// Eight reflected shifts of the register, polynomial 0xA001.
fn shift8(mut crc: u16) -> u16 {
    for _ in 0..8 {
        let low = crc & 1;
        crc >>= 1;
        if low != 0 {
            crc ^= 0xA001;
        }
    }
    crc
}

/// CRC-16/MODBUS (init 0xFFFF).
pub fn crc_modbus(data: &[u8]) -> u16 {
    crc16_reflected(data, 0xFFFF)
}

/// CRC-16/ARC (init 0).
pub fn crc_arc(data: &[u8]) -> u16 {
    crc16_reflected(data, 0)
}

/// Which CRC a device writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrcPolicy {
    /// The standard's (HJ 212 Appendix A).
    #[default]
    Hj212,
    /// CRC-16/MODBUS, high byte first.
    Modbus,
    /// CRC-16/MODBUS with its two bytes swapped.
    ModbusSwapped,
    /// CRC-16/ARC.
    Arc,
    /// Not checked: a mismatch is reported, not refused.
    Any,
}

impl CrcPolicy {
    pub const NAMES: [&'static str; 5] = ["hj212", "modbus", "modbus-swapped", "arc", "any"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hj212" => Self::Hj212,
            "modbus" => Self::Modbus,
            "modbus-swapped" => Self::ModbusSwapped,
            "arc" => Self::Arc,
            "any" => Self::Any,
            _ => return None,
        })
    }

    /// The CRC this policy expects of `data` (`Any`: the standard's).
    pub fn expected(self, data: &[u8]) -> u16 {
        match self {
            Self::Hj212 | Self::Any => crc_hj212(data),
            Self::Modbus => crc_modbus(data),
            Self::ModbusSwapped => crc_modbus(data).swap_bytes(),
            Self::Arc => crc_arc(data),
        }
    }
}

/// Why a packet was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not framed as `##<len><data><crc>`.
    Frame(String),
    /// The CRC does not match under the device's policy.
    Crc { expected: u16, received: u16 },
    /// The data segment cannot be read.
    Data(String),
    /// The data area is SM4-encrypted (HJ 212-2025) and no key is given.
    Encrypted,
    /// The data area does not decrypt to text with the key given.
    Key,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Frame(m) => write!(f, "frame: {m}"),
            Error::Crc { expected, received } => {
                write!(f, "crc: received {received:04X}, expected {expected:04X}")
            }
            Error::Data(m) => write!(f, "data: {m}"),
            Error::Encrypted => {
                f.write_str("the data area is SM4-encrypted (HJ 212-2025) and no key is given")
            }
            Error::Key => f.write_str("the data area does not decrypt to text with the SM4 key"),
        }
    }
}

impl std::error::Error for Error {}

/// The Flag field: `V5..V0 D A`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The raw value; `None` when the packet has no Flag (HJ/T 212-2005).
    pub raw: Option<u8>,
}

impl Flag {
    /// The sender wants a data ACK (bit 0).
    pub fn ack(self) -> bool {
        self.raw.is_some_and(|f| f & 1 != 0)
    }
    /// PNUM/PNO present: one part of a split packet (bit 1).
    pub fn split(self) -> bool {
        self.raw.is_some_and(|f| f & 2 != 0)
    }
    /// The edition: 0 HJ/T 212-2005 (also without a Flag), 1 HJ 212-2017,
    /// 2 HJ 212-2025; others are kept as read.
    pub fn version(self) -> u8 {
        self.raw.map_or(0, |f| f >> 2)
    }
    /// The edition's year, when known.
    pub fn edition(self) -> Option<u16> {
        match self.version() {
            0 => Some(2005),
            1 => Some(2017),
            2 => Some(2025),
            _ => None,
        }
    }
}

/// One pollutant's values: `Rtd`, `Avg`, `Min`, `Max`, `Cou`, `ZsAvg`, …
/// as numbers, and `Flag`, `EFlag`, `SampleTime`, … as text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    pub numbers: BTreeMap<String, f64>,
    pub text: BTreeMap<String, String>,
}

impl Values {
    /// The data flag (HJ 212-2017 Table 8: N normal, F stopped, M
    /// maintenance, S manual, D fault, C calibration, T over range, B
    /// communication failure); `None` when the packet gives none.
    pub fn flag(&self) -> Option<&str> {
        self.text.get("Flag").map(String::as_str)
    }
}

/// A decoded packet. The password is kept for the registry's check and
/// the ACK, and never printed.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub qn: Option<String>,
    pub st: Option<String>,
    pub cn: Option<String>,
    pub pw: Option<String>,
    pub mn: Option<String>,
    pub flag: Flag,
    /// (PNUM, PNO) of a split packet.
    pub part: Option<(u32, u32)>,
    /// HJ 212-2025 `RF=1`: data sent again.
    pub resent: bool,
    /// The data area came SM4-encrypted (HJ 212-2025) and was decrypted.
    pub encrypted: bool,
    /// `DataTime`: the start of the period for minute, hour and day data
    /// (2051, 2061, 2031, 2041), the instant for real-time data (2011).
    pub data_time: Option<chrono::DateTime<FixedOffset>>,
    /// Whether the CRC matched the policy (always true unless `Any`).
    pub crc_ok: bool,
    /// Per pollutant code (HJ/T 212-2005 codes mapped to 2017 codes).
    pub values: BTreeMap<String, Values>,
    /// Data-area fields of no pollutant (`QnRtn`, `RestartTime`, …).
    pub fields: BTreeMap<String, String>,
    /// 2005 code → 2017 code, for the codes that were mapped.
    pub mapped: BTreeMap<String, String>,
    /// What was odd but not fatal (a DataTime that cannot be read, a
    /// length field that disagrees, a duplicate key).
    pub notes: Vec<String>,
}

/// HJ/T 212-2005 pollutant codes and their HJ 212-2017 codes (HJ 212-2017
/// Appendix B, "原编码").
pub const CODES_2005: &[(&str, &str)] = &[
    ("B01", "w00000"),
    ("001", "w01001"),
    ("002", "w01002"),
    ("003", "w01012"),
    ("010", "w01017"),
    ("011", "w01018"),
    ("015", "w01020"),
    ("060", "w21003"),
    ("065", "w21001"),
    ("101", "w21011"),
    ("080", "w22001"),
    ("110", "w23002"),
    ("B02", "a00000"),
    ("01", "a34013"),
    ("02", "a21026"),
    ("03", "a21002"),
    ("04", "a21005"),
    ("S01", "a19001"),
    ("S02", "a01011"),
    ("S03", "a01012"),
    ("S04", "a01017"),
    ("S05", "a01014"),
    ("S08", "a01013"),
    ("17", "a25003"),
    ("18", "a25005"),
];

/// A packet's parts as framed: the data segment as sent, the CRC it
/// carries and its length field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub data: &'a str,
    pub received: u16,
    pub declared: usize,
}

impl Segment<'_> {
    /// Notes a length field that is neither the data segment's length as
    /// sent nor, for an encrypted one, its length in clear (`clear`).
    pub fn check_length(&self, clear: &str, notes: &mut Vec<String>) {
        if self.declared != self.data.len() && self.declared != clear.len() {
            notes.push(format!(
                "length field {} but the data segment has {} bytes",
                self.declared,
                self.data.len()
            ));
        }
    }
}

/// Splits a packet into its data segment, the CRC it carries and its
/// length field.
pub fn split(raw: &[u8]) -> Result<Segment<'_>, Error> {
    let line = raw
        .strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(raw);
    if line.len() > MAX_PACKET {
        return Err(Error::Frame(format!(
            "{} bytes, more than the {MAX_PACKET} a packet may have",
            line.len()
        )));
    }
    let Some(rest) = line.strip_prefix(b"##") else {
        return Err(Error::Frame("does not start with ##".into()));
    };
    let digits = rest
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits < 2 {
        return Err(Error::Frame("no data-segment length after ##".into()));
    }
    let declared: usize = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &rest[digits..];
    if rest.len() < 4 {
        return Err(Error::Frame("too short for a CRC".into()));
    }
    let (data, crc) = rest.split_at(rest.len() - 4);
    let received = std::str::from_utf8(crc)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u16::from_str_radix(s, 16).ok())
        .ok_or_else(|| {
            Error::Frame(format!(
                "the last 4 characters are not a hex CRC: {:?}",
                String::from_utf8_lossy(crc)
            ))
        })?;
    let data = std::str::from_utf8(data)
        .map_err(|_| Error::Frame("the data segment is not UTF-8".into()))?;
    Ok(Segment {
        data,
        received,
        declared,
    })
}

/// Whether `received` is the CRC of `data` under `policy`: `Ok(true)`, or
/// `Ok(false)` for a mismatch under [`CrcPolicy::Any`]; an error otherwise.
pub fn check_crc(data: &str, received: u16, policy: CrcPolicy) -> Result<bool, Error> {
    let expected = policy.expected(data.as_bytes());
    if expected == received {
        Ok(true)
    } else if policy == CrcPolicy::Any {
        Ok(false)
    } else {
        Err(Error::Crc { expected, received })
    }
}

/// Decodes one packet (`##…`, CR LF optional) under `policy`; an
/// encrypted data area is an error ([`decode_with_key`] decrypts it).
pub fn decode(raw: &[u8], policy: CrcPolicy) -> Result<Packet, Error> {
    decode_with_key(raw, policy, None)
}

/// Decodes one packet under `policy`, decrypting an encrypted data area
/// with `key`; the CRC is checked on the data segment in clear.
pub fn decode_with_key(
    raw: &[u8],
    policy: CrcPolicy,
    key: Option<&crypt::Key>,
) -> Result<Packet, Error> {
    let segment = split(raw)?;
    let data = crypt::clear(segment.data, key)?;
    let mut notes = Vec::new();
    segment.check_length(&data, &mut notes);
    let crc_ok = check_crc(&data, segment.received, policy)?;
    let mut packet = parse_data(&data, notes)?;
    packet.crc_ok = crc_ok;
    packet.encrypted = matches!(data, std::borrow::Cow::Owned(_));
    Ok(packet)
}

/// Reads a data segment (`QN=…;ST=…;…;CP=&&…&&`).
pub fn parse_data(data: &str, mut notes: Vec<String>) -> Result<Packet, Error> {
    let Some(cp_at) = data.find("CP=&&") else {
        return Err(Error::Data("no CP=&& data area".into()));
    };
    let head = &data[..cp_at];
    let area = &data[cp_at + 5..];
    let Some(area) = area.strip_suffix("&&") else {
        return Err(Error::Data("the data area does not end with &&".into()));
    };
    let mut header: BTreeMap<&str, &str> = BTreeMap::new();
    for item in head
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Error::Data(format!("{item:?} is not key=value")));
        };
        if header.insert(k.trim(), v.trim()).is_some() {
            notes.push(format!("{k} given twice; the last one is used"));
        }
    }
    let text = |k: &str| header.get(k).map(|v| (*v).to_owned());
    let number = |k: &str| -> Result<Option<u32>, Error> {
        header
            .get(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Data(format!("{k}={v} is not a number")))
            })
            .transpose()
    };
    let flag = Flag {
        raw: match header.get("Flag") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| Error::Data(format!("Flag={v} is not 0-255")))?,
            ),
        },
    };
    let part = match (number("PNUM")?, number("PNO")?) {
        (Some(n), Some(no)) => Some((n, no)),
        _ => None,
    };
    let mut packet = Packet {
        qn: text("QN"),
        st: text("ST"),
        cn: text("CN"),
        pw: text("PW"),
        mn: text("MN"),
        flag,
        part,
        resent: header.get("RF") == Some(&"1"),
        encrypted: false,
        data_time: None,
        crc_ok: true,
        values: BTreeMap::new(),
        fields: BTreeMap::new(),
        mapped: BTreeMap::new(),
        notes,
    };
    let old_codes = flag.version() == 0;
    for item in area
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Error::Data(format!("{item:?} in CP is not key=value")));
        };
        let (key, value) = (key.trim(), value.trim());
        match key.split_once('-') {
            Some((code, suffix)) if !code.is_empty() && !suffix.is_empty() => {
                let code = if old_codes {
                    match CODES_2005.iter().find(|(old, _)| *old == code) {
                        Some((old, new)) => {
                            packet.mapped.insert((*old).into(), (*new).into());
                            *new
                        }
                        None => code,
                    }
                } else {
                    code
                };
                let values = packet.values.entry(code.to_owned()).or_default();
                let number = value.parse::<f64>().ok().filter(|v| v.is_finite());
                // One value a suffix: a later one replaces it, number or text.
                let taken =
                    values.numbers.remove(suffix).is_some() | values.text.remove(suffix).is_some();
                match (number, suffix) {
                    // Flags and times are text even when they look numeric.
                    (Some(v), s)
                        if !matches!(s, "Flag" | "EFlag" | "SampleTime" | "Info" | "SN") =>
                    {
                        values.numbers.insert(suffix.to_owned(), v);
                    }
                    _ => {
                        values.text.insert(suffix.to_owned(), value.to_owned());
                    }
                }
                if taken {
                    packet
                        .notes
                        .push(format!("{code}-{suffix} given twice; the last one is used"));
                }
            }
            _ => {
                if packet
                    .fields
                    .insert(key.to_owned(), value.to_owned())
                    .is_some()
                {
                    packet
                        .notes
                        .push(format!("{key} given twice in CP; the last one is used"));
                }
            }
        }
    }
    if let Some(t) = packet.fields.get("DataTime") {
        match parse_time(t) {
            Some(t) => packet.data_time = Some(t),
            None => packet
                .notes
                .push(format!("DataTime={t} is not YYYYMMDDhhmmss[zzz]")),
        }
    }
    Ok(packet)
}

/// `YYYYMMDDhhmmss`, optionally with 3 digits of milliseconds, in
/// Beijing time.
pub fn parse_time(t: &str) -> Option<chrono::DateTime<FixedOffset>> {
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (secs, ms) = match t.len() {
        14 => (t, 0),
        17 => (&t[..14], t[14..].parse::<u32>().ok()?),
        _ => return None,
    };
    let naive = NaiveDateTime::parse_from_str(secs, "%Y%m%d%H%M%S").ok()?
        + chrono::Duration::milliseconds(i64::from(ms));
    beijing().from_local_datetime(&naive).single()
}

/// A packet for `data` (a data segment): `##`, length, data, CRC, CR LF.
pub fn build(data: &str) -> String {
    format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        crc_hj212(data.as_bytes())
    )
}

/// The data ACK (CN=9014) for `p`: echoes QN, PW and MN, Flag 4 (HJ 212
/// -2017) or 8 (HJ 212-2025) by the sender's edition, empty data area.
pub fn data_ack(p: &Packet) -> String {
    let flag = if p.flag.version() >= 2 { 8 } else { 4 };
    build(&format!(
        "QN={};ST=91;CN=9014;PW={};MN={};Flag={flag};CP=&&&&",
        p.qn.as_deref().unwrap_or_default(),
        p.pw.as_deref().unwrap_or_default(),
        p.mn.as_deref().unwrap_or_default(),
    ))
}

/// The packet as one JSON object (`lantian hj212 parse`); never the
/// password.
pub fn to_json(p: &Packet) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let values: Map<String, Value> = p
        .values
        .iter()
        .map(|(code, v)| {
            let mut o = Map::new();
            for (k, n) in &v.numbers {
                o.insert(k.clone(), json!(n));
            }
            for (k, t) in &v.text {
                o.insert(k.clone(), json!(t));
            }
            (code.clone(), Value::Object(o))
        })
        .collect();
    let mut out = json!({
        "qn": p.qn,
        "st": p.st,
        "cn": p.cn,
        "mn": p.mn,
        "flag": {
            "raw": p.flag.raw,
            "ack": p.flag.ack(),
            "split": p.flag.split(),
            "version": p.flag.edition().map_or_else(|| json!(p.flag.version()), |y| json!(y.to_string())),
        },
        "data_time": p.data_time.map(|t| t.to_rfc3339()),
        "crc": if p.crc_ok { "ok" } else { "mismatch" },
        "values": values,
    });
    let o = out.as_object_mut().expect("an object");
    if let Some((total, no)) = p.part {
        o.insert("pnum".into(), json!(total));
        o.insert("pno".into(), json!(no));
    }
    if p.resent {
        o.insert("resent".into(), json!(true));
    }
    if p.encrypted {
        o.insert("encrypted".into(), json!(true));
    }
    let fields: Map<String, Value> = p
        .fields
        .iter()
        // DataTime is data_time; a password set by CN=1072 is a secret.
        .filter(|(k, _)| !matches!(k.as_str(), "DataTime" | "PW" | "NewPW"))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if !fields.is_empty() {
        o.insert("fields".into(), Value::Object(fields));
    }
    if !p.mapped.is_empty() {
        o.insert("codes_2005".into(), json!(p.mapped));
    }
    if !p.notes.is_empty() {
        o.insert("notes".into(), json!(p.notes));
    }
    out
}

/// `lantian hj212 parse`: one packet a line in (CR LF optional, blank
/// lines skipped), one JSON object a line out, `{"error": …}` for a
/// packet refused under `policy`. Returns (parsed, refused).
pub fn parse_lines(
    policy: CrcPolicy,
    key: Option<&crypt::Key>,
    input: impl std::io::BufRead,
    mut out: impl std::io::Write,
) -> std::io::Result<(u64, u64)> {
    let (mut parsed, mut refused) = (0, 0);
    for line in input.split(b'\n') {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let json = match decode_with_key(line, policy, key) {
            Ok(p) => {
                parsed += 1;
                to_json(&p)
            }
            Err(e) => {
                refused += 1;
                serde_json::json!({ "error": e.to_string() })
            }
        };
        writeln!(out, "{json}")?;
    }
    out.flush()?;
    Ok((parsed, refused))
}

#[cfg(test)]
mod tests;
