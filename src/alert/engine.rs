//! The alert engine: rules from targets, one state machine per alert
//! instance (rule + series), deadman and flatline from raw points.
//!
//! ```text
//!            breach                 breach, end − first ≥ for
//! inactive ─────────► pending ───────────────────────────────► firing ─┐
//!    ▲                  │ no breach                              │     │ value moves
//!    └──────────────────┘                                        │     │ (levels): changed
//!    ▲                   value back past `clear` (hysteresis)    │     │ repeat: reminder
//!    └──────────────────────────── resolved ◄────────────────────┘ ◄───┘
//! ```
//!
//! An instance only moves forward in event time: an observation whose
//! window ends no later than the last one it saw is a replay or a late
//! correction and changes nothing. That makes replays after a restart
//! idempotent, and keeps backfilled data from clearing or firing anything.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::derive::Derived;
use super::{Alert, Event, Notice, Observation};
use crate::calendar::Calendar;
use crate::evaluate::targets::Target;
use crate::reading::Point;

const MINUTE_MS: i64 = 60_000;
const STATE_VERSION: u32 = 1;

/// A target made executable.
#[derive(Clone, Debug)]
pub struct Rule {
    pub target: Target,
    pub threshold: f64,
    pub clear: f64,
    pub for_ms: i64,
    pub repeat_ms: i64,
    /// The observation metric it reads (`alert_level.observed` reads
    /// `alert_level.{set}`).
    key: String,
}

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Rule {
    /// The enabled targets as rules; `repeat` is the default reminder
    /// interval (0 = none).
    pub fn from_targets(targets: &[Target], repeat: std::time::Duration) -> Vec<Rule> {
        targets
            .iter()
            .filter(|t| t.enabled)
            .filter_map(|t| {
                let threshold = t.value?;
                let key = if t.metric == "alert_level.observed" {
                    format!("alert_level.{}", t.set.as_deref().unwrap_or("beijing-2016"))
                } else {
                    t.metric.clone()
                };
                Some(Rule {
                    threshold,
                    clear: t.clear.unwrap_or(threshold),
                    for_ms: t.for_.map_or(0, |d| ms(d.get())),
                    repeat_ms: ms(t.repeat.map_or(repeat, |d| d.get())),
                    key,
                    target: t.clone(),
                })
            })
            .collect()
    }

    /// The target's kind, and its `match` labels: each equal, and one
    /// matched with "" absent (as Prometheus matches: `scope = ""` is what
    /// a site's own values have, not the district's or the city's).
    fn applies(&self, kind: &str, labels: &[(String, String)]) -> bool {
        let label = |k: &str| {
            labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map_or("", |(_, v)| v.as_str())
        };
        (self.target.kind == "any" || self.target.kind == kind)
            && self.target.matchers.iter().all(|(k, v)| label(k) == v)
    }
}

/// One alert instance that is pending or firing.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Instance {
    rule: String,
    kind: String,
    labels: Vec<(String, String)>,
    firing: bool,
    /// End of the first breaching window (for `for`).
    first_end: i64,
    /// Start of the first breaching window (the alert's start).
    starts_at: i64,
    /// End of the newest window seen.
    last_end: i64,
    value: f64,
    window: (i64, i64),
    details: BTreeMap<String, String>,
    /// Stream time of the last notice (for reminders).
    notified: i64,
    /// Notices sent in this episode (part of the event ids).
    sent: u32,
}

/// What is known about one sensor (for deadman and flatline).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sensor {
    kind: String,
    labels: Vec<(String, String)>,
    /// Newest reading time.
    last_ms: i64,
    /// Readings taken (up to a few): deadman watches only a sensor that
    /// reported more than once (state saved before this counts as known).
    #[serde(default = "known")]
    readings: u8,
    fields: Vec<Run>,
    /// Deadman rules with an instance open for this sensor.
    silent_for: Vec<String>,
    /// Silence expected after its newest reading: two of its reporting
    /// intervals for a sensor whose readings each stand for one (an HJ 212
    /// hourly value stamped 08:00 arrives after 09:00, the next after
    /// 10:00); 0 for readings of an instant.
    #[serde(default)]
    grace_ms: i64,
}

fn known() -> u8 {
    u8::MAX
}

/// Readings after which a sensor is known: a name published once (a
/// typo, a publisher inventing sensors) never raises a deadman alert.
const KNOWN_AFTER: u8 = 3;
/// A sensor silent this long, with no deadman alert open, is forgotten.
const FORGET_AFTER_MS: i64 = 7 * 86_400_000;

/// The current run of identical consecutive values of one field.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Run {
    field: String,
    value: f64,
    len: u64,
    since: i64,
    /// A flatline instance is open.
    open: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    version: u32,
    clock_ms: i64,
    instances: BTreeMap<String, Instance>,
    /// Looked up for every point: a fast hash (keys are topic tags, and
    /// the seed is random per process).
    sensors: HashMap<String, Sensor, foldhash::fast::RandomState>,
    derived: Derived,
}

/// Counts for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub firing: usize,
    pub pending: usize,
}

pub struct Engine {
    rules: Vec<Rule>,
    by_key: HashMap<String, Vec<usize>>,
    deadman: Vec<usize>,
    flatline: Vec<usize>,
    calendar: Calendar,
    state: State,
    out: Vec<Notice>,
    key_buf: String,
    changed: bool,
    /// A sensor with a deadman alert open reported since the last tick:
    /// the next tick judges it even at the same clock (another sensor's
    /// reading may have moved the clock to this time already).
    revived: bool,
    /// Derived values not yet taken.
    derived_out: Vec<Observation>,
    /// Whether city-wide values are derived (not in a cluster partition,
    /// which holds some of the city's plants).
    city: bool,
}

/// The values that rules' `when` conditions read, from one batch of
/// observations (a series' fields of one window close together).
struct Conditions(HashMap<(String, i64, String), f64>);

impl Conditions {
    fn of(rules: &[Rule], obs: &[Observation]) -> Conditions {
        let metrics: Vec<&str> = rules
            .iter()
            .filter_map(|r| r.target.when.as_ref().map(|w| w.metric.as_str()))
            .filter(|m| !m.is_empty())
            .collect();
        let mut map = HashMap::new();
        if metrics.is_empty() {
            return Conditions(map);
        }
        for o in obs
            .iter()
            .filter(|o| o.valid && metrics.contains(&o.metric.as_str()))
        {
            let key = super::derive::key(&o.kind, &o.labels);
            map.insert((key, o.start_ms, o.metric.clone()), o.value);
        }
        Conditions(map)
    }

    /// Whether `rule` applies to the series and window of `o`.
    fn hold(&self, rule: &Rule, o: &Observation) -> bool {
        let Some(w) = &rule.target.when else {
            return true;
        };
        if !w.label.is_empty() {
            return match w.label_value(&o.labels) {
                Some(v) => w.op.holds(v, w.value),
                None => w.if_missing,
            };
        }
        let key = (
            super::derive::key(&o.kind, &o.labels),
            o.start_ms,
            w.metric.clone(),
        );
        match self.0.get(&key) {
            Some(v) => w.op.holds(*v, w.value),
            None => w.if_missing,
        }
    }
}

/// The instance id: 16 hex digits of SHA-256 over the rule id and the
/// sorted labels (stable across versions and restarts).
pub fn fingerprint(rule: &str, labels: &[(String, String)]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(rule.as_bytes());
    for (k, v) in labels {
        ctx.update(b"\x1f");
        ctx.update(k.as_bytes());
        ctx.update(b"=");
        ctx.update(v.as_bytes());
    }
    let d = ctx.finish();
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn level_name(level: f64) -> &'static str {
    super::derive::level_name(level as u32)
}

impl Engine {
    pub fn new(rules: Vec<Rule>, calendar: Calendar) -> Self {
        let mut e = Engine {
            rules: Vec::new(),
            by_key: HashMap::new(),
            deadman: Vec::new(),
            flatline: Vec::new(),
            calendar,
            state: State {
                version: STATE_VERSION,
                ..State::default()
            },
            out: Vec::new(),
            key_buf: String::new(),
            changed: false,
            revived: false,
            derived_out: Vec::new(),
            city: true,
        };
        e.set_rules(rules);
        e
    }

    /// An engine that derives no city-wide values (a cluster partition's:
    /// it sees some of the city's plants, not all).
    pub fn without_city(mut self) -> Self {
        self.city = false;
        self
    }

    /// Replaces the rules (a reload); instances of rules that are gone are
    /// dropped without a notice.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.by_key.clear();
        self.deadman.clear();
        self.flatline.clear();
        for (i, r) in rules.iter().enumerate() {
            match r.key.as_str() {
                "silence_minutes" => self.deadman.push(i),
                "flat_readings" => self.flatline.push(i),
                k => self.by_key.entry(k.to_owned()).or_default().push(i),
            }
        }
        let ids: Vec<&str> = rules.iter().map(|r| r.target.id.as_str()).collect();
        self.state
            .instances
            .retain(|_, i| ids.contains(&i.rule.as_str()));
        for s in self.state.sensors.values_mut() {
            s.silent_for.retain(|r| ids.contains(&r.as_str()));
        }
        self.rules = rules;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The stream clock the engine has reached.
    pub fn clock(&self) -> i64 {
        self.state.clock_ms
    }

    pub fn counts(&self) -> Counts {
        let firing = self.state.instances.values().filter(|i| i.firing).count();
        Counts {
            firing,
            pending: self.state.instances.len() - firing,
        }
    }

    /// The firing alerts, as receivers would see them.
    pub fn firing(&self) -> Vec<Alert> {
        self.state
            .instances
            .iter()
            .filter(|(_, i)| i.firing)
            .filter_map(|(id, i)| {
                let r = self.rules.iter().find(|r| r.target.id == i.rule)?;
                Some(alert(id, r, i, None))
            })
            .collect()
    }

    /// Notices produced since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.out)
    }

    /// Whether the state changed since the last [`Engine::save`].
    pub fn dirty(&self) -> bool {
        self.changed
    }

    /// Raw points: the newest reading time per sensor, and runs of
    /// identical values. Points older than the sensor's newest (replays,
    /// backfill) change neither.
    pub fn points(&mut self, points: &[Point]) {
        if self.deadman.is_empty() && self.flatline.is_empty() {
            return;
        }
        for p in points {
            super::derive::key_into(&mut self.key_buf, &p.kind, &p.tags);
            let sensor = match self.state.sensors.get_mut(self.key_buf.as_str()) {
                Some(s) => s,
                None => self
                    .state
                    .sensors
                    .entry(self.key_buf.clone())
                    .or_insert_with(|| Sensor {
                        kind: p.kind.clone(),
                        labels: p.tags.clone(),
                        last_ms: i64::MIN,
                        readings: 0,
                        fields: Vec::new(),
                        silent_for: Vec::new(),
                        grace_ms: 0,
                    }),
            };
            if p.time_ms <= sensor.last_ms {
                continue;
            }
            sensor.last_ms = p.time_ms;
            self.revived |= !sensor.silent_for.is_empty();
            sensor.grace_ms = match p.coverage {
                crate::reading::Coverage::Interval(ms) => 2 * ms,
                _ => 0,
            };
            sensor.readings = sensor.readings.saturating_add(1);
            self.changed = true;
            let mut judged = Vec::new();
            for (i, (name, v)) in p.fields.iter().enumerate() {
                // A sensor sends its fields in the same order: look where
                // this one was last time before searching (no O(fields²)
                // per point).
                let at = match sensor.fields.get(i) {
                    Some(r) if &r.field == name => Some(i),
                    _ => sensor.fields.iter().position(|r| &r.field == name),
                };
                let run = match at.map(|i| &mut sensor.fields[i]) {
                    Some(r) => r,
                    None => {
                        sensor.fields.push(Run {
                            field: name.clone(),
                            value: f64::NAN,
                            len: 0,
                            since: p.time_ms,
                            open: false,
                        });
                        sensor.fields.last_mut().expect("just pushed")
                    }
                };
                if run.value == *v {
                    run.len += 1;
                } else {
                    // A new run (in place: the field name is kept).
                    let was_open = run.open;
                    (run.value, run.len, run.since, run.open) = (*v, 1, p.time_ms, false);
                    if was_open {
                        judged.push((name.clone(), 1.0, p.time_ms));
                    }
                    continue;
                }
                let flat = self.flatline.iter().any(|&r| {
                    run.len as f64 > self.rules[r].threshold
                        && !self.rules[r].target.exclude_fields.contains(name)
                });
                if flat {
                    run.open = true;
                    judged.push((name.clone(), run.len as f64, run.since));
                }
            }
            if judged.is_empty() {
                continue;
            }
            let (kind, labels) = (sensor.kind.clone(), sensor.labels.clone());
            for (field, len, since) in judged {
                let mut l = labels.clone();
                l.push(("field".into(), field.clone()));
                l.sort();
                for r in self.flatline.clone() {
                    let rule = &self.rules[r];
                    if rule.target.exclude_fields.contains(&field) || !rule.applies(&kind, &l) {
                        continue;
                    }
                    self.judge(r, &kind, &l, since, p.time_ms, len, &BTreeMap::new());
                }
            }
        }
    }

    /// Observations from a window flush: judged by the rules that read
    /// them, and fed to the derived metrics, which are judged in turn.
    pub fn observe(&mut self, obs: &[Observation]) {
        let mut derived = Vec::new();
        let conditions = Conditions::of(&self.rules, obs);
        for o in obs {
            self.judge_all(o, &conditions);
            self.state.derived.absorb(o, &self.calendar, &mut derived);
        }
        self.state
            .derived
            .finish(&self.calendar, self.city, &mut derived);
        for o in &derived {
            self.judge_all(o, &conditions);
        }
        if !obs.is_empty() {
            self.changed = true;
        }
        self.derived_out.extend(derived);
    }

    /// The derived values (treatment rates, capture ratios, the reclaimed
    /// pace, observed alert levels) computed since the last call.
    pub fn take_derived(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.derived_out)
    }

    fn judge_all(&mut self, o: &Observation, conditions: &Conditions) {
        if !o.valid {
            return;
        }
        let Some(rules) = self.by_key.get(&o.metric) else {
            return;
        };
        for r in rules.clone() {
            if !self.rules[r].applies(&o.kind, &o.labels) {
                continue;
            }
            if conditions.hold(&self.rules[r], o) {
                self.judge(
                    r, &o.kind, &o.labels, o.start_ms, o.end_ms, o.value, &o.details,
                );
            } else {
                self.withdraw(r, &o.labels, o.start_ms, o.end_ms);
            }
        }
    }

    /// A rule that no longer applies to a series (its `when` does not
    /// hold): a firing alert resolves, a pending one is dropped.
    fn withdraw(&mut self, r: usize, labels: &[(String, String)], start: i64, end: i64) {
        let id = fingerprint(&self.rules[r].target.id, labels);
        let Some(inst) = self.state.instances.get_mut(&id) else {
            return;
        };
        if end <= inst.last_end {
            return;
        }
        self.changed = true;
        if inst.firing {
            inst.last_end = end;
            inst.window = (start, end);
            let now = self.state.clock_ms.max(end);
            self.notify(r, &id, Event::Resolved, now);
        }
        self.state.instances.remove(&id);
    }

    /// Moves the stream clock to `now_ms` (never back): deadman and
    /// reminders. It judges deadman again at an unchanged clock when a
    /// sensor with a deadman alert open has reported since the last tick.
    pub fn tick(&mut self, now_ms: i64) {
        let revived = std::mem::take(&mut self.revived);
        if now_ms <= self.state.clock_ms && !revived {
            return;
        }
        let now = now_ms.max(self.state.clock_ms);
        self.state.clock_ms = now;
        self.changed = true;
        // Long-silent sensors without an open deadman alert are forgotten
        // (invented names must not be kept for ever).
        self.state
            .sensors
            .retain(|_, s| now - s.last_ms <= FORGET_AFTER_MS || !s.silent_for.is_empty());
        if !self.deadman.is_empty() {
            let mut work = Vec::new();
            for s in self.state.sensors.values() {
                if s.readings < KNOWN_AFTER && s.silent_for.is_empty() {
                    continue;
                }
                // Minutes silent beyond what the sensor's own reporting
                // interval leads to expect.
                let silence = (now - s.last_ms - s.grace_ms) as f64 / MINUTE_MS as f64;
                for &r in &self.deadman {
                    let rule = &self.rules[r];
                    let open = s.silent_for.contains(&rule.target.id);
                    if (open || rule.target.op.breaks(silence, rule.threshold))
                        && rule.applies(&s.kind, &s.labels)
                    {
                        work.push((r, s.kind.clone(), s.labels.clone(), s.last_ms, silence));
                    }
                }
            }
            work.sort_by(|a, b| a.2.cmp(&b.2));
            for (r, kind, labels, last, silence) in work {
                let open = self.judge(r, &kind, &labels, last, now, silence, &BTreeMap::new());
                let id = self.rules[r].target.id.clone();
                let key = super::derive::key(&kind, &labels);
                if let Some(s) = self.state.sensors.get_mut(&key) {
                    s.silent_for.retain(|x| *x != id);
                    if open {
                        s.silent_for.push(id);
                    }
                }
            }
        }
        let due: Vec<String> = self
            .state
            .instances
            .iter()
            .filter(|(_, i)| i.firing)
            .filter(|(_, i)| {
                self.rules
                    .iter()
                    .find(|r| r.target.id == i.rule)
                    .is_some_and(|r| r.repeat_ms > 0 && now - i.notified >= r.repeat_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(inst) = self.state.instances.get(&id) else {
                continue;
            };
            let Some(r) = self.rules.iter().position(|r| r.target.id == inst.rule) else {
                continue;
            };
            self.notify(r, &id, Event::Reminder, now);
        }
    }

    /// One rule against one value. Returns whether an instance is open
    /// (pending or firing) afterwards.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        r: usize,
        kind: &str,
        labels: &[(String, String)],
        start: i64,
        end: i64,
        value: f64,
        details: &BTreeMap<String, String>,
    ) -> bool {
        let rule = &self.rules[r];
        let id = fingerprint(&rule.target.id, labels);
        let breach = rule.target.op.breaks(value, rule.threshold);
        let level = rule.key.starts_with("alert_level.");
        let mut details = details.clone();
        if level {
            details.insert("level_name".into(), level_name(value).into());
        }
        let now = self.state.clock_ms.max(end);
        let event = match self.state.instances.get_mut(&id) {
            None if !breach => return false,
            None => {
                self.state.instances.insert(
                    id.clone(),
                    Instance {
                        rule: rule.target.id.clone(),
                        kind: kind.to_owned(),
                        labels: labels.to_vec(),
                        firing: false,
                        first_end: end,
                        starts_at: start,
                        last_end: end,
                        value,
                        window: (start, end),
                        details,
                        notified: now,
                        sent: 0,
                    },
                );
                (rule.for_ms == 0).then_some(Event::Firing)
            }
            // Seen already (a replay), unless the same end comes with a
            // later start: a deadman judged again at the same clock after
            // its sensor reported.
            Some(inst) if (end, start) <= (inst.last_end, inst.window.0) => return true,
            Some(inst) => {
                inst.last_end = end;
                let before = inst.value;
                if !inst.firing && !breach {
                    self.state.instances.remove(&id);
                    return false;
                }
                inst.value = value;
                inst.window = (start, end);
                inst.details = details;
                if inst.firing && rule.target.op.clears(value, rule.clear) {
                    Some(Event::Resolved)
                } else if !inst.firing && end - inst.first_end >= rule.for_ms {
                    Some(Event::Firing)
                } else if inst.firing && level && value != before {
                    Some(Event::Changed)
                } else {
                    None
                }
            }
        };
        self.changed = true;
        match event {
            Some(Event::Firing) => {
                if let Some(i) = self.state.instances.get_mut(&id) {
                    i.firing = true;
                }
                self.notify(r, &id, Event::Firing, now);
                true
            }
            Some(Event::Resolved) => {
                self.notify(r, &id, Event::Resolved, now);
                self.state.instances.remove(&id);
                false
            }
            Some(e) => {
                self.notify(r, &id, e, now);
                true
            }
            None => true,
        }
    }

    fn notify(&mut self, r: usize, id: &str, event: Event, now: i64) {
        let Some(inst) = self.state.instances.get_mut(id) else {
            return;
        };
        let rule = &self.rules[r];
        let n = inst.sent;
        inst.sent += 1;
        inst.notified = now;
        let ends = (event == Event::Resolved).then_some(inst.window.1);
        let a = alert(id, rule, inst, ends);
        self.out.push(Notice {
            event_id: format!("{id}-{}-{}-{n}", inst.starts_at, event.as_str()),
            event,
            at_ms: now,
            alert: a,
        });
    }

    /// The state as bytes (JSON), for [`Engine::load`] after a restart.
    pub fn save(&mut self) -> Vec<u8> {
        self.changed = false;
        serde_json::to_vec(&self.state).unwrap_or_default()
    }

    /// Restores saved state; Err says why it cannot be used.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let state: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if state.version != STATE_VERSION {
            return Err(format!(
                "state version {} is not {STATE_VERSION}",
                state.version
            ));
        }
        self.state = state;
        let rules = std::mem::take(&mut self.rules);
        self.set_rules(rules);
        Ok(())
    }

    /// Derived values (for tests and the status page).
    pub fn derived(&self) -> &Derived {
        &self.state.derived
    }
}

fn alert(id: &str, rule: &Rule, inst: &Instance, ends: Option<i64>) -> Alert {
    let t = &rule.target;
    let mut labels: BTreeMap<String, String> = inst.labels.iter().cloned().collect();
    labels.insert("alertname".into(), t.id.clone());
    labels.insert("severity".into(), t.severity.as_str().into());
    labels.insert("kind".into(), inst.kind.clone());
    Alert {
        id: id.to_owned(),
        rule: t.id.clone(),
        name: t.name.clone(),
        severity: t.severity,
        labels,
        metric: t.metric.clone(),
        value: inst.value,
        op: t.op,
        threshold: rule.threshold,
        unit: t.unit.clone(),
        window_start_ms: inst.window.0,
        window_end_ms: inst.window.1,
        starts_at_ms: inst.starts_at,
        ends_at_ms: ends,
        report: t.report.clone(),
        standard: t.standard.clone(),
        details: inst.details.clone(),
    }
}
