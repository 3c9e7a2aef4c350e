//! The sinks: InfluxDB (line protocol over HTTP) and the Parquet archive.
//!
//! Every stage hands its rows (`row::Rows`) to one [`Sinks`] value (each
//! stage holds a clone). It stamps each row's time once, quarantine
//! records by its own clock, then encodes the rows once for each sink:
//! columns for the archive (written and synced first), line protocol for
//! InfluxDB. A call returns only once every row is stored or, refused by
//! InfluxDB, quarantined: sinks that are down push back by retrying.

pub mod archive;
pub mod influx;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use tracing::{error, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::row::{Row, Rows};
use archive::Archive;
use influx::{Lines, Writer};

/// Nanoseconds per millisecond: requests use `precision=ns`, so the
/// quarantine can order several records inside one millisecond.
const NS_PER_MS: i64 = 1_000_000;

/// Quarantine timestamps: wall-clock nanoseconds, strictly increasing, so
/// two records never share a series and time (which would overwrite).
#[derive(Debug, Default)]
pub struct QuarantineClock(AtomicI64);

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

/// InfluxDB (unless off) and the Parquet archive (when on). Clones share
/// the HTTP client, the archive and the quarantine clock.
#[derive(Clone)]
pub struct Sinks {
    influx: Option<Writer>,
    /// Minute windows, when they have their own retention policy.
    minute: Option<Writer>,
    archive: Option<Arc<Archive>>,
    clock: Arc<QuarantineClock>,
    metrics: Arc<Metrics>,
    /// Waits between archive attempts (a full disk, say).
    retry: (Duration, Duration),
}

impl Sinks {
    pub fn new(influx: Option<Writer>, archive: Option<Archive>, metrics: Arc<Metrics>) -> Sinks {
        Sinks {
            influx,
            minute: None,
            archive: archive.map(Arc::new),
            clock: Arc::default(),
            metrics,
            retry: (Duration::from_millis(100), Duration::from_secs(30)),
        }
    }

    /// Minute windows (`*_1m`) go to this writer (their own retention
    /// policy) instead of the main one.
    pub fn minute_windows_to(mut self, writer: Writer) -> Sinks {
        self.minute = Some(writer);
        self
    }

    /// The first and the longest wait between archive attempts.
    pub fn archive_retry(mut self, initial: Duration, max: Duration) -> Sinks {
        self.retry = (initial, max);
        self
    }

    /// Whether the sinks can take writes: InfluxDB answers `GET /ping` or,
    /// with InfluxDB off, the archive directory is there. Sets the sink
    /// state in the metrics.
    pub async fn probe(&self) -> bool {
        if let Some(w) = &self.influx {
            return w.probe().await;
        }
        let ok = self
            .archive
            .as_ref()
            .is_some_and(|a| std::fs::metadata(a.dir()).is_ok());
        self.metrics.sink_state(ok);
        ok
    }

    /// Stores every row: the archive first, then InfluxDB. Returns once all
    /// are stored or quarantined, with the number InfluxDB refused (and
    /// that went to quarantine instead).
    pub async fn write(&self, rows: &Rows) -> usize {
        if rows.is_empty() {
            return 0;
        }
        let rows = rows.as_slice();
        let times: Vec<i64> = rows
            .iter()
            .map(|r| match r {
                Row::Reading(p) => p.time_ms.saturating_mul(NS_PER_MS),
                Row::Derived(d) => d.time_ms.saturating_mul(NS_PER_MS),
                Row::Quarantined(q) => q.time_ns.unwrap_or_else(|| self.clock.next()),
            })
            .collect();
        if let Some(a) = &self.archive {
            let batch = a.batch(rows.iter().zip(times.iter().copied()));
            self.archive_all(a, batch).await;
        }
        let Some(influx) = &self.influx else {
            self.metrics.lines_stored(rows.len() as u64);
            self.metrics.sink_state(true);
            return 0;
        };
        let (mut lines, mut minute) = (Lines::default(), Lines::default());
        for (row, time_ns) in rows.iter().zip(times) {
            let to_minute = self.minute.is_some()
                && matches!(row, Row::Derived(d) if d.measurement.ends_with("_1m"));
            if to_minute {
                minute.push(row, time_ns);
            } else {
                lines.push(row, time_ns);
            }
        }
        let mut rejected = influx.write_all(&lines, || self.clock.next()).await;
        if let Some(w) = &self.minute
            && !minute.is_empty()
        {
            rejected += w.write_all(&minute, || self.clock.next()).await;
        }
        rejected
    }

    /// Writes the archive until it succeeds (a full disk pushes back).
    async fn archive_all(&self, archive: &Arc<Archive>, batch: archive::Batch) {
        let batch = Arc::new(batch);
        let mut backoff = Backoff::new(self.retry.0, self.retry.1);
        loop {
            let (a, b) = (archive.clone(), batch.clone());
            match tokio::task::spawn_blocking(move || a.write(&b)).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot write the Parquet archive; retrying");
                }
                Err(e) => error!(error = %e, "archive writer panicked; retrying"),
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Point, Reason};
    use crate::row::{Derived, Quarantined, Value};

    fn quarantined(detail: &str) -> Row {
        Row::Quarantined(Quarantined {
            reason: Reason::BadJson,
            detail: detail.into(),
            topic: "env/a/b/air/c".into(),
            sample: b"{\"pm25\":\n".to_vec(),
            payload_bytes: 40,
            time_ns: None,
        })
    }

    /// Each kind of row lands in the archive as columns, with the time the
    /// sinks gave it: quarantine records get distinct, increasing times
    /// from the sinks' clock.
    #[tokio::test]
    async fn rows_are_stamped_once_and_archived_as_columns() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let archive = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
        let sinks = Sinks::new(None, Some(archive), metrics);
        assert!(sinks.probe().await);
        let t0 = 1_767_542_400_000;
        let mut rows = Rows::default();
        rows.push(Row::Reading(Point {
            kind: "air".into(),
            coverage: Default::default(),
            tags: vec![("site".into(), "dongsi".into())],
            time_ms: t0,
            fields: vec![("pm25".into(), 35.0)],
        }));
        rows.push(quarantined("first"));
        rows.push(quarantined("second"));
        rows.push(Row::Derived(Derived::new(
            "aqi",
            [("site", "dongsi"), ("period", "hour")],
            vec![("aqi".into(), Value::I(51))],
            t0,
        )));
        assert_eq!(sinks.write(&rows).await, 0);

        let air = archive::read_measurement(dir.path(), "air")
            .unwrap()
            .unwrap();
        assert_eq!(air.height(), 1);
        assert_eq!(
            air.column("pm25").unwrap().f64().unwrap().get(0),
            Some(35.0)
        );
        let aqi = archive::read_measurement(dir.path(), "aqi")
            .unwrap()
            .unwrap();
        assert_eq!(
            aqi.column("period").unwrap().str().unwrap().get(0),
            Some("hour")
        );

        let q = archive::read_measurement(dir.path(), "quarantine")
            .unwrap()
            .unwrap();
        // In the order written (the archive keeps milliseconds, so two
        // records may share one there; InfluxDB gets nanoseconds).
        let detail = q.column("detail").unwrap().str().unwrap();
        assert_eq!(
            (detail.get(0), detail.get(1)),
            (Some("first"), Some("second"))
        );
        assert_eq!(
            q.column("payload").unwrap().str().unwrap().get(0),
            Some("{\"pm25\":\n")
        );
        assert_eq!(
            q.column("reason").unwrap().str().unwrap().get(0),
            Some("bad_json")
        );
        let times = q
            .column("time")
            .unwrap()
            .cast(&polars::prelude::DataType::Int64)
            .unwrap();
        let times = times.i64().unwrap();
        assert!(times.get(0) <= times.get(1), "{times:?}");
    }

    /// Every stage holds a clone; they share one clock, so quarantine
    /// records from different stages never share a nanosecond.
    #[test]
    fn clones_share_the_quarantine_clock() {
        let sinks = Sinks::new(None, None, Arc::new(Metrics::default()));
        let other = sinks.clone();
        let mut last = 0;
        for i in 0..1000 {
            let t = if i % 2 == 0 { &sinks } else { &other }.clock.next();
            assert!(t > last, "{t} after {last}");
            last = t;
        }
    }
}
