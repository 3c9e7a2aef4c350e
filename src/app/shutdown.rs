//! The shutdown manager, in the manner of InfluxDB 3's `influxdb3_shutdown`:
//! every task registers with a [`TaskTracker`] of its phase, and shutdown
//! runs the phases in a declared order.
//!
//! ```text
//! intake    cancelled by a signal or by a stage that fails: the source stops
//!           taking messages; the data path (spool, pipeline, windows,
//!           alerts) then drains by itself, each stage ending when its input
//!           channel closes
//! delivery  webhook delivery, stopped once the data path has drained
//!           (queued notices stay on disk)
//! service   admin endpoint, readiness, watchdog, stats, reload: stopped last,
//!           so /metrics and /readyz answer until the end
//! ```
//!
//! A task that returns an error (or panics) is a failed stage: it is
//! logged, the shutdown starts, and [`Shutdown::finish`] returns the error,
//! so the process exits non-zero and systemd's `Restart=on-failure`
//! restarts it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// When a task is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The data path: ends by itself once intake stops.
    Data,
    /// Webhook delivery: cancelled after the data path has drained.
    Delivery,
    /// Admin and housekeeping: cancelled last.
    Service,
}

/// Cheap to clone: clones share the phases.
#[derive(Clone)]
pub struct Shutdown {
    /// Cancelled on a signal or a failure: the source stops taking messages.
    intake: CancellationToken,
    data: TaskTracker,
    delivery: (CancellationToken, TaskTracker),
    service: (CancellationToken, TaskTracker),
    /// The first stage that failed, and why.
    failure: Arc<Mutex<Option<String>>>,
}

impl Shutdown {
    /// `intake`: the token a signal cancels.
    pub fn new(intake: CancellationToken) -> Self {
        Shutdown {
            intake,
            data: TaskTracker::new(),
            delivery: (CancellationToken::new(), TaskTracker::new()),
            service: (CancellationToken::new(), TaskTracker::new()),
            failure: Arc::default(),
        }
    }

    /// The token that stops tasks of `phase` (for data-path tasks: the
    /// intake token, which only the source needs).
    pub fn token(&self, phase: Phase) -> CancellationToken {
        match phase {
            Phase::Data => self.intake.clone(),
            Phase::Delivery => self.delivery.0.clone(),
            Phase::Service => self.service.0.clone(),
        }
    }

    fn tracker(&self, phase: Phase) -> &TaskTracker {
        match phase {
            Phase::Data => &self.data,
            Phase::Delivery => &self.delivery.1,
            Phase::Service => &self.service.1,
        }
    }

    /// Runs `task` as the stage `name`; an error fails the process.
    pub fn spawn<F>(&self, phase: Phase, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let fail = self.failer();
        let inner = tokio::spawn(task);
        self.tracker(phase).spawn(async move {
            match inner.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => fail(name, why),
                Err(e) => fail(name, format!("task ended abnormally: {e}")),
            }
        });
    }

    /// Tracks a task spawned elsewhere (its end is not a failure).
    pub fn track(&self, phase: Phase, handle: tokio::task::JoinHandle<()>) {
        self.tracker(phase).spawn(async move {
            let _ = handle.await;
        });
    }

    /// Runs blocking `work` on a thread of its own named `name`.
    pub fn spawn_thread<W>(&self, phase: Phase, name: &'static str, work: W) -> std::io::Result<()>
    where
        W: FnOnce() -> Result<(), String> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = tx.send(work());
            })?;
        self.spawn(phase, name, async move {
            rx.await
                .unwrap_or_else(|_| Err("thread panicked".to_owned()))
        });
        Ok(())
    }

    /// A callback that records a failure and starts the shutdown.
    fn failer(&self) -> impl Fn(&'static str, String) + Send + 'static {
        let (failure, intake) = (self.failure.clone(), self.intake.clone());
        move |name, why| {
            error!(stage = name, error = %why, "stage failed; shutting down");
            let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| format!("{name}: {why}"));
            intake.cancel();
        }
    }

    /// Waits for a signal or a failure, then stops the phases in order. The
    /// data path gets `deadline` to drain; `on_deadline` is called if it
    /// does not. Returns the first failure.
    pub async fn finish(
        self,
        deadline: Duration,
        on_deadline: impl FnOnce(),
    ) -> Result<(), String> {
        self.intake.cancelled().await;
        self.data.close();
        if tokio::time::timeout(deadline, self.data.wait())
            .await
            .is_err()
        {
            on_deadline();
        }
        for (token, tracker) in [&self.delivery, &self.service] {
            token.cancel();
            tracker.close();
            if tokio::time::timeout(deadline, tracker.wait())
                .await
                .is_err()
            {
                warn!("shutdown: tasks still running after the deadline; leaving them");
            }
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}
