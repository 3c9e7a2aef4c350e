//! The alert engine's place in the window stage: after each window flush
//! (on the same blocking thread) the observations are judged, the clock
//! ticks, notices go to the outbox and to InfluxDB (`alerts`), and the
//! state is saved.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tracing::{error, info, warn};

use super::outbox::Outbox;
use super::{Engine, Notice, Observation};
use crate::metrics::Metrics;
use crate::sink::influx::Lines;
use crate::sink::influx::line::{Value, encode_line};

pub struct Alerting {
    pub engine: Engine,
    pub outbox: Arc<Outbox>,
    /// Where the engine state is saved (`<alerts.dir>/state.json`).
    pub state_path: PathBuf,
    pub metrics: Arc<Metrics>,
    /// Notices not yet in the outbox (a disk error): retried each step,
    /// and the state is not saved until they are in.
    unsent: Vec<Notice>,
}

impl Alerting {
    /// Loads the saved state from `state_path` if there is one.
    pub fn new(
        mut engine: Engine,
        outbox: Arc<Outbox>,
        state_path: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Self {
        match std::fs::read(&state_path) {
            Ok(b) => match engine.load(&b) {
                Ok(()) => {
                    let c = engine.counts();
                    info!(
                        firing = c.firing,
                        pending = c.pending,
                        "alert state restored"
                    );
                }
                Err(why) => {
                    warn!(path = %state_path.display(), %why, "alert state not used; alerts start fresh")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %state_path.display(), error = %e, "cannot read the alert state; alerts start fresh")
            }
        }
        Alerting {
            engine,
            outbox,
            state_path,
            metrics,
            unsent: Vec::new(),
        }
    }

    /// One step after a window flush. `save`: the window snapshot is being
    /// saved (the alert state must never be older than it).
    pub fn step(&mut self, obs: &[Observation], clock: Option<i64>, lines: &mut Lines, save: bool) {
        self.engine.observe(obs);
        if let Some(c) = clock {
            self.engine.tick(c);
        }
        let fresh = self.engine.take_notices();
        for n in &fresh {
            encode_notice(n, lines);
        }
        self.metrics
            .alert_notices
            .fetch_add(fresh.len() as u64, Relaxed);
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
        let produced = !fresh.is_empty();
        self.unsent.extend(fresh);
        let mut kept = Vec::new();
        for n in std::mem::take(&mut self.unsent) {
            if let Err(e) = self.outbox.enqueue(&n) {
                error!(error = %e, id = %n.event_id, "cannot write a notice to the outbox; retrying next flush");
                kept.push(n);
            }
        }
        self.unsent = kept;
        let c = self.engine.counts();
        self.metrics.alerts_firing.store(c.firing as u64, Relaxed);
        self.metrics.alerts_pending.store(c.pending as u64, Relaxed);
        // Saved with every notice (so a restart does not produce it again
        // with a new id) and with every window snapshot.
        if self.unsent.is_empty() && (save || produced) && self.engine.dirty() {
            let bytes = self.engine.save();
            if let Err(e) = crate::spool::write_atomically(&self.state_path, &bytes) {
                warn!(path = %self.state_path.display(), error = %e, "cannot save the alert state");
            }
        }
    }
}

/// One `alerts` point (for dashboard annotations): tags rule, severity,
/// event, status, kind, and district/site when the series has them.
fn encode_notice(n: &Notice, lines: &mut Lines) {
    let a = &n.alert;
    let status = if n.event == super::Event::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let mut tags: Vec<(&str, &str)> = vec![
        ("rule", &a.rule),
        ("severity", a.severity.as_str()),
        ("event", n.event.as_str()),
        ("status", status),
    ];
    for k in ["kind", "district", "site", "scope"] {
        if let Some(v) = a.labels.get(k) {
            tags.push((k, v));
        }
    }
    tags.sort_unstable();
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
        ("value", Value::F(a.value)),
        ("threshold", Value::F(a.threshold)),
        ("name", Value::S(a.name.clone())),
        ("text", Value::S(text)),
        ("labels", Value::S(labels.join(","))),
        ("starts_at_ms", Value::I(a.starts_at_ms)),
        ("window_start_ms", Value::I(a.window_start_ms)),
    ];
    let start = lines.buf.len();
    if encode_line(&mut lines.buf, "alerts", &tags, &fields, n.at_ms) {
        lines.mark(start);
    }
}
