//! What flows through the pipeline: points (validated readings) and
//! rejects (what went to quarantine, and why).

/// One InfluxDB point: every field a sensor reported for one instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// The sensor network (`air`, `dust`, ...), used as the measurement.
    pub kind: String,
    /// Tags from the topic, sorted by key.
    pub tags: Vec<(String, String)>,
    /// Reading time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Quantity name → value in its canonical unit. Never NaN or infinite.
    pub fields: Vec<(String, f64)>,
    /// How the windows take it.
    pub coverage: Coverage,
}

/// What period a point stands for, for the windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Coverage {
    /// Its kind's reporting interval (`windows.intervals`).
    #[default]
    Kind,
    /// A mean over this many ms from its time (an HJ 212 hourly value
    /// stamped 08:00 is 08:00–09:00).
    Interval(i64),
    /// Stored, not aggregated: an HJ 212 value flagged other than `N`
    /// (maintenance, calibration, fault…), or data of a period the device
    /// does not aggregate.
    Raw,
}

/// Why input was quarantined. The names are the `reason` tag values in the
/// `quarantine` measurement and the `reason` label in metrics, so they are
/// part of the interface: add, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No topic template matched.
    UnknownTopic,
    /// A template matched but its kind is not configured.
    UnknownKind,
    /// The topic holds control characters.
    BadTopic,
    /// Payload larger than `validation.max_payload_bytes`.
    Oversized,
    /// Not parseable JSON (includes binary junk and non-UTF-8).
    BadJson,
    /// JSON, but not a reading object or a SenML pack.
    BadPayload,
    /// Parsed, but held no readings.
    Empty,
    /// A field that is not a number (string, bool, null, object...).
    WrongType,
    /// NaN or infinite (SenML can carry them as strings; some encoders too).
    NotFinite,
    /// Outside the quantity's physical range.
    OutOfRange,
    /// A unit that cannot be converted to the quantity's canonical unit.
    BadUnit,
    /// A field the registry does not know, with `unknown_fields = "reject"`.
    UnknownQuantity,
    /// A field name that cannot be stored (empty, control characters, `time`).
    BadFieldName,
    /// A timestamp that cannot be read.
    BadTimestamp,
    /// Older than `validation.max_age`.
    TooOld,
    /// Further ahead than `validation.max_future`.
    InFuture,
    /// InfluxDB rejected the point (HTTP 4xx) after the batch was split.
    Rejected,
    /// Spool bytes that failed their checksum (disk corruption).
    SpoolCorrupt,
    /// A new series past `validation.max_series` (a publisher inventing
    /// sensors must not exhaust memory).
    Cardinality,
    /// An HJ 212 packet that cannot be framed or read.
    BadPacket,
    /// An HJ 212 packet whose CRC does not match its device's policy.
    BadCrc,
    /// An HJ 212 packet from an MN that no `[[hj212.devices]]` names.
    UnknownDevice,
    /// An HJ 212 packet whose PW is not its device's password.
    BadPassword,
    /// An HJ 212-2025 packet with an encrypted (SM4) data area and no key
    /// configured for its device.
    Encrypted,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::UnknownTopic,
        Reason::UnknownKind,
        Reason::BadTopic,
        Reason::Oversized,
        Reason::BadJson,
        Reason::BadPayload,
        Reason::Empty,
        Reason::WrongType,
        Reason::NotFinite,
        Reason::OutOfRange,
        Reason::BadUnit,
        Reason::UnknownQuantity,
        Reason::BadFieldName,
        Reason::BadTimestamp,
        Reason::TooOld,
        Reason::InFuture,
        Reason::Rejected,
        Reason::SpoolCorrupt,
        Reason::Cardinality,
        Reason::BadPacket,
        Reason::BadCrc,
        Reason::UnknownDevice,
        Reason::BadPassword,
        Reason::Encrypted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownTopic => "unknown_topic",
            Reason::UnknownKind => "unknown_kind",
            Reason::BadTopic => "bad_topic",
            Reason::Oversized => "oversized",
            Reason::BadJson => "bad_json",
            Reason::BadPayload => "bad_payload",
            Reason::Empty => "empty",
            Reason::WrongType => "wrong_type",
            Reason::NotFinite => "not_finite",
            Reason::OutOfRange => "out_of_range",
            Reason::BadUnit => "bad_unit",
            Reason::UnknownQuantity => "unknown_quantity",
            Reason::BadFieldName => "bad_field_name",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::TooOld => "too_old",
            Reason::InFuture => "in_future",
            Reason::Rejected => "rejected",
            Reason::SpoolCorrupt => "spool_corrupt",
            Reason::Cardinality => "cardinality",
            Reason::BadPacket => "bad_packet",
            Reason::BadCrc => "bad_crc",
            Reason::UnknownDevice => "unknown_device",
            Reason::BadPassword => "bad_password",
            Reason::Encrypted => "encrypted",
        }
    }

    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// One quarantined piece of input: a whole message, a point or a field.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub reason: Reason,
    /// Human-readable specifics ("pm25 = -5 is below 0 ug/m3").
    pub detail: String,
}

impl Reject {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A decoded message: the points to store and what was rejected.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub points: Vec<Point>,
    pub rejects: Vec<Reject>,
}

impl Decoded {
    pub fn rejected(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            points: Vec::new(),
            rejects: vec![Reject::new(reason, detail)],
        }
    }
}
