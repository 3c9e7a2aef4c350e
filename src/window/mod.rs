//! Event-time windows and the AQI per site.
//!
//! ```text
//! points ─► Engine::add      intern series/fields, buffer rows, track stream time
//!           Engine::flush    reduce: rows → base-window partials (polars)
//!                            state:  merge into every level, close on the watermark,
//!                                    correct within the horizon, prune
//!                            air:    hourly and daily AQI for closed site hours/days
//!                            encode: `{kind}_{size}` and `aqi` points
//! ```
//!
//! Each source (a site, or a sensor of no site) has its own watermark: the
//! end of the reporting interval of the newest reading it sent (an hourly
//! mean stamped 10:00 covers the data through 11:00) minus
//! `allowed_lateness`; when nothing
//! arrives from it for `idle_timeout` its watermark moves on with the wall
//! clock. A station that uploads hours of buffered readings late gets them
//! aggregated (within `correction_horizon`) without closing or holding up
//! anyone else's windows. The city-wide AQI of an hour or day is computed
//! once every city site's watermark has passed it, and again when a
//! site's late data correct it. Windows are labelled by their start; fixed sizes
//! align to the Unix epoch (so hours are local hours in Beijing), days to
//! local midnight.
//!
//! Window state is held in memory and saved as a checksummed snapshot
//! (`Engine::snapshot`, every `snapshot_interval` and at shutdown); after
//! a restart the snapshot is restored and the spool replays what came
//! after it, so windows open at a crash are complete. The AQI of a window
//! is computed before anything past the correction horizon is pruned.

pub mod air;
pub mod codec;
mod district;
pub mod partial;
pub mod reduce;
pub mod stage;
pub mod state;
pub mod windows;

use std::collections::HashMap;

use crate::calendar::Calendar;
use crate::config::{AqiConfig, WindowsConfig};
use crate::evaluate::Observation;
use crate::evaluate::aqi::Standard;
use crate::reading::{Coverage, Point};
use crate::row::{self, Derived, Row, Value};
use reduce::Rows;
use state::{Closed, HOUR_MS, Spec, State};

const DAY_MS: i64 = 86_400_000;
const SNAPSHOT_MAGIC: &[u8; 8] = b"LTWIN003";
/// The format before per-series reporting intervals (HJ 212 hourly data):
/// read, its series taking their kind's interval.
const SNAPSHOT_MAGIC_2: &[u8; 8] = b"LTWIN002";
/// Snapshots of earlier formats, recognised to say so.
const OLD_SNAPSHOT_MAGICS: [&[u8; 8]; 1] = [b"LTWIN001"];

/// The validated window configuration.
#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: Spec,
    /// Per level: the size label written (`1m`, `1h`, `1d`), or None when
    /// the level is kept but not written.
    pub labels: Vec<Option<String>>,
    pub idle_timeout_ms: i64,
    pub flush_interval: std::time::Duration,
    pub max_pending: usize,
    pub site_tags: Vec<String>,
    pub default_interval_ms: i64,
    pub intervals: HashMap<String, i64>,
    /// AQI standard and kinds, when enabled.
    pub aqi: Option<(Standard, Vec<String>)>,
    /// Sites whose mean concentrations make the city-wide AQI.
    pub city_sites: Vec<String>,
    /// Construction dust per district (`district`): on, except where the
    /// engine holds only some of a district's sites (a cluster partition).
    pub districts: bool,
}

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// "1m", "90s", "1h", "1d" for a size in ms.
pub fn label(size_ms: i64) -> String {
    let s = size_ms / 1000;
    if size_ms % 1000 != 0 {
        format!("{size_ms}ms")
    } else if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Plan {
    /// Checks the configuration; every problem as (key, message).
    pub fn new(w: &WindowsConfig, a: &AqiConfig) -> Result<Plan, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let (sizes, tz) = parse_sizes(w, &mut errs);
        let Levels {
            base,
            mids,
            days,
            write_hour,
        } = levels(&sizes, &mut errs);
        let aqi_on = w.enabled && a.enabled;
        check_rest(w, aqi_on, &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        // Levels: base, mids (hour included), day.
        let mut labels = vec![Some(label(base))];
        for &m in &mids {
            labels.push((m != HOUR_MS || write_hour).then(|| label(m)));
        }
        let days = days || aqi_on;
        if days {
            labels.push(
                w.sizes
                    .iter()
                    .any(|s| s.trim() == "1d")
                    .then(|| "1d".into()),
            );
        }
        let c = &w.completeness;
        let spec = Spec {
            base_ms: base,
            mids,
            days,
            calendar: Calendar {
                tz: tz.unwrap_or(chrono_tz::Asia::Shanghai),
            },
            lateness_ms: ms(w.allowed_lateness.get()),
            horizon_ms: ms(w.correction_horizon.get()),
            fine_horizon_ms: ms(w.fine_correction_horizon.get()),
            hour_min_minutes: c.hour_min_minutes,
            day_min_hours: c.day_min_hours,
            eight_hour_min_hours: c.eight_hour_min_hours,
        };
        Ok(Plan {
            spec,
            labels,
            idle_timeout_ms: ms(w.idle_timeout.get()),
            flush_interval: w.flush_interval.get(),
            max_pending: w.max_pending_readings,
            site_tags: w.site_tags.clone(),
            default_interval_ms: ms(w.default_interval.get()),
            intervals: w
                .intervals
                .iter()
                .map(|(k, d)| (k.clone(), ms(d.get()).max(1)))
                .collect(),
            aqi: aqi_on.then(|| (a.standard, a.kinds.clone())),
            city_sites: a.city_sites.clone(),
            districts: true,
        })
    }
}

type Problems = Vec<(String, String)>;

/// The sizes in ms (in the order given) and the time zone.
fn parse_sizes(w: &WindowsConfig, errs: &mut Problems) -> (Vec<i64>, Option<chrono_tz::Tz>) {
    let mut sizes = Vec::new();
    for (i, s) in w.sizes.iter().enumerate() {
        match humantime::parse_duration(s.trim()) {
            Ok(d) if !d.is_zero() && d.as_millis() % 1000 == 0 => sizes.push(ms(d)),
            _ => errs.push((
                format!("windows.sizes[{i}]"),
                format!("{s:?} is not a whole number of seconds above 0, e.g. \"1m\""),
            )),
        }
    }
    let tz: Option<chrono_tz::Tz> = w.timezone.parse().ok();
    if tz.is_none() {
        errs.push((
            "windows.timezone".into(),
            format!(
                "{:?} is not an IANA time zone, e.g. \"Asia/Shanghai\"",
                w.timezone
            ),
        ));
    }
    if w.enabled && sizes.is_empty() && errs.is_empty() {
        errs.push(("windows.sizes".into(), "at least one size is needed".into()));
    }
    (sizes, tz)
}

/// The levels the sizes make.
struct Levels {
    /// The first size: readings are reduced into it.
    base: i64,
    /// Sizes between the base and a day, the hour always among them
    /// (unless it is the base), ascending.
    mids: Vec<i64>,
    /// Whether a day level was asked for.
    days: bool,
    /// Whether hour windows are written (asked for), not only kept.
    write_hour: bool,
}

fn levels(sizes: &[i64], errs: &mut Problems) -> Levels {
    let base = sizes.first().copied().unwrap_or(60_000);
    let mut mids: Vec<i64> = Vec::new();
    let mut days = false;
    for (i, &s) in sizes.iter().enumerate().skip(1) {
        if s == DAY_MS {
            days = true;
        } else if s <= base || s % base != 0 || DAY_MS % s != 0 {
            errs.push((
                format!("windows.sizes[{i}]"),
                format!(
                    "{} must be a multiple of the first size ({}) that divides a day",
                    label(s),
                    label(base)
                ),
            ));
        } else {
            mids.push(s);
        }
    }
    if base > HOUR_MS || HOUR_MS % base != 0 {
        errs.push((
            "windows.sizes[0]".into(),
            format!("the base size {} must divide an hour", label(base)),
        ));
    }
    mids.sort_unstable();
    mids.dedup();
    let write_hour = mids.contains(&HOUR_MS) || base == HOUR_MS;
    if base == HOUR_MS {
        mids.clear();
    } else if !mids.contains(&HOUR_MS) {
        mids.push(HOUR_MS);
        mids.sort_unstable();
    }
    Levels {
        base,
        mids,
        days,
        write_hour,
    }
}

/// Everything but the sizes.
fn check_rest(w: &WindowsConfig, aqi_on: bool, errs: &mut Problems) {
    if aqi_on && w.site_tags.is_empty() {
        errs.push((
            "windows.site_tags".into(),
            "the AQI is per site: set site tags, or aqi.enabled = false".into(),
        ));
    }
    for (key, d) in [
        ("windows.flush_interval", w.flush_interval.get()),
        ("windows.idle_timeout", w.idle_timeout.get()),
        ("windows.default_interval", w.default_interval.get()),
        ("windows.snapshot_interval", w.snapshot_interval.get()),
    ] {
        if d.is_zero() {
            errs.push((key.into(), "must be above 0".into()));
        }
    }
    if w.max_pending_readings == 0 {
        errs.push((
            "windows.max_pending_readings".into(),
            "must be at least 1".into(),
        ));
    }
    let c = &w.completeness;
    if c.hour_min_minutes > 60 || c.day_min_hours > 24 || c.eight_hour_min_hours > 8 {
        errs.push((
            "windows.completeness".into(),
            "hour_min_minutes ≤ 60, day_min_hours ≤ 24, eight_hour_min_hours ≤ 8".into(),
        ));
    }
}

/// Whether windows pool one sensor's readings or a site's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Sensor = 0,
    Site = 1,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Sensor => "sensor",
            Scope::Site => "site",
        }
    }
}

/// A series windows are kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub kind: String,
    pub tags: Vec<(String, String)>,
    pub scope: Scope,
}

/// Counters of one flush.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlushStats {
    pub readings: u64,
    pub windows: u64,
    pub corrections: u64,
    pub too_late: u64,
    pub aqi_points: u64,
}

/// Everything between points and lines. Synchronous; the stage runs
/// `flush` on a blocking thread.
pub struct Engine {
    plan: Plan,
    state: State,
    series: Vec<SeriesKey>,
    /// Series ids by the hash of (kind, tags): a point is looked up without
    /// building a key, and each key is stored once.
    index: HashMap<u64, Vec<u32>>,
    hasher: foldhash::fast::RandomState,
    /// Site series of each series (None for site series themselves).
    site_of: Vec<Option<u32>>,
    fields: Vec<String>,
    field_ids: HashMap<String, u32>,
    pending: Rows,
    /// Newest reading time seen.
    stream_time: Option<i64>,
    /// Wall clock of the last reading added.
    last_arrival: i64,
    /// Per source series (indexed by series id): the end of the newest
    /// reading's interval and the wall clock of its last reading.
    clocks: Vec<Option<(i64, i64)>>,
    /// City-wide hours (false) and days (true) by start, waiting for every
    /// city site's watermark to pass them.
    city_pending: std::collections::BTreeSet<(i64, bool)>,
    /// The end of the newest city-wide hour computed (rolling 24 h values
    /// after a corrected hour are recomputed up to it).
    city_done: i64,
    /// Districts' hours by start, waiting for every dust site of the
    /// district to pass them (`district`).
    district_pending: std::collections::BTreeSet<(String, i64)>,
    /// Hour and day values for the alert engine, when it asked for them.
    observations: Option<Vec<Observation>>,
    /// A reading added since the last flush moved its source's
    /// watermark past the end of an hour: hours (and the alerts on them)
    /// are due to close.
    hour_passed: bool,
}

impl Engine {
    pub fn new(plan: Plan) -> Self {
        Engine {
            state: State::new(plan.spec.clone()),
            plan,
            series: Vec::new(),
            index: HashMap::new(),
            hasher: Default::default(),
            site_of: Vec::new(),
            fields: Vec::new(),
            field_ids: HashMap::new(),
            pending: Rows::default(),
            stream_time: None,
            last_arrival: 0,
            clocks: Vec::new(),
            city_pending: Default::default(),
            city_done: i64::MIN / 2,
            district_pending: Default::default(),
            observations: None,
            hour_passed: false,
        }
    }

    /// From now on, collect the hour and day values of each flush (and the
    /// AQI) for [`Engine::take_observations`].
    pub fn collect_observations(&mut self) {
        self.observations.get_or_insert_with(Vec::new);
    }

    /// What the flushes since the last call produced.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        self.observations
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The stream clock: the newest reading time seen, moving on with the
    /// wall clock once nothing has arrived for `idle_timeout`.
    pub fn stream_clock(&self, now_ms: i64) -> Option<i64> {
        self.watermark(now_ms)
            .map(|w| w + self.plan.spec.lateness_ms)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Readings buffered for the next flush.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a reading added since the last flush moved its source's
    /// watermark past the end of an hour (a flush now closes it).
    pub fn hour_passed(&self) -> bool {
        self.hour_passed
    }

    /// Buffers the readings of `points`; `now_ms` is the wall clock.
    pub fn add(&mut self, points: &[Point], now_ms: i64) {
        for p in points {
            if p.coverage == Coverage::Raw {
                continue;
            }
            let sensor = self.intern_series(p);
            if let Coverage::Interval(ms) = p.coverage {
                self.state.set_interval(sensor, ms);
                if let Some(site) = self.site_of[sensor as usize] {
                    self.state.set_interval(site, ms);
                }
            }
            for (name, v) in &p.fields {
                let field = self.intern_field(name);
                self.pending.push(sensor, field, p.time_ms, *v);
            }
            self.stream_time = Some(self.stream_time.map_or(p.time_ms, |t| t.max(p.time_ms)));
            // A reading covers its reporting interval: an hourly mean
            // stamped 10:00 is the data through 11:00.
            let through = p.time_ms.saturating_add(self.state.interval(sensor));
            let source = self.state.source_of(sensor) as usize;
            if self.clocks.len() <= source {
                self.clocks.resize(source + 1, None);
            }
            let old = self.clocks[source].map(|(t, _)| t);
            let newest = old.map_or(through, |t| t.max(through));
            self.clocks[source] = Some((newest, now_ms));
            let hour_of = |t: i64| (t - self.plan.spec.lateness_ms).div_euclid(HOUR_MS);
            if old.is_some_and(|old| hour_of(newest) > hour_of(old)) {
                self.hour_passed = true;
            }
        }
        if !points.is_empty() {
            self.last_arrival = now_ms;
        }
    }

    fn lookup(&self, kind: &str, tags: &[(String, String)], scope: Scope) -> (u64, Option<u32>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one((kind, tags));
        let id = self.index.get(&hash).and_then(|ids| {
            ids.iter().copied().find(|&id| {
                let k = &self.series[id as usize];
                k.scope == scope && k.kind == kind && k.tags == tags
            })
        });
        (hash, id)
    }

    fn intern_series(&mut self, p: &Point) -> u32 {
        if let (_, Some(id)) = self.lookup(&p.kind, &p.tags, Scope::Sensor) {
            return id;
        }
        let key = SeriesKey {
            kind: p.kind.clone(),
            tags: p.tags.clone(),
            scope: Scope::Sensor,
        };
        let site_tags: Vec<(String, String)> = p
            .tags
            .iter()
            .filter(|(k, _)| self.plan.site_tags.contains(k))
            .cloned()
            .collect();
        let site = (!site_tags.is_empty()).then(|| {
            self.insert_series(SeriesKey {
                kind: p.kind.clone(),
                tags: site_tags,
                scope: Scope::Site,
            })
        });
        let id = self.insert_series(key);
        self.site_of[id as usize] = site;
        self.state.set_source(id, site.unwrap_or(id));
        id
    }

    fn insert_series(&mut self, key: SeriesKey) -> u32 {
        let (hash, found) = self.lookup(&key.kind, &key.tags, key.scope);
        if let Some(id) = found {
            return id;
        }
        let id = self.series.len() as u32;
        let interval = self
            .plan
            .intervals
            .get(&key.kind)
            .copied()
            .unwrap_or(self.plan.default_interval_ms);
        self.state.set_interval(id, interval);
        self.state.set_source(id, id);
        self.index.entry(hash).or_default().push(id);
        self.series.push(key);
        self.site_of.push(None);
        id
    }

    fn intern_field(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.field_ids.get(name) {
            return id;
        }
        let id = self.fields.len() as u32;
        self.fields.push(name.to_owned());
        self.field_ids.insert(name.to_owned(), id);
        id
    }

    /// The newest source's watermark at wall-clock `now_ms`.
    pub fn watermark(&self, now_ms: i64) -> Option<i64> {
        let t = self.stream_time?;
        Some(self.watermark_at(t, self.last_arrival, now_ms))
    }

    /// A watermark: the newest reading time less the allowed lateness,
    /// moving on with the wall clock after `idle_timeout` of silence.
    fn watermark_at(&self, newest: i64, last_arrival: i64, now_ms: i64) -> i64 {
        let idle = (now_ms - last_arrival - self.plan.idle_timeout_ms).max(0);
        newest.saturating_add(idle) - self.plan.spec.lateness_ms
    }

    /// Reduces the buffered readings, closes windows, computes the AQI,
    /// and adds what is to be written to `out`.
    pub fn flush(
        &mut self,
        now_ms: i64,
        out: &mut row::Rows,
    ) -> Result<FlushStats, polars::error::PolarsError> {
        let rows = std::mem::take(&mut self.pending);
        self.hour_passed = false;
        let mut stats = FlushStats {
            readings: rows.len() as u64,
            ..FlushStats::default()
        };
        let parts = reduce::reduce(rows, self.plan.spec.base_ms)?;
        let site_of = &self.site_of;
        let merged = self.state.merge(&parts, |s| {
            [Some(s), site_of.get(s as usize).copied().flatten()]
        });
        stats.corrections = merged.corrections;
        stats.too_late = merged.too_late;
        if self.stream_time.is_none() {
            return Ok(stats);
        }
        let wms: Vec<i64> = self
            .clocks
            .iter()
            .map(|c| c.map_or(i64::MIN / 2, |(t, a)| self.watermark_at(t, a, now_ms)))
            .collect();
        let mut closed = self
            .state
            .close(|source| wms.get(source as usize).copied().unwrap_or(i64::MIN / 2));
        closed.sort_by_key(|c| (c.level, c.series, c.start_ms, c.field));
        stats.windows = self.window_rows(&closed, out);
        let mut obs = self.observations.take();
        if let Some(obs) = obs.as_mut() {
            self.observe_windows(&closed, obs);
        }
        if let Some((standard, kinds)) = self.plan.aqi.clone() {
            let (standard, kinds) = (&standard, &kinds);
            let work = air::affected(&self.state, &closed, |s| {
                let k = &self.series[s as usize];
                k.scope == Scope::Site && kinds.contains(&k.kind)
            });
            stats.aqi_points = air::rows(self, *standard, &work, out, obs.as_mut());
            let city: Vec<u32> = (0..self.series.len() as u32)
                .filter(|&s| {
                    let k = &self.series[s as usize];
                    k.scope == Scope::Site
                        && kinds.contains(&k.kind)
                        && k.tags
                            .iter()
                            .any(|(t, v)| t == "site" && self.plan.city_sites.contains(v))
                })
                .collect();
            let due = self.city_due(&city, &work);
            stats.aqi_points += air::city_rows(self, *standard, &city, &due, out, obs.as_mut());
        }
        if self.plan.districts {
            stats.windows += self.district_rows(&closed, out, obs.as_mut());
        }
        self.observations = obs;
        // Only now: the AQI above read hours and days that closed.
        self.state.prune();
        Ok(stats)
    }

    /// The city-wide hours and days to compute now: those the city sites
    /// closed or corrected (in `work`) and those waiting, once every city
    /// site's watermark has passed their end; and the rolling 24 hours
    /// ending with each such hour and with the 23 after it that were
    /// computed already (a corrected hour is in them).
    fn city_due(&mut self, city: &[u32], work: &air::Work) -> Vec<(i64, air::Span)> {
        use air::Span;
        let due = self.city_due_periods(city, work);
        let mut rolling = std::collections::BTreeSet::new();
        for &(t, daily) in &due {
            if daily {
                continue;
            }
            self.city_done = self.city_done.max(t + HOUR_MS);
            rolling.insert(t);
        }
        for t in rolling.clone() {
            rolling.extend(
                (1..24)
                    .map(|k| t + k * HOUR_MS)
                    .take_while(|h| h + HOUR_MS <= self.city_done),
            );
        }
        due.into_iter()
            .map(|(t, daily)| (t, if daily { Span::Day } else { Span::Hour }))
            .chain(rolling.into_iter().map(|t| (t, Span::Rolling24)))
            .collect()
    }

    fn city_due_periods(&mut self, city: &[u32], work: &air::Work) -> Vec<(i64, bool)> {
        let of_city = |w: &std::collections::BTreeSet<(u32, i64)>, daily: bool| {
            w.iter()
                .filter(|(s, _)| city.contains(s))
                .map(move |(_, t)| (*t, daily))
                .collect::<Vec<_>>()
        };
        self.city_pending.extend(of_city(&work.hours, false));
        self.city_pending.extend(of_city(&work.days, true));
        let Some(city_wm) = city.iter().map(|&s| self.state.watermark_of(s)).min() else {
            return Vec::new();
        };
        let cal = &self.plan.spec.calendar;
        let end = |&(t, daily): &(i64, bool)| if daily { cal.day_end(t) } else { t + HOUR_MS };
        let due: Vec<(i64, bool)> = self
            .city_pending
            .iter()
            .copied()
            .filter(|p| end(p) <= city_wm)
            .collect();
        for p in &due {
            self.city_pending.remove(p);
        }
        due
    }

    /// Valid-or-not hour and day means of sites, and of sensors that
    /// belong to no site, as `{field}.hour` / `{field}.day`.
    fn observe_windows(&self, closed: &[Closed], out: &mut Vec<Observation>) {
        let spec = &self.plan.spec;
        let (hour, day) = (spec.hour_level(), spec.day_level());
        for c in closed {
            let period = if c.level == hour {
                "hour"
            } else if Some(c.level) == day {
                "day"
            } else {
                continue;
            };
            let key = &self.series[c.series as usize];
            let own = key.scope == Scope::Site || self.site_of[c.series as usize].is_none();
            let Some(mean) = c.stats.mean.filter(|_| own) else {
                continue;
            };
            let end_ms = if period == "hour" {
                c.start_ms + HOUR_MS
            } else {
                spec.calendar.day_end(c.start_ms)
            };
            out.push(Observation {
                kind: key.kind.clone(),
                labels: key.tags.clone(),
                metric: format!("{}.{period}", self.fields[c.field as usize]),
                start_ms: c.start_ms,
                end_ms,
                value: mean,
                valid: c.stats.valid,
                // A day's hours with a valid mean: the time its mean covers.
                details: if period == "day" {
                    [("hours".to_owned(), c.stats.received.to_string())].into()
                } else {
                    Default::default()
                },
            });
        }
    }

    /// One row per (level, series, start): the fields of all its windows.
    fn window_rows(&self, closed: &[Closed], out: &mut row::Rows) -> u64 {
        let mut n = 0;
        for group in closed
            .chunk_by(|a, b| (a.level, a.series, a.start_ms) == (b.level, b.series, b.start_ms))
        {
            let c0 = &group[0];
            let Some(Some(label)) = self.plan.labels.get(c0.level) else {
                continue;
            };
            let key = &self.series[c0.series as usize];
            let mut fields = Vec::with_capacity(group.len() * 7);
            for c in group {
                let f = &self.fields[c.field as usize];
                let s = &c.stats;
                if let Some(mean) = s.mean {
                    fields.push((format!("{f}_mean"), Value::F(mean)));
                }
                fields.push((format!("{f}_min"), Value::F(s.min)));
                fields.push((format!("{f}_max"), Value::F(s.max)));
                fields.push((format!("{f}_count"), Value::I(s.count as i64)));
                fields.push((format!("{f}_received"), Value::I(s.received as i64)));
                fields.push((format!("{f}_expected"), Value::I(s.expected as i64)));
                fields.push((format!("{f}_valid"), Value::B(s.valid)));
            }
            let tags = key
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain([("scope", key.scope.as_str())]);
            let measurement = format!("{}_{label}", key.kind);
            out.push(Row::Derived(Derived::new(
                measurement,
                tags,
                fields,
                c0.start_ms,
            )));
            n += 1;
        }
        n
    }

    fn fingerprint(&self) -> String {
        let s = &self.plan.spec;
        format!(
            "{}|{:?}|{}|{}|{:?}",
            s.base_ms,
            s.mids,
            s.days,
            s.calendar.tz.name(),
            self.plan.site_tags
        )
    }

    /// The whole window state, with the spool position it includes
    /// everything up to (format: `SNAPSHOT_MAGIC`, then fields in order,
    /// then a CRC-32 of all before it).
    pub fn snapshot(&self, pos: crate::envelope::Pos) -> Vec<u8> {
        let mut e = codec::Enc::default();
        e.0.extend_from_slice(SNAPSHOT_MAGIC);
        e.str(&self.fingerprint());
        e.u64(pos.seq);
        e.u64(pos.offset);
        e.u32(self.series.len() as u32);
        for (id, (k, site)) in self.series.iter().zip(&self.site_of).enumerate() {
            e.str(&k.kind);
            e.u8(k.scope as u8);
            e.u32(k.tags.len() as u32);
            for (tk, tv) in &k.tags {
                e.str(tk);
                e.str(tv);
            }
            e.u32(site.unwrap_or(u32::MAX));
            e.i64(self.state.interval(id as u32));
        }
        e.u32(self.fields.len() as u32);
        for f in &self.fields {
            e.str(f);
        }
        e.u8(u8::from(self.stream_time.is_some()));
        e.i64(self.stream_time.unwrap_or(0));
        e.i64(self.last_arrival);
        e.u32(self.clocks.len() as u32);
        for c in &self.clocks {
            e.u8(u8::from(c.is_some()));
            let (t, a) = c.unwrap_or_default();
            e.i64(t);
            e.i64(a);
        }
        e.i64(self.city_done);
        e.u32(self.city_pending.len() as u32);
        for (t, daily) in &self.city_pending {
            e.i64(*t);
            e.u8(u8::from(*daily));
        }
        self.state.encode(&mut e);
        // Last, so that a snapshot without it (an earlier version's) reads
        // as none waiting, and an earlier version reads this one.
        e.u32(self.district_pending.len() as u32);
        for (d, t) in &self.district_pending {
            e.str(d);
            e.i64(*t);
        }
        let crc = crc32fast::hash(&e.0);
        e.u32(crc);
        e.0
    }

    /// An engine restored from `snapshot` bytes, and the spool position it
    /// covers. Err says why the snapshot cannot be used.
    pub fn restore(plan: Plan, bytes: &[u8]) -> Result<(Engine, crate::envelope::Pos), String> {
        let (body, crc) = bytes.split_last_chunk::<4>().ok_or("snapshot too short")?;
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err("snapshot checksum mismatch".into());
        }
        if OLD_SNAPSHOT_MAGICS.iter().any(|m| body.starts_with(*m)) {
            return Err(
                "snapshot of an earlier lantian version (one watermark for all sources)".into(),
            );
        }
        let (body, intervals) = match body.strip_prefix(SNAPSHOT_MAGIC.as_slice()) {
            Some(b) => (b, true),
            None => (
                body.strip_prefix(SNAPSHOT_MAGIC_2.as_slice())
                    .ok_or("not a window snapshot")?,
                false,
            ),
        };
        let mut e = Engine::new(plan);
        let mut d = codec::Dec(body);
        let bad = || "snapshot truncated or malformed".to_owned();
        if d.str().ok_or_else(bad)? != e.fingerprint() {
            return Err("window sizes, time zone or site tags changed since the snapshot".into());
        }
        let pos = crate::envelope::Pos {
            seq: d.u64().ok_or_else(bad)?,
            offset: d.u64().ok_or_else(bad)?,
        };
        for _ in 0..d.len(13).ok_or_else(bad)? {
            let kind = d.str().ok_or_else(bad)?;
            let scope = if d.u8().ok_or_else(bad)? == Scope::Site as u8 {
                Scope::Site
            } else {
                Scope::Sensor
            };
            let mut tags = Vec::new();
            for _ in 0..d.len(8).ok_or_else(bad)? {
                tags.push((d.str().ok_or_else(bad)?, d.str().ok_or_else(bad)?));
            }
            let site = d.u32().ok_or_else(bad)?;
            let id = e.insert_series(SeriesKey { kind, tags, scope });
            let site = (site != u32::MAX).then_some(site);
            e.site_of[id as usize] = site;
            e.state.set_source(id, site.unwrap_or(id));
            if intervals {
                e.state.set_interval(id, d.i64().ok_or_else(bad)?);
            }
        }
        for _ in 0..d.len(4).ok_or_else(bad)? {
            let f = d.str().ok_or_else(bad)?;
            e.intern_field(&f);
        }
        let has_time = d.u8().ok_or_else(bad)? != 0;
        let t = d.i64().ok_or_else(bad)?;
        e.stream_time = has_time.then_some(t);
        e.last_arrival = d.i64().ok_or_else(bad)?;
        for _ in 0..d.len(17).ok_or_else(bad)? {
            let some = d.u8().ok_or_else(bad)? != 0;
            let c = (d.i64().ok_or_else(bad)?, d.i64().ok_or_else(bad)?);
            e.clocks.push(some.then_some(c));
        }
        e.city_done = d.i64().ok_or_else(bad)?;
        for _ in 0..d.len(9).ok_or_else(bad)? {
            let t = d.i64().ok_or_else(bad)?;
            e.city_pending.insert((t, d.u8().ok_or_else(bad)? != 0));
        }
        e.state.decode(&mut d).ok_or_else(bad)?;
        if !d.0.is_empty() {
            for _ in 0..d.len(12).ok_or_else(bad)? {
                let district = d.str().ok_or_else(bad)?;
                e.district_pending
                    .insert((district, d.i64().ok_or_else(bad)?));
            }
        }
        Ok((e, pos))
    }

    pub fn series_key(&self, id: u32) -> &SeriesKey {
        &self.series[id as usize]
    }

    pub fn field_id(&self, name: &str) -> Option<u32> {
        self.field_ids.get(name).copied()
    }
}

#[cfg(test)]
mod tests;
