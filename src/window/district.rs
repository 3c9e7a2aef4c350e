//! Construction dust per district, live: the city report holds each level
//! of government to account for dust, so its figures are per district.
//! A district's hour is the mean of its dust sites' valid hourly PM10
//! means, computed once every one of its sites' watermark has passed the
//! hour (as the city-wide AQI waits for the city sites), written to
//! `dust_1h` with `scope=district`, and observed as `pm10.hour` labelled
//! `scope=district` for the district-wide target.

use std::collections::BTreeMap;

use super::state::{Closed, HOUR_MS};
use super::{Engine, Scope};
use crate::evaluate::Observation;
use crate::row::{Derived, Row, Rows, Value};

/// The network whose sites make the district figures, and its field.
const KIND: &str = "dust";
const FIELD: &str = "pm10";

impl Engine {
    /// The districts' hours that `closed` completes or corrects, and those
    /// waiting whose sites have all passed them now; the number of rows.
    pub(super) fn district_rows(
        &mut self,
        closed: &[Closed],
        out: &mut Rows,
        mut obs: Option<&mut Vec<Observation>>,
    ) -> u64 {
        let Some(pm10) = self.field_id(FIELD) else {
            return 0;
        };
        let hour = self.plan.spec.hour_level();
        let district_of = |k: &super::SeriesKey| {
            (k.scope == Scope::Site && k.kind == KIND)
                .then(|| k.tags.iter().find(|(t, _)| t == "district"))
                .flatten()
                .map(|(_, d)| d.clone())
        };
        for c in closed.iter().filter(|c| c.level == hour && c.field == pm10) {
            if let Some(d) = district_of(&self.series[c.series as usize]) {
                self.district_pending.insert((d, c.start_ms));
            }
        }
        if self.district_pending.is_empty() {
            return 0;
        }
        let mut sites: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (s, k) in self.series.iter().enumerate() {
            if let Some(d) = district_of(k) {
                sites.entry(d).or_default().push(s as u32);
            }
        }
        let passed = |d: &str, t: i64| {
            sites.get(d).is_some_and(|ss| {
                ss.iter()
                    .map(|&s| self.state.watermark_of(s))
                    .min()
                    .is_some_and(|wm| t + HOUR_MS <= wm)
            })
        };
        let due: Vec<(String, i64)> = self
            .district_pending
            .iter()
            .filter(|(d, t)| passed(d, *t))
            .cloned()
            .collect();
        let measurement = format!(
            "{KIND}_{}",
            self.plan.labels[hour].as_deref().unwrap_or("1h")
        );
        let mut n = 0;
        for (d, t) in due {
            self.district_pending.remove(&(d.clone(), t));
            let means: Vec<(f64, &str)> = sites[&d]
                .iter()
                .filter_map(|&s| match self.state.hour_mean(s, pm10, t) {
                    Some((m, true)) => Some((m, site_name(&self.series[s as usize]))),
                    _ => None,
                })
                .collect();
            if means.is_empty() {
                continue;
            }
            let mean = means.iter().map(|m| m.0).sum::<f64>() / means.len() as f64;
            let (top, top_site) = means
                .iter()
                .copied()
                .fold((f64::MIN, ""), |a, b| if b.0 > a.0 { b } else { a });
            let fields = vec![
                (format!("{FIELD}_mean"), Value::F(mean)),
                (format!("{FIELD}_site_max"), Value::F(top)),
                ("sites".to_owned(), Value::I(means.len() as i64)),
            ];
            let tags = [("district", d.as_str()), ("scope", "district")];
            out.push(Row::Derived(Derived::new(
                measurement.clone(),
                tags,
                fields,
                t,
            )));
            n += 1;
            if let Some(obs) = obs.as_deref_mut() {
                obs.push(Observation {
                    kind: KIND.into(),
                    labels: vec![
                        ("district".into(), d.clone()),
                        ("scope".into(), "district".into()),
                    ],
                    metric: format!("{FIELD}.hour"),
                    start_ms: t,
                    end_ms: t + HOUR_MS,
                    value: mean,
                    valid: true,
                    details: [
                        ("sites".to_owned(), means.len().to_string()),
                        ("highest_site".to_owned(), top_site.to_owned()),
                        ("highest_site_value".to_owned(), format!("{top:.1}")),
                    ]
                    .into(),
                });
            }
        }
        n
    }
}

fn site_name(k: &super::SeriesKey) -> &str {
    k.tags
        .iter()
        .find(|(t, _)| t == "site")
        .map_or("", |(_, v)| v.as_str())
}
