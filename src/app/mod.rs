//! The composition root: one `build_*` function per stage, each task
//! registered with the shutdown manager ([`shutdown`]), the stages joined by
//! bounded channels.
//!
//! ```text
//! source ─► spool writer ─► spool ─► spool reader ─► pipeline ─► sinks
//!                                                      │ stored points
//!                                                      ▼
//!                                  window stage ─► sinks (windows, AQI)
//!                                                      │ observations
//!                                                      ▼
//!                                  alert stage ─► outbox ─► webhooks
//!                                              └► sinks (alerts), status page
//! ```
//!
//! Shutdown: the source stops taking messages; each stage ends when its
//! input closes, after writing and acknowledging what it holds; then
//! webhook delivery stops; the admin endpoint goes last.

mod check;
mod cluster;
pub mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use check::{check, load, load_from_str};
pub use shutdown::{Phase, Shutdown};

use crate::admin::Board;
use crate::alert::engine::Rule;
use crate::alert::outbox::Outbox;
use crate::alert::stage::{AlertStage, Alerting};
use crate::config::Settings;
use crate::decode::{Decoder, TopicMap};
use crate::envelope::{Message, Pos};
use crate::metrics::Metrics;
use crate::pipeline::{BatchLimits, Pipeline};
use crate::reading::Point;
use crate::sink::Sinks;
use crate::sink::archive::Archive;
use crate::sink::influx::Writer;
use crate::source::mqtt::{Acker, MqttSource};
use crate::validate::Registry;
use crate::window::stage::{Downstream, Persist, SaveTo, WindowStage};

/// Build the decoder from validated settings.
/// What lantian would do with one message (`lantian try`).
pub struct Tried {
    /// The line-protocol lines of its readings.
    pub lines: Vec<String>,
    /// Each quarantine: reason, detail.
    pub quarantined: Vec<(&'static str, String)>,
}

/// [`Tried`] for one message; `now_ms` stands for the time it arrived.
pub fn try_message(
    s: &Settings,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> anyhow::Result<Tried> {
    let decoded = decoder(s)?.decode(topic, payload, now_ms);
    let lines = decoded
        .points
        .into_iter()
        .filter_map(|p| {
            let mut buf = Vec::new();
            let time_ns = p.time_ms * 1_000_000;
            crate::sink::influx::line::encode_row(&mut buf, &crate::row::Row::Reading(p), time_ns)
                .then(|| String::from_utf8_lossy(&buf).trim_end().to_owned())
        })
        .collect();
    let rejects = decoded
        .rejects
        .into_iter()
        .map(|r| (r.reason.as_str(), r.detail))
        .collect();
    Ok(Tried {
        lines,
        quarantined: rejects,
    })
}

pub fn decoder(s: &Settings) -> anyhow::Result<Decoder> {
    let templates = s
        .topics
        .templates
        .iter()
        .map(crate::decode::Template::from_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let registry = Registry::new(&s.quantities, s.validation.unknown_fields)
        .map_err(|e| anyhow::anyhow!("quantities: {e:?}"))?;
    Ok(Decoder {
        topics: TopicMap::new(templates, s.topics.kinds.clone()),
        registry,
        max_payload_bytes: usize::try_from(s.validation.max_payload_bytes.get())
            .unwrap_or(usize::MAX),
        max_future_ms: millis(s.validation.max_future.get()),
        max_age_ms: millis(s.validation.max_age.get()),
        hj212: std::sync::Arc::new(
            crate::decode::hj212::devices::Devices::from_config(&s.hj212)
                .map_err(|e| anyhow::anyhow!("hj212.devices: {e:?}"))?,
        ),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Run the daemon until `shutdown` is cancelled (the binary cancels it on
/// SIGTERM/SIGINT). Returns after a clean stop or when the shutdown
/// deadline passes; an error when a stage failed.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Arc<Metrics>> {
    run_with(settings, shutdown, Hooks::default()).await
}

/// What a caller of [`run_with`] can hook in.
#[derive(Default)]
pub struct Hooks {
    /// Reloaded settings (SIGHUP): targets and webhook receivers change in
    /// place; buffered data is untouched.
    pub reload: Option<mpsc::Receiver<Settings>>,
    /// Told the admin endpoint's address once it listens (with port 0,
    /// the port the kernel chose).
    pub admin_bound: Option<oneshot::Sender<SocketAddr>>,
    /// Told the HJ 212 listener's address once it listens.
    pub hj212_bound: Option<oneshot::Sender<SocketAddr>>,
}

/// [`run`], with [`Hooks`].
pub async fn run_with(
    settings: Settings,
    stop: CancellationToken,
    hooks: Hooks,
) -> anyhow::Result<Arc<Metrics>> {
    crate::tls::install_crypto_provider();
    if settings.cluster.edge && !settings.cluster.worker {
        return cluster::run_edge(settings, stop, hooks).await;
    }
    let s = &settings;
    let metrics = Arc::new(Metrics::default());
    let tasks = Shutdown::new(stop);
    let board = Arc::new(Board::new(s.aqi.standard, timezone(s)));
    let admin = build_admin(s, &metrics, &board, &tasks, hooks.admin_bound).await?;
    let sinks = open_sinks(s, &metrics)?;
    let (source, acker) = mqtt_source(s, &metrics)?;
    info!(config = %s.summary(), "lantian starting");

    let alerts = build_alerts(s, admin, &metrics, &tasks)?;
    let outbox = alerts.as_ref().and_then(|a| a.outbox().cloned());
    let (rules_tx, rules_rx) = mpsc::channel(1);
    let mut spool = Spooled::default();
    if s.cluster.worker {
        // Each partition has its own alert engine; this process's outbox
        // takes the alerts stream while it holds the notifier lease.
        drop(alerts);
        let (lanes, forwarded) =
            cluster::PartitionLanes::new(s, &sinks, acker.clone(), &metrics, &board)?;
        // A reload's rules reach every partition's engine. A service task,
        // like the reload loop that feeds it: it ends when that loop does
        // (in the data phase it held the shutdown up to its deadline).
        let mut rules_rx = rules_rx;
        if let Some(rules) = lanes.rules() {
            tasks.spawn(Phase::Service, "rules", async move {
                while let Some(new) = rules_rx.recv().await {
                    rules.send_replace(new);
                }
                Ok(())
            });
        }
        let worker = cluster::Worker {
            lanes,
            forwarded,
            outbox: outbox.clone(),
        };
        let source = (source, acker);
        cluster::build_cluster(s, source, Some(worker), &metrics, &tasks, hooks.hj212_bound)
            .await?;
    } else {
        spool = build_single(
            s,
            (source, acker),
            alerts,
            rules_rx,
            (&board, &sinks),
            &metrics,
            &tasks,
            hooks.hj212_bound,
        )
        .await?;
    }
    build_readiness(s, &sinks, &metrics, &tasks);
    build_housekeeping(s, &metrics, hooks.reload, rules_tx, outbox, &tasks);

    let deadline = s.pipeline.shutdown_timeout.get();
    let m = metrics.clone();
    let finished = tasks
        .finish(deadline, || {
            warn!(
                deadline = ?deadline,
                unacknowledged = m.messages_in.load(Relaxed).saturating_sub(m.messages_acked.load(Relaxed)),
                "shutdown deadline passed; exiting with messages unacknowledged (the broker will redeliver them)"
            );
        })
        .await;
    if let Some(c) = &spool.cursor {
        c.save();
    }
    metrics.log_summary("lantian stopped");
    match finished {
        Ok(()) => Ok(metrics),
        Err(why) => Err(anyhow::anyhow!("a stage failed: {why}")),
    }
}

/// A single process: source → spool → pipeline → windows → alerts; the
/// HJ 212 listener feeds the spool too. Returns the spool (its cursor is
/// saved at the end).
#[allow(clippy::too_many_arguments)]
async fn build_single(
    s: &Settings,
    (source, acker): (MqttSource, Acker),
    alerts: Option<Alerting>,
    rules_rx: mpsc::Receiver<Vec<Rule>>,
    (board, sinks): (&Arc<Board>, &Sinks),
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
    hj212_bound: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<Spooled> {
    let (engine, keep_from) = restore_windows(s)?;
    let (tx, source_rx) = mpsc::channel(s.pipeline.channel_capacity);
    let (spool_rx, spool) = build_spool(s, metrics, keep_from, source_rx, &acker, tasks)?;
    let window_tx = engine.map(|engine| {
        let downstream = build_alert_stage(s, alerts, board, sinks, rules_rx, tasks);
        build_window_stage(
            s,
            engine,
            downstream,
            spool.cursor.clone(),
            sinks,
            metrics,
            tasks,
        )
    });
    let pipeline_done = build_pipeline(
        s,
        sinks,
        acker,
        (spool_rx, &spool),
        window_tx,
        keep_from,
        metrics,
        tasks,
    )?;
    let acks_done = spool.acks_done.clone().unwrap_or(pipeline_done);
    build_hj212_listener(s, &tx, metrics, tasks, hj212_bound).await?;
    let intake = tasks.token(Phase::Data);
    tasks.spawn(Phase::Data, "source", async move {
        source.run(tx, intake, acks_done).await;
        Ok(())
    });
    Ok(spool)
}

/// The MQTT source, keeping of each payload what validation can use.
fn mqtt_source(s: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<(MqttSource, Acker)> {
    let (source, acker) = MqttSource::new(&s.mqtt, metrics.clone()).context("MQTT source")?;
    let keep = usize::try_from(s.validation.max_payload_bytes.get()).unwrap_or(usize::MAX);
    Ok((source.keep_payload(keep), acker))
}

/// The HJ 212 TCP listener, when `hj212.listen` is set: packets go into
/// the same channel as MQTT messages (so to the spool), and it stops with
/// intake.
async fn build_hj212_listener(
    s: &Settings,
    tx: &mpsc::Sender<Message>,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let Some(listen) = &s.hj212.listen else {
        return Ok(());
    };
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("hj212.listen {listen:?}"))?;
    let devices = crate::decode::hj212::devices::Devices::from_config(&s.hj212)
        .map_err(|e| anyhow::anyhow!("hj212.devices: {e:?}"))?;
    let (addr, task) = crate::source::hj212::serve(
        addr,
        crate::source::hj212::Limits::from_config(&s.hj212),
        Arc::new(devices),
        tx.clone(),
        metrics.clone(),
        tasks.token(Phase::Data),
    )
    .await
    .with_context(|| format!("hj212.listen: cannot listen on {addr}"))?;
    if let Some(tell) = bound {
        let _ = tell.send(addr);
    }
    tasks.track(Phase::Data, task);
    Ok(())
}

fn timezone(s: &Settings) -> chrono_tz::Tz {
    s.windows
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Asia::Shanghai)
}

/// The sinks every stage writes to: InfluxDB (unless off) and the Parquet
/// archive (when on). Each stage gets a clone.
fn open_sinks(s: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Sinks> {
    let archive = if s.archive.enabled {
        let dir = &s.archive.dir;
        let a = Archive::open(dir, timezone(s))
            .with_context(|| format!("archive.dir {}", dir.display()))?;
        info!(dir = %dir.display(), "Parquet archive on");
        Some(a)
    } else {
        None
    };
    let influx = if s.influxdb.enabled {
        Some(Writer::new(&s.influxdb, metrics.clone()).context("InfluxDB sink")?)
    } else {
        None
    };
    let minute = match (&influx, &s.influxdb.minute_retention_policy) {
        (Some(w), Some(rp)) => Some(
            w.to_retention_policy(&s.influxdb, rp)
                .context("influxdb.minute_retention_policy")?,
        ),
        _ => None,
    };
    let retry = (s.influxdb.retry_initial.get(), s.influxdb.retry_max.get());
    let mut sinks = Sinks::new(influx, archive, metrics.clone()).archive_retry(retry.0, retry.1);
    if let Some(w) = minute {
        sinks = sinks.minute_windows_to(w);
    }
    Ok(sinks)
}

async fn build_admin(
    s: &Settings,
    metrics: &Arc<Metrics>,
    board: &Arc<Board>,
    tasks: &Shutdown,
    tell: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<Option<SocketAddr>> {
    let admin = serve_admin(s, metrics, board, tasks).await?;
    if let (Some(addr), Some(tell)) = (admin, tell) {
        let _ = tell.send(addr);
    }
    Ok(admin)
}

/// The admin endpoint, when on; its address.
async fn serve_admin(
    s: &Settings,
    metrics: &Arc<Metrics>,
    board: &Arc<Board>,
    tasks: &Shutdown,
) -> anyhow::Result<Option<SocketAddr>> {
    if !s.admin.enabled {
        return Ok(None);
    }
    let state = crate::admin::State {
        metrics: metrics.clone(),
        board: board.clone(),
    };
    let (addr, task) = crate::admin::serve(s.admin.listen, state, tasks.token(Phase::Service))
        .await
        .with_context(|| format!("admin.listen {}", s.admin.listen))?;
    tasks.track(Phase::Service, task);
    Ok(Some(addr))
}

/// The window engine, restored from its snapshot in the spool directory if
/// there is one (the spool then replays from the snapshot's position).
fn restore_windows(s: &Settings) -> anyhow::Result<(Option<crate::window::Engine>, Option<Pos>)> {
    use crate::window::{Engine, Plan};
    if !s.windows.enabled {
        return Ok((None, None));
    }
    let plan = Plan::new(&s.windows, &s.aqi).map_err(|e| anyhow::anyhow!("windows: {e:?}"))?;
    let saved = s
        .spool
        .enabled
        .then(|| std::fs::read(snapshot_path(s)).ok())
        .flatten();
    Ok(match saved.map(|b| Engine::restore(plan.clone(), &b)) {
        Some(Ok((engine, pos))) => {
            info!(
                ?pos,
                "windows restored from their snapshot; replaying the spool from there"
            );
            (Some(engine), Some(pos))
        }
        Some(Err(why)) => {
            warn!(%why, "window snapshot not used; windows start empty");
            (Some(Engine::new(plan)), None)
        }
        None => (Some(Engine::new(plan)), None),
    })
}

fn snapshot_path(s: &Settings) -> std::path::PathBuf {
    s.spool.dir.join("windows.snapshot")
}

/// What the spool hands the pipeline.
#[derive(Default)]
struct Spooled {
    /// Marks records delivered (with the spool).
    cursor: Option<crate::spool::Cursor>,
    /// Cancelled when the spool writer, which acks to the broker, is done.
    acks_done: Option<CancellationToken>,
}

/// Source → spool writer → spool → spool reader → pipeline. With the spool,
/// MQTT acks come from the spool writer once synced, and the pipeline marks
/// spool records delivered; without, the pipeline acks. Returns the
/// pipeline's input: from the spool reader, or straight from the source.
fn build_spool(
    s: &Settings,
    metrics: &Arc<Metrics>,
    keep_from: Option<Pos>,
    source_rx: mpsc::Receiver<Message>,
    acker: &Acker,
    tasks: &Shutdown,
) -> anyhow::Result<(mpsc::Receiver<Message>, Spooled)> {
    if !s.spool.enabled {
        let none = Spooled {
            cursor: None,
            acks_done: None,
        };
        return Ok((source_rx, none));
    }
    let sp = &s.spool;
    let limits = crate::spool::Limits {
        max_bytes: sp.max_bytes.get(),
        segment_bytes: sp
            .segment_bytes
            .get()
            .min(sp.max_bytes.get() / 4)
            .max(64 << 10),
        batch_bytes: (4 << 20).min(usize::try_from(sp.max_bytes.get() / 8).unwrap_or(4 << 20)),
        max_payload: usize::try_from(s.validation.max_payload_bytes.get()).unwrap_or(usize::MAX),
    };
    let (writer, reader, cursor) =
        crate::spool::open(&sp.dir, limits, metrics.clone(), keep_from).context("spool")?;
    let (ptx, prx) = mpsc::channel(s.pipeline.channel_capacity);
    let acks_done = CancellationToken::new();
    let (done, ack) = (acks_done.clone(), acker.clone());
    tasks
        .spawn_thread(Phase::Data, "spool-writer", move || {
            let result = writer.run(source_rx, |t| ack.ack(t));
            done.cancel();
            result
        })
        .context("spool writer thread")?;
    let rt = tokio::runtime::Handle::current();
    tasks
        .spawn_thread(Phase::Data, "spool-reader", move || {
            reader.run(ptx, rt);
            Ok(())
        })
        .context("spool reader thread")?;
    let spooled = Spooled {
        cursor: Some(cursor),
        acks_done: Some(acks_done),
    };
    Ok((prx, spooled))
}

/// The alert engine (state restored), its outbox and the outbox's delivery.
fn build_alerts(
    s: &Settings,
    admin: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
) -> anyhow::Result<Option<Alerting>> {
    if !(s.alerts.enabled && s.windows.enabled) {
        return Ok(None);
    }
    let a = &s.alerts;
    let targets = s
        .targets()
        .map_err(|e| anyhow::anyhow!("alerts.targets: {e:?}"))?;
    let receivers = crate::alert::outbox::receivers(a)
        .map_err(|e| anyhow::anyhow!("alerts.receivers: {e:?}"))?;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("alerts.dir {}", a.dir.display()))?;
    let rules = Rule::from_targets(&targets, a.repeat_interval.get());
    let calendar = crate::calendar::Calendar { tz: timezone(s) };
    let outbox = Arc::new(
        Outbox::open(&a.dir, receivers, a.max_queued, metrics.clone())
            .with_context(|| format!("alert outbox in {}", a.dir.display()))?,
    );
    let external_url = match (a.external_url.as_str(), admin) {
        ("", Some(addr)) => format!("http://{addr}/"),
        (url, _) => url.to_owned(),
    };
    for h in outbox.spawn_delivery(external_url, tasks.token(Phase::Delivery)) {
        tasks.track(Phase::Delivery, h);
    }
    info!(
        rules = rules.len(),
        receivers = a.receivers.len(),
        "alerts on"
    );
    Ok(Some(Alerting::new(
        crate::alert::Engine::new(rules, calendar),
        outbox,
        a.dir.join("state.json"),
        metrics.clone(),
    )))
}

/// The alert stage, when alerts are on or the status page needs the
/// observations; returns its input.
fn build_alert_stage(
    s: &Settings,
    alerts: Option<Alerting>,
    board: &Arc<Board>,
    sinks: &Sinks,
    rules: mpsc::Receiver<Vec<Rule>>,
    tasks: &Shutdown,
) -> Option<Downstream> {
    if alerts.is_none() && !s.admin.enabled {
        return None;
    }
    let points = alerts.is_some();
    let board = board.clone();
    let on_update: crate::alert::stage::OnUpdate = Box::new(move |obs, firing| {
        board.observe(obs);
        if let Some(f) = firing {
            board.set_alerts(f);
        }
    });
    let stage = AlertStage::new(alerts, Some(on_update), sinks.clone()).reload_rules_from(rules);
    let (tx, rx) = mpsc::channel(2);
    tasks.spawn(Phase::Data, "alerts", stage.run(rx));
    Some(Downstream { tx, points })
}

/// The window stage; returns its input (stored points after each delivered
/// batch, with their spool position).
fn build_window_stage(
    s: &Settings,
    engine: crate::window::Engine,
    downstream: Option<Downstream>,
    cursor: Option<crate::spool::Cursor>,
    sinks: &Sinks,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
) -> mpsc::Sender<(Vec<Point>, Option<Pos>)> {
    let persist = cursor.map(|cursor| Persist {
        to: SaveTo::File {
            path: snapshot_path(s),
            cursor,
        },
        every: s.windows.snapshot_interval.get(),
    });
    let (tx, rx) = mpsc::channel(2);
    let stage = WindowStage::new(engine, downstream, sinks.clone(), metrics.clone(), persist);
    tasks.spawn(Phase::Data, "windows", stage.run(rx));
    tx
}

/// The pipeline: decode, validate, write, acknowledge. Returns a token
/// cancelled when it is done (it acks without a spool).
#[allow(clippy::too_many_arguments)]
fn build_pipeline(
    s: &Settings,
    sinks: &Sinks,
    acker: Acker,
    (rx, spool): (mpsc::Receiver<Message>, &Spooled),
    windows: Option<mpsc::Sender<(Vec<Point>, Option<Pos>)>>,
    windows_after: Option<Pos>,
    metrics: &Arc<Metrics>,
    tasks: &Shutdown,
) -> anyhow::Result<CancellationToken> {
    let pipeline = pipeline(
        s,
        sinks,
        acker,
        (windows, windows_after),
        spool.cursor.clone(),
        metrics,
    )?;
    let done = CancellationToken::new();
    let finished = done.clone();
    tasks.spawn(Phase::Data, "pipeline", async move {
        pipeline.run(rx).await;
        finished.cancel();
        Ok(())
    });
    Ok(done)
}

/// The window stage's input: stored points, with their log position.
type WindowInput = mpsc::Sender<(Vec<Point>, Option<Pos>)>;

/// A pipeline as the settings say.
fn pipeline(
    s: &Settings,
    sinks: &Sinks,
    acker: Acker,
    (windows, windows_after): (Option<WindowInput>, Option<Pos>),
    cursor: Option<crate::spool::Cursor>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Pipeline> {
    Ok(Pipeline {
        decoder: decoder(s)?,
        sinks: sinks.clone(),
        acker,
        limits: BatchLimits {
            max_lines: s.influxdb.batch_max_lines,
            max_bytes: usize::try_from(s.influxdb.batch_max_bytes.get()).unwrap_or(usize::MAX),
            linger: s.influxdb.batch_linger.get(),
        },
        sample_bytes: s.validation.quarantine_sample_bytes,
        metrics: metrics.clone(),
        windows,
        windows_after,
        series: crate::pipeline::SeriesBound::new(s.validation.max_series, s.validation.max_fields),
        cursor,
        stamp_from_log: false,
    })
}

/// READY=1 to systemd once the MQTT subscriptions are in place and the
/// readings have somewhere to go: InfluxDB answers or, with the spool on,
/// the spool takes them (an InfluxDB outage at boot must not keep the
/// daemon from starting: that is what the spool is for). The sink's state
/// is reported separately (STATUS=, /readyz, the metric); it is probed
/// until InfluxDB first answers.
fn build_readiness(s: &Settings, sinks: &Sinks, metrics: &Arc<Metrics>, tasks: &Shutdown) {
    let probe = sinks.clone();
    let spool = s.spool.enabled;
    let (m, stop) = (metrics.clone(), tasks.token(Phase::Data));
    tasks.spawn(Phase::Service, "readiness", async move {
        let mut waited = 0u32;
        let mut ready = false;
        loop {
            let sink = m.sink_ok.load(Relaxed) || probe.probe().await;
            let mqtt = m.mqtt_subscribed.load(Relaxed);
            let buffered = spool && !m.spool_full.load(Relaxed);
            if !ready && mqtt && sink {
                info!("ready: subscribed to MQTT, InfluxDB answers");
                crate::systemd::notify("READY=1\nSTATUS=subscribed, writing");
                return Ok(());
            }
            if !ready && mqtt && buffered {
                warn!("ready: subscribed to MQTT; InfluxDB does not answer yet, readings wait in the spool");
                crate::systemd::notify(
                    "READY=1\nSTATUS=subscribed; InfluxDB not answering, readings wait in the spool",
                );
                ready = true;
            }
            if ready && sink {
                info!("InfluxDB answers");
                crate::systemd::notify("STATUS=subscribed, writing");
                return Ok(());
            }
            waited += 1;
            if !ready && waited % 30 == 0 {
                warn!(mqtt_subscribed = mqtt, influxdb = sink, "not ready yet");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    });
}

/// The systemd watchdog, the periodic throughput line and reloads.
fn build_housekeeping(
    s: &Settings,
    metrics: &Arc<Metrics>,
    reload: Option<mpsc::Receiver<Settings>>,
    rules: mpsc::Sender<Vec<Rule>>,
    outbox: Option<Arc<Outbox>>,
    tasks: &Shutdown,
) {
    let stop = tasks.token(Phase::Service);
    if let Some(every) = crate::systemd::watchdog_interval() {
        info!(every = ?every, "systemd watchdog on");
        let stop = stop.clone();
        tasks.spawn(Phase::Service, "watchdog", async move {
            tokio::select! {
                _ = crate::systemd::watchdog(every) => {}
                _ = stop.cancelled() => {}
            }
            Ok(())
        });
    }
    let every = s.pipeline.stats_interval.get();
    if !every.is_zero() {
        let (m, stop) = (metrics.clone(), stop.clone());
        tasks.spawn(Phase::Service, "stats", async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => m.log_summary("throughput"),
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        });
    }
    if s.archive.enabled {
        let (a, m, stop, tz) = (
            s.archive.clone(),
            metrics.clone(),
            stop.clone(),
            timezone(s),
        );
        tasks.spawn(Phase::Service, "archive-maintenance", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = tick.tick() => maintain_archive(&a, tz, &m).await,
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        });
    }
    if let Some(rx) = reload {
        let t = tasks.clone();
        tasks.spawn(
            Phase::Service,
            "reload",
            reload_loop(s.source.clone(), rx, rules, outbox, stop, t),
        );
    }
}

/// One maintenance pass over the Parquet archive (off the runtime
/// threads): the days that are over compacted into a file each, then
/// retention.
async fn maintain_archive(a: &crate::config::ArchiveConfig, tz: chrono_tz::Tz, m: &Metrics) {
    let dir = a.dir.clone();
    let age = a.max_age.get();
    let max_age = (!age.is_zero()).then(|| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let max_bytes = (a.max_bytes.get() > 0).then(|| a.max_bytes.get());
    let now = chrono::Utc::now().timestamp_millis();
    let done = tokio::task::spawn_blocking(move || {
        let archive = Archive::open(&dir, tz).map_err(|e| e.to_string())?;
        let compacted = archive.compact(now).map_err(|e| e.to_string());
        let pruned = archive
            .prune(now, max_age, max_bytes)
            .map_err(|e| e.to_string());
        Ok::<_, String>((compacted, pruned))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (compacted, pruned) = match done {
        Ok(both) => both,
        Err(e) => {
            warn!(dir = %a.dir.display(), error = %e, "cannot open the archive; retrying in 10 minutes");
            return;
        }
    };
    match compacted {
        Ok(c) => {
            m.archive_compacted(c.files as u64);
            if c.partitions > 0 {
                info!(
                    partitions = c.partitions,
                    files = c.files,
                    "archive compaction merged the files of past days"
                );
            }
        }
        Err(e) => {
            warn!(dir = %a.dir.display(), error = %e, "archive compaction failed; retrying in 10 minutes")
        }
    }
    match pruned {
        Ok(p) => {
            m.archive_pruned(p.partitions as u64, p.bytes);
            if p.partitions > 0 {
                info!(
                    partitions = p.partitions,
                    freed_bytes = p.freed_bytes,
                    bytes = p.bytes,
                    "archive retention deleted old date partitions"
                );
            }
        }
        Err(e) => {
            warn!(dir = %a.dir.display(), error = %e, "archive retention failed; retrying in 10 minutes")
        }
    }
}

/// What a reload applies: the targets and the webhook receivers (and the
/// keys the targets are resolved with). Any other change needs a restart.
pub const RELOADABLE: [&str; 5] = [
    "alerts.targets",
    "alerts.receivers",
    "alerts.repeat_interval",
    "alerts.site_labels",
    "alerts.gb3095",
];

/// The keys changed since the start (`started`) that a reload does not
/// apply.
pub fn needs_restart(started: &crate::config::Source, new: &Settings) -> Vec<String> {
    started
        .changed(&new.source)
        .into_iter()
        .filter(|k| !RELOADABLE.contains(&k.as_str()))
        .collect()
}

/// SIGHUP: new targets go to the alert stage, new receivers to the outbox
/// (new queues get delivery workers); a refused file keeps the running set.
/// Changes a reload cannot apply are named (log and `systemctl status`).
async fn reload_loop(
    started: crate::config::Source,
    mut rx: mpsc::Receiver<Settings>,
    rules: mpsc::Sender<Vec<Rule>>,
    outbox: Option<Arc<Outbox>>,
    stop: CancellationToken,
    tasks: Shutdown,
) -> Result<(), String> {
    loop {
        let new = tokio::select! {
            new = rx.recv() => match new {
                Some(new) => new,
                None => return Ok(()),
            },
            _ = stop.cancelled() => return Ok(()),
        };
        crate::systemd::notify("RELOADING=1");
        match (new.targets(), crate::alert::outbox::receivers(&new.alerts)) {
            (Ok(targets), Ok(receivers)) => {
                let new_rules = Rule::from_targets(&targets, new.alerts.repeat_interval.get());
                let n = new_rules.len();
                let _ = rules.send(new_rules).await;
                if let Some(o) = &outbox {
                    for h in o.reconfigure(receivers) {
                        tasks.track(Phase::Delivery, h);
                    }
                }
                info!(
                    rules = n,
                    receivers = new.alerts.receivers.len(),
                    "configuration reloaded (targets and receivers)"
                );
                let pending = needs_restart(&started, &new);
                if pending.is_empty() {
                    crate::systemd::notify("STATUS=configuration reloaded");
                } else {
                    let keys = pending.join(", ");
                    warn!(
                        changed = %keys,
                        "reload: these changed and are NOT applied until a restart (systemctl restart lantian)"
                    );
                    crate::systemd::notify(&format!(
                        "STATUS=reloaded targets and receivers; restart to apply: {keys}"
                    ));
                }
            }
            (t, r) => {
                warn!(
                    targets = ?t.err(),
                    receivers = ?r.err(),
                    "reload refused: the configuration has problems; keeping the running one"
                );
                crate::systemd::notify(
                    "STATUS=reload refused: see the log; running the previous configuration",
                );
            }
        }
        crate::systemd::notify("READY=1");
    }
}
