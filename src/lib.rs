//! lantian (蓝天, "blue sky") ingests Beijing's environmental sensor networks
//! from MQTT into InfluxDB without losing a reading, aggregates them in
//! event-time windows, computes the AQI and holds the city to its targets.
//!
//! A reading's path, and the module of each step:
//!
//! ```text
//! source::mqtt   subscribe (persistent session); ack only once stored
//!    │ envelope::Message                     bounded channel (backpressure)
//! spool          group commit to disk, fsync, then ack; replayed after a crash
//!    │
//! pipeline       batch: decode → validate → rows → sinks; mark the spool delivered
//!    ├─ decode       topic templates → measurement + tags; JSON / SenML → readings
//!    └─ validate     quantity registry: canonical units, ranges, ppb → µg/m³
//!    │ stored points                         bounded channel
//! window         event-time windows (polars), watermark, corrections → rows
//!    └─ window::air  hourly and daily AQI per site (evaluate::aqi) → rows
//!    │ observations                          bounded channel
//! alert          targets as rules (evaluate::targets), instance state machine
//!    ├─ outbox       one durable queue per webhook receiver → webhooks
//!    └─ notices → rows; firing alerts → admin (status page)
//!
//! row            what every stage hands on: readings, derived rows, quarantine
//! sink           Sinks: stamps the rows' times (its own quarantine clock),
//!    ├─ archive      builds Parquet columns from the rows, synced first
//!    └─ influx       encodes line protocol once, HTTP writer (retry, split)
//! ```
//!
//! `app` is the composition root: it builds each stage from its config
//! section, joins them, and shuts them down in order (`app::shutdown`).
//! `admin` serves /healthz, /readyz, /metrics and the status page.
//!
//! Leaf modules, which import nothing else of the crate: `envelope` (the
//! message and how it is acknowledged), `durable` (crash-safe file
//! replacement), `units` (durations, byte sizes, secrets), `calendar`
//! (local days), `clock` (arrival times a clock step cannot poison),
//! `backoff` (retry waits), `tls`, `reading` (points and quarantine
//! reasons), `systemd`; `row` imports only `reading`. Above them: `config`
//! (typed settings, every problem reported at once), `evaluate` (pure AQI
//! and target logic), `metrics`, `telemetry`. The other commands: `demo`,
//! `report`.

pub mod admin;
pub mod alert;
pub mod app;
pub mod backoff;
pub mod calendar;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod decode;
pub mod demo;
pub mod durable;
pub mod envelope;
pub mod evaluate;
pub mod metrics;
pub mod pipeline;
pub mod reading;
pub mod report;
pub mod row;
pub mod sink;
pub mod source;
pub mod spool;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod validate;
pub mod window;
