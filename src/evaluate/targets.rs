//! The targets lantian checks, as data: `seeds/targets.toml`, built into
//! the binary, each with its rule, value, unit, citations and status.
//! `lantian targets` lists them. (The alert engine that evaluates them is
//! a later stage.)

use serde::Deserialize;

/// The shipped targets.
pub const SEED: &str = include_str!("../../seeds/targets.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// From an authoritative source or two independent ones.
    Confirmed,
    /// One source only: shipped disabled.
    Unconfirmed,
    /// Not a regulatory figure: an operating default.
    Operational,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Op {
    /// Alert when the metric is above the value.
    #[serde(rename = ">")]
    Above,
    /// Alert when the metric is below the value.
    #[serde(rename = "<")]
    Below,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::Below => "<",
        }
    }
}

/// One target.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub name: String,
    /// Sensor network (`air`, `dust`, `voc`, `sewage`) or `any`.
    pub kind: String,
    /// What is compared, e.g. `aqi.hour`, `pm25.day`, `treatment_rate.day`.
    pub metric: String,
    pub op: Op,
    /// Threshold in `unit`; None: the operator must set it.
    pub value: Option<f64>,
    pub unit: String,
    pub severity: Severity,
    pub status: Status,
    pub enabled: bool,
    /// The city report passage (section and paraphrase).
    pub report: String,
    /// The standard and clause.
    pub standard: String,
    /// A named set the target belongs to (e.g. `gb3095-2012-grade2`).
    #[serde(default)]
    pub set: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    target: Vec<Target>,
}

/// Parses a targets file and checks it: unique ids, an enabled target has
/// a value, an unconfirmed one is not enabled, citations are present.
pub fn parse(toml: &str) -> Result<Vec<Target>, Vec<String>> {
    let file: File = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| vec![e.to_string()])?;
    let mut errs = Vec::new();
    for (i, t) in file.target.iter().enumerate() {
        let at = format!("target[{i}] ({})", t.id);
        if file.target[..i].iter().any(|o| o.id == t.id) {
            errs.push(format!("{at}: duplicate id"));
        }
        if t.enabled && t.value.is_none() {
            errs.push(format!("{at}: enabled but has no value"));
        }
        if t.enabled && t.status == Status::Unconfirmed {
            errs.push(format!("{at}: unconfirmed figures ship disabled"));
        }
        if t.report.trim().is_empty() || t.standard.trim().is_empty() {
            errs.push(format!("{at}: needs both citations (report and standard)"));
        }
        if t.value.is_some_and(|v| !v.is_finite()) {
            errs.push(format!("{at}: value must be a finite number"));
        }
    }
    if errs.is_empty() {
        Ok(file.target)
    } else {
        Err(errs)
    }
}

/// The shipped targets (checked by a unit test).
pub fn shipped() -> Vec<Target> {
    parse(SEED).unwrap_or_default()
}

/// The table `lantian targets` prints.
pub fn render(targets: &[Target], all: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let shown: Vec<&Target> = targets.iter().filter(|t| all || t.enabled).collect();
    let _ = writeln!(
        out,
        "{} of {} targets{}",
        shown.len(),
        targets.len(),
        if all {
            ""
        } else {
            " enabled (--all lists the rest)"
        }
    );
    for t in shown {
        let value = t.value.map_or("(operator sets)".into(), |v| format!("{v}"));
        let _ = writeln!(
            out,
            "\n{}  [{}{}, {:?}]\n  {}\n  rule: {} {} {} {}{}\n  report: {}\n  standard: {}",
            t.id,
            if t.enabled { "on" } else { "off" },
            match t.status {
                Status::Confirmed => "",
                Status::Unconfirmed => ", UNCONFIRMED",
                Status::Operational => ", operational",
            },
            t.severity,
            t.name,
            t.metric,
            t.op.as_str(),
            value,
            t.unit,
            t.set
                .as_ref()
                .map_or(String::new(), |s| format!("  (set {s})")),
            t.report,
            t.standard
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_targets_parse_and_keep_the_rules() {
        let t = parse(SEED).unwrap();
        assert!(t.len() >= 30, "{}", t.len());
        // Every unconfirmed figure ships disabled.
        for x in &t {
            if x.status == Status::Unconfirmed {
                assert!(!x.enabled, "{}", x.id);
            }
        }
        let get = |id: &str| t.iter().find(|x| x.id == id).unwrap();
        assert_eq!(get("air.aqi.hour.heavy").value, Some(200.0));
        assert_eq!(get("air.aqi.hour.severe").value, Some(300.0));
        assert_eq!(get("water.treatment-rate.day").value, Some(95.0));
        assert_eq!(get("water.treatment-rate.day").op, Op::Below);
        assert_eq!(get("water.reclaimed.pace").value, Some(1.2e9));
        assert_eq!(get("air.gb3095-2026.pm25_24h").value, Some(60.0));
        assert_eq!(get("air.gb3095-2012.pm25_24h").value, Some(75.0));
        assert!(!get("air.alert-level.2023").enabled);
        assert!(!get("voc.catering.oil_fume").enabled);
        assert!(get("dust.pm10.site").value.is_none());
        // Both GB 3095 sets are there, by name.
        for set in ["gb3095-2012-grade2", "gb3095-2026-transition", "gb18918-1a"] {
            assert!(t.iter().any(|x| x.set.as_deref() == Some(set)), "{set}");
        }
    }

    #[test]
    fn mistakes_are_reported() {
        let bad = r#"
[[target]]
id = "a"
name = "x"
kind = "air"
metric = "aqi.hour"
op = ">"
unit = "AQI"
severity = "warning"
status = "unconfirmed"
enabled = true
report = ""
standard = "s"
[[target]]
id = "a"
name = "y"
kind = "air"
metric = "aqi.hour"
op = ">"
value = 1
unit = "AQI"
severity = "warning"
status = "confirmed"
enabled = false
report = "r"
standard = "s"
"#;
        let errs = parse(bad).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(parse("[[target]]\nid = 1\nnope = 2\n").is_err());
    }

    #[test]
    fn the_listing_shows_rules_and_citations() {
        let t = shipped();
        let text = render(&t, false);
        assert!(text.contains("air.aqi.hour.heavy  [on, Warning]"));
        assert!(text.contains("rule: aqi.hour > 200 AQI"));
        assert!(text.contains("standard: HJ 633-2026"));
        assert!(!text.contains("voc.catering.oil_fume"));
        let all = render(&t, true);
        assert!(all.contains("voc.catering.oil_fume  [off, UNCONFIRMED, Warning]"));
    }
}
