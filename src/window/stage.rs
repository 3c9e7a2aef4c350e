//! The window stage: takes stored points from the pipeline, flushes the
//! engine on a timer (or when `max_pending_readings` is reached) on a
//! blocking thread, and writes the window and AQI points.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Engine;
use crate::admin::Board;
use crate::alert::engine::Rule;
use crate::alert::stage::Alerting;
use crate::metrics::Metrics;
use crate::pipeline::QUARANTINE_CLOCK;
use crate::reading::Point;
use crate::sink::influx::{Lines, Writer};
use crate::spool::{self, Pos};

pub struct WindowStage {
    engine: Option<Engine>,
    /// The alert engine, run after each flush on the same thread.
    alerts: Option<Alerting>,
    /// The status page's data.
    board: Option<Arc<Board>>,
    /// New rules on a reload (SIGHUP).
    rules: Option<mpsc::Receiver<Vec<Rule>>>,
    writer: Writer,
    metrics: Arc<Metrics>,
    persist: Option<Persist>,
    /// Spool position of the newest points added.
    last_pos: Option<Pos>,
    /// When the snapshot was last saved.
    saved: Instant,
}

/// Where and how often the window state is saved (with the spool on).
pub struct Persist {
    pub path: PathBuf,
    /// Told the snapshot's position, so the spool keeps what came after.
    pub cursor: spool::Cursor,
    pub every: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl WindowStage {
    pub fn new(
        mut engine: Engine,
        alerts: Option<Alerting>,
        board: Option<Arc<Board>>,
        writer: Writer,
        metrics: Arc<Metrics>,
        persist: Option<Persist>,
    ) -> Self {
        if alerts.is_some() || board.is_some() {
            engine.collect_observations();
        }
        WindowStage {
            engine: Some(engine),
            alerts,
            board,
            rules: None,
            writer,
            metrics,
            persist,
            last_pos: None,
            saved: Instant::now(),
        }
    }

    /// Takes new alert rules from `rx` (a reload) between flushes.
    pub fn reload_rules_from(mut self, rx: mpsc::Receiver<Vec<Rule>>) -> Self {
        self.rules = Some(rx);
        self
    }

    /// Runs until the pipeline closes the channel; then flushes what was
    /// received (windows still open stay unwritten).
    pub async fn run(mut self, mut rx: mpsc::Receiver<(Vec<Point>, Option<Pos>)>) {
        let Some(engine) = &self.engine else { return };
        let (every, max_pending) = (engine.plan().flush_interval, engine.plan().max_pending);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // A receiver's outbox at its bound: wait, neither taking points
            // nor flushing (a flush could produce more notices); the
            // pipeline, the spool and at last the broker hold the rest. The
            // bound is exceeded by at most the notices of one flush.
            let mut warned = false;
            while self.alerts.as_ref().is_some_and(|a| a.outbox.full()) && !rx.is_closed() {
                if !warned {
                    warn!("alert outbox full; waiting for receivers before taking more readings");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if warned {
                info!("alert outbox has room again; taking readings");
            }
            tokio::select! {
                msg = rx.recv() => {
                    let Some((points, pos)) = msg else { break };
                    let Some(engine) = self.engine.as_mut() else { break };
                    engine.add(&points, now_ms());
                    if let Some(a) = self.alerts.as_mut() {
                        a.engine.points(&points);
                    }
                    self.last_pos = self.last_pos.max(pos);
                    if engine.pending() >= max_pending {
                        self.flush(false).await;
                    }
                }
                _ = tick.tick() => self.flush(false).await,
                Some(rules) = async {
                    match self.rules.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(a) = self.alerts.as_mut() {
                        a.engine.set_rules(rules);
                        info!(rules = a.engine.rules().len(), "alert rules reloaded");
                    }
                }
            }
        }
        self.flush(true).await;
    }

    /// Flushes; saves the snapshot when due (or `last`) — after the flush,
    /// so it holds no buffered readings.
    async fn flush(&mut self, last: bool) {
        let Some(mut engine) = self.engine.take() else {
            return;
        };
        let mut alerts = self.alerts.take();
        let snapshot = match (&self.persist, self.last_pos) {
            (Some(p), Some(pos)) if last || self.saved.elapsed() >= p.every => {
                Some((p.path.clone(), pos))
            }
            _ => None,
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut lines = Lines::default();
            let now = now_ms();
            let result = engine.flush(now, &mut lines);
            let obs = engine.take_observations();
            let mut firing = None;
            if let Some(a) = alerts.as_mut() {
                a.step(
                    &obs,
                    engine.stream_clock(now),
                    &mut lines,
                    last || snapshot.is_some(),
                );
                firing = Some(a.engine.firing());
            }
            let saved = snapshot.map(|(path, pos)| {
                let bytes = engine.snapshot(pos);
                (pos, bytes.len(), spool::write_atomically(&path, &bytes))
            });
            (engine, alerts, lines, (obs, firing), (result, saved))
        })
        .await;
        let (engine, alerts, lines, (obs, firing), (result, saved)) = match joined {
            Ok(x) => x,
            Err(e) => {
                // A panic in the window code: the stage stops, ingestion
                // goes on (the raw points are stored already).
                error!(error = %e, "window computation failed; windows stop until restart");
                return;
            }
        };
        self.engine = Some(engine);
        self.alerts = alerts;
        if let Some(b) = &self.board {
            b.observe(&obs);
            if let Some(f) = firing {
                b.set_alerts(f);
            }
        }
        match (saved, &self.persist) {
            (Some((pos, bytes, Ok(()))), Some(p)) => {
                self.saved = Instant::now();
                p.cursor.hold(pos);
                debug!(bytes, ?pos, "window snapshot saved");
            }
            (Some((_, _, Err(e))), Some(p)) => {
                self.saved = Instant::now();
                warn!(path = %p.path.display(), error = %e, "cannot save the window snapshot; windows open at a crash would restart empty");
            }
            _ => {}
        }
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "window reduction failed; this batch of readings is not aggregated");
                return;
            }
        };
        let m = &self.metrics;
        m.window_readings.fetch_add(stats.readings, Relaxed);
        m.window_corrections.fetch_add(stats.corrections, Relaxed);
        m.window_too_late.fetch_add(stats.too_late, Relaxed);
        if !lines.is_empty() {
            self.writer
                .write_all(&lines, || QUARANTINE_CLOCK.next())
                .await;
            m.windows_written.fetch_add(stats.windows, Relaxed);
            m.aqi_points.fetch_add(stats.aqi_points, Relaxed);
        }
        if stats.windows + stats.aqi_points > 0 || stats.too_late > 0 {
            debug!(
                readings = stats.readings,
                windows = stats.windows,
                corrections = stats.corrections,
                too_late = stats.too_late,
                aqi = stats.aqi_points,
                "windows flushed"
            );
        }
    }
}
