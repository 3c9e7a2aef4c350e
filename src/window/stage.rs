//! The window stage: takes stored points from the pipeline, flushes the
//! engine on a timer (or when `max_pending_readings` is reached) on a
//! blocking thread, and writes the window and AQI points.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error};

use super::{Engine, Plan};
use crate::metrics::Metrics;
use crate::pipeline::QUARANTINE_CLOCK;
use crate::reading::Point;
use crate::sink::influx::{Lines, Writer};

pub struct WindowStage {
    engine: Option<Engine>,
    writer: Writer,
    metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl WindowStage {
    pub fn new(plan: Plan, writer: Writer, metrics: Arc<Metrics>) -> Self {
        WindowStage {
            engine: Some(Engine::new(plan)),
            writer,
            metrics,
        }
    }

    /// Runs until the pipeline closes the channel; then flushes what was
    /// received (windows still open stay unwritten).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Vec<Point>>) {
        let Some(engine) = &self.engine else { return };
        let (every, max_pending) = (engine.plan().flush_interval, engine.plan().max_pending);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(points) = msg else { break };
                    let Some(engine) = self.engine.as_mut() else { break };
                    engine.add(&points, now_ms());
                    if engine.pending() >= max_pending {
                        self.flush().await;
                    }
                }
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }

    async fn flush(&mut self) {
        let Some(mut engine) = self.engine.take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut lines = Lines::default();
            let result = engine.flush(now_ms(), &mut lines);
            (engine, lines, result)
        })
        .await;
        let (engine, lines, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // A panic in the window code: the stage stops, ingestion
                // goes on (the raw points are stored already).
                error!(error = %e, "window computation failed; windows stop until restart");
                return;
            }
        };
        self.engine = Some(engine);
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
