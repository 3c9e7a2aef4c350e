//! What the report shows beyond the range's days: the city-wide daily AQI
//! with the observed heavy-pollution level, and annual (year-to-date)
//! means against GB 3095's annual limits.

use std::collections::BTreeMap;

use chrono::Datelike;

/// Pollutants with an annual limit, Grade II (µg/m³): field, name, GB
/// 3095-2026 limit, GB 3095-2012 limit (GB 3095-2012 Table 1; the 2026
/// edition's PM limits for its transition period to 2030).
pub const ANNUAL: [(&str, &str, f64, f64); 4] = [
    ("pm25", "PM2.5", 30.0, 35.0),
    ("pm10", "PM10", 60.0, 70.0),
    ("no2", "NO₂", 40.0, 40.0),
    ("so2", "SO₂", 60.0, 60.0),
];

/// An annual mean is valid with at least this many valid daily means
/// (GB 3095-2012's data-validity rule)...
pub const MIN_DAYS: usize = 324;
/// ...and at least this many in each month (25 in February).
const MIN_DAYS_MONTH: usize = 27;
const MIN_DAYS_FEBRUARY: usize = 25;

/// A year-to-date mean of valid daily means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Annual {
    pub mean: f64,
    /// Valid daily means in it.
    pub days: usize,
    /// Meets the data rule: ≥ 324 days and enough in every month.
    pub valid: bool,
}

/// The annual mean of daily means `(date, value)` (each date once).
pub fn annual(days: &BTreeMap<chrono::NaiveDate, f64>) -> Option<Annual> {
    if days.is_empty() {
        return None;
    }
    let mut per_month = [0usize; 12];
    for d in days.keys() {
        per_month[d.month0() as usize] += 1;
    }
    let months_ok = per_month.iter().enumerate().all(|(m, &n)| {
        n >= if m == 1 {
            MIN_DAYS_FEBRUARY
        } else {
            MIN_DAYS_MONTH
        }
    });
    Some(Annual {
        mean: days.values().sum::<f64>() / days.len() as f64,
        days: days.len(),
        valid: days.len() >= MIN_DAYS && months_ok,
    })
}

/// Valid daily means per station, pollutant (index into [`ANNUAL`]) and
/// date, with each station's district.
#[derive(Debug, Default)]
pub struct DailyMeans {
    pub by_site: BTreeMap<(String, usize), BTreeMap<chrono::NaiveDate, f64>>,
    pub district: BTreeMap<String, String>,
}

impl DailyMeans {
    /// Annual means per station: (station, pollutant) → mean.
    pub fn stations(&self) -> BTreeMap<(String, usize), Annual> {
        self.by_site
            .iter()
            .filter_map(|(k, days)| Some((k.clone(), annual(days)?)))
            .collect()
    }

    /// Annual means per district: each day's district mean is the mean
    /// of its stations' valid daily means that day; the annual mean is
    /// the mean of those days.
    pub fn districts(&self) -> BTreeMap<(String, usize), Annual> {
        let mut sums: BTreeMap<(String, usize), BTreeMap<chrono::NaiveDate, (f64, u32)>> =
            BTreeMap::new();
        for ((site, p), days) in &self.by_site {
            let Some(d) = self.district.get(site).filter(|d| !d.is_empty()) else {
                continue;
            };
            let entry = sums.entry((d.clone(), *p)).or_default();
            for (date, v) in days {
                let s = entry.entry(*date).or_default();
                s.0 += v;
                s.1 += 1;
            }
        }
        sums.into_iter()
            .filter_map(|(k, days)| {
                let means = days
                    .into_iter()
                    .map(|(d, (sum, n))| (d, sum / f64::from(n)))
                    .collect();
                Some((k, annual(&means)?))
            })
            .collect()
    }
}

/// One day of the city-wide AQI.
#[derive(Clone, Debug, PartialEq)]
pub struct CityDay {
    pub aqi: i64,
    pub category: String,
    pub primary: String,
    /// Stations that had data.
    pub sites: i64,
    /// The observed level by the 2016 and 2023 rule sets (0 none, 1 blue,
    /// 2 yellow, 3 orange, 4 red), from the run of consecutive days ending
    /// with this one.
    pub levels: [u32; 2],
}

/// The observed level of each day of `days` (date → city daily AQI),
/// counting consecutive days only (a day without a city AQI breaks a
/// run), by both rule sets.
pub fn levels(days: &BTreeMap<chrono::NaiveDate, i64>) -> BTreeMap<chrono::NaiveDate, [u32; 2]> {
    let mut out = BTreeMap::new();
    let mut run: Vec<u32> = Vec::new();
    let mut prev: Option<chrono::NaiveDate> = None;
    for (&d, &aqi) in days {
        if prev.and_then(|p| p.succ_opt()) != Some(d) {
            run.clear();
        }
        run.push(aqi.clamp(0, i64::from(u32::MAX)) as u32);
        prev = Some(d);
        let sets = crate::alert::derive::LEVEL_SETS;
        out.insert(
            d,
            [
                crate::alert::derive::level(sets[0], &run),
                crate::alert::derive::level(sets[1], &run),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(m: u32, d: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    /// 324 valid days with at least 27 a month (25 in February) make a
    /// valid annual mean; 323 do not, nor does a month with 26.
    #[test]
    fn an_annual_mean_needs_324_days_and_enough_in_every_month() {
        let year: Vec<chrono::NaiveDate> = (1..=365)
            .map(|o| chrono::NaiveDate::from_yo_opt(2026, o).unwrap())
            .collect();
        // Keep 27 days of each month (25 of February) and spread the rest.
        let mut kept: BTreeMap<chrono::NaiveDate, f64> = BTreeMap::new();
        for d in &year {
            let cap = if d.month() == 2 { 25 } else { 27 };
            if d.day() <= cap {
                kept.insert(*d, f64::from(d.day()));
            }
        }
        assert_eq!(kept.len(), 11 * 27 + 25); // 322
        let extra: Vec<_> = year
            .iter()
            .filter(|d| !kept.contains_key(d))
            .take(2)
            .collect();
        for d in &extra {
            kept.insert(**d, 10.0);
        }
        let a = annual(&kept).unwrap();
        assert_eq!((a.days, a.valid), (324, true));
        kept.remove(extra[1]);
        assert!(!annual(&kept).unwrap().valid, "323 days");
        kept.insert(*extra[1], 10.0);
        // A March with 26 valid days, however many the year has.
        kept.remove(&date(3, 1));
        let more: Vec<chrono::NaiveDate> = year
            .iter()
            .filter(|d| !kept.contains_key(d) && d.month() != 3)
            .take(5)
            .copied()
            .collect();
        for d in more {
            kept.insert(d, 10.0);
        }
        let a = annual(&kept).unwrap();
        assert!(a.days >= 324 && !a.valid, "{a:?}");
    }

    /// A district's day is the mean of its stations' days; its year the
    /// mean of those days, whatever each station's number of days.
    #[test]
    fn a_district_mean_is_the_mean_of_its_daily_means() {
        let mut m = DailyMeans::default();
        m.district.insert("a".into(), "dongcheng".into());
        m.district.insert("b".into(), "dongcheng".into());
        m.by_site.insert(
            ("a".into(), 0),
            [(date(1, 1), 10.0), (date(1, 2), 20.0)].into(),
        );
        m.by_site
            .insert(("b".into(), 0), [(date(1, 1), 30.0)].into());
        let d = m.districts()[&("dongcheng".to_owned(), 0)];
        // Day 1: (10 + 30) / 2 = 20; day 2: 20. The year: 20.
        assert_eq!((d.mean, d.days, d.valid), (20.0, 2, false));
        let s = m.stations();
        assert_eq!(s[&("a".to_owned(), 0)].mean, 15.0);
    }

    /// The level counts consecutive days: two heavy days with a gap
    /// between them are two blue days, not a yellow one (2016 set).
    #[test]
    fn the_observed_level_counts_consecutive_days_only() {
        let days: BTreeMap<_, _> = [(date(1, 1), 220), (date(1, 3), 230), (date(1, 4), 240)].into();
        let l = levels(&days);
        assert_eq!(l[&date(1, 1)], [1, 2]);
        assert_eq!(l[&date(1, 3)], [1, 2]);
        assert_eq!(l[&date(1, 4)], [2, 3]);
    }
}
