//! `lantian demo` and `lantian simulate`.
//!
//! The demo needs nothing installed: an embedded MQTT broker on loopback
//! ([`broker`]), the simulated Beijing fleet ([`fleet`]) publishing its
//! history and then a reading a minute, the full pipeline (spool, windows,
//! AQI, alerts) and a local Parquet archive as the sink (plus InfluxDB with
//! `--influx`). `simulate` runs the same fleet against a real broker.

pub mod broker;
pub mod fleet;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::config::{HumanDuration, ReceiverConfig, Settings};
use fleet::Fleet;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// A QoS 1 publisher that counts the broker's acks.
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    pub sent: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(host: &str, port: u16, id: &str) -> Publisher {
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(opts, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "simulator: broker connection failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Publisher {
            client,
            acked,
            sent: 0,
            task,
        }
    }

    pub async fn publish(&mut self, topic: String, payload: String) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .context("publish")?;
        self.sent += 1;
        Ok(())
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Relaxed)
    }

    /// Waits (up to `timeout`) until the broker acknowledged everything.
    pub async fn flush(&self, timeout: Duration) -> bool {
        all_acked(&self.acked, self.sent, timeout).await
    }
}

/// Waits (up to `timeout`) until `acked` reaches `sent`.
async fn all_acked(acked: &AtomicU64, sent: u64, timeout: Duration) -> bool {
    let t = Instant::now();
    while acked.load(Relaxed) < sent {
        if t.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The demo's HJ 212 data loggers: one TCP connection per emission
/// source to lantian's listener; each packet is sent and its data ACK
/// awaited, and a logger that loses its connection reconnects and sends
/// the packet again, as field loggers do.
pub struct Loggers {
    /// Per fleet sensor: its logger's queue (emission sources only).
    queues: Vec<Option<tokio::sync::mpsc::Sender<String>>>,
    pub sent: u64,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loggers {
    pub fn connect(addr: SocketAddr, fleet: &Fleet) -> Loggers {
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let queues = fleet
            .sensors
            .iter()
            .map(|s| {
                if !s.is_emission() {
                    return None;
                }
                // A short queue: the history goes out minute by minute in
                // step with the stations (a logger far behind would look
                // silent to the deadman rule).
                let (tx, rx) = tokio::sync::mpsc::channel::<String>(2);
                let acked = acked.clone();
                tasks.push(tokio::spawn(log_to(addr, rx, acked)));
                Some(tx)
            })
            .collect();
        Loggers {
            queues,
            sent: 0,
            acked,
            tasks,
        }
    }

    /// Whether sensor `i` sends over HJ 212.
    pub fn has(&self, i: usize) -> bool {
        self.queues.get(i).is_some_and(Option::is_some)
    }

    pub async fn send(&mut self, i: usize, packet: String) -> anyhow::Result<()> {
        if let Some(Some(q)) = self.queues.get(i) {
            q.send(packet).await.context("HJ 212 logger stopped")?;
            self.sent += 1;
        }
        Ok(())
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Relaxed)
    }

    /// Waits (up to `timeout`) until lantian acknowledged everything.
    pub async fn flush(&self, timeout: Duration) -> bool {
        all_acked(&self.acked, self.sent, timeout).await
    }
}

impl Drop for Loggers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Packets a demo logger sends before it waits for their ACKs (a logger
/// sending its backlog); they come back in order.
const IN_FLIGHT: usize = 8;

/// One demo logger: sends what `rx` gives to `addr`, counting ACKs; on a
/// broken connection it reconnects and sends again everything not yet
/// acknowledged.
async fn log_to(
    addr: SocketAddr,
    mut rx: tokio::sync::mpsc::Receiver<String>,
    acked: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut pending: std::collections::VecDeque<String> = Default::default();
    // How many of `pending` went out on the current connection.
    let mut written = 0;
    let mut conn: Option<tokio::io::BufReader<tokio::net::TcpStream>> = None;
    let mut closed = false;
    loop {
        if pending.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(p) => pending.push_back(p),
                None => return,
            }
        }
        while !closed && pending.len() < IN_FLIGHT {
            match rx.try_recv() {
                Ok(p) => pending.push_back(p),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::net::TcpStream::connect(addr).await {
                // A new connection: everything pending goes (again).
                Ok(sock) => {
                    written = 0;
                    conn.insert(tokio::io::BufReader::new(sock))
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let mut broken = false;
        while written < pending.len() {
            if c.get_mut()
                .write_all(pending[written].as_bytes())
                .await
                .is_err()
            {
                broken = true;
                break;
            }
            written += 1;
        }
        let mut line = String::new();
        if !broken
            && matches!(c.read_line(&mut line).await, Ok(n) if n > 0)
            && line.contains("CN=9014")
        {
            pending.pop_front();
            written -= 1;
            acked.fetch_add(1, Relaxed);
        } else {
            conn = None;
        }
    }
}

/// Publishes the fleet's minutes from `from` up to (not including) `to`,
/// at most `rate` messages a second (0: as fast as the broker takes them).
/// Returns how many were published; stops early on `stop`.
pub async fn publish_span(
    fleet: &Fleet,
    p: &mut Publisher,
    mut hj: Option<&mut Loggers>,
    from: i64,
    to: i64,
    rate: u64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut n = 0u64;
    let mut t = from - from.rem_euclid(MIN);
    while t < to {
        for (i, s) in fleet.sensors.iter().enumerate() {
            if stop.is_cancelled() {
                return Ok(n);
            }
            match hj.as_deref_mut().filter(|h| h.has(i)) {
                // An HJ 212 logger sends each hour once it has ended.
                Some(h) if t.rem_euclid(HOUR) == 0 && t - HOUR >= from => {
                    h.send(i, fleet.hj212_packet(i, t - HOUR).0).await?;
                }
                Some(_) => continue,
                None => p.publish(s.topic(), fleet.payload(i, t)).await?,
            }
            n += 1;
            if rate > 0 {
                let due = Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if t.rem_euclid(HOUR) == 0
            && let Some(h) = hj.as_deref()
        {
            // The hour's packets are in before the stations go on: a
            // logger hours behind would look silent to the deadman rule.
            h.flush(Duration::from_secs(120)).await;
        }
        t += MIN;
    }
    Ok(n)
}

/// Publishes every minute, on the minute, until `stop`.
async fn publish_live(
    fleet: &Fleet,
    p: &mut Publisher,
    mut hj: Option<&mut Loggers>,
    every: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // The hour the HJ 212 loggers sent last (the history sent the hours
    // before the current one).
    let mut hour_sent = chrono::Utc::now().timestamp_millis().div_euclid(HOUR) * HOUR - HOUR;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let ended = now.div_euclid(HOUR) * HOUR - HOUR;
        for (i, s) in fleet.sensors.iter().enumerate() {
            match hj.as_deref_mut().filter(|h| h.has(i)) {
                Some(h) if ended > hour_sent => h.send(i, fleet.hj212_packet(i, ended).0).await?,
                Some(_) => {}
                None => p.publish(s.topic(), fleet.payload(i, now)).await?,
            }
        }
        hour_sent = hour_sent.max(ended);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// What `lantian simulate` is asked to do.
pub struct Simulation {
    /// The broker, HOST:PORT.
    pub broker: String,
    /// Messages a second while publishing history (0: as fast as taken).
    pub rate: u64,
    pub history: Duration,
    /// A reading a minute after the history, until stopped.
    pub live: bool,
    /// A lantian HJ 212 listener, HOST:PORT: the emission sources go there
    /// as data loggers instead of over MQTT.
    pub hj212: Option<String>,
}

/// The fleet's emission sources as `[[hj212.devices]]` TOML, for a
/// lantian that `simulate --hj212` sends to.
pub fn hj212_devices_toml() -> String {
    let q = |s: &str| format!("{s:?}");
    let table = |m: &std::collections::BTreeMap<String, String>| {
        let items: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {}", q(v))).collect();
        format!("{{ {} }}", items.join(", "))
    };
    let mut out = String::from(
        "# The simulated fleet's emission sources as HJ 212 data loggers\n\
         # (lantian simulate --hj212 HOST:PORT sends their hourly data).\n",
    );
    for s in Fleet::beijing(0).sensors.iter().filter(|s| s.is_emission()) {
        let d = s.hj212_device();
        out += &format!(
            "\n[[hj212.devices]]\nmn = {}\npassword = {}\ndistrict = {}\nsite = {}\nkind = {}\n\
             sensor = {}\ntags = {}\naggregate = {}\nunits = {}\nfields = {}\n",
            q(&d.mn),
            q(fleet::HJ212_PASSWORD),
            q(&d.district),
            q(&d.site),
            q(&d.kind),
            q(d.sensor.as_deref().unwrap_or(&d.mn)),
            table(&d.tags),
            q(&d.aggregate),
            table(&d.units),
            table(&d.fields),
        );
    }
    out
}

/// `lantian simulate`.
pub async fn simulate(o: Simulation, stop: CancellationToken) -> anyhow::Result<()> {
    let broker = &o.broker;
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("--broker {broker:?}: expected HOST:PORT"))?;
    let now = chrono::Utc::now().timestamp_millis();
    let fleet = Fleet::beijing(now - 2 * 3_600_000);
    let mut p = Publisher::connect(&host, port, "lantian-simulator").await;
    let mut loggers = match &o.hj212 {
        Some(addr) => {
            let at = tokio::net::lookup_host(addr.as_str())
                .await
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("--hj212 {addr:?}: expected HOST:PORT"))?;
            Some(Loggers::connect(at, &fleet))
        }
        None => None,
    };
    let from = now - o.history.as_millis() as i64;
    eprintln!(
        "simulating {} sensors against {broker}{}: {} of history at {} msg/s{}",
        fleet.sensors.len(),
        match &o.hj212 {
            Some(a) => format!(" (emission sources as HJ 212 loggers to {a})"),
            None => String::new(),
        },
        hours(o.history),
        if o.rate == 0 {
            "max".into()
        } else {
            o.rate.to_string()
        },
        if o.live {
            ", then a reading a minute (Ctrl-C stops)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let n = publish_span(&fleet, &mut p, loggers.as_mut(), from, now, o.rate, &stop).await?;
    p.flush(Duration::from_secs(60)).await;
    if let Some(l) = &loggers {
        l.flush(Duration::from_secs(60)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "history: {n} messages in {secs:.1} s ({:.0} msg/s), {} acknowledged by the broker{}",
        n as f64 / secs.max(1e-9),
        p.acked(),
        match &loggers {
            Some(l) => format!(", {} HJ 212 packets acknowledged by lantian", l.acked()),
            None => String::new(),
        }
    );
    if o.live && !stop.is_cancelled() {
        publish_live(
            &fleet,
            &mut p,
            loggers.as_mut(),
            Duration::from_secs(60),
            &stop,
        )
        .await?;
        p.flush(Duration::from_secs(10)).await;
    }
    Ok(())
}

/// "48 h", "3 h", "90 min".
fn hours(d: Duration) -> String {
    let m = d.as_secs() / 60;
    if m % 60 == 0 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

/// Options of `lantian demo` (its command-line arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct DemoOptions {
    /// Spool, alert state and the Parquet archive go here.
    #[arg(long, default_value = "lantian-demo", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Status page and metrics address (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:9184", value_name = "ADDR")]
    pub admin: SocketAddr,
    /// Embedded broker address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub broker: SocketAddr,
    /// Also write to this InfluxDB 1.x, e.g. http://127.0.0.1:8086.
    #[arg(long, value_name = "URL")]
    pub influx: Option<String>,
    /// InfluxDB database (with --influx).
    #[arg(long, default_value = "env")]
    pub influx_db: String,
    /// Also send alerts to this webhook (lantian JSON).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// History published at start (48h gives a complete day: daily AQI,
    /// treatment rates, the alert level).
    #[arg(long, default_value = "48h", value_parser = humantime::parse_duration)]
    pub history: Duration,
    /// Interval of live readings after the history.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Send the emission sources (dust, VOC, catering, sewage) as JSON over
    /// MQTT like the stations, instead of HJ 212 over TCP.
    #[arg(long)]
    pub json_only: bool,
}

/// The settings the demo runs the pipeline with.
pub fn settings(o: &DemoOptions, broker: SocketAddr) -> Settings {
    let mut s = Settings::default();
    s.mqtt.host = broker.ip().to_string();
    s.mqtt.port = broker.port();
    s.mqtt.client_id = "lantian-demo".into();
    s.spool.dir = o.state_dir.join("spool");
    s.alerts.dir = o.state_dir.join("alerts");
    s.archive.enabled = true;
    s.archive.dir = o.state_dir.join("archive");
    s.influxdb.enabled = o.influx.is_some();
    if let Some(url) = &o.influx {
        s.influxdb.url = url.clone();
        s.influxdb.database = o.influx_db.clone();
    }
    s.admin.listen = o.admin;
    // The admin endpoint's bound address (`--admin` may ask for port 0).
    s.alerts.external_url = String::new();
    s.pipeline.stats_interval = HumanDuration::from_secs(0);
    // Bigger batches: fewer, larger Parquet files.
    s.influxdb.batch_linger = HumanDuration::from_millis(500);
    s.log.level = "warn,lantian::alert::stage=info".into();
    if !o.json_only {
        // The emission sources are HJ 212 data loggers.
        s.hj212.listen = Some("127.0.0.1:0".into());
        s.hj212.devices = Fleet::beijing(0)
            .sensors
            .iter()
            .filter(|x| x.is_emission())
            .map(|x| x.hj212_device())
            .collect();
    }
    if let Some(url) = &o.webhook {
        s.alerts.receivers.push(ReceiverConfig {
            name: "demo".into(),
            url: url.clone(),
            format: Default::default(),
            secret: None,
            secret_file: None,
            timeout: HumanDuration::from_secs(10),
            min_severity: crate::evaluate::targets::Severity::Info,
            rules: Vec::new(),
            matchers: Default::default(),
            retry_initial: HumanDuration::from_secs(1),
            retry_max: HumanDuration::from_secs(30),
        });
    }
    s
}

async fn status(admin: SocketAddr) -> Option<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://{admin}/api/status"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

fn summary(v: &serde_json::Value) -> String {
    let stations = v["stations"].as_array().map_or(0, |a| a.len());
    let alerts: Vec<String> = v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let where_ = x["labels"]["site"]
                        .as_str()
                        .or(x["labels"]["scope"].as_str())
                        .unwrap_or("");
                    format!("{} {where_}", x["rule"].as_str().unwrap_or(""))
                })
                .collect()
        })
        .unwrap_or_default();
    let p = &v["pipeline"];
    let city = match v["city"]["aqi"].as_u64() {
        Some(aqi) => format!(" · city AQI {aqi}"),
        None => String::new(),
    };
    let level = v["city_observed_level"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["rule_set"] == "beijing-2016"))
        .and_then(|x| x["name"].as_str())
        .map(|n| format!(" · observed level {n}"))
        .unwrap_or_default();
    format!(
        "readings stored {}{city}{level} · stations with an hourly AQI {stations}/12 · alerts firing {}{}",
        p["points_written"],
        alerts.len(),
        if alerts.is_empty() {
            String::new()
        } else {
            format!(": {}", alerts.join(", "))
        }
    )
}

/// Where everything is, printed at start.
fn banner(o: &DemoOptions, addr: std::net::SocketAddr, fleet: &Fleet, archive: &std::path::Path) {
    println!(
        "lantian demo — embedded broker, simulated Beijing fleet, full pipeline\n\
         \n  status page   http://{admin}/\
         \n  metrics       http://{admin}/metrics   (health: /healthz /readyz; JSON: /api/status)\
         \n  archive       {}   (Parquet: <measurement>/date=YYYY-MM-DD/*.parquet;\
         \n                e.g. python3 -c 'import polars as pl; print(pl.read_parquet(\"{}/aqi/**/*.parquet\"))')\
         \n  broker        {}   (MQTT 3.1.1; publish to env/<district>/<site>/<kind>/<sensor>)\
         \n  hj212         the emission sources are HJ 212 data loggers: hourly data over TCP (--json-only: MQTT instead)\
         \n  influxdb      {}\
         \n\nPublishing {} of history for {} sensors ({} stations, dust, VOC, sewage), then readings every {}. Ctrl-C stops.",
        archive.display(),
        archive.display(),
        addr,
        o.influx
            .as_deref()
            .unwrap_or("off (--influx URL to write there too)"),
        hours(o.history),
        fleet.sensors.len(),
        fleet::STATIONS.len(),
        humantime::format_duration(o.every),
        admin = o.admin,
    );
}

/// Waits until lantian answers /readyz (the broker keeps nothing for
/// absent subscribers: publish only once it is subscribed).
async fn wait_ready(
    admin: std::net::SocketAddr,
    app: &tokio::task::JoinHandle<anyhow::Result<std::sync::Arc<crate::metrics::Metrics>>>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let ready = reqwest::Client::new()
            .get(format!("http://{}/readyz", admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if app.is_finished() {
            anyhow::bail!("the pipeline stopped before it was ready (see the log above)");
        }
        if stop.is_cancelled() || t.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the pipeline did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Publishes live readings until `stop`, printing a status line when it
/// changes.
async fn live(
    fleet: &Fleet,
    p: &mut Publisher,
    hj: Option<&mut Loggers>,
    o: &DemoOptions,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut report = tokio::time::interval(Duration::from_secs(15));
    let mut last = String::new();
    let sim = publish_live(fleet, p, hj, o.every, stop);
    tokio::pin!(sim);
    loop {
        tokio::select! {
            r = &mut sim => return r,
            _ = report.tick() => {
                if let Some(v) = status(o.admin).await {
                    let line = summary(&v);
                    if line != last {
                        println!("{line}");
                        last = line;
                    }
                }
            }
        }
    }
}

/// `lantian demo`: runs until `stop`.
pub async fn demo(o: DemoOptions, stop: CancellationToken) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    std::fs::create_dir_all(&o.state_dir)
        .with_context(|| format!("--state-dir {}", o.state_dir.display()))?;
    let broker_stop = CancellationToken::new();
    let broker = broker::Broker::start(o.broker, broker_stop.clone())
        .await
        .with_context(|| format!("embedded broker on {}", o.broker))?;
    let settings = settings(&o, broker.addr);
    let mut problems = settings.validate();
    problems.extend(crate::app::check(&settings));
    anyhow::ensure!(problems.is_empty(), "demo settings: {problems:?}");
    crate::telemetry::init(settings.log.format, &settings.log.level);
    let archive = settings.archive.dir.clone();
    let pipeline_stop = CancellationToken::new();
    let (bound, admin) = tokio::sync::oneshot::channel();
    let (hj212_bound, hj212) = tokio::sync::oneshot::channel();
    let hooks = crate::app::Hooks {
        admin_bound: Some(bound),
        hj212_bound: Some(hj212_bound),
        ..Default::default()
    };
    let app = tokio::spawn(crate::app::run_with(settings, pipeline_stop.clone(), hooks));
    let Ok(admin) = admin.await else {
        // Never listened: the task says why.
        return match app.await {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("the pipeline stopped before it listened")),
        };
    };
    let o = DemoOptions { admin, ..o };

    let now = chrono::Utc::now().timestamp_millis();
    // The episode peaked two hours ago: the southern stations are still
    // heavily polluted, and the alerts fire.
    let fleet = Fleet::beijing(now - 2 * 3_600_000);
    banner(&o, broker.addr, &fleet, &archive);
    // The broker keeps nothing for absent subscribers: publish only once
    // lantian is subscribed (and its sink writable).
    wait_ready(o.admin, &app, &stop).await?;
    let mut p = Publisher::connect(
        &broker.addr.ip().to_string(),
        broker.addr.port(),
        "lantian-demo-fleet",
    )
    .await;
    let mut loggers = match hj212.await {
        Ok(addr) => Some(Loggers::connect(addr, &fleet)),
        Err(_) => None, // --json-only: no listener
    };
    let started = Instant::now();
    let sim_stop = stop.clone();
    let n = publish_span(
        &fleet,
        &mut p,
        loggers.as_mut(),
        now - o.history.as_millis() as i64,
        now,
        0,
        &sim_stop,
    )
    .await?;
    p.flush(Duration::from_secs(120)).await;
    if let Some(l) = &loggers {
        l.flush(Duration::from_secs(120)).await;
    }
    println!(
        "history published: {n} readings in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        match &loggers {
            Some(l) => format!(
                " ({} of them hourly HJ 212 packets over TCP, each acknowledged)",
                l.acked()
            ),
            None => String::new(),
        }
    );
    let res = live(&fleet, &mut p, loggers.as_mut(), &o, &sim_stop).await;

    let final_status = status(o.admin).await;
    pipeline_stop.cancel();
    let _ = app.await;
    broker_stop.cancel();
    println!(
        "\nstopped. {}\nThe archive stays in {} (readings, windows, AQI, alerts).",
        final_status.as_ref().map(summary).unwrap_or_default(),
        archive.display(),
    );
    closing_report(&archive, &o.state_dir.join("report")).await;
    res
}

/// The compliance report of the demo's days, from its archive, written to
/// `out`; its city-wide level and annual-means sections printed.
async fn closing_report(archive: &std::path::Path, out: &std::path::Path) {
    let tz = chrono_tz::Asia::Shanghai;
    let now = chrono::Utc::now();
    let today = crate::report::local_date(tz, now.timestamp_millis()).unwrap_or(now.date_naive());
    let from = today - chrono::Days::new(2);
    let o = crate::report::Options {
        source: crate::report::Source::Archive(archive.to_owned()),
        from,
        to: today,
        format: crate::report::Format::Md,
        out: out.to_owned(),
        tz,
        dust_limit: None,
    };
    let md = match crate::report::run(&o).await {
        Ok(files) => files
            .first()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default(),
        Err(e) => {
            println!("report: {e:#}");
            return;
        }
    };
    let section = |title: &str| -> String {
        md.split("\n## ")
            .find(|s| s.starts_with(title))
            .map(|s| format!("## {}", s.trim_end()))
            .unwrap_or_default()
    };
    println!(
        "\n{}\n\n{}\n\nThe whole report: {} (again: lantian report --archive {} --from {from} --to {today})",
        section("City-wide daily AQI"),
        section("Annual means"),
        out.join("report.md").display(),
        archive.display(),
    );
}
