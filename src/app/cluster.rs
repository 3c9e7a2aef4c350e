//! The cluster roles' composition (`[cluster]`): the edge (MQTT and HJ 212
//! into JetStream) and the worker (its partitions' lanes, under leases).
//!
//! ```text
//! edge:   source ─► forwarder ─► JetStream LT_IN (ack MQTT after JetStream's)
//! worker: leases ─► partition p: checkpoint ─► ordered consumer ─► lane p
//!         lane p: pipeline ─► sinks;  window engine p ─► sinks, alert stage
//!                 checkpoint (windows + stream sequence) ─► KV lt_state (CAS)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Hooks, Phase, Shutdown};
use crate::admin::Board;
use crate::alert::engine::Rule;
use crate::alert::stage::{AlertStage, Alerting, Forward, OnUpdate};
use crate::cluster::state::Saved;
use crate::cluster::worker::{Lane, Lanes};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::sink::Sinks;
use crate::source::mqtt::{Acker, MqttSource};
use crate::window::stage::{Checkpoint, Downstream, Persist, SaveTo, WindowStage};
use crate::window::{Engine, Plan};

/// A cluster process: the edge takes MQTT (and HJ 212, when listening)
/// into JetStream; the worker works its partitions' lanes under leases.
pub(super) async fn build_cluster(
    s: &Settings,
    (source, acker): (MqttSource, Acker),
    worker: Option<Worker>,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
    hj212_bound: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let c = &s.cluster;
    let me = crate::cluster::instance(c);
    let (js, stream) = crate::cluster::connect(c, &me).await?;
    info!(instance = %me, nats = %c.nats.join(","), edge = c.edge, worker = c.worker, "cluster mode");
    let intake = tasks.token(Phase::Data);
    if c.edge {
        let edge_tx = start_edge(s, source, acker, js.clone(), metrics, tasks)?;
        super::build_hj212_listener(s, &edge_tx, metrics, tasks, hj212_bound).await?;
    }
    if let Some(Worker {
        mut lanes,
        forwarded,
        outbox,
    }) = worker
    {
        let buckets = crate::cluster::lease::buckets(&js, c.lease_ttl.get(), c.replicas).await;
        if forwarded.is_some() || outbox.is_some() {
            let stream = crate::cluster::notify::stream(&js, c).await;
            if let Some(rx) = forwarded {
                let js = js.clone();
                tasks.spawn(Phase::Data, "alerts-publisher", async move {
                    crate::cluster::notify::publisher(js, rx).await;
                    Ok(())
                });
            }
            if let Some(outbox) = outbox {
                let notifier = crate::cluster::notify::Notifier {
                    stream,
                    leases: buckets.0.clone(),
                    me: me.clone(),
                    ttl: c.lease_ttl.get(),
                    outbox,
                };
                let stop = tasks.token(Phase::Data);
                tasks.spawn(Phase::Data, "notifier", async move {
                    notifier.run(stop).await;
                    Ok(())
                });
            }
        }
        let checkpoints = crate::cluster::state::Checkpoints::open(&js, c.replicas).await;
        // The city unit (after the partitions), when there are windows.
        let mut units = c.partitions;
        let scope = match lanes.city_plan.is_some() {
            true => {
                lanes.scope = Some(js.clone());
                units += 1;
                let unit = crate::cluster::scope::city_unit(c.partitions);
                Some((unit, crate::cluster::scope::stream(&js, c).await))
            }
            false => None,
        };
        let (mut leases, owned) =
            crate::cluster::lease::Leases::new(buckets, me, units, c.lease_ttl.get());
        let (working_tx, working) = tokio::sync::watch::channel(Default::default());
        leases.follow(working);
        let worker = crate::cluster::worker::Source {
            stream,
            scope,
            checkpoints,
            lanes: Arc::new(lanes),
            metrics: metrics.clone(),
        };
        // The worker's intake is JetStream: "subscribed" once it consumes.
        metrics
            .mqtt_subscribed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !c.edge {
            metrics.set_jetstream_intake();
        }
        let stop = intake.clone();
        tasks.spawn(Phase::Data, "cluster-worker", async move {
            worker.run(owned, working_tx, stop).await;
            Ok(())
        });
        tasks.spawn(Phase::Data, "cluster-leases", async move {
            leases.run(intake).await;
            Ok(())
        });
    }
    Ok(())
}

/// The edge's tasks: the MQTT source into the forwarder. Returns the
/// forwarder's input (for the HJ 212 listener).
fn start_edge(
    s: &Settings,
    source: MqttSource,
    acker: Acker,
    js: async_nats::jetstream::Context,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
) -> anyhow::Result<mpsc::Sender<crate::envelope::Message>> {
    let edge = crate::cluster::edge::Edge {
        js,
        decoder: super::decoder(s)?,
        acker,
        partitions: s.cluster.partitions,
        metrics: metrics.clone(),
    };
    let (edge_tx, edge_rx) = mpsc::channel(s.pipeline.channel_capacity);
    let forwarded = CancellationToken::new();
    let done = forwarded.clone();
    tasks.spawn(Phase::Data, "cluster-edge", async move {
        edge.run(edge_rx).await;
        done.cancel();
        Ok(())
    });
    let intake = tasks.token(Phase::Data);
    let tx = edge_tx.clone();
    tasks.spawn(Phase::Data, "source", async move {
        source.run(tx, intake, forwarded).await;
        Ok(())
    });
    Ok(edge_tx)
}

/// An edge-only process: MQTT → JetStream, with the admin endpoint; no
/// sinks, windows or alerts (the workers have them).
pub(super) async fn run_edge(
    settings: Settings,
    stop: CancellationToken,
    hooks: Hooks,
) -> anyhow::Result<Arc<Metrics>> {
    let s = &settings;
    let metrics = Arc::new(Metrics::default());
    let tasks = Shutdown::new(stop);
    let board = Arc::new(Board::new(s.aqi.standard, super::timezone(s)));
    super::build_admin(s, &metrics, &board, &tasks, hooks.admin_bound).await?;
    let source = super::mqtt_source(s, &metrics)?;
    // JetStream is where readings go: writable once connected.
    metrics.sink_state(true);
    build_cluster(s, source, None, &metrics, &tasks, hooks.hj212_bound).await?;
    let finished = tasks
        .finish(s.pipeline.shutdown_timeout.get(), || {
            warn!("shutdown deadline passed; unacknowledged MQTT messages will be redelivered");
        })
        .await;
    metrics.log_summary("lantian edge stopped");
    finished
        .map(|()| metrics)
        .map_err(|why| anyhow::anyhow!("a stage failed: {why}"))
}

/// A worker's parts: its lanes, the notices they forward (to be published
/// to the alerts stream), and the outbox the notifier fills.
pub(super) struct Worker {
    pub lanes: PartitionLanes,
    pub forwarded: Option<mpsc::Receiver<Forward>>,
    pub outbox: Option<Arc<crate::alert::outbox::Outbox>>,
}

/// What a worker's partition lanes are made of: each its own pipeline
/// (decode, validate, write), window engine and alert engine, sharing
/// the sinks, the status page and the alerts stream's publisher.
pub(super) struct PartitionLanes {
    pub settings: Settings,
    pub sinks: Sinks,
    pub acker: Acker,
    pub metrics: Arc<Metrics>,
    /// The status page, when the admin endpoint is on.
    pub board: Option<Arc<Board>>,
    /// The windows of a partition: without the city-wide AQI and the
    /// districts' dust, which need every city site and every dust site of
    /// a district (partitions hold some).
    pub plan: Option<Plan>,
    /// The city lane's windows (the city-wide AQI and the districts' dust
    /// on).
    pub city_plan: Option<Plan>,
    /// Where partitions publish what feeds the city scope (set once
    /// connected).
    pub scope: Option<async_nats::jetstream::Context>,
    /// The alert rules, when alerts are on (a reload replaces them: every
    /// running lane's engine takes the new ones), and where notices go.
    pub alerts: Option<(RuleSet, mpsc::Sender<Forward>)>,
}

/// The worker's alert rules, which every lane follows.
pub type RuleSet = Arc<watch::Sender<Vec<Rule>>>;

impl PartitionLanes {
    pub fn new(
        s: &Settings,
        sinks: &Sinks,
        acker: Acker,
        metrics: &Arc<Metrics>,
        board: &Arc<Board>,
    ) -> anyhow::Result<(PartitionLanes, Option<mpsc::Receiver<Forward>>)> {
        let city_plan = if s.windows.enabled {
            Some(Plan::new(&s.windows, &s.aqi).map_err(|e| anyhow::anyhow!("windows: {e:?}"))?)
        } else {
            None
        };
        let plan = city_plan.clone().map(|mut plan| {
            plan.city_sites.clear();
            plan.districts = false;
            plan
        });
        super::decoder(s)?;
        let (alerts, forwarded) = if s.alerts.enabled && s.windows.enabled {
            let targets = s
                .targets()
                .map_err(|e| anyhow::anyhow!("alerts.targets: {e:?}"))?;
            let rules = Rule::from_targets(&targets, s.alerts.repeat_interval.get());
            let (tx, rx) = mpsc::channel(16);
            (Some((Arc::new(watch::channel(rules).0), tx)), Some(rx))
        } else {
            (None, None)
        };
        let lanes = PartitionLanes {
            settings: s.clone(),
            sinks: sinks.clone(),
            acker,
            metrics: metrics.clone(),
            board: s.admin.enabled.then(|| board.clone()),
            plan,
            city_plan,
            scope: None,
            alerts,
        };
        Ok((lanes, forwarded))
    }

    /// Where a reload's rules go (alerts on): to every lane running and
    /// every lane started after.
    pub fn rules(&self) -> Option<RuleSet> {
        self.alerts.as_ref().map(|(rules, _)| rules.clone())
    }

    fn engine(&self, plan: &Plan, p: u32, windows: &[u8]) -> Engine {
        if windows.is_empty() {
            return Engine::new(plan.clone());
        }
        match Engine::restore(plan.clone(), windows) {
            Ok((engine, _)) => engine,
            Err(why) => {
                warn!(partition = p, %why, "the checkpoint's windows are not used; they start empty");
                Engine::new(plan.clone())
            }
        }
    }

    /// The partition's alert stage (when alerts are on, or the status page
    /// wants the observations), its alert engine restored from `saved`:
    /// its input, and its task. The city lane's (`city`) derives the
    /// city-wide values and notifies only those and the districts'.
    fn alert_stage(
        &self,
        p: u32,
        saved: &[u8],
        city: bool,
    ) -> Option<(Downstream, JoinHandle<()>)> {
        if self.alerts.is_none() && self.board.is_none() {
            return None;
        }
        let alerting = self.alerts.as_ref().map(|(rules, forward)| {
            let calendar = crate::calendar::Calendar {
                tz: super::timezone(&self.settings),
            };
            let mut engine = crate::alert::Engine::new(rules.borrow().clone(), calendar);
            if !city {
                engine = engine.without_city();
            }
            if !saved.is_empty()
                && let Err(why) = engine.load(saved)
            {
                warn!(partition = p, %why, "the checkpoint's alert state is not used; alerts start fresh");
            }
            let alerting = Alerting::forwarding(engine, forward.clone(), self.metrics.clone());
            match city {
                true => alerting.only_scopes(&["city", "district"]),
                false => alerting,
            }
        });
        let points = alerting.is_some();
        let on_update = self.board.clone().map(|board| -> OnUpdate {
            Box::new(move |obs, firing| {
                board.observe(obs);
                if let Some(f) = firing {
                    board.set_alerts_of(p, f);
                }
            })
        });
        let mut stage = AlertStage::new(alerting, on_update, self.sinks.clone());
        if let Some((rules, _)) = &self.alerts {
            stage = stage.reload_rules_from(follow(rules.subscribe()));
        }
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(async move {
            if let Err(e) = stage.run(rx).await {
                error!(partition = p, error = %e, "the partition's alerts stopped");
            }
        });
        Some((Downstream { tx, points }, task))
    }
}

/// A lane's feed of reloaded rules: each new set from `rules`, until the
/// lane's alert stage is gone.
fn follow(mut rules: watch::Receiver<Vec<Rule>>) -> mpsc::Receiver<Vec<Rule>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = rules.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = rules.borrow_and_update().clone();
                    if tx.send(new).await.is_err() {
                        break;
                    }
                }
                _ = tx.closed() => break,
            }
        }
    });
    rx
}

impl Lanes for PartitionLanes {
    fn start(&self, p: u32, saved: &Saved, save: mpsc::Sender<Checkpoint>) -> Lane {
        let s = &self.settings;
        let every = s.windows.snapshot_interval.get();
        let city =
            self.scope.is_some() && p == crate::cluster::scope::city_unit(s.cluster.partitions);
        let plan = if city { &self.city_plan } else { &self.plan };
        let (window_tx, window_rx) = mpsc::channel(2);
        let mut alerts_task = None;
        let stage = match plan {
            Some(plan) => {
                let persist = Persist {
                    to: SaveTo::Remote {
                        name: format!("nats:{}/p{p}", crate::cluster::state::STATE).into(),
                        save,
                    },
                    every,
                };
                let downstream = self.alert_stage(p, &saved.alerts, city).map(|(d, task)| {
                    alerts_task = Some(task);
                    d
                });
                let stage = WindowStage::new(
                    self.engine(plan, p, &saved.windows),
                    downstream,
                    self.sinks.clone(),
                    self.metrics.clone(),
                    Some(persist),
                );
                tokio::spawn(async move {
                    if let Err(e) = stage.run(window_rx).await {
                        error!(partition = p, error = %e, "the partition's windows stopped");
                    }
                })
            }
            None => tokio::spawn(crate::cluster::worker::progress(window_rx, save, every)),
        };
        let (input, rx) = mpsc::channel(s.pipeline.channel_capacity);
        // The city lane: the scope stream's readings (stored already by
        // their partitions) straight into its windows.
        let feed = if city {
            tokio::spawn(crate::cluster::scope::readings(rx, window_tx))
        } else {
            // A partition: pipeline, then (what feeds the city scope
            // published) its windows.
            let (to_windows, tee) = match &self.scope {
                Some(js) if plan.is_some() => {
                    let (tx, tee_rx) = mpsc::channel(2);
                    let feed = crate::cluster::scope::CityFeed::new(&s.aqi.city_sites);
                    let tee = crate::cluster::scope::tee(js.clone(), feed, tee_rx, window_tx);
                    (tx, Some(tokio::spawn(tee)))
                }
                _ => (window_tx, None),
            };
            let mut pipeline = super::pipeline(
                s,
                &self.sinks,
                self.acker.clone(),
                (Some(to_windows), None),
                None,
                &self.metrics,
            )
            .expect("the decoder was built once already");
            pipeline.stamp_from_log = true;
            tokio::spawn(async move {
                pipeline.run(rx).await;
                if let Some(tee) = tee {
                    let _ = tee.await;
                }
            })
        };
        let done = tokio::spawn(async move {
            let _ = feed.await;
            let _ = stage.await;
            if let Some(task) = alerts_task {
                let _ = task.await;
            }
        });
        Lane { input, done }
    }
}
