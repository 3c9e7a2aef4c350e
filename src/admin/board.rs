//! What the status page shows, kept current by the window stage: the
//! newest hourly AQI per station and the alerts firing now.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::{Value, json};

use crate::alert::{Alert, Observation, rfc3339};
use crate::evaluate::aqi::Standard;
use crate::metrics::Metrics;

#[derive(Clone, Debug, PartialEq)]
pub struct Station {
    pub district: String,
    pub site: String,
    pub aqi: u32,
    pub category: String,
    pub label: String,
    pub color: String,
    pub primary: String,
    /// Start of the hour the AQI is for.
    pub hour_ms: i64,
    /// The hourly AQI of the 24 hours up to `hour_ms`, by hour start.
    pub recent: BTreeMap<i64, u32>,
}

const HOUR_MS: i64 = 3_600_000;

/// A station whose newest hour ended longer ago than this is stale: it
/// is shown grey, not in its last category's colour.
pub const STALE_AFTER_MS: i64 = 3 * 3_600_000;

impl Station {
    /// Whether nothing newer than its hour came for [`STALE_AFTER_MS`]
    /// after the hour ended.
    pub fn stale(&self, now_ms: i64) -> bool {
        self.hour_ms + 3_600_000 + STALE_AFTER_MS < now_ms
    }
}

pub struct Board {
    standard: Standard,
    /// Times on the page are local to this zone (`windows.timezone`).
    tz: chrono_tz::Tz,
    started_ms: i64,
    stations: Mutex<BTreeMap<(String, String), Option<Station>>>,
    /// The city-wide hourly AQI (observations labelled `scope=city`).
    city: Mutex<Option<Station>>,
    /// The city's observed heavy-pollution level per rule set: (start of
    /// the day it is for, level 0–4), newest day.
    city_levels: Mutex<BTreeMap<String, (i64, u32)>>,
    /// Firing now, by who reported them (a cluster worker's partitions
    /// each report their own; a single process is one).
    alerts: Mutex<std::collections::BTreeMap<u32, Vec<Alert>>>,
}

fn label<'a>(labels: &'a [(String, String)], k: &str) -> &'a str {
    labels
        .iter()
        .find(|(a, _)| a == k)
        .map_or("", |(_, v)| v.as_str())
}

impl Board {
    pub fn new(standard: Standard, tz: chrono_tz::Tz) -> Self {
        Board {
            standard,
            tz,
            started_ms: chrono::Utc::now().timestamp_millis(),
            stations: Mutex::new(BTreeMap::new()),
            city: Mutex::new(None),
            city_levels: Mutex::new(BTreeMap::new()),
            alerts: Mutex::new(Default::default()),
        }
    }

    /// Takes the hourly AQI values of a flush (newer hours replace older),
    /// and the city's observed alert levels.
    pub fn observe(&self, obs: &[Observation]) {
        {
            let mut levels = self.city_levels.lock().expect("board lock");
            for o in obs.iter().filter(|o| label(&o.labels, "scope") == "city") {
                let Some(set) = o.metric.strip_prefix("alert_level.") else {
                    continue;
                };
                let newest = levels.get(set).is_none_or(|(day, _)| *day <= o.start_ms);
                if newest {
                    levels.insert(set.to_owned(), (o.start_ms, o.value as u32));
                }
            }
        }
        let mut st = self.stations.lock().expect("board lock");
        let mut city = self.city.lock().expect("board lock");
        for o in obs.iter().filter(|o| o.metric == "aqi.hour" && o.valid) {
            let key = (
                label(&o.labels, "district").to_owned(),
                label(&o.labels, "site").to_owned(),
            );
            let aqi = o.value as u32;
            let c = self.standard.category(aqi);
            let station = Station {
                district: key.0.clone(),
                site: key.1.clone(),
                aqi,
                category: c.name.into(),
                label: c.label.into(),
                color: c.color.into(),
                primary: o.details.get("primary").cloned().unwrap_or_default(),
                hour_ms: o.start_ms,
                recent: BTreeMap::new(),
            };
            let slot = if label(&o.labels, "scope") == "city" {
                &mut *city
            } else {
                st.entry(key).or_insert(None)
            };
            // The newest hour is shown; every hour of the 24 up to it goes
            // into the strip (a correction replaces its hour).
            let (mut shown, mut recent) = match slot.take() {
                Some(mut old) => {
                    let recent = std::mem::take(&mut old.recent);
                    (
                        if old.hour_ms > o.start_ms {
                            old
                        } else {
                            station
                        },
                        recent,
                    )
                }
                None => (station, BTreeMap::new()),
            };
            recent.insert(o.start_ms, aqi);
            let newest = shown.hour_ms;
            recent.retain(|h, _| *h > newest - 24 * HOUR_MS && *h <= newest);
            shown.recent = recent;
            *slot = Some(shown);
        }
    }

    /// The newest city-wide hourly AQI, if there is one.
    pub fn city(&self) -> Option<Station> {
        self.city.lock().expect("board lock").clone()
    }

    /// The city's observed heavy-pollution level per rule set: (rule set,
    /// start of the day, level 0 none … 4 red).
    pub fn city_levels(&self) -> Vec<(String, i64, u32)> {
        self.city_levels
            .lock()
            .expect("board lock")
            .iter()
            .map(|(set, (day, level))| (set.clone(), *day, *level))
            .collect()
    }

    pub fn set_alerts(&self, firing: Vec<Alert>) {
        self.set_alerts_of(u32::MAX, firing);
    }

    /// What is firing now in cluster partition `p`.
    pub fn set_alerts_of(&self, p: u32, firing: Vec<Alert>) {
        self.alerts.lock().expect("board lock").insert(p, firing);
    }

    pub fn stations(&self) -> Vec<Station> {
        self.stations
            .lock()
            .expect("board lock")
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn alerts(&self) -> Vec<Alert> {
        let mut a: Vec<Alert> = self
            .alerts
            .lock()
            .expect("board lock")
            .values()
            .flatten()
            .cloned()
            .collect();
        a.sort_by(|x, y| {
            y.severity
                .cmp(&x.severity)
                .then(x.starts_at_ms.cmp(&y.starts_at_ms))
        });
        a
    }

    pub fn standard(&self) -> Standard {
        self.standard
    }

    /// `ms` as local time, e.g. "2026-01-05 14:00".
    pub fn local(&self, ms: i64) -> String {
        use chrono::TimeZone;
        self.tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    }

    pub fn tz_name(&self) -> &str {
        self.tz.name()
    }

    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// The page's data now.
    pub fn to_json(&self, m: &Metrics, not_ready: &[&str]) -> Value {
        self.to_json_at(m, not_ready, chrono::Utc::now().timestamp_millis())
    }

    /// The page's data at `now_ms` (which stations are stale).
    pub fn to_json_at(&self, m: &Metrics, not_ready: &[&str], now_ms: i64) -> Value {
        let stations: Vec<Value> = self
            .stations()
            .iter()
            .map(|s| {
                json!({
                    "district": s.district, "site": s.site, "aqi": s.aqi,
                    "name_zh": crate::evaluate::sites::find(&s.site).map(|r| r.name_zh.as_str()),
                    "category": s.category, "label": s.label, "color": s.color,
                    "primary": s.primary, "hour": rfc3339(s.hour_ms),
                    "stale": s.stale(now_ms),
                    "last_24h": s.recent.iter()
                        .map(|(h, aqi)| json!({ "hour": rfc3339(*h), "aqi": aqi }))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let alerts: Vec<Value> = self
            .alerts()
            .iter()
            .map(|a| {
                json!({
                    "id": a.id, "rule": a.rule, "name": a.name,
                    "severity": a.severity.as_str(), "labels": a.labels,
                    "value": a.value, "threshold": a.threshold, "unit": a.unit,
                    "starts_at": rfc3339(a.starts_at_ms),
                })
            })
            .collect();
        let city = self.city().map(|s| {
            json!({
                "aqi": s.aqi, "category": s.category, "label": s.label, "color": s.color,
                "primary": s.primary, "hour": rfc3339(s.hour_ms), "stale": s.stale(now_ms),
            })
        });
        let newest: serde_json::Map<String, Value> = m
            .newest_readings()
            .into_iter()
            .map(|(kind, ms)| (kind, Value::String(rfc3339(ms))))
            .collect();
        let levels: Vec<Value> = self
            .city_levels()
            .into_iter()
            .map(|(set, day, level)| {
                json!({
                    "rule_set": set, "day": rfc3339(day), "level": level,
                    "name": crate::alert::derive::level_name(level),
                })
            })
            .collect();
        json!({
            "standard": self.standard.as_str(),
            "city": city,
            "city_observed_level": levels,
            "ready": not_ready.is_empty(),
            "not_ready": not_ready,
            "stations": stations,
            "alerts": alerts,
            "pipeline": {
                "messages_in": m.messages_in.load(Relaxed),
                "messages_acked": m.messages_acked.load(Relaxed),
                "points_written": m.points_written.load(Relaxed),
                "quarantined": m.quarantined_total(),
                "spool_bytes": m.spool_bytes.load(Relaxed),
                "spool_oldest_age_seconds": m.spool_oldest_age_seconds(now_ms),
                "mqtt_connected": m.mqtt_connected.load(Relaxed),
                "alerts_queued": m.alerts_queued.load(Relaxed),
                "newest_reading": newest,
            },
        })
    }
}
