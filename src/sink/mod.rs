//! The sinks: InfluxDB (line protocol over HTTP) and the Parquet archive.

pub mod archive;
pub mod influx;

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// Quarantine timestamps: wall-clock nanoseconds, strictly increasing, so
/// two records never share a series and time (which would overwrite).
#[derive(Debug, Default)]
pub struct QuarantineClock(AtomicI64);

/// The process's quarantine clock (every writer shares it).
pub static QUARANTINE_CLOCK: QuarantineClock = QuarantineClock(AtomicI64::new(0));

impl QuarantineClock {
    pub fn next(&self) -> i64 {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let prev = self.0.fetch_max(now, Relaxed);
        if prev >= now {
            self.0.fetch_add(1, Relaxed) + 1
        } else {
            now
        }
    }
}
