//! The window stage: takes stored points from the pipeline, flushes the
//! engine on a timer (or when `max_pending_readings` is reached) on a
//! blocking thread, writes the window and AQI points, and hands what it
//! computed downstream ([`Output`]: the alert stage and the status page).
//!
//! Downstream is a bounded channel: when the alert stage is behind (a
//! receiver's outbox at its bound), sending waits, this stage stops taking
//! points, and the pipeline, the spool and at last the broker hold the
//! rest.
//!
//! A snapshot is a checkpoint of everything downstream too: before it is
//! saved, the alert stage is asked to save its state and answers when it
//! has, so the alert state is never older than the window snapshot (what
//! the spool replays after a restart starts at the snapshot).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{debug, error};

use super::Engine;
use crate::envelope::Pos;
use crate::evaluate::Observation;
use crate::metrics::{Metrics, WindowFlush};
use crate::reading::Point;
use crate::row::Rows;
use crate::sink::Sinks;
use crate::spool;

/// What the window stage hands downstream, in the order it happened.
#[derive(Debug)]
pub enum Output {
    /// Stored points, as they arrived (deadman and flatline work on raw
    /// readings).
    Points(Vec<Point>),
    /// A flush: the values of the windows that closed.
    Flushed(Flushed),
}

#[derive(Debug)]
pub struct Flushed {
    pub observations: Vec<Observation>,
    /// The stream clock (event time) after the flush.
    pub clock: Option<i64>,
    /// Set when a window snapshot follows: save your state, then answer
    /// (with the state, when it is to be saved with the snapshot: a
    /// cluster partition's).
    pub checkpoint: Option<oneshot::Sender<Option<Vec<u8>>>>,
}

/// Where the window stage's output goes.
pub struct Downstream {
    pub tx: mpsc::Sender<Output>,
    /// Whether raw points are wanted too (the alert engine), or only the
    /// flushes (the status page).
    pub points: bool,
}

pub struct WindowStage {
    engine: Option<Engine>,
    downstream: Option<Downstream>,
    sinks: Sinks,
    metrics: Arc<Metrics>,
    persist: Option<Persist>,
    /// Spool position of the newest points added.
    last_pos: Option<Pos>,
    /// When the snapshot was last saved.
    saved: Instant,
    /// When the engine was last flushed.
    flushed: Instant,
}

/// A reading that moves its source past the end of an hour is flushed at
/// once rather than at the next `flush_interval` tick (a breach's notice
/// need not wait for it), but not more often than this: a backfill
/// crossing many hours costs a flush per 20 ms at most.
const EARLY_FLUSH_GAP: Duration = Duration::from_millis(20);

/// Where and how often the window state is saved.
pub struct Persist {
    pub to: SaveTo,
    pub every: Duration,
}

/// Where snapshots go.
pub enum SaveTo {
    /// A file (with the spool on); `cursor` is told the snapshot's
    /// position, so the spool keeps what came after.
    File {
        path: PathBuf,
        cursor: spool::Cursor,
    },
    /// Whoever keeps the checkpoints of a cluster partition (`Pos.seq`:
    /// the stream sequence the snapshot includes everything up to).
    Remote {
        /// Named in logs: where the checkpoints go.
        name: PathBuf,
        save: mpsc::Sender<Checkpoint>,
    },
}

/// A snapshot to save elsewhere, and how it went.
pub struct Checkpoint {
    pub pos: Pos,
    pub bytes: Vec<u8>,
    /// The alert stage's state at the same point (empty: none).
    pub alerts: Vec<u8>,
    pub saved: oneshot::Sender<Result<(), String>>,
}

impl SaveTo {
    fn name(&self) -> &std::path::Path {
        match self {
            SaveTo::File { path, .. } => path,
            SaveTo::Remote { name, .. } => name,
        }
    }

    async fn save(&self, pos: Pos, bytes: Vec<u8>, alerts: Vec<u8>) -> Result<(), String> {
        match self {
            SaveTo::File { path, cursor } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    crate::durable::write_atomically(&path, &bytes)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                cursor.hold(pos);
                Ok(())
            }
            SaveTo::Remote { save, .. } => {
                let (saved, answer) = oneshot::channel();
                let c = Checkpoint {
                    pos,
                    bytes,
                    alerts,
                    saved,
                };
                let sent = save.send(c).await;
                sent.map_err(|_| "the checkpoint store has stopped".to_owned())?;
                answer
                    .await
                    .map_err(|_| "the checkpoint store has stopped".to_owned())?
            }
        }
    }
}

/// The wall clock the stage closes idle sources and ticks the alert
/// clock by, guarded against steps (`crate::clock`): a clock set an hour
/// ahead must not close every source's windows or make every sensor look
/// silent.
fn now_ms() -> i64 {
    static CLOCK: std::sync::LazyLock<crate::clock::ArrivalClock> =
        std::sync::LazyLock::new(Default::default);
    CLOCK.now_ms()
}

impl WindowStage {
    pub fn new(
        mut engine: Engine,
        downstream: Option<Downstream>,
        sinks: Sinks,
        metrics: Arc<Metrics>,
        persist: Option<Persist>,
    ) -> Self {
        if downstream.is_some() {
            engine.collect_observations();
        }
        WindowStage {
            engine: Some(engine),
            downstream,
            sinks,
            metrics,
            persist,
            last_pos: None,
            saved: Instant::now(),
            flushed: Instant::now(),
        }
    }

    /// Runs until the pipeline closes the channel; then flushes what was
    /// received (windows still open stay unwritten) and saves the
    /// snapshot. Returns an error only when the engine cannot go on.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Vec<Point>, Option<Pos>)>,
    ) -> Result<(), String> {
        let Some(engine) = &self.engine else {
            return Ok(());
        };
        let (every, max_pending) = (engine.plan().flush_interval, engine.plan().max_pending);
        match tokio::task::spawn_blocking(super::reduce::warm_up).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("polars cannot start: {e}")),
            Err(e) => return Err(format!("polars cannot start: {e}")),
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some((points, pos)) = msg else { break };
                    let Some(engine) = self.engine.as_mut() else { break };
                    engine.add(&points, now_ms());
                    self.last_pos = self.last_pos.max(pos);
                    let pending = engine.pending();
                    if let Some(d) = self.downstream.as_ref().filter(|d| d.points && !points.is_empty()) {
                        // Values stored but not aggregated (a flag other
                        // than normal) do not feed deadman or flatline.
                        let mut points = points;
                        points.retain(|p| p.coverage != crate::reading::Coverage::Raw);
                        // Waits while the alert stage is behind.
                        let _ = d.tx.send(Output::Points(points)).await;
                    }
                    let hour_passed = self.engine.as_ref().is_some_and(Engine::hour_passed);
                    if pending >= max_pending
                        || (hour_passed && self.flushed.elapsed() >= EARLY_FLUSH_GAP)
                    {
                        self.flush(false).await?;
                    }
                }
                _ = tick.tick() => self.flush(false).await?,
            }
        }
        self.flush(true).await
    }

    /// Flushes; writes what closed; hands the observations downstream;
    /// saves the snapshot when due (or `last`) — after all that, so it
    /// holds no buffered readings and nothing that is not yet written.
    async fn flush(&mut self, last: bool) -> Result<(), String> {
        let Some(mut engine) = self.engine.take() else {
            return Ok(());
        };
        self.flushed = Instant::now();
        let snapshot = match (&self.persist, self.last_pos) {
            (Some(p), Some(pos)) if last || self.saved.elapsed() >= p.every => Some(pos),
            _ => None,
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut rows = Rows::default();
            let now = now_ms();
            let result = engine.flush(now, &mut rows);
            let observations = engine.take_observations();
            let clock = engine.stream_clock(now);
            let bytes = snapshot.map(|pos| (pos, engine.snapshot(pos)));
            (engine, rows, result, observations, clock, bytes)
        })
        .await;
        let (engine, rows, result, observations, clock, bytes) = match joined {
            Ok(x) => x,
            // A panic in the window code: the stage fails, and with it the
            // process (systemd restarts it; the spool replays).
            Err(e) => return Err(format!("window computation failed: {e}")),
        };
        self.engine = Some(engine);
        match result {
            Ok(stats) => self.write(&rows, stats).await,
            Err(e) => {
                error!(error = %e, "window reduction failed; this batch of readings is not aggregated")
            }
        }
        let checkpoint = match &self.downstream {
            Some(d) => {
                let (ack, done) = oneshot::channel();
                let checkpoint = bytes.is_some().then_some(ack);
                let flushed = Flushed {
                    observations,
                    clock,
                    checkpoint,
                };
                // Waits while the alert stage is behind; fails only once
                // it has stopped.
                let _ = d.tx.send(Output::Flushed(flushed)).await;
                bytes.is_some().then_some(done)
            }
            None => None,
        };
        if let Some((pos, bytes)) = bytes {
            let alerts = match checkpoint {
                // The alert state is saved first (an error there is the
                // alert stage's to report), or handed back to be saved
                // with the snapshot.
                Some(done) => done.await.ok().flatten().unwrap_or_default(),
                None => Vec::new(),
            };
            self.save_snapshot(pos, bytes, alerts).await;
        }
        Ok(())
    }

    async fn write(&self, rows: &Rows, stats: super::FlushStats) {
        self.sinks.write(rows).await;
        let written = !rows.is_empty();
        self.metrics.windows_flushed(&WindowFlush {
            readings: stats.readings,
            windows: if written { stats.windows } else { 0 },
            corrections: stats.corrections,
            too_late: stats.too_late,
            aqi_points: if written { stats.aqi_points } else { 0 },
        });
    }

    async fn save_snapshot(&mut self, pos: Pos, bytes: Vec<u8>, alerts: Vec<u8>) {
        let Some(p) = &self.persist else { return };
        let len = bytes.len() + alerts.len();
        let saved = p.to.save(pos, bytes, alerts).await;
        self.saved = Instant::now();
        match saved {
            Ok(()) => {
                self.metrics.snapshot_saved(true, p.to.name(), "");
                debug!(bytes = len, ?pos, "window snapshot saved");
            }
            Err(e) => self.metrics.snapshot_saved(false, p.to.name(), &e),
        }
    }
}
