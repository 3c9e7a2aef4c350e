//! What the window stage computes for the rules: one value per series and
//! window ([`Observation`]), and the registry of metrics a target may name.
//! Pure data; the window stage produces observations, the alert engine and
//! the status page consume them.

use std::collections::BTreeMap;

/// A value computed for one series over one window, for the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Sensor network (`air`, `dust`, `voc`, `sewage`), or `city` for
    /// city-wide derived values.
    pub kind: String,
    /// The series' labels (topic tags: district, site, sensor...), sorted.
    pub labels: Vec<(String, String)>,
    /// E.g. `pm25.day`, `aqi.hour`, `treatment_rate.month_to_date`.
    pub metric: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub value: f64,
    /// Complete enough to judge (GB 3095-2012's data-validity table); invalid values neither
    /// fire nor clear an alert.
    pub valid: bool,
    /// Context carried into the alert (e.g. `year_to_date_m3`).
    pub details: BTreeMap<String, String>,
}

/// Metrics computed by lantian itself (the rest are `{field}.hour` and
/// `{field}.day` of any field).
pub const DERIVED: &[&str] = &[
    "aqi.hour",
    "aqi.day",
    "aqi.rolling_24h",
    "o3.day_max_8h",
    "treatment_rate.day",
    "treatment_rate.month_to_date",
    "reclaimed.year_to_date_pace",
    "capture_ratio.day",
    "capture_ratio.year_to_date",
    "alert_level.observed",
    "silence_minutes",
    "flat_readings",
];

/// Whether a target's metric is one the engine produces.
pub fn metric_known(m: &str) -> bool {
    DERIVED.contains(&m)
        || m.rsplit_once('.').is_some_and(|(field, period)| {
            !field.is_empty() && (period == "hour" || period == "day")
        })
}
