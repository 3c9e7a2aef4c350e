//! The targets lantian checks, as data: `seeds/targets.toml`, built into
//! the binary, each with its rule, value, unit, citations and status.
//! `lantian targets` lists them; operators override or add targets with
//! `[[alerts.targets]]` tables ([`merge`]); the alert engine evaluates them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::observation::metric_known;
use crate::units::HumanDuration;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    /// Alert when the metric is above the value.
    #[serde(rename = ">")]
    Above,
    /// Alert when the metric is below the value.
    #[serde(rename = "<")]
    Below,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl Op {
    /// Whether `v` breaks `threshold`.
    pub fn breaks(self, v: f64, threshold: f64) -> bool {
        match self {
            Op::Above => v > threshold,
            Op::Below => v < threshold,
        }
    }

    /// Whether `v` is back on the good side of `clear` (hysteresis: for
    /// ">" at or below it, for "<" at or above it).
    pub fn clears(self, v: f64, clear: f64) -> bool {
        match self {
            Op::Above => v <= clear,
            Op::Below => v >= clear,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::Below => "<",
        }
    }
}

/// A comparison in a [`When`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Cmp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Cmp {
    pub fn holds(self, v: f64, value: f64) -> bool {
        match self {
            Cmp::Gt => v > value,
            Cmp::Ge => v >= value,
            Cmp::Lt => v < value,
            Cmp::Le => v <= value,
        }
    }
}

/// When a target applies: another metric of the same series and window
/// (GB 18918's NH3-N limit depends on the water temperature), or a label
/// of the series or its site (its TP limit on the plant's build year),
/// compared with a value. Where it does not hold, the target does not
/// judge, and an alert it had firing for that series resolves.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// E.g. `temperature.day`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// E.g. `built`: a tag of the series, or else the value of
    /// `[alerts.site_labels.<site>]`, read as a number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub op: Cmp,
    pub value: f64,
    /// Whether the target applies to a series that has no such value.
    #[serde(default)]
    pub if_missing: bool,
    /// The label's value per site, from `alerts.site_labels`.
    #[serde(skip)]
    pub sites: std::collections::BTreeMap<String, f64>,
}

impl When {
    /// The label's number for a series with `labels`: its own tag, or its
    /// site's configured value; None when neither is a number.
    pub fn label_value(&self, labels: &[(String, String)]) -> Option<f64> {
        let tag = |k: &str| labels.iter().find(|(t, _)| t == k).map(|(_, v)| v);
        if let Some(v) = tag(&self.label) {
            return v.trim().parse().ok();
        }
        tag("site").and_then(|s| self.sites.get(s)).copied()
    }
}

/// Resolves the `label` conditions of `targets` against the per-site
/// labels (`alerts.site_labels`; values that are not numbers are left out:
/// `check-config` reports them).
pub fn resolve_site_labels(
    targets: &mut [Target],
    site_labels: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) {
    for w in targets.iter_mut().filter_map(|t| t.when.as_mut()) {
        if w.label.is_empty() {
            continue;
        }
        for (site, labels) in site_labels {
            if let Some(Ok(n)) = labels.get(&w.label).map(|v| v.trim().parse()) {
                w.sites.insert(site.clone(), n);
            }
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
    /// How long the value must stay beyond the threshold (in event time)
    /// before the alert fires; 0 fires on the first breach.
    #[serde(default, rename = "for")]
    pub for_: Option<HumanDuration>,
    /// Hysteresis: a firing alert resolves only once the value is back
    /// past this (default: `value`).
    #[serde(default)]
    pub clear: Option<f64>,
    /// Reminder interval while firing (default: `alerts.repeat_interval`).
    #[serde(default)]
    pub repeat: Option<HumanDuration>,
    /// Only series whose labels (topic tags) equal these ("": the label
    /// absent).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Fields a per-field rule (flatline) ignores.
    #[serde(default)]
    pub exclude_fields: Vec<String>,
    /// Applies only when this holds.
    #[serde(default)]
    pub when: Option<When>,
}

/// An operator's `[[alerts.targets]]` table: with the id of a shipped
/// target, the keys given replace the shipped ones; with a new id, a new
/// target (then name, kind, metric, op, value, unit and severity are
/// needed; status defaults to "operational" and citations to "operator").
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetPatch {
    pub id: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub metric: Option<String>,
    pub op: Option<Op>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub severity: Option<Severity>,
    pub status: Option<Status>,
    pub enabled: Option<bool>,
    pub report: Option<String>,
    pub standard: Option<String>,
    pub set: Option<String>,
    #[serde(rename = "for")]
    pub for_: Option<HumanDuration>,
    pub clear: Option<f64>,
    pub repeat: Option<HumanDuration>,
    #[serde(rename = "match")]
    pub matchers: Option<BTreeMap<String, String>>,
    pub exclude_fields: Option<Vec<String>>,
    pub when: Option<When>,
}

/// The shipped targets with the operator's patches applied; every
/// problem as (index of the patch, message).
pub fn merge(
    mut targets: Vec<Target>,
    patches: &[TargetPatch],
) -> Result<Vec<Target>, Vec<(usize, String)>> {
    let mut errs = Vec::new();
    for (i, p) in patches.iter().enumerate() {
        let existing = targets.iter().position(|t| t.id == p.id);
        let t = match existing {
            Some(n) => &mut targets[n],
            None => match new_target(p) {
                Ok(t) => {
                    targets.push(t);
                    targets.last_mut().expect("just pushed")
                }
                Err(why) => {
                    errs.push((i, why));
                    continue;
                }
            },
        };
        apply(t, p);
        check(t, &mut |why| errs.push((i, why)));
    }
    if errs.is_empty() {
        Ok(targets)
    } else {
        Err(errs)
    }
}

/// A target the operator adds: every field a shipped one has must be given.
fn new_target(p: &TargetPatch) -> Result<Target, String> {
    let need = [
        ("name", p.name.is_none()),
        ("kind", p.kind.is_none()),
        ("metric", p.metric.is_none()),
        ("op", p.op.is_none()),
        ("value", p.value.is_none()),
        ("unit", p.unit.is_none()),
        ("severity", p.severity.is_none()),
    ];
    let missing: Vec<&str> = need.iter().filter(|x| x.1).map(|x| x.0).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{:?} is not a shipped target (see `lantian targets --all`); a new one needs {}",
            p.id,
            missing.join(", ")
        ));
    }
    Ok(Target {
        id: p.id.clone(),
        name: String::new(),
        kind: String::new(),
        metric: String::new(),
        op: Op::Above,
        value: None,
        unit: String::new(),
        severity: Severity::Warning,
        status: Status::Operational,
        enabled: true,
        report: "operator".into(),
        standard: "operator".into(),
        set: None,
        for_: None,
        clear: None,
        repeat: None,
        matchers: BTreeMap::new(),
        exclude_fields: Vec::new(),
        when: None,
    })
}

/// The patch's fields over the target's.
fn apply(t: &mut Target, p: &TargetPatch) {
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = &p.$f { t.$f = v.clone(); } )* };
    }
    take!(
        name,
        kind,
        metric,
        op,
        unit,
        severity,
        status,
        enabled,
        report,
        standard,
        matchers,
        exclude_fields
    );
    if p.when.is_some() {
        t.when = p.when.clone();
    }
    if p.value.is_some() {
        t.value = p.value;
    }
    if p.set.is_some() {
        t.set = p.set.clone();
    }
    if p.for_.is_some() {
        t.for_ = p.for_;
    }
    if p.clear.is_some() {
        t.clear = p.clear;
    }
    if p.repeat.is_some() {
        t.repeat = p.repeat;
    }
}

/// A target as patched must still make sense.
fn check(t: &Target, problem: &mut impl FnMut(String)) {
    if t.enabled && t.value.is_none() {
        problem(format!("{}: enabled but has no value (set `value`)", t.id));
    }
    if let (Some(v), Some(c)) = (t.value, t.clear) {
        if t.op.breaks(c, v) {
            problem(format!(
                "{}: clear = {c} is beyond the threshold {v} (hysteresis must sit on the good side)",
                t.id
            ));
        }
    }
    if !metric_known(&t.metric) {
        problem(format!(
            "{}: unknown metric {:?} (see README, Alerts)",
            t.id, t.metric
        ));
    }
    if let Some(w) = &t.when {
        if w.metric.is_empty() == w.label.is_empty() {
            problem(format!(
                "{}: when: give either a metric or a label, not both",
                t.id
            ));
        } else if !w.metric.is_empty() && !metric_known(&w.metric) {
            problem(format!(
                "{}: when: unknown metric {:?} (see README, Alerts)",
                t.id, w.metric
            ));
        }
    }
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
        if !metric_known(&t.metric) {
            errs.push(format!("{at}: unknown metric {:?}", t.metric));
        }
        if let (Some(v), Some(c)) = (t.value, t.clear) {
            if t.op.breaks(c, v) {
                errs.push(format!("{at}: clear {c} is beyond the threshold {v}"));
            }
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

/// The edition of GB 3095 (ambient air quality limits) in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gb3095 {
    Y2012,
    Y2026,
}

impl Gb3095 {
    /// The set of targets holding this edition's own limits (those that
    /// changed between editions: PM2.5 and PM10).
    pub fn set(self) -> &'static str {
        match self {
            Gb3095::Y2012 => "gb3095-2012-grade2",
            Gb3095::Y2026 => "gb3095-2026-transition",
        }
    }
}

/// Turns off the limits of the GB 3095 edition not in force, so one
/// exceedance never alerts twice under two editions. Operator patches
/// applied after this can still turn any target back on.
pub fn select_gb3095(targets: &mut [Target], edition: Gb3095) {
    let other = match edition {
        Gb3095::Y2012 => Gb3095::Y2026,
        Gb3095::Y2026 => Gb3095::Y2012,
    };
    for t in targets {
        if t.set.as_deref() == Some(other.set()) {
            t.enabled = false;
        }
    }
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
        let mut extra = Vec::new();
        if let Some(d) = t.for_.filter(|d| !d.get().is_zero()) {
            extra.push(format!("for {d}"));
        }
        if let Some(c) = t.clear {
            extra.push(format!("clears at {c}"));
        }
        if let Some(r) = t.repeat {
            extra.push(format!("repeat {r}"));
        }
        for (k, v) in &t.matchers {
            extra.push(match v.is_empty() {
                true => format!("no {k}"),
                false => format!("{k}={v}"),
            });
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("  [{}]", extra.join(", "))
        };
        let _ = writeln!(
            out,
            "\n{}  [{}{}, {:?}]\n  {}\n  rule: {} {} {} {}{}{}\n  report: {}\n  standard: {}",
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
            extra,
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
