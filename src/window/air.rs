//! The AQI per site from closed windows: hourly (real-time) from 1 h means
//! and 8 h rolling means, daily from 24 h means and the day's maxima.
//!
//! Which average feeds which key (HJ 633; the EPA's AQI). The hourly AQI is
//! the official real-time AQI: the six 1-hour values, no 8-hour O3 (as
//! CNEMC publishes it; the conformance test replays a published day).
//!
//! | key        | hourly AQI           | daily AQI                         |
//! |------------|----------------------|-----------------------------------|
//! | pm25_24h   | 1 h mean (the 24 h breakpoints on the hourly mean, as CNEMC does) | 24 h mean |
//! | pm10_24h   | 1 h mean (same)      | 24 h mean                         |
//! | so2/no2/co_24h (HJ) | —           | 24 h mean                         |
//! | so2/no2/co_1h (HJ)  | 1 h mean    | —                                 |
//! | o3_1h (HJ) | 1 h mean             | 2012: the day's highest 1 h mean; 2026: — |
//! | o3_8h (HJ) | —                    | the day's highest 8 h mean (windows inside the day) |
//! | o3_8h, co_8h (EPA) | 8 h mean ending this hour | the day's highest 8 h mean |
//! | o3_1h, so2_1h, no2_1h (EPA) | 1 h mean | the day's highest 1 h mean   |
//! | so2_24h (EPA) | —                 | 24 h mean (indexes above 304 ppb) |
//!
//! An average that is incomplete (GB 3095-2012's data-validity table) is not used: its key is
//! listed in the point's `invalid` field, as missing ones are in `missing`.
//! A daily maximum counts only on a complete day (enough valid hours for a
//! 24 h mean). EPA keys are converted from the stored µg/m³ (mg/m³ for CO)
//! to ppm/ppb at 298.15 K with the molar masses of the gases (GB 3095-2012, 2018 amendment).

use std::collections::BTreeSet;

use super::state::{Closed, HOUR_MS, State};
use super::{Engine, Scope};
use crate::evaluate::Observation;
use crate::evaluate::aqi::{Evaluation, Standard, evaluate};
use crate::row::{Derived, Row, Rows, Value};
use crate::validate::MOLAR_VOLUME_298K;

/// Site hours and days whose AQI is to be (re)computed.
#[derive(Debug, Default, PartialEq)]
pub struct Work {
    pub hours: BTreeSet<(u32, i64)>,
    pub days: BTreeSet<(u32, i64)>,
}

/// What changed: every hour or day window of an AQI site that closed or
/// was corrected; a corrected hour also changes the 8 h means of the 7
/// hours after it and the maxima of their days.
pub fn affected(state: &State, closed: &[Closed], is_aqi_site: impl Fn(u32) -> bool) -> Work {
    let spec = state.spec();
    let hour = spec.hour_level();
    let day = spec.day_level();
    let mut w = Work::default();
    for c in closed.iter().filter(|c| is_aqi_site(c.series)) {
        let wm = state.watermark_of(c.series);
        if c.level == hour {
            w.hours.insert((c.series, c.start_ms));
            if c.correction {
                for k in 1..8 {
                    let h = c.start_ms + k * HOUR_MS;
                    if h + HOUR_MS <= wm {
                        w.hours.insert((c.series, h));
                    }
                }
                if day.is_some() {
                    for h in [c.start_ms, c.start_ms + 7 * HOUR_MS] {
                        let ds = spec.calendar.day_start(h);
                        if spec.calendar.day_end(ds) <= wm {
                            w.days.insert((c.series, ds));
                        }
                    }
                }
            }
        } else if Some(c.level) == day {
            w.days.insert((c.series, c.start_ms));
        }
    }
    w
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stat {
    /// Mean of the hour.
    Hour,
    /// 8 h mean ending with the hour.
    Eight,
    /// 24 h mean of the day.
    Day,
    /// The day's highest valid 1 h mean.
    DayMaxHour,
    /// The day's highest valid 8 h mean.
    DayMaxEight,
    /// Mean of the valid 1 h means of the 24 hours ending with the hour.
    Rolling,
    /// The highest valid 1 h mean of those 24 hours.
    RollingMaxHour,
    /// The highest valid 8 h mean inside those 24 hours.
    RollingMaxEight,
}

impl Stat {
    /// The rolling 24 h counterpart of a daily statistic.
    fn rolling(self) -> Stat {
        match self {
            Stat::Day => Stat::Rolling,
            Stat::DayMaxHour => Stat::RollingMaxHour,
            Stat::DayMaxEight => Stat::RollingMaxEight,
            s => s,
        }
    }
}

/// What a city-wide AQI is computed for: an hour, a local day, or the 24
/// hours ending with an hour (composed as a daily AQI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    Hour,
    Day,
    Rolling24,
}

impl Span {
    fn as_str(self) -> &'static str {
        match self {
            Span::Hour => "hour",
            Span::Day => "day",
            Span::Rolling24 => "rolling_24h",
        }
    }
}

/// Conversion from the stored unit to the key's unit.
#[derive(Clone, Copy, Debug)]
enum Conv {
    Same,
    /// µg/m³ → ppm, for molar mass M.
    Ppm(f64),
    /// µg/m³ → ppb.
    Ppb(f64),
    /// mg/m³ → ppm (CO is stored in mg/m³).
    MgPpm(f64),
}

impl Conv {
    fn apply(self, v: f64) -> f64 {
        match self {
            Conv::Same => v,
            Conv::Ppm(m) => v * MOLAR_VOLUME_298K / m / 1000.0,
            Conv::Ppb(m) | Conv::MgPpm(m) => v * MOLAR_VOLUME_298K / m,
        }
    }
}

const O3: f64 = 47.997;
const SO2: f64 = 64.066;
const NO2: f64 = 46.0055;
const CO: f64 = 28.010;

/// (key, pollutant field, statistic, conversion) for a standard and period.
fn inputs(standard: Standard, daily: bool) -> Vec<(&'static str, &'static str, Stat, Conv)> {
    use Conv::*;
    use Stat::*;
    match (standard, daily) {
        (Standard::Epa2024, false) => vec![
            ("pm25_24h", "pm25", Hour, Same),
            ("pm10_24h", "pm10", Hour, Same),
            ("o3_8h", "o3", Eight, Ppm(O3)),
            ("o3_1h", "o3", Hour, Ppm(O3)),
            ("co_8h", "co", Eight, MgPpm(CO)),
            ("so2_1h", "so2", Hour, Ppb(SO2)),
            ("no2_1h", "no2", Hour, Ppb(NO2)),
        ],
        (Standard::Epa2024, true) => vec![
            ("pm25_24h", "pm25", Day, Same),
            ("pm10_24h", "pm10", Day, Same),
            ("o3_8h", "o3", DayMaxEight, Ppm(O3)),
            ("o3_1h", "o3", DayMaxHour, Ppm(O3)),
            ("co_8h", "co", DayMaxEight, MgPpm(CO)),
            ("so2_1h", "so2", DayMaxHour, Ppb(SO2)),
            ("so2_24h", "so2", Day, Ppb(SO2)),
            ("no2_1h", "no2", DayMaxHour, Ppb(NO2)),
        ],
        // The real-time AQI: 1-hour values only, no 8 h O3 (both editions).
        (_, false) => vec![
            ("pm25_24h", "pm25", Hour, Same),
            ("pm10_24h", "pm10", Hour, Same),
            ("so2_1h", "so2", Hour, Same),
            ("no2_1h", "no2", Hour, Same),
            ("co_1h", "co", Hour, Same),
            ("o3_1h", "o3", Hour, Same),
        ],
        (_, true) => {
            let mut daily = vec![
                ("pm25_24h", "pm25", Day, Same),
                ("pm10_24h", "pm10", Day, Same),
                ("so2_24h", "so2", Day, Same),
                ("no2_24h", "no2", Day, Same),
                ("co_24h", "co", Day, Same),
            ];
            // 2012 also takes the day's highest hour of O3; 2026 only its
            // highest 8 h mean.
            if standard == Standard::Hj633_2012 {
                daily.push(("o3_1h", "o3", DayMaxHour, Same));
            }
            daily.push(("o3_8h", "o3", DayMaxEight, Same));
            daily
        }
    }
}

/// The value of a statistic and whether it is complete.
fn stat(state: &State, series: u32, field: u32, s: Stat, at: i64) -> Option<(f64, bool)> {
    let spec = state.spec();
    match s {
        Stat::Hour => state.hour_mean(series, field, at),
        Stat::Eight => state.eight_hour_mean(series, field, at),
        Stat::Day => {
            let d = state.day(series, field, at)?;
            Some((d.mean?, d.valid))
        }
        Stat::DayMaxHour | Stat::DayMaxEight => {
            let end = spec.calendar.day_end(at);
            let day_complete = state.day(series, field, at).is_some_and(|d| d.valid);
            let first = if s == Stat::DayMaxHour {
                at
            } else {
                at + 7 * HOUR_MS
            };
            let max = (0..)
                .map(|k| first + k * HOUR_MS)
                .take_while(|h| *h < end)
                .filter_map(|h| match s {
                    Stat::DayMaxHour => state.hour_mean(series, field, h),
                    _ => state.eight_hour_mean(series, field, h),
                })
                .filter(|(_, valid)| *valid)
                .map(|(m, _)| m)
                .reduce(f64::max)?;
            Some((max, day_complete))
        }
        Stat::Rolling | Stat::RollingMaxHour | Stat::RollingMaxEight => {
            let first = at - 23 * HOUR_MS;
            let hours: Vec<f64> = (0..24)
                .filter_map(|k| state.hour_mean(series, field, first + k * HOUR_MS))
                .filter(|(_, valid)| *valid)
                .map(|(m, _)| m)
                .collect();
            let complete = hours.len() as u32 >= spec.day_min_hours;
            match s {
                Stat::Rolling => {
                    if hours.is_empty() {
                        return None;
                    }
                    Some((hours.iter().sum::<f64>() / hours.len() as f64, complete))
                }
                Stat::RollingMaxHour => Some((hours.into_iter().reduce(f64::max)?, complete)),
                _ => {
                    let max = (0..17)
                        .filter_map(|k| {
                            state.eight_hour_mean(series, field, first + (7 + k) * HOUR_MS)
                        })
                        .filter(|(_, valid)| *valid)
                        .map(|(m, _)| m)
                        .reduce(f64::max)?;
                    Some((max, complete))
                }
            }
        }
    }
}

/// Computes the AQI rows of `work`; returns how many.
/// With `obs`, the AQI values (`aqi.hour`, `aqi.day`) and the day's
/// highest 8 h O3 mean (`o3.day_max_8h`, µg/m³) go there too.
pub fn rows(
    engine: &Engine,
    standard: Standard,
    work: &Work,
    rows: &mut Rows,
    mut obs: Option<&mut Vec<Observation>>,
) -> u64 {
    let state = engine.state();
    let mut n = 0;
    let periods = work
        .hours
        .iter()
        .map(|&(s, t)| (s, t, false))
        .chain(work.days.iter().map(|&(s, t)| (s, t, true)));
    for (series, at, daily) in periods {
        let spec = inputs(standard, daily);
        let field_ids: Vec<Option<u32>> = spec.iter().map(|i| engine.field_id(i.1)).collect();
        if !daily
            && !state.has_hour(
                series,
                &field_ids.iter().flatten().copied().collect::<Vec<_>>(),
                at,
            )
        {
            continue;
        }
        let mut given = Vec::new();
        let mut invalid = Vec::new();
        for ((key, _, s, conv), field) in spec.iter().zip(&field_ids) {
            match field.and_then(|f| stat(state, series, f, *s, at)) {
                Some((v, true)) => given.push((*key, conv.apply(v))),
                Some((_, false)) => invalid.push(*key),
                None => {}
            }
        }
        let Ok(eval) = evaluate(standard, &given) else {
            continue; // unreachable: keys are the standard's, values finite and ≥ 0
        };
        let missing: Vec<&str> = spec
            .iter()
            .map(|i| i.0)
            .filter(|k| !invalid.contains(k) && !given.iter().any(|g| g.0 == *k))
            .collect();
        let fields = aqi_fields(&eval, &given, &invalid, &missing);
        let key = engine.series_key(series);
        debug_assert_eq!(key.scope, Scope::Site);
        if let Some(obs) = obs.as_deref_mut() {
            observe(engine, series, at, daily, &eval, obs);
        }
        let tags = key
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([
                ("standard", standard.as_str()),
                ("period", if daily { "day" } else { "hour" }),
            ]);
        rows.push(Row::Derived(Derived::new("aqi", tags, fields, at)));
        n += 1;
    }
    n
}

/// The city-wide AQI of the hours, days and rolling 24 hours (by the hour
/// they end with) in `periods` that one of the city sites (`city`) has: each key's concentration is the mean of the city
/// sites' valid values of it (each site's own statistic: its 1 h mean, 24 h
/// mean, or highest 8 h mean of the day), and the AQI is computed on those
/// means, as a city-wide AQI is. Points `aqi` with `scope=city` and the
/// number of sites in `sites`; observations labelled `scope=city`.
pub fn city_rows(
    engine: &Engine,
    standard: Standard,
    city: &[u32],
    periods: &[(i64, Span)],
    out: &mut Rows,
    mut obs: Option<&mut Vec<Observation>>,
) -> u64 {
    if city.is_empty() {
        return 0;
    }
    let state = engine.state();
    let mut n = 0;
    for &(at, span) in periods {
        let mut spec = inputs(standard, span != Span::Hour);
        if span == Span::Rolling24 {
            for i in &mut spec {
                i.2 = i.2.rolling();
            }
        }
        let mut given = Vec::new();
        let mut sites = BTreeSet::new();
        for (key, field, s, conv) in &spec {
            let Some(f) = engine.field_id(field) else {
                continue;
            };
            let values: Vec<f64> = city
                .iter()
                .filter_map(|&series| match stat(state, series, f, *s, at) {
                    Some((v, true)) => {
                        sites.insert(series);
                        Some(conv.apply(v))
                    }
                    _ => None,
                })
                .collect();
            if !values.is_empty() {
                given.push((*key, values.iter().sum::<f64>() / values.len() as f64));
            }
        }
        if given.is_empty() {
            continue;
        }
        let Ok(eval) = evaluate(standard, &given) else {
            continue;
        };
        let missing: Vec<&str> = spec
            .iter()
            .map(|i| i.0)
            .filter(|k| !given.iter().any(|g| g.0 == *k))
            .collect();
        let mut fields = aqi_fields(&eval, &given, &[], &missing);
        fields.push(("sites".into(), Value::I(sites.len() as i64)));
        let period = span.as_str();
        let tags = [
            ("scope", "city"),
            ("standard", standard.as_str()),
            ("period", period),
        ];
        out.push(Row::Derived(Derived::new("aqi", tags, fields, at)));
        n += 1;
        if let (Some(obs), Some(aqi)) = (obs.as_deref_mut(), eval.aqi) {
            let (start_ms, end_ms) = match span {
                Span::Hour => (at, at + HOUR_MS),
                Span::Day => (at, state.spec().calendar.day_end(at)),
                Span::Rolling24 => (at - 23 * HOUR_MS, at + HOUR_MS),
            };
            obs.push(Observation {
                kind: engine.series_key(city[0]).kind.clone(),
                labels: vec![("scope".into(), "city".into())],
                metric: format!("aqi.{period}"),
                start_ms,
                end_ms,
                value: f64::from(aqi),
                valid: true,
                details: [
                    ("primary".to_owned(), eval.primary.join(",")),
                    ("sites".to_owned(), sites.len().to_string()),
                ]
                .into(),
            });
        }
    }
    n
}

/// The fields of one `aqi` point.
fn aqi_fields(
    eval: &Evaluation,
    given: &[(&str, f64)],
    invalid: &[&str],
    missing: &[&str],
) -> Vec<(String, Value)> {
    let mut fields: Vec<(String, Value)> = Vec::new();
    if let (Some(aqi), Some(cat)) = (eval.aqi, eval.category) {
        fields.push(("aqi".into(), Value::I(i64::from(aqi))));
        fields.push(("level".into(), Value::I(i64::from(cat.level))));
        fields.push(("category".into(), Value::S(cat.name.into())));
        fields.push(("color".into(), Value::S(cat.color.into())));
    }
    fields.push(("primary".into(), Value::S(eval.primary.join(","))));
    for (key, i) in &eval.iaqi {
        fields.push((format!("iaqi_{key}"), Value::I(i64::from(*i))));
    }
    for (key, v) in given {
        fields.push(((*key).into(), Value::F(*v)));
    }
    fields.push(("beyond_index".into(), Value::S(eval.beyond_index.join(","))));
    fields.push(("missing".into(), Value::S(missing.join(","))));
    fields.push(("invalid".into(), Value::S(invalid.join(","))));
    fields.push(("notes".into(), Value::S(eval.notes.join("; "))));
    fields
}

/// The AQI (`aqi.hour`, `aqi.day`) and the day's highest 8 h O3 mean
/// (`o3.day_max_8h`, µg/m³) of one site and period, for the rules.
fn observe(
    engine: &Engine,
    series: u32,
    at: i64,
    daily: bool,
    eval: &Evaluation,
    obs: &mut Vec<Observation>,
) {
    let state = engine.state();
    let key = engine.series_key(series);
    let end_ms = if daily {
        state.spec().calendar.day_end(at)
    } else {
        at + HOUR_MS
    };
    let mut push = |metric: &str, value: f64, details| {
        obs.push(Observation {
            kind: key.kind.clone(),
            labels: key.tags.clone(),
            metric: metric.into(),
            start_ms: at,
            end_ms,
            value,
            valid: true,
            details,
        })
    };
    if let Some(aqi) = eval.aqi {
        let details = [("primary".to_owned(), eval.primary.join(","))].into();
        push(
            if daily { "aqi.day" } else { "aqi.hour" },
            f64::from(aqi),
            details,
        );
    }
    let o3 = engine.field_id("o3");
    if let Some((v, true)) = o3.and_then(|f| {
        daily
            .then(|| stat(state, series, f, Stat::DayMaxEight, at))
            .flatten()
    }) {
        push("o3.day_max_8h", v, Default::default());
    }
}
