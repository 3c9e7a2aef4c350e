//! Wiring: build each stage from its config section, connect them with a
//! bounded channel, run until a signal, then shut down in order — the
//! source stops taking messages, the pipeline writes and acknowledges what
//! it holds, the source disconnects (which flushes the acks), the window
//! stage writes what closed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::decode::{Decoder, Template, TopicMap};
use crate::metrics::Metrics;
use crate::pipeline::{BatchLimits, Pipeline};
use crate::sink::influx::Writer;
use crate::source::mqtt::MqttSource;
use crate::validate::Registry;

/// rustls needs a process-wide crypto provider; lantian uses ring (no C
/// toolchain or cmake needed, unlike aws-lc).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Build the decoder from validated settings.
pub fn decoder(s: &Settings) -> anyhow::Result<Decoder> {
    let templates = s
        .topics
        .templates
        .iter()
        .map(|t| Template::parse(t))
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
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Run the daemon until `shutdown` is cancelled (the binary cancels it on
/// SIGTERM/SIGINT). Returns after a clean stop or when the shutdown
/// deadline passes.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Arc<Metrics>> {
    run_with_reload(settings, shutdown, None).await
}

/// [`run`], taking reloaded settings (SIGHUP) from `reload`: targets and
/// webhook receivers change in place; buffered data is untouched.
pub async fn run_with_reload(
    settings: Settings,
    shutdown: CancellationToken,
    reload: Option<mpsc::Receiver<Settings>>,
) -> anyhow::Result<Arc<Metrics>> {
    install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let board = Arc::new(crate::admin::Board::new(
        settings.aqi.standard,
        settings
            .windows
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Asia::Shanghai),
    ));
    let admin_stop = CancellationToken::new();
    let admin_task = if settings.admin.enabled {
        let state = crate::admin::State {
            metrics: metrics.clone(),
            board: board.clone(),
        };
        Some(
            crate::admin::serve(settings.admin.listen, state, admin_stop.clone())
                .await
                .with_context(|| format!("admin.listen {}", settings.admin.listen))?,
        )
    } else {
        None
    };
    let decoder = decoder(&settings)?;
    let archive = if settings.archive.enabled {
        let dir = &settings.archive.dir;
        let a = crate::sink::archive::Archive::open(dir)
            .with_context(|| format!("archive.dir {}", dir.display()))?;
        info!(dir = %dir.display(), "Parquet archive on");
        Some(Arc::new(a))
    } else {
        None
    };
    let writer = Writer::new(&settings.influxdb, metrics.clone())
        .context("InfluxDB sink")?
        .with_archive(archive.clone());
    let (source, acker) =
        MqttSource::new(&settings.mqtt, metrics.clone()).context("MQTT source")?;
    info!(config = %settings.summary(), "lantian starting");

    // Windows: restored from their snapshot in the spool directory if
    // there is one; the spool then replays from the snapshot's position.
    let snapshot_path = settings.spool.dir.join("windows.snapshot");
    let (engine, keep_from) = if settings.windows.enabled {
        let plan = crate::window::Plan::new(&settings.windows, &settings.aqi)
            .map_err(|e| anyhow::anyhow!("windows: {e:?}"))?;
        let saved = settings
            .spool
            .enabled
            .then(|| std::fs::read(&snapshot_path).ok())
            .flatten();
        match saved.map(|b| crate::window::Engine::restore(plan.clone(), &b)) {
            Some(Ok((engine, pos))) => {
                info!(
                    ?pos,
                    "windows restored from their snapshot; replaying the spool from there"
                );
                (Some(engine), Some(pos))
            }
            Some(Err(why)) => {
                warn!(%why, "window snapshot not used; windows start empty");
                (Some(crate::window::Engine::new(plan)), None)
            }
            None => (Some(crate::window::Engine::new(plan)), None),
        }
    } else {
        (None, None)
    };

    // Source → (spool writer → spool → spool reader) → pipeline. With the
    // spool, MQTT acks come from the spool writer once synced, and the
    // pipeline marks spool records delivered; without, the pipeline acks.
    let (tx, source_rx) = mpsc::channel(settings.pipeline.channel_capacity);
    let (rx, cursor, spool_threads, acks_done) = if settings.spool.enabled {
        let sp = &settings.spool;
        let max_payload =
            usize::try_from(settings.validation.max_payload_bytes.get()).unwrap_or(usize::MAX);
        let limits = crate::spool::Limits {
            max_bytes: sp.max_bytes.get(),
            segment_bytes: sp
                .segment_bytes
                .get()
                .min(sp.max_bytes.get() / 4)
                .max(64 << 10),
            batch_bytes: (4 << 20).min(usize::try_from(sp.max_bytes.get() / 8).unwrap_or(4 << 20)),
            max_payload,
        };
        let (writer, reader, cursor) =
            crate::spool::open(&sp.dir, limits, metrics.clone(), keep_from).context("spool")?;
        let (ptx, prx) = mpsc::channel(settings.pipeline.channel_capacity);
        let acks_done = CancellationToken::new();
        let done = acks_done.clone();
        let ack = acker.clone();
        let w = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                writer.run(source_rx, |t| ack.ack(t));
                done.cancel();
            })
            .context("spool writer thread")?;
        let rt = tokio::runtime::Handle::current();
        let r = std::thread::Builder::new()
            .name("spool-reader".into())
            .spawn(move || reader.run(ptx, rt))
            .context("spool reader thread")?;
        (prx, Some(cursor), vec![w, r], Some(acks_done))
    } else {
        (source_rx, None, Vec::new(), None)
    };
    // Alerts: the engine (state restored), the outbox and its delivery.
    let delivery_stop = CancellationToken::new();
    let mut delivery = Vec::new();
    let mut outbox_handle = None;
    let alerting = if settings.alerts.enabled && engine.is_some() {
        let a = &settings.alerts;
        let targets = settings
            .targets()
            .map_err(|e| anyhow::anyhow!("alerts.targets: {e:?}"))?;
        let receivers = settings
            .receivers()
            .map_err(|e| anyhow::anyhow!("alerts.receivers: {e:?}"))?;
        std::fs::create_dir_all(&a.dir)
            .with_context(|| format!("alerts.dir {}", a.dir.display()))?;
        let rules = crate::alert::engine::Rule::from_targets(&targets, a.repeat_interval.get());
        let calendar = crate::window::calendar::Calendar {
            tz: settings
                .windows
                .timezone
                .parse()
                .unwrap_or(chrono_tz::Asia::Shanghai),
        };
        let outbox = std::sync::Arc::new(
            crate::alert::outbox::Outbox::open(&a.dir, receivers, a.max_queued, metrics.clone())
                .with_context(|| format!("alert outbox in {}", a.dir.display()))?,
        );
        delivery = outbox.spawn_delivery(a.external_url.clone(), delivery_stop.clone());
        outbox_handle = Some(outbox.clone());
        info!(
            rules = rules.len(),
            receivers = a.receivers.len(),
            "alerts on"
        );
        Some(crate::alert::stage::Alerting::new(
            crate::alert::Engine::new(rules, calendar),
            outbox,
            a.dir.join("state.json"),
            metrics.clone(),
        ))
    } else {
        None
    };
    let (rules_tx, rules_rx) = mpsc::channel(1);
    // The window stage gets stored points after each delivered batch.
    let (window_tx, window_task) = match engine {
        Some(engine) => {
            let writer = Writer::new(&settings.influxdb, metrics.clone())
                .context("InfluxDB sink")?
                .with_archive(archive.clone());
            let persist = cursor.clone().map(|cursor| crate::window::stage::Persist {
                path: snapshot_path.clone(),
                cursor,
                every: settings.windows.snapshot_interval.get(),
            });
            let stage = crate::window::stage::WindowStage::new(
                engine,
                alerting,
                Some(board.clone()),
                writer,
                metrics.clone(),
                persist,
            )
            .reload_rules_from(rules_rx);
            let (wtx, wrx) = mpsc::channel(2);
            (Some(wtx), Some(tokio::spawn(stage.run(wrx))))
        }
        None => (None, None),
    };
    let pipeline = Pipeline {
        decoder,
        writer,
        acker,
        limits: BatchLimits {
            max_lines: settings.influxdb.batch_max_lines,
            max_bytes: usize::try_from(settings.influxdb.batch_max_bytes.get())
                .unwrap_or(usize::MAX),
            linger: settings.influxdb.batch_linger.get(),
        },
        sample_bytes: settings.validation.quarantine_sample_bytes,
        metrics: metrics.clone(),
        windows: window_tx,
        windows_after: keep_from,
        cursor: cursor.clone(),
    };
    // The source disconnects (flushing queued acks) once whoever acks is
    // done: the spool writer, or without a spool the pipeline.
    let pipeline_done = CancellationToken::new();
    let done = pipeline_done.clone();
    let pipeline_task = tokio::spawn(async move {
        pipeline.run(rx).await;
        done.cancel();
    });
    let source_task = tokio::spawn(source.run(
        tx,
        shutdown.clone(),
        acks_done.unwrap_or_else(|| pipeline_done.clone()),
    ));

    // Readiness: READY=1 to systemd once InfluxDB answers and the MQTT
    // subscriptions are in place.
    let ready_task = {
        let (m, probe) = (
            metrics.clone(),
            Writer::new(&settings.influxdb, metrics.clone())
                .context("InfluxDB sink")?
                .with_archive(archive.clone()),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut waited = 0u32;
            loop {
                let sink =
                    m.sink_ok.load(std::sync::atomic::Ordering::Relaxed) || probe.probe().await;
                let mqtt = m.mqtt_subscribed.load(std::sync::atomic::Ordering::Relaxed);
                if sink && mqtt {
                    info!("ready: subscribed to MQTT, InfluxDB answers");
                    crate::systemd::notify("READY=1\nSTATUS=subscribed, writing");
                    return;
                }
                waited += 1;
                if waited % 30 == 0 {
                    warn!(mqtt_subscribed = mqtt, influxdb = sink, "not ready yet");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    let watchdog_task = crate::systemd::watchdog_interval().map(|every| {
        info!(every = ?every, "systemd watchdog on");
        tokio::spawn(crate::systemd::watchdog(every))
    });
    let reload_task = reload.map(|mut rx| {
        let outbox = outbox_handle.clone();
        let extra = Arc::new(std::sync::Mutex::new(Vec::new()));
        let extra2 = extra.clone();
        let task = tokio::spawn(async move {
            while let Some(new) = rx.recv().await {
                crate::systemd::notify("RELOADING=1");
                match (new.targets(), new.receivers()) {
                    (Ok(targets), Ok(receivers)) => {
                        let rules = crate::alert::engine::Rule::from_targets(
                            &targets,
                            new.alerts.repeat_interval.get(),
                        );
                        let n = rules.len();
                        let _ = rules_tx.send(rules).await;
                        if let Some(o) = &outbox {
                            extra2.lock().expect("reload lock").extend(o.reconfigure(receivers));
                        }
                        info!(rules = n, receivers = new.alerts.receivers.len(), "configuration reloaded (targets and receivers)");
                    }
                    (t, r) => warn!(targets = ?t.err(), receivers = ?r.err(), "reload refused: the configuration has problems; keeping the running one"),
                }
                crate::systemd::notify("READY=1");
            }
        });
        (task, extra)
    });

    let stats = settings.pipeline.stats_interval.get();
    let stats_metrics = metrics.clone();
    let stats_task = tokio::spawn(async move {
        if stats.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(stats);
        tick.tick().await;
        loop {
            tick.tick().await;
            stats_metrics.log_summary("throughput");
        }
    });

    let deadline = settings.pipeline.shutdown_timeout.get();
    let finished = async {
        let _ = source_task.await;
        let _ = pipeline_task.await;
        for t in spool_threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(c) = &cursor {
            c.save();
        }
        if let Some(w) = window_task {
            let _ = w.await;
        }
        // Queued notices stay on disk for the next start.
        delivery_stop.cancel();
        for d in delivery {
            let _ = d.await;
        }
        if let Some((t, extra)) = reload_task {
            t.abort();
            let handles: Vec<_> = std::mem::take(&mut *extra.lock().expect("reload lock"));
            for d in handles {
                let _ = d.await;
            }
        }
    };
    tokio::pin!(finished);
    tokio::select! {
        _ = &mut finished => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(deadline).await } => {
            warn!(
                deadline = ?deadline,
                unacknowledged = metrics.messages_in.load(std::sync::atomic::Ordering::Relaxed)
                    .saturating_sub(metrics.messages_acked.load(std::sync::atomic::Ordering::Relaxed)),
                "shutdown deadline passed; exiting with messages unacknowledged (the broker will redeliver them)"
            );
        }
    }
    stats_task.abort();
    ready_task.abort();
    if let Some(w) = watchdog_task {
        w.abort();
    }
    admin_stop.cancel();
    if let Some(a) = admin_task {
        let _ = a.await;
    }
    metrics.log_summary("lantian stopped");
    Ok(metrics)
}
