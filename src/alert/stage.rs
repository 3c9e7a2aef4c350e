//! The alert stage: fed by the window stage through a bounded channel
//! (raw points for deadman and flatline, then each flush's observations),
//! it judges them, ticks the event-time clock, puts notices in the outbox
//! and writes them to InfluxDB (`alerts`), and saves its state.
//!
//! A receiver's outbox at its bound stops this stage taking more (it waits
//! for a delivery, woken by the outbox, never polling); the window stage's
//! sends then wait, and the backpressure reaches the broker. The bound is
//! exceeded by at most the notices of one flush.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::engine::Rule;
use super::outbox::Outbox;
use super::{Alert, Engine, Notice, Observation};
use crate::metrics::Metrics;
use crate::row::{Derived, Row, Rows, Value};
use crate::sink::Sinks;
use crate::window::stage::{Flushed, Output};

/// Told what was observed and what is firing after each flush (the status
/// page); `None` while alerts are off.
pub type OnUpdate = Box<dyn Fn(&[Observation], Option<Vec<Alert>>) + Send + Sync>;

pub struct AlertStage {
    /// The engine with its outbox; `None` when alerts are off (the stage
    /// then only tells `on_update`).
    alerting: Option<Alerting>,
    on_update: Option<OnUpdate>,
    /// New rules on a reload (SIGHUP).
    rules: Option<mpsc::Receiver<Vec<Rule>>>,
    sinks: Sinks,
}

impl AlertStage {
    pub fn new(alerting: Option<Alerting>, on_update: Option<OnUpdate>, sinks: Sinks) -> Self {
        AlertStage {
            alerting,
            on_update,
            rules: None,
            sinks,
        }
    }

    /// Takes new alert rules from `rx` (a reload) between flushes.
    pub fn reload_rules_from(mut self, rx: mpsc::Receiver<Vec<Rule>>) -> Self {
        self.rules = Some(rx);
        self
    }

    /// Runs until the window stage closes the channel.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Output>) -> Result<(), String> {
        loop {
            self.wait_for_room(&rx).await;
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Output::Points(points)) => {
                        if let Some(a) = self.alerting.as_mut() {
                            a.engine.points(&points);
                        }
                    }
                    Some(Output::Flushed(f)) => self.flushed(f).await?,
                    None => return Ok(()),
                },
                Some(rules) = async {
                    match self.rules.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(a) = self.alerting.as_mut() {
                        a.engine.set_rules(rules);
                        info!(rules = a.engine.rules().len(), "alert rules reloaded");
                    }
                }
            }
        }
    }

    /// A receiver's outbox at its bound: wait for a delivery before taking
    /// more (a flush could add notices). Not while shutting down: queued
    /// notices stay on disk for the next start.
    async fn wait_for_room(&self, rx: &mpsc::Receiver<Output>) {
        let Some(outbox) = self.alerting.as_ref().and_then(Alerting::outbox) else {
            return;
        };
        if !outbox.full() || rx.is_closed() {
            return;
        }
        warn!("alert outbox full; waiting for receivers before taking more readings");
        outbox.room().await;
        info!("alert outbox has room again; taking readings");
    }

    async fn flushed(&mut self, f: Flushed) -> Result<(), String> {
        let Flushed {
            observations,
            clock,
            checkpoint,
        } = f;
        let Some(mut alerting) = self.alerting.take() else {
            if let Some(tell) = &self.on_update {
                tell(&observations, None);
            }
            if let Some(done) = checkpoint {
                let _ = done.send(None);
            }
            return Ok(());
        };
        // Judging and the outbox's fsyncs block: off the runtime threads.
        let save = checkpoint.is_some();
        let (alerting, rows, observations) = tokio::task::spawn_blocking(move || {
            let mut rows = Rows::default();
            let mut observations = observations;
            let derived = alerting.step(&observations, clock, &mut rows, save);
            observations.extend(derived);
            (alerting, rows, observations)
        })
        .await
        .map_err(|e| format!("alert engine failed: {e}"))?;
        if let Some(tell) = &self.on_update {
            tell(&observations, Some(alerting.engine.firing()));
        }
        let mut alerting = alerting;
        let state = match &alerting.to {
            NoticesTo::Outbox { .. } => None,
            NoticesTo::Forward(to) => {
                // Durable (published) before the checkpoint that says they
                // were produced; a replay produces them again with the
                // same ids, which the stream drops.
                let notices = std::mem::take(&mut alerting.unsent);
                if !notices.is_empty() {
                    let (done, published) = tokio::sync::oneshot::channel();
                    if to.send(Forward { notices, done }).await.is_err() || published.await.is_err()
                    {
                        return Err("the alerts stream publisher has stopped".into());
                    }
                }
                checkpoint.is_some().then(|| alerting.engine.save())
            }
        };
        self.alerting = Some(alerting);
        self.sinks.write(&rows).await;
        if let Some(done) = checkpoint {
            let _ = done.send(state);
        }
        Ok(())
    }
}

pub struct Alerting {
    pub engine: Engine,
    /// Where notices go: the outbox, and the engine state to
    /// `<alerts.dir>/state.json`; or, in a cluster partition, handed on
    /// (the alerts stream) with the state saved in the partition's
    /// checkpoint.
    pub to: NoticesTo,
    pub metrics: Arc<Metrics>,
    /// Notices not yet in the outbox (a disk error): retried each step,
    /// and the state is not saved until they are in. Handed on: the
    /// notices of the last step, for the stage to forward.
    unsent: Vec<Notice>,
    /// Only notices of series with one of these `scope` labels go on (the
    /// cluster's city lane: the sites' own come from their partitions).
    only_scopes: Option<Vec<String>>,
}

pub enum NoticesTo {
    Outbox {
        outbox: Arc<Outbox>,
        state_path: PathBuf,
    },
    /// Each step's notices are forwarded here; answered once they are
    /// durable (published), before anything after them is checkpointed.
    Forward(mpsc::Sender<Forward>),
}

/// Notices handed on, and the answer once they are durable.
pub struct Forward {
    pub notices: Vec<Notice>,
    pub done: tokio::sync::oneshot::Sender<()>,
}

impl Alerting {
    /// Loads the saved state from `state_path` if there is one; if it
    /// cannot be used (or is missing after a crash mid-save), the previous
    /// save (`state.json.prev`), so alerts that were firing are still
    /// known and get resolved.
    pub fn new(
        mut engine: Engine,
        outbox: Arc<Outbox>,
        state_path: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Self {
        let prev = prev_path(&state_path);
        let current = match std::fs::read(&state_path) {
            Ok(b) => match engine.load(&b) {
                Ok(()) => Ok(()),
                Err(why) => {
                    // Kept aside, not overwritten by the next save: the
                    // alerts it held as firing are in it.
                    let aside = state_path.with_extension(format!(
                        "json.unusable-{}",
                        chrono::Utc::now().timestamp_millis()
                    ));
                    let kept = std::fs::rename(&state_path, &aside).is_ok();
                    error!(
                        path = %state_path.display(),
                        kept_as = %if kept { aside.display().to_string() } else { "(could not be moved)".into() },
                        %why,
                        "alert state cannot be used; trying the previous save"
                    );
                    Err(())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(()),
            Err(e) => {
                warn!(path = %state_path.display(), error = %e, "cannot read the alert state; trying the previous save");
                Err(())
            }
        };
        let restored = match current {
            Ok(()) => Some(state_path.clone()),
            Err(()) => match std::fs::read(&prev).map(|b| engine.load(&b)) {
                Ok(Ok(())) => Some(prev.clone()),
                Ok(Err(why)) => {
                    error!(path = %prev.display(), %why, "the previous alert state cannot be used either; alerts start fresh");
                    None
                }
                Err(_) => None,
            },
        };
        if let Some(from) = restored {
            let c = engine.counts();
            info!(
                firing = c.firing,
                pending = c.pending,
                from = %from.display(),
                "alert state restored"
            );
        }
        Alerting {
            engine,
            to: NoticesTo::Outbox { outbox, state_path },
            metrics,
            unsent: Vec::new(),
            only_scopes: None,
        }
    }

    /// Alerting whose notices are forwarded (a cluster partition's: its
    /// engine restored from the partition's checkpoint).
    pub fn forwarding(engine: Engine, to: mpsc::Sender<Forward>, metrics: Arc<Metrics>) -> Self {
        Alerting {
            engine,
            to: NoticesTo::Forward(to),
            metrics,
            unsent: Vec::new(),
            only_scopes: None,
        }
    }

    /// Passes on only notices whose series has one of `scopes` (its
    /// `scope` label).
    pub fn only_scopes(mut self, scopes: &[&str]) -> Self {
        self.only_scopes = Some(scopes.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// The outbox, unless notices are forwarded.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        match &self.to {
            NoticesTo::Outbox { outbox, .. } => Some(outbox),
            NoticesTo::Forward(_) => None,
        }
    }

    /// One step after a window flush. `save`: the window snapshot is being
    /// saved (the alert state must never be older than it). Returns the
    /// derived values, also written to `rows` (measurement `derived`).
    pub fn step(
        &mut self,
        obs: &[Observation],
        clock: Option<i64>,
        rows: &mut Rows,
        save: bool,
    ) -> Vec<Observation> {
        self.engine.observe(obs);
        if let Some(c) = clock {
            self.engine.tick(c);
        }
        let derived = self.engine.take_derived();
        rows.extend(derived.iter().map(derived_row));
        let mut fresh = self.engine.take_notices();
        if let Some(scopes) = &self.only_scopes {
            fresh.retain(|n| {
                n.alert
                    .labels
                    .get("scope")
                    .is_some_and(|s| scopes.contains(s))
            });
        }
        rows.extend(fresh.iter().map(notice_row));
        for n in &fresh {
            let a = &n.alert;
            info!(
                event = n.event.as_str(),
                rule = %a.rule,
                id = %a.id,
                event_id = %n.event_id,
                value = a.value,
                threshold = a.threshold,
                labels = ?a.labels,
                "alert"
            );
        }
        let (produced, fresh_count) = (!fresh.is_empty(), fresh.len());
        self.unsent.extend(fresh);
        let NoticesTo::Outbox { outbox, state_path } = &self.to else {
            let c = self.engine.counts();
            self.metrics
                .alert_instances(c.firing, c.pending, fresh_count);
            return derived;
        };
        let mut kept = Vec::new();
        for n in std::mem::take(&mut self.unsent) {
            if let Err(e) = outbox.enqueue(&n) {
                error!(error = %e, id = %n.event_id, "cannot write a notice to the outbox; retrying next flush");
                kept.push(n);
            }
        }
        self.unsent = kept;
        let c = self.engine.counts();
        self.metrics
            .alert_instances(c.firing, c.pending, fresh_count);
        // Saved with every notice (so a restart does not produce it again
        // with a new id) and with every window snapshot.
        if self.unsent.is_empty() && (save || produced) && self.engine.dirty() {
            let bytes = self.engine.save();
            // The last save stays as the previous one, for a state file
            // that turns out unusable.
            if let Err(e) = std::fs::rename(state_path, prev_path(state_path))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %state_path.display(), error = %e, "cannot keep the previous alert state");
            }
            if let Err(e) = crate::durable::write_atomically(state_path, &bytes) {
                warn!(path = %state_path.display(), error = %e, "cannot save the alert state");
            }
        }
        derived
    }
}

/// Where the previous save of the alert state is kept.
fn prev_path(state: &std::path::Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_owned();
    name.push(".prev");
    state.with_file_name(name)
}

/// One `derived` point: the series' labels and `kind` as tags, the metric
/// (e.g. `alert_level.beijing-2016`, `treatment_rate.day`) as the field,
/// at the start of its period. A value computed again (a correction, a
/// replay) overwrites its point.
fn derived_row(o: &Observation) -> Row {
    let tags = o
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("kind", o.kind.as_str())]);
    Row::Derived(Derived::new(
        "derived",
        tags,
        vec![(o.metric.clone(), Value::F(o.value))],
        o.start_ms,
    ))
}

/// One `alerts` point (for dashboard annotations): tags rule, severity,
/// event, status, kind, and district/site when the series has them.
fn notice_row(n: &Notice) -> Row {
    let a = &n.alert;
    let status = if n.event == super::Event::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let mut tags: Vec<(&str, &str)> = vec![
        ("rule", a.rule.as_str()),
        ("severity", a.severity.as_str()),
        ("event", n.event.as_str()),
        ("status", status),
    ];
    for k in ["kind", "district", "site", "scope"] {
        if let Some(v) = a.labels.get(k) {
            tags.push((k, v));
        }
    }
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!(
        "{}: {} = {} {} (threshold {} {})",
        a.name,
        a.metric,
        a.value,
        a.unit,
        a.op.as_str(),
        a.threshold
    );
    let fields = [
        ("id", Value::S(a.id.clone())),
        ("event_id", Value::S(n.event_id.clone())),
        // As a field too: "firing now" is the instances whose last notice
        // has it (InfluxQL cannot select a tag's last value).
        ("firing", Value::B(status == "firing")),
        ("value", Value::F(a.value)),
        ("threshold", Value::F(a.threshold)),
        ("name", Value::S(a.name.clone())),
        ("text", Value::S(text)),
        ("labels", Value::S(labels.join(","))),
        ("starts_at_ms", Value::I(a.starts_at_ms)),
        ("window_start_ms", Value::I(a.window_start_ms)),
    ];
    let fields = fields.map(|(k, v)| (k.to_owned(), v)).to_vec();
    Row::Derived(Derived::new("alerts", tags, fields, n.at_ms))
}
