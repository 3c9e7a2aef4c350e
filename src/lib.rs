//! lantian (蓝天, "blue sky") ingests Beijing's environmental sensor networks
//! from MQTT into InfluxDB without losing a reading.
//!
//! The modules follow the data:
//!
//! ```text
//! source::mqtt  subscribe (persistent session), hand on, ack when stored
//!    │  bounded channel (backpressure: when full, the broker holds the rest)
//! pipeline      batch: decode → validate → encode; write; then ack
//!    ├─ decode      topic templates → measurement + tags; JSON / SenML → readings
//!    ├─ validate    quantity registry: canonical units, ranges, ppb → µg/m³
//!    └─ sink::influx  line protocol (exact escaping) + HTTP writer (retry, split)
//!    │  bounded channel: stored points, after their batch is acknowledged
//! window        event-time windows (polars), watermark, corrections → `{kind}_{size}`
//!    └─ window::air   hourly and daily AQI per site (evaluate::aqi) → `aqi`
//! ```
//!
//! Supporting modules: `config` (typed settings, every problem reported at
//! once), `reading` (points, rejects and quarantine reasons), `metrics`
//! (counters that also log), `app` (wiring and ordered shutdown), `telemetry`
//! (logging set-up).

pub mod admin;
pub mod alert;
pub mod app;
pub mod config;
pub mod decode;
pub mod demo;
pub mod evaluate;
pub mod metrics;
pub mod pipeline;
pub mod reading;
pub mod report;
pub mod sink;
pub mod source;
pub mod spool;
pub mod systemd;
pub mod telemetry;
pub mod validate;
pub mod window;
