//! Values lantian derives from daily windows (Beijing's heavy-air-pollution emergency plans; the city report's water targets):
//!
//! - per plant and day, volumes (m³) integrated over the time the meters
//!   covered: the day's mean of valid hourly means (m³/h) × the number of
//!   those hours (a step integral of the hourly means; a gap is not filled
//!   with the mean), with the covered hours carried: inflow, treated,
//!   reclaimed, rainfall, runoff;
//! - `treatment_rate.day` and `treatment_rate.month_to_date` = treated ÷
//!   max(inflow, treated + bypass) × 100 (an inflow meter downstream of an
//!   overflow would otherwise read 100 %), per plant and city-wide (labels
//!   `scope=city`: the metered plants' treatment ratio, a proxy for the
//!   city's rate, which also counts sewage never collected);
//! - `capture_ratio.day` = (1 − runoff ÷ rainfall) × 100 where both are
//!   measured and it rained, and `capture_ratio.year_to_date` per
//!   catchment over the year's such days (the sponge-city 70 % is an
//!   annual ratio);
//! - `reclaimed.year_to_date_pace`: the city's year-to-date reclaimed
//!   volume ÷ the elapsed fraction of the year (the annual volume at this
//!   pace), compared with 1.2 billion m³;
//! - `alert_level.{rule set}`: the observed Beijing heavy-pollution level
//!   per station from its run of daily AQI values (Beijing's heavy-air-pollution emergency plans).
//!
//! Days are keyed by their start, so a day seen again (a replay) replaces
//! itself: nothing is counted twice.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};

use super::Observation;
use crate::calendar::Calendar;

const HOUR_MS: f64 = 3_600_000.0;
/// Days of history kept: a year and a little (year to date).
const KEEP_DAYS_MS: i64 = 370 * 86_400_000;
/// Daily AQI values kept per station (the longest rule looks back 4 days
/// within a run; runs are cut at 30).
const KEEP_AQI_DAYS: usize = 30;

/// Flow fields that become daily volumes.
pub const FLOWS: [&str; 5] = [
    "inflow_m3h",
    "treated_m3h",
    "reclaimed_m3h",
    "rainfall_m3h",
    "runoff_m3h",
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Volumes {
    /// Indexed like `FLOWS`.
    pub m3: [Option<f64>; 5],
    /// Sewage that overflowed past treatment (`bypass_m3h`); kept apart
    /// from `m3` so alert state saved before it still loads.
    #[serde(default)]
    pub bypass_m3: Option<f64>,
    /// Hours each volume of `m3` covers (valid hourly means).
    #[serde(default)]
    pub hours: [Option<f64>; 5],
    pub end_ms: i64,
}

/// Treated, inflow and bypassed volumes (m³) summed over days.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sewage {
    treated: f64,
    inflow: f64,
    bypass: f64,
}

impl Sewage {
    /// A day's volumes, if it has treated and inflow volumes (a plant
    /// without a bypass meter has no bypass).
    fn of(v: &Volumes) -> Option<Sewage> {
        Some(Sewage {
            treated: v.m3[1]?,
            inflow: v.m3[0]?,
            bypass: v.bypass_m3.unwrap_or(0.0),
        })
    }

    fn add(self, o: Sewage) -> Sewage {
        Sewage {
            treated: self.treated + o.treated,
            inflow: self.inflow + o.inflow,
            bypass: self.bypass + o.bypass,
        }
    }

    /// Treated ÷ total sewage × 100, the total being the larger of the
    /// metered inflow and treated + bypassed.
    fn rate(self) -> Option<f64> {
        let total = self.inflow.max(self.treated + self.bypass);
        (total > 0.0).then(|| self.treated / total * 100.0)
    }

    fn details(self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("treated_m3".into(), format!("{:.0}", self.treated));
        d.insert("inflow_m3".into(), format!("{:.0}", self.inflow));
        d.insert("bypass_m3".into(), format!("{:.0}", self.bypass));
        d
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plant {
    pub kind: String,
    pub labels: Vec<(String, String)>,
    /// Day start → volumes.
    pub days: BTreeMap<i64, Volumes>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Station {
    pub kind: String,
    pub labels: Vec<(String, String)>,
    /// Day start → (day end, daily AQI).
    pub days: BTreeMap<i64, (i64, u32)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Derived {
    /// Keyed by kind and labels.
    pub plants: BTreeMap<String, Plant>,
    pub stations: BTreeMap<String, Station>,
    /// (day start, plant key) touched since the last `finish`.
    #[serde(skip)]
    touched: BTreeSet<(i64, String)>,
}

/// A series key: kind and labels, joined.
pub fn key(kind: &str, labels: &[(String, String)]) -> String {
    let mut k = String::new();
    key_into(&mut k, kind, labels);
    k
}

/// [`key`] into a reused buffer (the per-point path allocates nothing).
pub fn key_into(buf: &mut String, kind: &str, labels: &[(String, String)]) {
    buf.clear();
    buf.push_str(kind);
    for (a, b) in labels {
        buf.push('\x1f');
        buf.push_str(a);
        buf.push('=');
        buf.push_str(b);
    }
}

/// The observed alert level (0 none, 1 blue, 2 yellow, 3 orange, 4 red)
/// for the last day of `days` (oldest first, consecutive, each a daily
/// AQI), by a rule set of Beijing's heavy-air-pollution emergency plans.
pub fn level(set: &str, days: &[u32]) -> u32 {
    let over = |t: u32| days.iter().rev().take_while(|&&a| a > t).count();
    match set {
        // 2023 revision (U): counted over the run of days above 150.
        "beijing-2023" => {
            let run = &days[days.len() - over(150)..];
            let n200 = run.iter().filter(|&&a| a > 200).count();
            let n300 = run.iter().filter(|&&a| a > 300).count();
            if n200 >= 3 && n300 >= 1 {
                4
            } else if n200 >= 2 || run.len() >= 3 {
                3
            } else if n200 >= 1 || run.len() >= 2 {
                2
            } else {
                0
            }
        }
        // 2016–2018 rules (C): the run of days above 200.
        _ => {
            let run = &days[days.len() - over(200)..];
            let n = run.len();
            let n300 = run.iter().filter(|&&a| a > 300).count();
            if (n >= 4 && n300 >= 2) || run.iter().any(|&a| a >= 500) {
                4
            } else if n >= 3 && n300 >= 1 {
                3
            } else if n >= 2 {
                2
            } else if n >= 1 {
                1
            } else {
                0
            }
        }
    }
}

/// A level's name: none, blue, yellow, orange, red.
pub fn level_name(level: u32) -> &'static str {
    match level {
        1 => "blue",
        2 => "yellow",
        3 => "orange",
        4 => "red",
        _ => "none",
    }
}

/// The rule sets alert levels are computed for.
pub const LEVEL_SETS: [&str; 2] = ["beijing-2016", "beijing-2023"];

fn month_start(cal: &Calendar, day_start: i64) -> i64 {
    local_date(cal, day_start)
        .and_then(|d| d.with_day(1))
        .map_or(day_start, |d| midnight(cal, d))
}

fn year_bounds(cal: &Calendar, day_start: i64) -> (i64, i64) {
    let y = local_date(cal, day_start).map_or(1970, |d| d.year());
    let start = NaiveDate::from_ymd_opt(y, 1, 1).map_or(day_start, |d| midnight(cal, d));
    let end = NaiveDate::from_ymd_opt(y + 1, 1, 1).map_or(day_start, |d| midnight(cal, d));
    (start, end)
}

fn local_date(cal: &Calendar, ms: i64) -> Option<NaiveDate> {
    cal.tz
        .timestamp_millis_opt(ms)
        .single()
        .map(|d| d.date_naive())
}

fn midnight(cal: &Calendar, d: NaiveDate) -> i64 {
    // The calendar's own day start of noon that day.
    let noon = d.and_hms_opt(12, 0, 0).expect("valid time");
    cal.tz
        .from_local_datetime(&noon)
        .earliest()
        .map_or(0, |t| cal.day_start(t.timestamp_millis()))
}

impl Derived {
    /// Takes in one observation; derived ones it completes go to `out`.
    pub fn absorb(&mut self, o: &Observation, cal: &Calendar, out: &mut Vec<Observation>) {
        if !o.valid {
            return;
        }
        if o.metric == "aqi.day" {
            let k = key(&o.kind, &o.labels);
            let st = self.stations.entry(k).or_insert_with(|| Station {
                kind: o.kind.clone(),
                labels: o.labels.clone(),
                days: BTreeMap::new(),
            });
            st.days.insert(o.start_ms, (o.end_ms, o.value as u32));
            while st.days.len() > KEEP_AQI_DAYS {
                st.days.pop_first();
            }
            // The run of consecutive days ending with this one.
            let mut run = vec![o.value as u32];
            let mut at = o.start_ms;
            loop {
                let prev = cal.day_start(at - 1);
                match st.days.get(&prev) {
                    Some(&(end, aqi)) if end == at => {
                        run.push(aqi);
                        at = prev;
                    }
                    _ => break,
                }
            }
            run.reverse();
            for set in LEVEL_SETS {
                let lv = level(set, &run);
                let mut details = BTreeMap::new();
                details.insert("daily_aqi".into(), o.value.to_string());
                details.insert(
                    "days_above_200".into(),
                    run.iter()
                        .rev()
                        .take_while(|&&a| a > 200)
                        .count()
                        .to_string(),
                );
                out.push(Observation {
                    kind: o.kind.clone(),
                    labels: o.labels.clone(),
                    metric: format!("alert_level.{set}"),
                    start_ms: o.start_ms,
                    end_ms: o.end_ms,
                    value: f64::from(lv),
                    valid: true,
                    details,
                });
            }
            return;
        }
        let Some((field, "day")) = o.metric.rsplit_once('.') else {
            return;
        };
        let ix = FLOWS.iter().position(|f| *f == field);
        if ix.is_none() && field != "bypass_m3h" {
            return;
        }
        let k = key(&o.kind, &o.labels);
        let plant = self.plants.entry(k.clone()).or_insert_with(|| Plant {
            kind: o.kind.clone(),
            labels: o.labels.clone(),
            days: BTreeMap::new(),
        });
        let day = plant.days.entry(o.start_ms).or_default();
        // The hours the day's mean covers (the window stage says; else the
        // whole day).
        let hours = o
            .details
            .get("hours")
            .and_then(|h| h.parse::<f64>().ok())
            .unwrap_or((o.end_ms - o.start_ms) as f64 / HOUR_MS);
        let m3 = Some(o.value * hours);
        match ix {
            Some(ix) => {
                day.m3[ix] = m3;
                day.hours[ix] = Some(hours);
            }
            None => day.bypass_m3 = m3,
        }
        day.end_ms = o.end_ms;
        let oldest = o.start_ms - KEEP_DAYS_MS;
        while plant
            .days
            .first_key_value()
            .is_some_and(|(d, _)| *d < oldest)
        {
            plant.days.pop_first();
        }
        self.touched.insert((o.start_ms, k));
    }

    /// Derived water values of the days touched since the last call;
    /// `city`: the city-wide ones too.
    pub fn finish(&mut self, cal: &Calendar, city: bool, out: &mut Vec<Observation>) {
        let touched = std::mem::take(&mut self.touched);
        let mut days = BTreeSet::new();
        for (day, k) in &touched {
            days.insert(*day);
            let Some(p) = self.plants.get(k) else {
                continue;
            };
            let Some(v) = p.days.get(day) else { continue };
            let obs = |metric: &str, start: i64, value: f64, details| Observation {
                kind: p.kind.clone(),
                labels: p.labels.clone(),
                metric: metric.into(),
                start_ms: start,
                end_ms: v.end_ms,
                value,
                valid: true,
                details,
            };
            if let Some(s) = Sewage::of(v) {
                if let Some(r) = s.rate() {
                    let mut d = s.details();
                    if let (Some(a), Some(b)) = (v.hours[0], v.hours[1]) {
                        d.insert("covered_hours".into(), format!("{}", a.min(b)));
                    }
                    out.push(obs("treatment_rate.day", *day, r, d));
                }
                let ms = month_start(cal, *day);
                let month = p
                    .days
                    .range(ms..=*day)
                    .filter_map(|(_, v)| Sewage::of(v))
                    .fold(Sewage::default(), Sewage::add);
                if let Some(r) = month.rate() {
                    out.push(obs("treatment_rate.month_to_date", ms, r, month.details()));
                }
            }
            // (1 − runoff ÷ rainfall) × 100, where it rained.
            let capture = |metric: &str, start: i64, rain: f64, runoff: f64| {
                (rain > 0.0).then(|| {
                    let mut d = BTreeMap::new();
                    d.insert("rainfall_m3".into(), format!("{rain:.0}"));
                    d.insert("runoff_m3".into(), format!("{runoff:.0}"));
                    obs(metric, start, (1.0 - runoff / rain) * 100.0, d)
                })
            };
            if let (Some(rain), Some(runoff)) = (v.m3[3], v.m3[4]) {
                out.extend(capture("capture_ratio.day", *day, rain, runoff));
                // The year to date: every day of the year so far with
                // both measured.
                let (ys, _) = year_bounds(cal, *day);
                let (rain, runoff) = p
                    .days
                    .range(ys..=*day)
                    .filter_map(|(_, v)| Some((v.m3[3]?, v.m3[4]?)))
                    .fold((0.0, 0.0), |a, (r, o)| (a.0 + r, a.1 + o));
                out.extend(capture("capture_ratio.year_to_date", ys, rain, runoff));
            }
        }
        // City-wide, for each day touched.
        for day in days.into_iter().filter(|_| city) {
            self.city_day(cal, day, out);
        }
    }

    /// City-wide treatment rates and reclaimed-water pace of one day.
    fn city_day(&self, cal: &Calendar, day: i64, out: &mut Vec<Observation>) {
        let city = vec![("scope".to_owned(), "city".to_owned())];
        let end = cal.day_end(day);
        let ms = month_start(cal, day);
        // The plants' sewage volumes of their days in `range`, with the
        // number of plants that had any.
        let sum = |range: std::ops::RangeInclusive<i64>| {
            let mut plants = 0;
            let mut total = Sewage::default();
            for p in self.plants.values() {
                let mut seen = false;
                for v in p
                    .days
                    .range(range.clone())
                    .filter_map(|(_, v)| Sewage::of(v))
                {
                    total = total.add(v);
                    seen = true;
                }
                plants += usize::from(seen);
            }
            (total, plants)
        };
        let obs = |metric: &str, start: i64, value: f64, details| Observation {
            kind: "sewage".into(),
            labels: city.clone(),
            metric: metric.into(),
            start_ms: start,
            end_ms: end,
            value,
            valid: true,
            details,
        };
        let ratio = |s: Sewage, n: usize| {
            let mut d = s.details();
            d.insert("plants".into(), n.to_string());
            d.insert("basis".into(), "metered plants' treatment ratio".into());
            d
        };
        let (s, n) = sum(day..=day);
        if n > 0 {
            if let Some(r) = s.rate() {
                out.push(obs("treatment_rate.day", day, r, ratio(s, n)));
            }
            let (s, n) = sum(ms..=day);
            if let Some(r) = s.rate() {
                out.push(obs("treatment_rate.month_to_date", ms, r, ratio(s, n)));
            }
        }
        let (ys, ye) = year_bounds(cal, day);
        // Reclaimed volume year to date, and how many plants reported it.
        let (mut ytd, mut n) = (0.0, 0);
        for p in self.plants.values() {
            let days = p.days.range(ys..=day).filter_map(|(_, v)| v.m3[2]);
            let (m3, count) = days.fold((0.0, 0), |(m3, c), v| (m3 + v, c + 1));
            ytd += m3;
            n += usize::from(count > 0);
        }
        if n > 0 && ye > ys {
            let fraction = (end - ys) as f64 / (ye - ys) as f64;
            let mut d = BTreeMap::new();
            d.insert("year_to_date_m3".into(), format!("{ytd:.0}"));
            d.insert("elapsed_fraction".into(), format!("{fraction:.4}"));
            d.insert("plants".into(), n.to_string());
            out.push(obs("reclaimed.year_to_date_pace", ys, ytd / fraction, d));
        }
    }
}
