//! `lantian report`: a compliance report for a date range, computed with
//! polars from the Parquet archive or from InfluxDB:
//!
//! - the daily AQI per station (a date × station table, and a chart);
//! - exceedance and heavy-pollution days per station (daily AQI above
//!   100, 200 and 300) and GB 3095 PM2.5 24 h exceedances (2012: 75 µg/m³;
//!   2026 transition: 60 µg/m³), valid days only;
//! - the sewage treatment rate per plant and city-wide (target 95 %), with
//!   a chart;
//! - reclaimed water: volume in the range, and the annual volume at that
//!   pace against 1.2 billion m³;
//! - construction dust per district;
//! - the city-wide daily AQI with the observed heavy-pollution level (2016
//!   and 2023 rule sets, consecutive days, runs reaching back 30 days
//!   before the range);
//! - annual (year-to-date) means of PM2.5, PM10, NO2 and SO2 per station
//!   and district, against GB 3095's annual limits, valid with ≥ 324
//!   daily means.
//!
//! Markdown (one `report.md` with the charts beside it) or CSV (one file
//! per table). Dates are local (Asia/Shanghai by default), both ends
//! included.

pub mod chart;
pub mod year;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::TimeZone;
use polars::prelude::*;

const DAY_MS: i64 = 86_400_000;
/// Report §5: 1.2 billion m³ of recycled water a year.
const RECLAIMED_TARGET_M3: f64 = 1.2e9;
/// Report §5: sewage treatment rate 95 %.
const TREATMENT_TARGET: f64 = 95.0;

#[derive(Clone, Debug)]
pub enum Source {
    Archive(PathBuf),
    Influx { url: String, database: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Csv,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub source: Source,
    /// First and last local date, included.
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub format: Format,
    pub out: PathBuf,
    pub tz: chrono_tz::Tz,
    /// Count construction-dust hours above this (µg/m³).
    pub dust_limit: Option<f64>,
}

fn midnight(tz: chrono_tz::Tz, d: chrono::NaiveDate) -> i64 {
    tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .map_or(0, |t| t.timestamp_millis())
}

/// The local date of `ms` in `tz`.
pub fn local_date(tz: chrono_tz::Tz, ms: i64) -> Option<chrono::NaiveDate> {
    tz.timestamp_millis_opt(ms).single().map(|t| t.date_naive())
}

fn progress(msg: String) {
    eprintln!("report: {msg}");
}

/// Loads a measurement over [from, to) with `time` as epoch ms (Int64).
async fn load(src: &Source, m: &str, from: i64, to: i64) -> anyhow::Result<Option<DataFrame>> {
    let started = Instant::now();
    let df = match src {
        Source::Archive(dir) => {
            let dir = dir.clone();
            let name = m.to_owned();
            let df = tokio::task::spawn_blocking(move || {
                crate::sink::archive::read_measurement_between(&dir, &name, from, to)
            })
            .await??;
            match df {
                None => None,
                Some(df) => Some(
                    df.lazy()
                        .with_column(col("time").cast(DataType::Int64))
                        .filter(col("time").gt_eq(lit(from)).and(col("time").lt(lit(to))))
                        .collect()?,
                ),
            }
        }
        Source::Influx { url, database } => {
            let days = ((to - from) / DAY_MS).max(1);
            let mut frames = Vec::new();
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?;
            let mut t = from;
            let mut k = 0;
            while t < to {
                let end = (t + DAY_MS).min(to);
                let q = format!("SELECT * FROM \"{m}\" WHERE time >= {t}ms AND time < {end}ms");
                let mut u = reqwest::Url::parse(&format!("{}/query", url.trim_end_matches('/')))
                    .with_context(|| format!("--influx {url:?}"))?;
                u.query_pairs_mut()
                    .append_pair("db", database)
                    .append_pair("epoch", "ms")
                    .append_pair("q", &q);
                let v: serde_json::Value = serde_json::from_slice(
                    &client
                        .get(u)
                        .send()
                        .await
                        .with_context(|| format!("InfluxDB {url}"))?
                        .bytes()
                        .await?,
                )?;
                if let Some(e) = v["results"][0]["error"].as_str() {
                    anyhow::bail!("InfluxDB: {q}: {e}");
                }
                for s in v["results"][0]["series"].as_array().into_iter().flatten() {
                    frames.push(json_frame(s)?);
                }
                k += 1;
                if days > 3 {
                    progress(format!("{m}: {k}/{days} days from InfluxDB"));
                }
                t = end;
            }
            if frames.is_empty() {
                None
            } else {
                Some(crate::sink::archive::diagonal(frames)?)
            }
        }
    };
    progress(format!(
        "{m}: {} rows ({:.1} s)",
        df.as_ref().map_or(0, |d| d.height()),
        started.elapsed().as_secs_f64()
    ));
    Ok(df)
}

/// One InfluxQL result series as a frame (numbers → f64, text → string,
/// booleans → bool; `time` → i64 ms; columns with no value left out).
fn json_frame(s: &serde_json::Value) -> anyhow::Result<DataFrame> {
    let names: Vec<&str> = s["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let rows = s["values"].as_array().context("values")?;
    let mut cols = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<&serde_json::Value> = rows.iter().map(|r| &r[i]).collect();
        let first = cells.iter().find(|c| !c.is_null());
        if first.is_none() && *name != "time" {
            // All null (a field no point of this day has): its type is
            // unknown, and the other days' frames give it.
            continue;
        }
        let col = if *name == "time" {
            Column::new(
                "time".into(),
                cells.iter().map(|c| c.as_i64()).collect::<Vec<_>>(),
            )
        } else {
            match first {
                Some(v) if v.is_number() => Column::new(
                    (*name).into(),
                    cells.iter().map(|c| c.as_f64()).collect::<Vec<_>>(),
                ),
                Some(v) if v.is_boolean() => Column::new(
                    (*name).into(),
                    cells.iter().map(|c| c.as_bool()).collect::<Vec<_>>(),
                ),
                _ => Column::new(
                    (*name).into(),
                    cells
                        .iter()
                        .map(|c| c.as_str().map(str::to_owned))
                        .collect::<Vec<_>>(),
                ),
            }
        };
        cols.push(col);
    }
    Ok(DataFrame::new(rows.len(), cols)?)
}

fn has(df: &DataFrame, c: &str) -> bool {
    df.column(c).is_ok()
}

fn f64s(df: &DataFrame, c: &str) -> Vec<Option<f64>> {
    df.column(c)
        .and_then(|c| c.cast(&DataType::Float64))
        .map(|c| {
            c.f64()
                .map(|a| (0..a.len()).map(|i| a.get(i)).collect())
                .unwrap_or_default()
        })
        .unwrap_or_else(|_| vec![None; df.height()])
}

fn strs(df: &DataFrame, c: &str) -> Vec<Option<String>> {
    df.column(c)
        .and_then(|c| c.cast(&DataType::String))
        .map(|c| {
            c.str()
                .map(|a| (0..a.len()).map(|i| a.get(i).map(str::to_owned)).collect())
                .unwrap_or_default()
        })
        .unwrap_or_else(|_| vec![None; df.height()])
}

fn i64s(df: &DataFrame, c: &str) -> Vec<Option<i64>> {
    df.column(c)
        .and_then(|c| c.cast(&DataType::Int64))
        .map(|c| {
            c.i64()
                .map(|a| (0..a.len()).map(|i| a.get(i)).collect())
                .unwrap_or_default()
        })
        .unwrap_or_else(|_| vec![None; df.height()])
}

/// Everything the report shows, computed.
#[derive(Debug, Default)]
pub struct Report {
    pub dates: Vec<String>,
    /// site → district.
    pub stations: BTreeMap<String, String>,
    /// (date, site) → (daily AQI, category, primary).
    pub daily_aqi: BTreeMap<(String, String), (i64, String, String)>,
    /// site → [days with AQI, > 100, > 200, > 300, max AQI].
    pub exceed: BTreeMap<String, [i64; 5]>,
    /// site → (valid PM2.5 days, > 75, > 60).
    pub pm25: BTreeMap<String, (i64, i64, i64)>,
    /// plant → (total sewage m³: max(inflow, treated + bypass) per day,
    /// treated m³, reclaimed m³, days).
    pub plants: BTreeMap<String, (f64, f64, f64, i64)>,
    /// district → (sites, mean PM10, highest hourly PM10, hours above limit).
    pub dust: BTreeMap<String, (usize, f64, f64, Option<i64>)>,
    pub days: i64,
    /// date → the city-wide daily AQI and the observed level.
    pub city: BTreeMap<String, year::CityDay>,
    /// The first day of the year-to-date means (1 January of `to`'s year).
    pub year_from: String,
    /// (station, pollutant index into `year::ANNUAL`) → year-to-date mean.
    pub annual_stations: BTreeMap<(String, usize), year::Annual>,
    /// (district, pollutant) → year-to-date mean.
    pub annual_districts: BTreeMap<(String, usize), year::Annual>,
}

impl Report {
    pub fn city(&self) -> (f64, f64, f64) {
        self.plants
            .values()
            .fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2))
    }
}

/// Loads and computes the report (polars over the loaded frames).
pub async fn compute(o: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(o.from <= o.to, "--from {} is after --to {}", o.from, o.to);
    let from = midnight(o.tz, o.from);
    let to = midnight(o.tz, o.to + chrono::Days::new(1));
    let mut r = Report {
        days: ((to - from) as f64 / DAY_MS as f64).round() as i64,
        ..Report::default()
    };
    let date = |ms: i64| {
        local_date(o.tz, ms)
            .map(|d| d.to_string())
            .unwrap_or_default()
    };
    let mut d = o.from;
    while d <= o.to {
        r.dates.push(d.to_string());
        d = d + chrono::Days::new(1);
    }

    // The city's level looks back at the run of days before the range.
    let run_from = from - 30 * DAY_MS;
    if let Some(aqi) = load(&o.source, "aqi", run_from, to).await? {
        city_days(&mut r, &aqi, o.tz, from)?;
        let range = aqi.lazy().filter(col("time").gt_eq(lit(from))).collect()?;
        daily_aqi(&mut r, range, &date)?;
    }

    // Daily means from 1 January of the last date's year, for the annual
    // means; the range's own days for the exceedances.
    let year_start =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&o.to), 1, 1).unwrap_or(o.from);
    r.year_from = year_start.to_string();
    let ys = midnight(o.tz, year_start);
    if let Some(air) = load(&o.source, "air_1d", ys.min(from), to).await? {
        annual_means(&mut r, &air, o.tz, ys)?;
        let range = air.lazy().filter(col("time").gt_eq(lit(from))).collect()?;
        pm25_days(&mut r, range)?;
    }

    if let Some(sw) = load(&o.source, "sewage_1d", from, to).await? {
        sewage(&mut r, sw)?;
    }

    if let Some(dust) = load(&o.source, "dust_1h", from, to).await? {
        dust_by_district(&mut r, dust, o.dust_limit)?;
    }
    Ok(r)
}

/// Daily AQI per station.
fn daily_aqi(r: &mut Report, aqi: DataFrame, date: &dyn Fn(i64) -> String) -> anyhow::Result<()> {
    if has(&aqi, "period") && has(&aqi, "aqi") && has(&aqi, "site") {
        // Stations only: the city-wide points (scope=city) have no site.
        let day = aqi
            .lazy()
            .filter(
                col("period")
                    .eq(lit("day"))
                    .and(col("aqi").is_not_null())
                    .and(col("site").is_not_null()),
            )
            .with_column(col("aqi").cast(DataType::Int64))
            .sort(["time"], Default::default())
            .collect()?;
        let (t, site, dist, v) = (
            i64s(&day, "time"),
            strs(&day, "site"),
            strs(&day, "district"),
            i64s(&day, "aqi"),
        );
        let (cat, prim) = (strs(&day, "category"), strs(&day, "primary"));
        for i in 0..day.height() {
            let (Some(t), Some(s), Some(v)) = (t[i], site[i].clone(), v[i]) else {
                continue;
            };
            r.stations
                .insert(s.clone(), dist[i].clone().unwrap_or_default());
            r.daily_aqi.insert(
                (date(t), s),
                (
                    v,
                    cat[i].clone().unwrap_or_default(),
                    prim[i].clone().unwrap_or_default(),
                ),
            );
        }
        let by_site = day
            .lazy()
            .group_by([col("site")])
            .agg([
                col("aqi").count().cast(DataType::Int64).alias("days"),
                col("aqi")
                    .gt(lit(100))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("over100"),
                col("aqi")
                    .gt(lit(200))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("over200"),
                col("aqi")
                    .gt(lit(300))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("over300"),
                col("aqi").max().cast(DataType::Int64).alias("max"),
            ])
            .collect()?;
        let site = strs(&by_site, "site");
        let cols: Vec<Vec<Option<i64>>> = ["days", "over100", "over200", "over300", "max"]
            .iter()
            .map(|c| i64s(&by_site, c))
            .collect();
        for i in 0..by_site.height() {
            if let Some(s) = site[i].clone() {
                r.exceed
                    .insert(s, std::array::from_fn(|k| cols[k][i].unwrap_or(0)));
            }
        }
    }
    Ok(())
}

/// The city-wide daily AQI (`aqi` points with scope=city) from `from`, with
/// the observed level of each day (runs may start before `from`).
fn city_days(r: &mut Report, aqi: &DataFrame, tz: chrono_tz::Tz, from: i64) -> anyhow::Result<()> {
    if !(has(aqi, "scope") && has(aqi, "period") && has(aqi, "aqi")) {
        return Ok(());
    }
    let day = aqi
        .clone()
        .lazy()
        .filter(
            col("scope")
                .eq(lit("city"))
                .and(col("period").eq(lit("day")))
                .and(col("aqi").is_not_null()),
        )
        .with_column(col("aqi").cast(DataType::Int64))
        .sort(["time"], Default::default())
        .collect()?;
    let (t, v) = (i64s(&day, "time"), i64s(&day, "aqi"));
    let (cat, prim) = (strs(&day, "category"), strs(&day, "primary"));
    let sites = if has(&day, "sites") {
        i64s(&day, "sites")
    } else {
        vec![None; day.height()]
    };
    let mut by_date = BTreeMap::new();
    let mut rows = BTreeMap::new();
    for i in 0..day.height() {
        let (Some(t), Some(v)) = (t[i], v[i]) else {
            continue;
        };
        let Some(d) = local_date(tz, t) else { continue };
        by_date.insert(d, v);
        if t >= from {
            rows.insert(d, i);
        }
    }
    let levels = year::levels(&by_date);
    for (d, i) in rows {
        r.city.insert(
            d.to_string(),
            year::CityDay {
                aqi: by_date[&d],
                category: cat[i].clone().unwrap_or_default(),
                primary: prim[i].clone().unwrap_or_default(),
                sites: sites[i].unwrap_or(0),
                levels: levels.get(&d).copied().unwrap_or_default(),
            },
        );
    }
    Ok(())
}

/// Year-to-date means per station and district from the daily windows
/// (`air_1d`, scope=site, valid days only) from `year_start`.
fn annual_means(
    r: &mut Report,
    air: &DataFrame,
    tz: chrono_tz::Tz,
    year_start: i64,
) -> anyhow::Result<()> {
    if !(has(air, "scope") && has(air, "site")) {
        return Ok(());
    }
    let sites = air
        .clone()
        .lazy()
        .filter(
            col("scope")
                .eq(lit("site"))
                .and(col("time").gt_eq(lit(year_start))),
        )
        .collect()?;
    let (t, site) = (i64s(&sites, "time"), strs(&sites, "site"));
    let district = if has(&sites, "district") {
        strs(&sites, "district")
    } else {
        vec![None; sites.height()]
    };
    let mut m = year::DailyMeans::default();
    for (p, (field, ..)) in year::ANNUAL.iter().enumerate() {
        let mean = format!("{field}_mean");
        if !has(&sites, &mean) {
            continue;
        }
        let values = f64s(&sites, &mean);
        let valid: Vec<Option<bool>> = match sites.column(&format!("{field}_valid")) {
            Ok(c) => c.bool()?.iter().collect(),
            Err(_) => vec![Some(true); sites.height()],
        };
        for i in 0..sites.height() {
            let (Some(t), Some(s), Some(v), Some(true)) =
                (t[i], site[i].clone(), values[i], valid[i])
            else {
                continue;
            };
            let Some(d) = local_date(tz, t) else {
                continue;
            };
            m.district
                .insert(s.clone(), district[i].clone().unwrap_or_default());
            m.by_site.entry((s, p)).or_default().insert(d, v);
        }
    }
    r.annual_stations = m.stations();
    r.annual_districts = m.districts();
    Ok(())
}

/// GB 3095 PM2.5 24 h exceedances (valid days).
fn pm25_days(r: &mut Report, air: DataFrame) -> anyhow::Result<()> {
    if has(&air, "pm25_mean") && has(&air, "scope") {
        let valid = if has(&air, "pm25_valid") {
            col("pm25_valid").eq(lit(true))
        } else {
            lit(true)
        };
        let g = air
            .lazy()
            .filter(
                col("scope")
                    .eq(lit("site"))
                    .and(valid)
                    .and(col("pm25_mean").is_not_null()),
            )
            .group_by([col("site")])
            .agg([
                col("pm25_mean").count().cast(DataType::Int64).alias("days"),
                col("pm25_mean")
                    .gt(lit(75.0))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("o75"),
                col("pm25_mean")
                    .gt(lit(60.0))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("o60"),
            ])
            .collect()?;
        let (s, n, a, b) = (
            strs(&g, "site"),
            i64s(&g, "days"),
            i64s(&g, "o75"),
            i64s(&g, "o60"),
        );
        for i in 0..g.height() {
            if let Some(site) = s[i].clone() {
                r.pm25.insert(
                    site,
                    (n[i].unwrap_or(0), a[i].unwrap_or(0), b[i].unwrap_or(0)),
                );
            }
        }
    }
    Ok(())
}

/// Sewage: each day's volume is its mean of valid hourly means (m³/h) ×
/// the number of those hours (`{field}_received`; 24 when absent), so a
/// gap is not filled with the mean; the day's total sewage is the larger
/// of the inflow and treated + bypassed volume.
fn sewage(r: &mut Report, sw: DataFrame) -> anyhow::Result<()> {
    if has(&sw, "inflow_m3h_mean") && has(&sw, "treated_m3h_mean") && has(&sw, "scope") {
        let volume = |field: &str| -> Expr {
            let mean = format!("{field}_mean");
            if !has(&sw, &mean) {
                return lit(0.0);
            }
            let hours = format!("{field}_received");
            let hours = if has(&sw, &hours) {
                col(hours.as_str()).cast(DataType::Float64)
            } else {
                lit(24.0)
            };
            (col(mean.as_str()) * hours).fill_null(lit(0.0))
        };
        let (inflow, treated) = (volume("inflow_m3h"), volume("treated_m3h"));
        let accounted = treated.clone() + volume("bypass_m3h");
        let total = when(inflow.clone().gt_eq(accounted.clone()))
            .then(inflow)
            .otherwise(accounted);
        let g = sw
            .clone()
            .lazy()
            .filter(
                col("scope")
                    .eq(lit("site"))
                    .and(col("inflow_m3h_mean").is_not_null())
                    .and(col("treated_m3h_mean").is_not_null()),
            )
            .group_by([col("site")])
            .agg([
                total.sum().alias("inflow"),
                treated.sum().alias("treated"),
                volume("reclaimed_m3h").sum().alias("reclaimed"),
                col("inflow_m3h_mean")
                    .count()
                    .cast(DataType::Int64)
                    .alias("days"),
            ])
            .collect()?;
        let (s, i_, t, rc, n) = (
            strs(&g, "site"),
            f64s(&g, "inflow"),
            f64s(&g, "treated"),
            f64s(&g, "reclaimed"),
            i64s(&g, "days"),
        );
        for k in 0..g.height() {
            if let Some(site) = s[k].clone() {
                r.plants.insert(
                    site,
                    (
                        i_[k].unwrap_or(0.0),
                        t[k].unwrap_or(0.0),
                        rc[k].unwrap_or(0.0),
                        n[k].unwrap_or(0),
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Construction dust per district (hourly site means).
fn dust_by_district(
    r: &mut Report,
    dust: DataFrame,
    dust_limit: Option<f64>,
) -> anyhow::Result<()> {
    if has(&dust, "pm10_mean") && has(&dust, "scope") {
        let limit = dust_limit.unwrap_or(f64::INFINITY);
        let max_col = if has(&dust, "pm10_max") {
            col("pm10_max")
        } else {
            col("pm10_mean")
        };
        let per_site = dust
            .lazy()
            .filter(
                col("scope")
                    .eq(lit("site"))
                    .and(col("pm10_mean").is_not_null()),
            )
            .group_by([col("district"), col("site")])
            .agg([
                col("pm10_mean").mean().alias("mean"),
                max_col.max().alias("max"),
                col("pm10_mean")
                    .gt(lit(limit))
                    .cast(DataType::Int64)
                    .sum()
                    .alias("over"),
            ])
            .collect()?;
        let g = per_site
            .lazy()
            .group_by([col("district")])
            .agg([
                col("site").count().cast(DataType::Int64).alias("sites"),
                col("mean").mean().alias("mean"),
                col("max").max().alias("max"),
                col("over").sum().alias("over"),
            ])
            .collect()?;
        let (d, n, m, x, ov) = (
            strs(&g, "district"),
            i64s(&g, "sites"),
            f64s(&g, "mean"),
            f64s(&g, "max"),
            i64s(&g, "over"),
        );
        for k in 0..g.height() {
            if let Some(district) = d[k].clone() {
                r.dust.insert(
                    district,
                    (
                        n[k].unwrap_or(0) as usize,
                        m[k].unwrap_or(0.0),
                        x[k].unwrap_or(0.0),
                        dust_limit.map(|_| ov[k].unwrap_or(0)),
                    ),
                );
            }
        }
    }
    Ok(())
}

fn pct(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b * 100.0)
}

fn charts(r: &Report, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !r.daily_aqi.is_empty() {
        let series = r
            .stations
            .keys()
            .map(|s| {
                (
                    with_chinese_name(s),
                    r.dates
                        .iter()
                        .map(|d| r.daily_aqi.get(&(d.clone(), s.clone())).map(|v| v.0 as f64))
                        .collect(),
                )
            })
            .collect();
        let c = chart::LineChart {
            title: "Daily AQI per station 各站日空气质量指数",
            x_labels: r.dates.iter().map(|d| d[5..].to_owned()).collect(),
            series,
            bands: vec![
                (0.0, 50.0, [220, 247, 220]),
                (50.0, 100.0, [252, 252, 215]),
                (100.0, 150.0, [255, 236, 215]),
                (150.0, 200.0, [255, 215, 215]),
                (200.0, 300.0, [240, 215, 228]),
                (300.0, 500.0, [232, 210, 215]),
            ],
            y_max: None,
        };
        let p = out.join("daily-aqi.svg");
        std::fs::write(&p, c.render().svg())?;
        files.push(p);
        // The same days as a calendar, with the stations' Chinese names.
        let cal = chart::Calendar {
            title: "Daily AQI per station 各站日空气质量指数",
            days: r.dates.iter().map(|d| d[5..].to_owned()).collect(),
            rows: r
                .stations
                .keys()
                .map(|s| {
                    let name = with_chinese_name(s);
                    let values = r
                        .dates
                        .iter()
                        .map(|d| {
                            r.daily_aqi
                                .get(&(d.clone(), s.clone()))
                                .map(|v| u32::try_from(v.0).unwrap_or(0))
                        })
                        .collect();
                    (name, values)
                })
                .collect(),
        };
        let p = out.join("aqi-calendar.svg");
        std::fs::write(&p, cal.svg())?;
        files.push(p);
    }
    if !r.plants.is_empty() {
        let mut bars: Vec<(String, f64)> = r
            .plants
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), pct(v.1, v.0)?)))
            .collect();
        let (i, t, _) = r.city();
        if let Some(c) = pct(t, i) {
            bars.push(("全市 city".into(), c));
        }
        let c = chart::BarChart {
            title: "Sewage treatment rate 污水处理率 (%)",
            bars,
            target: Some((TREATMENT_TARGET, "target 95")),
            y_max: 100.0,
        };
        let p = out.join("treatment-rate.svg");
        std::fs::write(&p, c.render().svg())?;
        files.push(p);
    }
    Ok(files)
}

/// A station's code with its Chinese name before it, where the site
/// registry has one ("东四 dongsi").
fn with_chinese_name(code: &str) -> String {
    match crate::evaluate::sites::find(code) {
        Some(site) => format!("{} {code}", site.name_zh),
        None => code.to_owned(),
    }
}

/// Writes the report; returns the files written.
pub async fn run(o: &Options) -> anyhow::Result<Vec<PathBuf>> {
    crate::tls::install_crypto_provider();
    let r = compute(o).await?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("--out {}", o.out.display()))?;
    let mut files = charts(&r, &o.out)?;
    match o.format {
        Format::Md => {
            let p = o.out.join("report.md");
            std::fs::write(&p, markdown(o, &r, &files))?;
            files.insert(0, p);
        }
        Format::Csv => files.extend(csv(o, &r)?),
    }
    Ok(files)
}

fn markdown(o: &Options, r: &Report, charts: &[PathBuf]) -> String {
    let mut s = String::new();
    let chart = |name: &str| {
        charts
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .map(|_| format!("\n![{name}]({name})\n"))
            .unwrap_or_default()
    };
    let _ = writeln!(
        s,
        "# Beijing environmental compliance report, {} to {}\n\n\
         Generated by lantian {} from {}. Dates are local ({}), both ends included: {} days.\n\
         Targets: Beijing's 2020 government work report, section 5, and the national standards each target names (GB 3095, HJ 633, GB 18918).\n",
        o.from,
        o.to,
        env!("CARGO_PKG_VERSION"),
        match &o.source {
            Source::Archive(d) => format!("the Parquet archive {}", d.display()),
            Source::Influx { url, database } => format!("InfluxDB {url}, database {database}"),
        },
        o.tz.name(),
        r.days
    );
    md_daily_aqi(&mut s, r, &chart);
    md_city(&mut s, r);
    md_exceedance(&mut s, r);
    md_annual(&mut s, r);
    md_sewage(&mut s, r, &chart);
    md_reclaimed(&mut s, o, r);
    md_dust(&mut s, o, r);
    s
}

fn md_city(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## City-wide daily AQI and observed heavy-pollution level\n\n\
         The city-wide AQI is computed on the mean concentrations of the city's stations \
         (`aqi.city_sites`). The level is *observed*: Beijing's plan declares levels on \
         forecasts, so this is what the measured days would have called for, not a level \
         that was declared. Days count when consecutive.\n"
    );
    if r.city.is_empty() {
        let _ = writeln!(s, "No city-wide daily AQI in this range.\n");
        return;
    }
    let _ = writeln!(
        s,
        "| date | AQI | category | primary | stations | level (2016–2018 plan) | level (2023 plan, unconfirmed) |\n\
         |---|---:|---|---|---:|---|---|"
    );
    for (d, c) in &r.city {
        let _ = writeln!(
            s,
            "| {d} | {} | {} | {} | {} | {} | {} |",
            if c.aqi > 200 {
                format!("**{}**", c.aqi)
            } else {
                c.aqi.to_string()
            },
            md(&c.category.replace('_', " ")),
            md(&pollutant_names(&c.primary)),
            c.sites,
            crate::alert::derive::level_name(c.levels[0]),
            crate::alert::derive::level_name(c.levels[1]),
        );
    }
}

/// `pm25_24h,o3_8h` → `PM2.5, O₃`.
fn pollutant_names(keys: &str) -> String {
    keys.split(',')
        .filter(|k| !k.is_empty())
        .map(crate::evaluate::aqi::pollutant)
        .collect::<Vec<_>>()
        .join(", ")
}

fn md_annual(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Annual means, year to date ({} to the last date)\n\n\
         The mean of the valid daily means (µg/m³), with their number. An annual mean is \
         valid (GB 3095-2012's data rule) with at least {} valid days and at least 27 in \
         every month (25 in February); until then it is provisional (*italic*). **Bold**: \
         above the annual limit of GB 3095-2026, Grade II: {}. GB 3095-2012's: {}.\n",
        r.year_from,
        year::MIN_DAYS,
        year::ANNUAL
            .iter()
            .map(|(_, n, l26, _)| format!("{n} {l26}"))
            .collect::<Vec<_>>()
            .join(", "),
        year::ANNUAL
            .iter()
            .map(|(_, n, _, l12)| format!("{n} {l12}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (title, table) in [
        ("station", &r.annual_stations),
        ("district", &r.annual_districts),
    ] {
        let names: std::collections::BTreeSet<&String> = table.keys().map(|(n, _)| n).collect();
        if names.is_empty() {
            continue;
        }
        let _ = write!(s, "| {title} |");
        for (_, n, ..) in year::ANNUAL {
            let _ = write!(s, " {n} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in year::ANNUAL {
            s.push_str("---:|");
        }
        s.push('\n');
        for name in names {
            let _ = write!(s, "| {} |", md(name));
            for (p, (_, _, limit, _)) in year::ANNUAL.iter().enumerate() {
                match table.get(&(name.clone(), p)) {
                    None => s.push_str(" – |"),
                    Some(a) => {
                        let v = format!("{:.1} ({} d)", a.mean, a.days);
                        let v = if a.valid { v } else { format!("*{v}*") };
                        if a.mean > *limit {
                            let _ = write!(s, " **{v}** |");
                        } else {
                            let _ = write!(s, " {v} |");
                        }
                    }
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
}

fn md_daily_aqi(s: &mut String, r: &Report, chart: &dyn Fn(&str) -> String) {
    let _ = writeln!(s, "## Daily AQI per station (HJ 633)\n");
    if r.daily_aqi.is_empty() {
        let _ = writeln!(
            s,
            "No daily AQI in this range (a day needs 20 valid hours).\n"
        );
    } else {
        let _ = write!(s, "| date |");
        for st in r.stations.keys() {
            let _ = write!(s, " {} |", md(st));
        }
        let _ = write!(s, "\n|---|");
        for _ in r.stations.keys() {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
        for d in &r.dates {
            let _ = write!(s, "| {d} |");
            for st in r.stations.keys() {
                match r.daily_aqi.get(&(d.clone(), st.clone())) {
                    Some((v, _, _)) if *v > 200 => {
                        let _ = write!(s, " **{v}** |");
                    }
                    Some((v, _, _)) => {
                        let _ = write!(s, " {v} |");
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\nBold: heavily polluted or worse (> 200). –: no valid day."
        );
        s.push_str(&chart("daily-aqi.svg"));
        s.push_str(&chart("aqi-calendar.svg"));
    }
}

fn md_exceedance(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Exceedance and heavy-pollution days per station\n\n\
         | station | district | days | AQI > 100 | heavy (> 200) | severe (> 300) | highest | PM2.5 > 75 (GB 3095-2012) | PM2.5 > 60 (GB 3095-2026) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (st, dist) in &r.stations {
        let e = r.exceed.get(st).copied().unwrap_or_default();
        let p = r.pm25.get(st).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} of {} | {} of {} |",
            md(st),
            md(dist),
            e[0],
            e[1],
            e[2],
            e[3],
            e[4],
            p.1,
            p.0,
            p.2,
            p.0
        );
    }
}

fn md_sewage(s: &mut String, r: &Report, chart: &dyn Fn(&str) -> String) {
    let _ = writeln!(
        s,
        "\n## Sewage treatment rate (target {TREATMENT_TARGET} %)\n\n\
         Total sewage is the larger of the metered inflow and treated + bypassed volume; \
         volumes cover the hours the meters reported (no gap is filled).\n\n\
         | plant | days | sewage m³ | treated m³ | rate % | meets 95 % |\n|---|---:|---:|---:|---:|---|"
    );
    for (p, (i, t, _, n)) in &r.plants {
        let rate = pct(*t, *i);
        let _ = writeln!(
            s,
            "| {} | {n} | {i:.0} | {t:.0} | {} | {} |",
            md(p),
            rate.map_or("–".into(), |x| format!("{x:.2}")),
            match rate {
                Some(x) if x >= TREATMENT_TARGET => "yes",
                Some(_) => "**no**",
                None => "–",
            }
        );
    }
    let (ci, ct, _) = r.city();
    let city_rate = pct(ct, ci);
    let _ = writeln!(
        s,
        "| **city** | | {ci:.0} | {ct:.0} | {} | {} |",
        city_rate.map_or("–".into(), |x| format!("{x:.2}")),
        match city_rate {
            Some(x) if x >= TREATMENT_TARGET => "yes",
            Some(_) => "**no**",
            None => "–",
        }
    );
    s.push_str(&chart("treatment-rate.svg"));
}

/// Days in the year of `d` (365 or 366): the alert engine's pace rule and
/// the report use one year length, the calendar's.
fn year_days(d: chrono::NaiveDate) -> f64 {
    use chrono::Datelike;
    chrono::NaiveDate::from_ymd_opt(d.year(), 12, 31)
        .map_or(365.0, |last| f64::from(last.ordinal()))
}

fn md_reclaimed(s: &mut String, o: &Options, r: &Report) {
    let (_, _, cr) = r.city();
    let year = year_days(o.to);
    let pace_target = RECLAIMED_TARGET_M3 * r.days as f64 / year;
    let _ = writeln!(
        s,
        "\n## Reclaimed water (target 1.2 billion m³ a year)\n\n\
         | reclaimed in range m³ | pace target for {} days m³ | share of pace | annual volume at this pace m³ |\n|---:|---:|---:|---:|\n\
         | {cr:.0} | {pace_target:.0} | {} | {:.0} |",
        r.days,
        pct(cr, pace_target).map_or("–".into(), |x| format!("{x:.1} %")),
        cr * year / r.days.max(1) as f64
    );
}

fn md_dust(s: &mut String, o: &Options, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Construction dust per district (PM10, µg/m³)\n\n\
         | district | sites | mean of hourly means | highest hourly | hours above {} |\n|---|---:|---:|---:|---:|",
        o.dust_limit
            .map_or("the limit (--dust-limit)".into(), |l| format!("{l}"))
    );
    for (d, (n, mean, max, over)) in &r.dust {
        let _ = writeln!(
            s,
            "| {} | {n} | {mean:.1} | {max:.1} | {} |",
            md(d),
            over.map_or("–".into(), |x| x.to_string())
        );
    }
}

/// A name from the network (a topic's site, district or plant) as one CSV
/// field: quoted when it holds a separator, a quote or a line break, and
/// defused when a spreadsheet would take it for a formula (a leading `=`,
/// `+`, `-`, `@`, tab or carriage return gets a `'`).
fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A name from the network as one Markdown table cell: `|` cannot end the
/// cell, line breaks cannot end the table, HTML is text, and emphasis and
/// link characters are literal.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '*' | '_' | '[' | ']' | '`' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn csv(o: &Options, r: &Report) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut write = |name: &str, body: String| -> anyhow::Result<()> {
        let p = o.out.join(name);
        std::fs::write(&p, body)?;
        files.push(p);
        Ok(())
    };
    let mut a = String::from("date,site,district,aqi,category,primary\n");
    for ((d, st), (v, c, p)) in &r.daily_aqi {
        let dist = r.stations.get(st).map_or("", |x| x.as_str());
        let _ = writeln!(
            a,
            "{d},{},{},{v},{},{}",
            cell(st),
            cell(dist),
            cell(c),
            cell(p)
        );
    }
    write("daily_aqi.csv", a)?;
    let mut e = String::from(
        "site,district,days,aqi_over_100,aqi_over_200,aqi_over_300,aqi_max,pm25_valid_days,pm25_over_75,pm25_over_60\n",
    );
    for (st, dist) in &r.stations {
        let x = r.exceed.get(st).copied().unwrap_or_default();
        let p = r.pm25.get(st).copied().unwrap_or_default();
        let _ = writeln!(
            e,
            "{},{},{},{},{},{},{},{},{},{}",
            cell(st),
            cell(dist),
            x[0],
            x[1],
            x[2],
            x[3],
            x[4],
            p.0,
            p.1,
            p.2
        );
    }
    write("stations.csv", e)?;
    let mut c =
        String::from("date,aqi,category,primary,stations,level_beijing_2016,level_beijing_2023\n");
    for (d, x) in &r.city {
        let _ = writeln!(
            c,
            "{d},{},{},{},{},{},{}",
            x.aqi,
            cell(&x.category),
            cell(&x.primary),
            x.sites,
            crate::alert::derive::level_name(x.levels[0]),
            crate::alert::derive::level_name(x.levels[1])
        );
    }
    write("city.csv", c)?;
    let mut a = String::from(
        "scope,name,pollutant,from,mean_ug_m3,valid_days,valid,limit_gb3095_2026,limit_gb3095_2012\n",
    );
    for (scope, table) in [
        ("station", &r.annual_stations),
        ("district", &r.annual_districts),
    ] {
        for ((name, p), x) in table {
            let (field, _, l26, l12) = year::ANNUAL[*p];
            let _ = writeln!(
                a,
                "{scope},{},{field},{},{:.2},{},{},{l26},{l12}",
                cell(name),
                r.year_from,
                x.mean,
                x.days,
                x.valid
            );
        }
    }
    write("annual_means.csv", a)?;
    let mut w = String::from("plant,days,sewage_m3,treated_m3,reclaimed_m3,treatment_rate_pct\n");
    for (p, (i, t, rc, n)) in &r.plants {
        let _ = writeln!(
            w,
            "{},{n},{i:.0},{t:.0},{rc:.0},{}",
            cell(p),
            pct(*t, *i).map_or(String::new(), |x| format!("{x:.3}"))
        );
    }
    let (ci, ct, cr) = r.city();
    let _ = writeln!(
        w,
        "city,,{ci:.0},{ct:.0},{cr:.0},{}",
        pct(ct, ci).map_or(String::new(), |x| format!("{x:.3}"))
    );
    write("sewage.csv", w)?;
    let mut d = String::from("district,sites,pm10_mean,pm10_max_hourly,hours_over_limit\n");
    for (k, (n, mean, max, over)) in &r.dust {
        let _ = writeln!(
            d,
            "{},{n},{mean:.2},{max:.2},{}",
            cell(k),
            over.map_or(String::new(), |x| x.to_string())
        );
    }
    write("dust.csv", d)?;
    let year = year_days(o.to);
    let pace = RECLAIMED_TARGET_M3 * r.days as f64 / year;
    write(
        "reclaimed.csv",
        format!(
            "days,reclaimed_m3,pace_target_m3,share_of_pace_pct,annual_at_pace_m3\n{},{cr:.0},{pace:.0},{},{:.0}\n",
            r.days,
            pct(cr, pace).map_or(String::new(), |x| format!("{x:.2}")),
            cr * year / r.days.max(1) as f64
        ),
    )?;
    Ok(files)
}

#[cfg(test)]
mod escape_tests {
    use super::{cell, md};

    /// Site names come from topics, so from anyone who can publish: they
    /// cannot shift CSV columns, run as spreadsheet formulas, or break a
    /// Markdown table.
    #[test]
    fn names_from_the_network_cannot_inject_into_reports() {
        assert_eq!(cell("dongsi"), "dongsi");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1+1"), "'-1+1");
        assert_eq!(cell("pm25_24h,pm10_24h"), "\"pm25_24h,pm10_24h\"");
        assert_eq!(md("a|b"), "a\\|b");
        assert_eq!(md("<img src=x>"), "&lt;img src=x&gt;");
        assert_eq!(md("x\n| evil |"), "x \\| evil \\|");
        assert_eq!(md("[link](http://x)"), "\\[link\\](http://x)");
    }

    /// One year length everywhere: the calendar's, as the alert engine's
    /// pace rule uses.
    #[test]
    fn the_pace_uses_the_calendar_year() {
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(super::year_days(d(2026, 3, 1)), 365.0);
        assert_eq!(super::year_days(d(2028, 3, 1)), 366.0);
    }
}
