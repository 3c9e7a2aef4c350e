//! Window state: base-window partials merged into every window level,
//! closed by the watermark of their source, corrected within the horizon,
//! pruned after it.
//!
//! Each series belongs to a source (its site, or the sensor itself) with
//! its own watermark: a station uploading a backlog neither closes nor
//! delays another station's windows.
//!
//! Levels: 0 is the base window (e.g. 1 min); then the larger fixed sizes
//! (always including 1 h, which the daily means and the AQI need); last,
//! when enabled, the local calendar day. A window of a fixed size keeps a
//! `Partial` and the number of base windows that had data; a day keeps
//! nothing of its own and is computed from its hours (the 24 h mean is the
//! mean of the valid hourly means, GB 3095-2012 data-validity table).
//!
//! Memory per (series, field): windows shorter than an hour for
//! `fine_horizon + lateness`, hours for the correction horizon and up to a
//! day + 8 h before it (the 8 h O3 means and the day's hourly means), days
//! for the horizon — never a raw reading. A reading older than the fine
//! horizon but within the correction horizon corrects its hour and day and
//! writes its short windows anew (they hold that late data only).

use std::collections::HashMap;

use super::codec::{Dec, Enc};
use super::partial::Partial;
use super::reduce::BasePartial;
use super::windows::Sorted;
use crate::calendar::Calendar;

pub const HOUR_MS: i64 = 3_600_000;
/// The watermark of a source that has closed nothing yet.
const NO_WATERMARK: i64 = i64::MIN / 2;

/// What the state needs to know about window sizes and validity.
#[derive(Clone, Debug)]
pub struct Spec {
    pub base_ms: i64,
    /// Larger fixed sizes, ascending; multiples of the base dividing a day.
    /// Must contain `HOUR_MS`.
    pub mids: Vec<i64>,
    /// Compute local calendar days.
    pub days: bool,
    pub calendar: Calendar,
    pub lateness_ms: i64,
    /// Hours and days are corrected this far behind the watermark.
    pub horizon_ms: i64,
    /// Windows shorter than an hour are held this far behind it (at most
    /// `horizon_ms`).
    pub fine_horizon_ms: i64,
    /// A fixed window is valid with at least this many minutes of sampling
    /// per hour (GB 3095-2012 data-validity table: 45).
    pub hour_min_minutes: u32,
    /// A day is valid with at least this many valid hourly means (20).
    pub day_min_hours: u32,
    /// An 8 h mean is valid with at least this many valid hourly means (6).
    pub eight_hour_min_hours: u32,
}

impl Spec {
    pub fn levels(&self) -> usize {
        1 + self.mids.len() + usize::from(self.days)
    }
    pub fn hour_level(&self) -> usize {
        self.mids
            .iter()
            .position(|m| *m == HOUR_MS)
            .map_or(0, |i| i + 1)
    }
    pub fn day_level(&self) -> Option<usize> {
        self.days.then_some(1 + self.mids.len())
    }
    /// How far behind the watermark windows of `level` are held.
    fn held_for(&self, level: usize) -> i64 {
        match self.size(level) {
            Some(size) if size < HOUR_MS => self.fine_horizon_ms.min(self.horizon_ms),
            _ => self.horizon_ms,
        }
    }
    fn size(&self, level: usize) -> Option<i64> {
        match level {
            0 => Some(self.base_ms),
            l if l <= self.mids.len() => Some(self.mids[l - 1]),
            _ => None,
        }
    }
}

/// A window of a fixed size.
#[derive(Clone, Copy, Debug, Default)]
struct Win {
    p: Partial,
    /// Base windows with data (always 1 for a base window).
    covered: u32,
    /// Changed after it closed; queued for (re)writing.
    dirty: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Day {
    end: i64,
    dirty: bool,
}

/// The windows of one (series, field).
#[derive(Debug, Default)]
struct Track {
    /// Per fixed level (base first), windows by start.
    fixed: Vec<Sorted<Win>>,
    /// Local days by start.
    days: Sorted<Day>,
}

/// A window's statistics as written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub mean: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// Readings.
    pub count: u64,
    /// Inputs received: readings (base), minutes of sampling in base
    /// windows (larger fixed windows), valid hourly means (days).
    pub received: u64,
    /// Inputs expected, in the same unit.
    pub expected: u64,
    pub valid: bool,
}

/// A closed window to write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closed {
    pub series: u32,
    pub field: u32,
    pub level: usize,
    pub start_ms: i64,
    pub stats: Stats,
    /// Written because late data changed a window after it closed (a
    /// rewrite of the earlier point, or its first write if it was empty).
    pub correction: bool,
}

/// Counts of one merge.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Merged {
    /// Readings merged into windows that had already closed.
    pub corrections: u64,
    /// Readings older than the correction horizon: kept raw, not aggregated.
    pub too_late: u64,
}

pub struct State {
    spec: Spec,
    tracks: HashMap<(u32, u32), Track>,
    /// Windows changed after closing: (series, field, level, start).
    dirty: Vec<(u32, u32, usize, i64)>,
    /// Per series: the series whose watermark it follows (its source).
    sources: Vec<u32>,
    /// Per source series: everything ending at or before this has closed.
    watermarks: Vec<i64>,
    /// Reporting interval per series id, ms (completeness counts).
    intervals: Vec<i64>,
}

impl State {
    pub fn new(spec: Spec) -> Self {
        State {
            spec,
            tracks: HashMap::new(),
            dirty: Vec::new(),
            sources: Vec::new(),
            watermarks: Vec::new(),
            intervals: Vec::new(),
        }
    }

    /// Sets the reporting interval of a series (default: the base size).
    pub fn set_interval(&mut self, series: u32, ms: i64) {
        let i = series as usize;
        if self.intervals.len() <= i {
            self.intervals.resize(i + 1, self.spec.base_ms);
        }
        self.intervals[i] = ms.max(1);
    }

    /// Sets the source of a series: the series whose watermark closes its
    /// windows (default: series 0).
    pub fn set_source(&mut self, series: u32, source: u32) {
        let i = series as usize;
        if self.sources.len() <= i {
            self.sources.resize(i + 1, 0);
        }
        self.sources[i] = source;
        self.grow_watermarks(source.max(series));
    }

    fn grow_watermarks(&mut self, source: u32) {
        let i = source as usize;
        if self.watermarks.len() <= i {
            self.watermarks.resize(i + 1, NO_WATERMARK);
        }
    }

    pub fn source_of(&self, series: u32) -> u32 {
        self.sources.get(series as usize).copied().unwrap_or(0)
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The watermark that closes the windows of `series`.
    pub fn watermark_of(&self, series: u32) -> i64 {
        self.watermarks
            .get(self.source_of(series) as usize)
            .copied()
            .unwrap_or(NO_WATERMARK)
    }

    /// The newest watermark of any source.
    pub fn watermark(&self) -> i64 {
        self.watermarks
            .iter()
            .copied()
            .max()
            .unwrap_or(NO_WATERMARK)
    }

    /// Number of windows held, for metrics and the memory benchmark.
    pub fn windows_held(&self) -> usize {
        self.tracks
            .values()
            .map(|t| t.fixed.iter().map(Sorted::len).sum::<usize>() + t.days.len())
            .sum()
    }

    /// Merges base partials into `series` and, when given, its site series.
    /// `targets(series)` names the series a base partial counts for.
    pub fn merge(
        &mut self,
        parts: &[BasePartial],
        targets: impl Fn(u32) -> [Option<u32>; 2],
    ) -> Merged {
        let mut m = Merged::default();
        let base = self.spec.base_ms;
        for bp in parts {
            let wm = self.watermark_of(bp.series);
            if bp.start_ms + base <= wm - self.spec.horizon_ms {
                m.too_late += bp.partial.count;
                continue;
            }
            if bp.start_ms + base <= wm {
                m.corrections += bp.partial.count;
            }
            for series in targets(bp.series).into_iter().flatten() {
                self.merge_one(series, bp.field, bp.start_ms, &bp.partial);
            }
        }
        m
    }

    fn merge_one(&mut self, series: u32, field: u32, start: i64, p: &Partial) {
        let wm = self.watermark_of(series);
        let spec = &self.spec;
        let track = self.tracks.entry((series, field)).or_insert_with(|| Track {
            fixed: vec![Sorted::default(); 1 + spec.mids.len()],
            days: Sorted::default(),
        });
        let mut mark = |dirty: &mut bool, level: usize, wstart: i64, end: i64| {
            if end <= wm && !*dirty {
                *dirty = true;
                self.dirty.push((series, field, level, wstart));
            }
        };
        let w = track.fixed[0].entry(start);
        let new_base = w.p.count == 0;
        w.p.merge(p);
        w.covered = 1;
        mark(&mut w.dirty, 0, start, start + spec.base_ms);
        for (i, &size) in spec.mids.iter().enumerate() {
            let ws = start.div_euclid(size) * size;
            let w = track.fixed[i + 1].entry(ws);
            w.p.merge(p);
            w.covered += u32::from(new_base);
            mark(&mut w.dirty, i + 1, ws, ws + size);
        }
        if let Some(level) = spec.day_level() {
            let ds = spec.calendar.day_start(start);
            let d = track.days.entry(ds);
            if d.end == 0 {
                d.end = spec.calendar.day_end(ds);
            }
            mark(&mut d.dirty, level, ds, d.end);
        }
    }

    /// Moves every source's watermark to `wm` (never back), returning
    /// every window that closed and every correction, then drops what is
    /// past the horizon.
    pub fn advance(&mut self, wm: i64) -> Vec<Closed> {
        self.grow_watermarks(0);
        let out = self.close(|_| wm);
        self.prune();
        out
    }

    /// Moves each source's watermark to `wm_of(source)` (never back),
    /// returning every window that closed and every correction, without
    /// the pruning: what closed can still be read (the AQI of a day that
    /// closed far behind a watermark that jumped ahead in one flush, as in
    /// a backfill); call [`State::prune`] after.
    pub fn close(&mut self, wm_of: impl Fn(u32) -> i64) -> Vec<Closed> {
        let prev = self.watermarks.clone();
        for (source, wm) in self.watermarks.iter_mut().enumerate() {
            *wm = (*wm).max(wm_of(source as u32));
        }
        let (sources, now) = (&self.sources, &self.watermarks);
        let source = |series: u32| sources.get(series as usize).copied().unwrap_or(0) as usize;
        let mut out = Vec::new();
        let levels = 1 + self.spec.mids.len();
        let day_level = self.spec.day_level();
        let spec = &self.spec;
        let intervals = &self.intervals;
        let interval_ms = |s: u32| intervals.get(s as usize).copied().unwrap_or(spec.base_ms);
        for (&(series, field), track) in &mut self.tracks {
            let interval = interval_ms(series);
            let src = source(series);
            let (Some(&prev), Some(&wm)) = (prev.get(src), now.get(src)) else {
                continue;
            };
            for level in 0..levels {
                let size = spec.size(level).unwrap_or(spec.base_ms);
                let (lo, hi) = (prev.saturating_sub(size), wm - size);
                if hi <= lo {
                    continue;
                }
                for (start, w) in track.fixed[level].range_mut(lo + 1, hi + 1) {
                    if !w.dirty {
                        out.push(Closed {
                            series,
                            field,
                            level,
                            start_ms: start,
                            stats: fixed_stats(spec, level, w, interval),
                            correction: false,
                        });
                    }
                }
            }
            if let Some(level) = day_level {
                let closing: Vec<i64> = track
                    .days
                    .range(i64::MIN, i64::MAX)
                    .filter(|(_, d)| d.end > prev && d.end <= wm && !d.dirty)
                    .map(|(s, _)| s)
                    .collect();
                for ds in closing {
                    out.push(Closed {
                        series,
                        field,
                        level,
                        start_ms: ds,
                        stats: day_stats(spec, track, ds, interval),
                        correction: false,
                    });
                }
            }
        }
        for (series, field, level, start) in std::mem::take(&mut self.dirty) {
            let Some(track) = self.tracks.get_mut(&(series, field)) else {
                continue;
            };
            let interval = interval_ms(series);
            let stats = if Some(level) == day_level {
                let Some(d) = track.days.get_mut(start) else {
                    continue;
                };
                d.dirty = false;
                day_stats(spec, track, start, interval)
            } else {
                let Some(w) = track.fixed[level].get_mut(start) else {
                    continue;
                };
                w.dirty = false;
                fixed_stats(spec, level, w, interval)
            };
            out.push(Closed {
                series,
                field,
                level,
                start_ms: start,
                stats,
                correction: true,
            });
        }
        out
    }

    /// Drops what is past the correction horizon.
    pub fn prune(&mut self) {
        let spec = &self.spec;
        let hour_level = spec.hour_level();
        let (sources, wms) = (&self.sources, &self.watermarks);
        self.tracks.retain(|&(series, _), t| {
            let src = sources.get(series as usize).copied().unwrap_or(0);
            let wm = wms.get(src as usize).copied().unwrap_or(NO_WATERMARK);
            let x = wm - spec.horizon_ms;
            for (level, map) in t.fixed.iter_mut().enumerate() {
                let cut = if level == hour_level {
                    // Hours stay for the 8 h means after them and for
                    // their day.
                    (x - 9 * HOUR_MS + 1).min(if spec.days {
                        spec.calendar.day_start(x)
                    } else {
                        i64::MAX
                    })
                } else {
                    // start + size <= x  ⇔  start < x - size + 1
                    let x = wm - spec.held_for(level);
                    x - spec.size(level).unwrap_or(0) + 1
                };
                map.prune_before(cut);
            }
            t.days.retain(|d| d.end > x);
            t.fixed.iter().any(|m| !m.is_empty()) || !t.days.is_empty()
        });
    }

    /// The hourly mean of (series, field) for the hour starting at `start`,
    /// with its validity.
    pub fn hour_mean(&self, series: u32, field: u32, start: i64) -> Option<(f64, bool)> {
        let t = self.tracks.get(&(series, field))?;
        let level = self.spec.hour_level();
        let w = t.fixed[level].get(start)?;
        let valid = fixed_valid(&self.spec, level, w, self.interval(series));
        Some((w.p.mean()?, valid))
    }

    /// Whether any field of `series` has data in the hour at `start`.
    pub fn has_hour(&self, series: u32, fields: &[u32], start: i64) -> bool {
        let level = self.spec.hour_level();
        fields.iter().any(|f| {
            self.tracks
                .get(&(series, *f))
                .is_some_and(|t| t.fixed[level].get(start).is_some())
        })
    }

    /// The 8 h mean ending with the hour at `last_hour`: the mean of the
    /// valid hourly means of the 8 hours; valid with enough of them.
    pub fn eight_hour_mean(&self, series: u32, field: u32, last_hour: i64) -> Option<(f64, bool)> {
        let means: Vec<f64> = (0..8)
            .filter_map(|k| self.hour_mean(series, field, last_hour - k * HOUR_MS))
            .filter(|(_, valid)| *valid)
            .map(|(m, _)| m)
            .collect();
        if means.is_empty() {
            return None;
        }
        let mean = means.iter().sum::<f64>() / means.len() as f64;
        Some((mean, means.len() as u32 >= self.spec.eight_hour_min_hours))
    }

    /// The day's statistics for (series, field).
    pub fn day(&self, series: u32, field: u32, day_start: i64) -> Option<Stats> {
        let t = self.tracks.get(&(series, field))?;
        t.days
            .get(day_start)
            .map(|_| day_stats(&self.spec, t, day_start, self.interval(series)))
    }

    /// Appends the state (not the spec or intervals) to `e`.
    pub fn encode(&self, e: &mut Enc) {
        e.u32(self.watermarks.len() as u32);
        for wm in &self.watermarks {
            e.i64(*wm);
        }
        e.u32(self.tracks.len() as u32);
        for (&(series, field), t) in &self.tracks {
            e.u32(series);
            e.u32(field);
            e.u32(t.fixed.len() as u32);
            for level in &t.fixed {
                e.u32(level.len() as u32);
                for (start, w) in level.range(i64::MIN, i64::MAX) {
                    e.i64(start);
                    e.f64(w.p.sum);
                    e.u64(w.p.count);
                    e.f64(w.p.min);
                    e.f64(w.p.max);
                    e.u32(w.covered);
                    e.u8(u8::from(w.dirty));
                }
            }
            e.u32(t.days.len() as u32);
            for (start, d) in t.days.range(i64::MIN, i64::MAX) {
                e.i64(start);
                e.i64(d.end);
                e.u8(u8::from(d.dirty));
            }
        }
        e.u32(self.dirty.len() as u32);
        for &(series, field, level, start) in &self.dirty {
            e.u32(series);
            e.u32(field);
            e.u32(level as u32);
            e.i64(start);
        }
    }

    /// Restores what `encode` wrote; None if it does not fit the spec.
    pub fn decode(&mut self, d: &mut Dec<'_>) -> Option<()> {
        let n = d.len(8)?;
        self.grow_watermarks(n.saturating_sub(1) as u32);
        for i in 0..n {
            self.watermarks[i] = d.i64()?;
        }
        let levels = 1 + self.spec.mids.len();
        for _ in 0..d.len(12)? {
            let key = (d.u32()?, d.u32()?);
            if d.u32()? as usize != levels {
                return None;
            }
            let mut t = Track {
                fixed: vec![Sorted::default(); levels],
                days: Sorted::default(),
            };
            for level in &mut t.fixed {
                for _ in 0..d.len(45)? {
                    let start = d.i64()?;
                    let w = level.entry(start);
                    w.p = Partial {
                        sum: d.f64()?,
                        count: d.u64()?,
                        min: d.f64()?,
                        max: d.f64()?,
                    };
                    w.covered = d.u32()?;
                    w.dirty = d.u8()? != 0;
                }
            }
            for _ in 0..d.len(17)? {
                let start = d.i64()?;
                let day = Day {
                    end: d.i64()?,
                    dirty: d.u8()? != 0,
                };
                *t.days.entry(start) = day;
            }
            self.tracks.insert(key, t);
        }
        for _ in 0..d.len(20)? {
            let entry = (d.u32()?, d.u32()?, d.u32()? as usize, d.i64()?);
            self.dirty.push(entry);
        }
        Some(())
    }

    /// The reporting interval of a series, ms.
    pub fn interval(&self, series: u32) -> i64 {
        self.intervals
            .get(series as usize)
            .copied()
            .unwrap_or(self.spec.base_ms)
    }
}

/// Validity of a fixed window: base windows need one reading; larger ones
/// `hour_min_minutes` of sampling per hour.
fn fixed_valid(spec: &Spec, level: usize, w: &Win, interval: i64) -> bool {
    let (received, expected) = fixed_inputs(spec, level, w, interval);
    if level == 0 {
        received >= 1
    } else {
        received * 60 >= expected * u64::from(spec.hour_min_minutes)
    }
}

fn fixed_inputs(spec: &Spec, level: usize, w: &Win, interval: i64) -> (u64, u64) {
    let base = spec.base_ms;
    if level == 0 {
        return (w.p.count, (base / interval.max(1)).max(1) as u64);
    }
    let size = spec.size(level).unwrap_or(base);
    let expected = (size / base) as u64;
    // A sensor reporting every 5 min samples 5 min per reading.
    let factor = (interval / base).max(1) as u64;
    ((u64::from(w.covered) * factor).min(expected), expected)
}

fn fixed_stats(spec: &Spec, level: usize, w: &Win, interval: i64) -> Stats {
    let (received, expected) = fixed_inputs(spec, level, w, interval);
    Stats {
        mean: w.p.mean(),
        min: w.p.min,
        max: w.p.max,
        count: w.p.count,
        received,
        expected,
        valid: fixed_valid(spec, level, w, interval),
    }
}

fn day_stats(spec: &Spec, t: &Track, ds: i64, interval: i64) -> Stats {
    let end = spec.calendar.day_end(ds);
    let level = spec.hour_level();
    let mut all = Partial::default();
    let (mut sum, mut n) = (0.0, 0u64);
    for w in t.fixed[level].range(ds, end).map(|(_, w)| w) {
        all.merge(&w.p);
        if let Some(m) = w.p.mean()
            && fixed_valid(spec, level, w, interval)
        {
            sum += m;
            n += 1;
        }
    }
    Stats {
        mean: (n > 0).then(|| sum / n as f64),
        min: all.min,
        max: all.max,
        count: all.count,
        received: n,
        expected: ((end - ds) / HOUR_MS) as u64,
        valid: n >= u64::from(spec.day_min_hours),
    }
}

#[cfg(test)]
mod tests;
