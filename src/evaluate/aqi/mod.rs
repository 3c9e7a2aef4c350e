//! The Air Quality Index: HJ 633-2026 (default), HJ 633-2012 and US EPA
//! 2024, per HJ 633 and the EPA's 2024 technical assistance document. Pure functions, no I/O.
//!
//! Arithmetic is exact: a concentration is turned into a decimal (the
//! shortest text that round-trips the `f64`, as a person would type it),
//! and the interpolation, HJ 633's round-up and the EPA's truncation and
//! round-to-nearest are done in integers. So 35.8 µg/m³ on a 35–75 segment
//! gives exactly 51, not 52 from a floating-point 51.000000000000004.
//!
//! Which concentrations make which AQI (HJ 633, reproduced
//! against CNEMC's published hourly AQI): the hourly (real-time) AQI is
//! made of the six 1-hour values — `pm25_24h` and `pm10_24h` given the
//! 1-hour PM means, `so2_1h`, `no2_1h`, `co_1h`, `o3_1h` — and **no**
//! `o3_8h`; the daily AQI of the 24-hour means (`so2_24h`, `no2_24h`,
//! `co_24h`, PM) and the day's highest 8-hour O3 (`o3_8h`), plus, under
//! HJ 633-2012 only, the day's highest 1-hour O3 (`o3_1h`). This function
//! indexes whatever keys it is given; the composition is the caller's
//! (`window::air`, and `lantian aqi --help` says it to users).
//!
//! Rules (HJ 633):
//! - IAQI and AQI round **up** to an integer (both editions; the 2012 text
//!   on rounding was not found — implementations differ by ±1).
//! - HJ 633-2026 rounds the concentration first (half up): to an integer,
//!   CO to 0.1 mg/m³ (C-: implementations of the text), after a first
//!   rounding to 9 decimals that takes away floating-point noise in
//!   computed means. 2012 uses it exactly.
//! - SO2 1 h above 800 µg/m³ is not interpolated: the SO2 24 h IAQI is
//!   used when given; otherwise HJ 633-2026 gives 200 (unconfirmed, noted
//!   in the output) and HJ 633-2012 reports it beyond index.
//! - O3 8 h above 800 µg/m³: likewise with the O3 1 h IAQI, or 300 under
//!   HJ 633-2026 (unconfirmed, noted).
//! - Above the top breakpoint: IAQI 500 (a display cap) and the key listed
//!   in `beyond_index`.
//! - Primary pollutant(s): those with the maximum IAQI, only when AQI > 50;
//!   all of them on a tie.
//!
//! EPA (2024 revision): truncate the concentration, interpolate, round to
//! the nearest integer (halves up). 8 h O3 above 0.200 ppm uses the 1 h
//! value; 1 h O3 below 0.125 ppm defines no index. 1 h SO2 defines the
//! index only up to 200: above 304 ppb the 24 h SO2 mean's index is used
//! (it defines 201–500, from 305 ppb), and without a 24 h mean that high
//! the index is 200.

pub mod cli;
mod tables;

use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};
pub use tables::Category;
use tables::{Scale, Segments};

/// The edition of the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum Standard {
    #[default]
    #[serde(rename = "hj633-2026")]
    Hj633_2026,
    #[serde(rename = "hj633-2012")]
    Hj633_2012,
    #[serde(rename = "epa-2024")]
    Epa2024,
}

impl Standard {
    pub const ALL: [Standard; 3] = [
        Standard::Hj633_2026,
        Standard::Hj633_2012,
        Standard::Epa2024,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Standard::Hj633_2026 => "hj633-2026",
            Standard::Hj633_2012 => "hj633-2012",
            Standard::Epa2024 => "epa-2024",
        }
    }

    fn scales(self) -> &'static [&'static Scale] {
        match self {
            Standard::Hj633_2026 => &tables::HJ633_2026,
            Standard::Hj633_2012 => &tables::HJ633_2012,
            Standard::Epa2024 => &tables::EPA_2024,
        }
    }

    /// Input keys, in output order.
    pub fn keys(self) -> impl Iterator<Item = &'static str> {
        self.scales().iter().map(|s| s.key)
    }

    /// Unit of a key's input value.
    pub fn unit(self, key: &str) -> Option<&'static str> {
        self.scale(key).map(|s| s.unit)
    }

    fn scale(self, key: &str) -> Option<&'static Scale> {
        self.scales().iter().copied().find(|s| s.key == key)
    }

    fn is_epa(self) -> bool {
        self == Standard::Epa2024
    }

    /// The category an AQI value falls in.
    pub fn category(self, aqi: u32) -> Category {
        let table = if self.is_epa() {
            &tables::EPA_CATEGORIES
        } else {
            &tables::HJ_CATEGORIES
        };
        table
            .iter()
            .find(|(upper, _)| aqi <= *upper)
            .map(|(_, c)| *c)
            .unwrap_or(table[5].1)
    }
}

impl fmt::Display for Standard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Standard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Standard::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown standard {s:?}; expected hj633-2026, hj633-2012 or epa-2024")
            })
    }
}

/// A key's pollutant as people write it (`o3_8h` → "O₃ 8 h"); an unknown
/// key as it is.
pub fn pollutant(key: &str) -> &str {
    match key {
        "pm25_24h" => "PM2.5",
        "pm10_24h" => "PM10",
        "so2_1h" | "so2_24h" => "SO₂",
        "no2_1h" | "no2_24h" => "NO₂",
        "co_1h" | "co_24h" | "co_8h" => "CO",
        "o3_1h" => "O₃",
        "o3_8h" => "O₃ 8 h",
        other => other,
    }
}

/// A list of keys (`"pm25_24h,pm10_24h"`) as people write them
/// (`"PM2.5, PM10"`).
pub fn pollutants(keys: &str) -> String {
    keys.split(',')
        .filter(|k| !k.is_empty())
        .map(pollutant)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("unknown key {key:?} for {standard}; valid keys: {valid}")]
    UnknownKey {
        key: String,
        standard: Standard,
        valid: String,
    },
    #[error("{key}: {value} is negative; concentrations cannot be")]
    Negative { key: String, value: f64 },
    #[error("{key}: not a finite number")]
    NotFinite { key: String },
    #[error("{key} given twice")]
    Duplicate { key: String },
}

/// The index for one set of concentrations.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub standard: Standard,
    /// None when no pollutant could be indexed.
    pub aqi: Option<u32>,
    /// Sub-index per key, in the standard's key order.
    pub iaqi: Vec<(&'static str, u32)>,
    /// Keys with the maximum IAQI, when AQI > 50.
    pub primary: Vec<&'static str>,
    pub category: Option<Category>,
    /// Keys above their scale's top (IAQI shown capped, or left out where a
    /// substitution rule applied and could not).
    pub beyond_index: Vec<&'static str>,
    /// Keys of the standard not given.
    pub missing: Vec<&'static str>,
    /// Rules that applied, in words.
    pub notes: Vec<String>,
}

impl Evaluation {
    pub fn iaqi_of(&self, key: &str) -> Option<u32> {
        self.iaqi.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The JSON object `lantian aqi` prints.
    pub fn to_json(&self) -> Value {
        let iaqi: serde_json::Map<String, Value> = self
            .iaqi
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({
            "aqi": self.aqi,
            "iaqi": iaqi,
            "primary": self.primary,
            "category": self.category.map(|c| c.name),
            "level": self.category.map(|c| c.level),
            "color": self.category.map(|c| c.color),
            "standard": self.standard.as_str(),
            "beyond_index": self.beyond_index,
            "missing": self.missing,
            "notes": self.notes,
        })
    }
}

/// Evaluates `inputs` (key, concentration in the key's unit) under
/// `standard`.
pub fn evaluate(standard: Standard, inputs: &[(&str, f64)]) -> Result<Evaluation, Error> {
    let mut given: Vec<(&'static Scale, f64)> = Vec::with_capacity(inputs.len());
    for &(key, value) in inputs {
        let Some(scale) = standard.scale(key) else {
            return Err(Error::UnknownKey {
                key: key.to_owned(),
                standard,
                valid: standard.keys().collect::<Vec<_>>().join(" "),
            });
        };
        if !value.is_finite() {
            return Err(Error::NotFinite { key: key.into() });
        }
        if value < 0.0 {
            return Err(Error::Negative {
                key: key.into(),
                value,
            });
        }
        if given.iter().any(|(s, _)| s.key == key) {
            return Err(Error::Duplicate { key: key.into() });
        }
        given.push((scale, value));
    }
    let value_of = |key: &str| given.iter().find(|(s, _)| s.key == key).map(|g| g.1);

    let mut eval = Evaluation {
        standard,
        aqi: None,
        iaqi: Vec::new(),
        primary: Vec::new(),
        category: None,
        beyond_index: Vec::new(),
        missing: Vec::new(),
        notes: Vec::new(),
    };
    for scale in standard.scales() {
        let Some(c) = value_of(scale.key) else {
            eval.missing.push(scale.key);
            continue;
        };
        let index = match sub_index(standard, scale, c) {
            Sub::Index(i) => Some(i),
            Sub::Below => {
                eval.notes.push(format!(
                    "{}: below the lowest breakpoint, defines no index",
                    scale.key
                ));
                None
            }
            Sub::Beyond => beyond(standard, scale, &value_of, &mut eval),
        };
        if let Some(i) = index {
            eval.iaqi.push((scale.key, i));
        }
    }
    if let Some(max) = eval.iaqi.iter().map(|(_, i)| *i).max() {
        eval.aqi = Some(max);
        eval.category = Some(standard.category(max));
        if max > 50 {
            eval.primary = eval
                .iaqi
                .iter()
                .filter(|(_, i)| *i == max)
                .map(|(k, _)| *k)
                .collect();
        }
    }
    Ok(eval)
}

/// A concentration above its scale: the substitution rules, or the cap.
fn beyond(
    standard: Standard,
    scale: &'static Scale,
    value_of: &dyn Fn(&str) -> Option<f64>,
    eval: &mut Evaluation,
) -> Option<u32> {
    // (key, substitute key, HJ 633-2026 fixed index (unconfirmed))
    let rule = match (standard, scale.key) {
        (Standard::Epa2024, "o3_8h") => Some(("o3_1h", None)),
        (Standard::Epa2024, "so2_1h") => Some(("so2_24h", Some(200))),
        (Standard::Epa2024, _) => None,
        (Standard::Hj633_2026, "so2_1h") => Some(("so2_24h", Some(200))),
        (Standard::Hj633_2026, "o3_8h") => Some(("o3_1h", Some(300))),
        (Standard::Hj633_2012, "so2_1h") => Some(("so2_24h", None)),
        (Standard::Hj633_2012, "o3_8h") => Some(("o3_1h", None)),
        _ => None,
    };
    let Some((substitute, fixed)) = rule else {
        eval.beyond_index.push(scale.key);
        eval.notes.push(format!(
            "{}: above the top breakpoint (beyond index), shown as 500",
            scale.key
        ));
        return Some(500);
    };
    let top = top_of(scale);
    let sub = value_of(substitute).and_then(|c| {
        let s = standard.scale(substitute)?;
        match sub_index(standard, s, c) {
            Sub::Index(i) => Some(i),
            Sub::Beyond => Some(500),
            Sub::Below => None,
        }
    });
    if let Some(i) = sub {
        eval.notes.push(format!(
            "{}: above {top} {}, not interpolated; the {substitute} IAQI is used",
            scale.key, scale.unit
        ));
        return Some(i);
    }
    if let Some(i) = fixed {
        let basis = if standard.is_epa() {
            "per the EPA's technical assistance document"
        } else {
            "per HJ 633-2026 (unconfirmed rule)"
        };
        eval.notes.push(format!(
            "{}: above {top} {} and no {substitute} that indexes; IAQI {i} {basis}",
            scale.key, scale.unit
        ));
        return Some(i);
    }
    eval.beyond_index.push(scale.key);
    eval.notes.push(format!(
        "{}: above {top} {} (beyond index) and no usable {substitute}; left out of the AQI",
        scale.key, scale.unit
    ));
    None
}

fn top_of(scale: &Scale) -> String {
    match scale.segments {
        Segments::Continuous(c) => c[c.len() - 1].to_string(),
        Segments::Banded(b) => {
            let hi = b[b.len() - 1].1;
            let d = 10f64.powi(scale.decimals as i32);
            format!("{}", hi as f64 / d)
        }
    }
}

enum Sub {
    Index(u32),
    /// Below the first band (EPA 1 h ozone).
    Below,
    /// Above the top breakpoint.
    Beyond,
}

fn sub_index(standard: Standard, scale: &Scale, c: f64) -> Sub {
    let Some(dec) = Decimal::from_f64(c) else {
        return Sub::Beyond;
    };
    match scale.segments {
        Segments::Continuous(bp) => {
            // Rounded to nanograms first: a mean that is a half in decimal
            // may come out of a float sum a hair under it (1.1499999999999997).
            let dec = if standard == Standard::Hj633_2026 {
                dec.round(9).round(scale.decimals)
            } else {
                dec
            };
            // c ≤ bp[i+1] ⇔ mant ≤ bp[i+1]·10^scale
            let p = dec.pow();
            for i in 0..bp.len() - 1 {
                let (lo, hi) = (bp[i] as i128 * p, bp[i + 1] as i128 * p);
                if dec.mant <= hi {
                    let (ilo, ihi) = (tables::HJ_INDEX[i] as i128, tables::HJ_INDEX[i + 1] as i128);
                    let num = (ihi - ilo) * (dec.mant - lo);
                    let den = hi - lo;
                    return Sub::Index((ilo + ceil_div(num, den)) as u32);
                }
            }
            Sub::Beyond
        }
        Segments::Banded(bands) => {
            debug_assert!(standard.is_epa());
            let t = dec.truncate(scale.decimals);
            if t < i128::from(bands[0].0) {
                return Sub::Below;
            }
            for &(clo, chi, ilo, ihi) in bands {
                let (clo, chi, ilo, ihi) = (clo as i128, chi as i128, ilo as i128, ihi as i128);
                if t <= chi {
                    let num = (ihi - ilo) * (t - clo);
                    let den = chi - clo;
                    // round half up: floor(num/den + 1/2)
                    return Sub::Index((ilo + (2 * num + den) / (2 * den)) as u32);
                }
            }
            Sub::Beyond
        }
    }
}

fn ceil_div(num: i128, den: i128) -> i128 {
    (num + den - 1) / den
}

/// A non-negative decimal `mant × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Decimal {
    mant: i128,
    scale: u32,
}

impl Decimal {
    /// Most fraction digits kept (an `f64` never needs more to round-trip
    /// a value in index range).
    const MAX_SCALE: u32 = 20;

    /// The shortest decimal that round-trips `v`; None above 1e15 (beyond
    /// every scale anyway).
    fn from_f64(v: f64) -> Option<Decimal> {
        if !(0.0..1e15).contains(&v) {
            return None;
        }
        let text = format!("{v}");
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let frac = &frac[..frac.len().min(Self::MAX_SCALE as usize)];
        let mut mant: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mant = mant * 10 + i128::from(b - b'0');
        }
        Some(Decimal {
            mant,
            scale: frac.len() as u32,
        })
    }

    fn pow(self) -> i128 {
        10i128.pow(self.scale)
    }

    /// Rounded (half up) to `decimals` places.
    fn round(self, decimals: u32) -> Decimal {
        if decimals >= self.scale {
            return self;
        }
        let p = 10i128.pow(self.scale - decimals);
        let (q, r) = (self.mant / p, self.mant % p);
        Decimal {
            mant: if 2 * r >= p { q + 1 } else { q },
            scale: decimals,
        }
    }

    /// Truncated to `decimals` places, in units of `10^-decimals`.
    fn truncate(self, decimals: u32) -> i128 {
        if decimals >= self.scale {
            self.mant * 10i128.pow(decimals - self.scale)
        } else {
            self.mant / 10i128.pow(self.scale - decimals)
        }
    }
}

#[cfg(test)]
mod tests;
