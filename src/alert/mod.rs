//! Alerts: the targets of `seeds/targets.toml` (plus the operator's) held
//! against what the pipeline computes, and delivered to webhooks.
//!
//! ```text
//! window flush ─► Observation  {field}.hour/.day, aqi.hour/.day, o3.day_max_8h
//! points       ─► Engine::points   deadman (last reading per sensor), flatline
//!                 derive           treatment rate (day, month to date, per plant
//!                                  and city-wide), reclaimed-water pace, sponge
//!                                  capture ratio, Beijing alert level per station
//!                 Engine::observe  rule match → instance state machine
//!                 Engine::tick     deadman, reminders
//!                      │ Notice (firing / changed / reminder / resolved)
//!                      ▼
//!                 Outbox           one durable ordered queue per receiver
//!                      │ webhook   lantian JSON or Alertmanager v4, HMAC-signed
//!                      ▼
//!                 receivers        retried with backoff + jitter until accepted
//! ```
//!
//! Time is event time throughout: `for`, reminders and deadman count on
//! the stream clock (the newest reading time, following the wall clock
//! when the stream is idle), so replayed or backfilled data is judged by
//! when it was measured, and tests drive time with timestamps.

pub mod derive;
pub mod engine;
pub mod outbox;
pub mod stage;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::evaluate::targets::{Op, Severity};

pub use crate::evaluate::observation::{DERIVED, Observation, metric_known};
pub use engine::Engine;

/// What happened to an alert instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// Began firing (after `for`).
    Firing,
    /// Still firing; its value moved to another level (alert levels).
    Changed,
    /// Still firing after `repeat`.
    Reminder,
    /// Back past the clear threshold (or the sensor returned).
    Resolved,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Changed => "changed",
            Event::Reminder => "reminder",
            Event::Resolved => "resolved",
        }
    }
}

/// An alert instance as receivers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable for the instance (rule + series): 16 hex digits.
    pub id: String,
    pub rule: String,
    pub name: String,
    pub severity: Severity,
    /// `alertname` (the rule id), `severity`, `kind` and the series labels.
    pub labels: BTreeMap<String, String>,
    pub metric: String,
    pub value: f64,
    pub op: Op,
    pub threshold: f64,
    pub unit: String,
    /// The window the value is for (epoch ms).
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// When the breach began: the first breaching window's start.
    pub starts_at_ms: i64,
    /// When it resolved (resolved notices only).
    pub ends_at_ms: Option<i64>,
    /// The target's citations.
    pub report: String,
    pub standard: String,
    /// Extra context (e.g. `level_name`, `year_to_date_m3`).
    pub details: BTreeMap<String, String>,
}

/// One notification: the unit of delivery, with an id that stays the same
/// across retries and restarts (receivers deduplicate on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event_id: String,
    pub event: Event,
    /// Stream-clock time of the event (epoch ms).
    pub at_ms: i64,
    pub alert: Alert,
}

/// RFC 3339 UTC with milliseconds, as Alertmanager writes times.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}
