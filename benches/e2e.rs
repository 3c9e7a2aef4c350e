//! End-to-end throughput, all real processes: Mosquitto 2.0 (lossless
//! settings), the real `lantian` binary with its defaults (spool, windows,
//! AQI, alerts, admin endpoint) and InfluxDB 1.6. QoS 1 air-station
//! readings (`pm25`, `pm10`, `no2`), one message each, from `SENSORS`
//! sensors.
//!
//! **Live** (how a fleet arrives): `CONNS` publisher connections send N
//! readings flat out while the system takes them. Each case is run twice,
//! each on fresh processes:
//! - the *ceiling*: the same publishers into the broker, drained by a
//!   plain `mosquitto_sub -q 1 > /dev/null`; timed to its exit;
//! - *lantian*: timed from the first publish until lantian has every
//!   reading written to InfluxDB (its `lantian_readings_written_total`;
//!   InfluxDB's own count is checked after). The CPU time of each process
//!   over the run (from /proc) gives lantian's µs per message and the
//!   *physical limit*: cores ÷ the CPU per message of everything but
//!   lantian (broker, database, and this process, which generates the
//!   load) — the rate a pipeline that cost nothing would reach on this
//!   machine.
//!
//! - *Node-RED* 4 with node-red-contrib-influxdb (installed from npm on
//!   first use; `PEERS=0` leaves it out): the same load through a flow
//!   of MQTT in → function → join → InfluxDB batch write.
//!
//! **Drain**: N readings are queued at the broker first, then lantian is
//! started and timed until InfluxDB holds them, against a
//! `mosquitto_sub -c` draining the same backlog.
//!
//! **Latency**: a breach's notice, from the reading that closes the
//! breaching hour to the webhook receiver's having it, under 10,000 msg/s
//! of background readings; 200 samples, p50 and p99, with the shipped
//! `windows.flush_interval` (1 s) and with 100 ms.
//!
//!   cargo bench --bench e2e                       # N = 200,000; 1,000 and 100,000 sensors; 1 and 4 connections; live, drain, latency
//!   N=50000 SENSORS=1000 CONNS=4 MODE=live cargo bench --bench e2e
//!   MODE=latency SAMPLES=100 RATE=10000 FLUSH=1s cargo bench --bench e2e
//!   MODE=curves cargo bench --bench e2e           # cost curves only
//!
//! **Cost curves**: live over one connection, one thing at a time grown
//! from 1,000 sensors, 3 fields a reading and the shipped rules: sensors
//! (10,000 and 100,000), fields a reading (1, 6, 20), rules (none, and
//! 200: the shipped and 177 of an operator's).
//!
//! Under `cargo test` it runs once with N = 2,000 (1,000 sensors, 4
//! connections, live and drain) and 3 latency samples under 1,000 msg/s,
//! as a smoke test.

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;

/// What one case sends.
#[derive(Clone)]
struct Load {
    n: usize,
    sensors: usize,
    conns: usize,
    topics: Arc<Vec<String>>,
    /// Reading times start here (50 minutes ago), 10 ms apart per round
    /// over the sensors.
    base_ms: i64,
    /// Fields a reading carries (the first `fields` of `FIELD_NAMES`).
    fields: usize,
    /// Configuration added to lantian's (the rules of the cost curves).
    extra: Arc<String>,
}

/// The fields a reading may carry: the six pollutants, then fields the
/// registry does not know (stored as they come).
const FIELD_NAMES: [&str; 20] = [
    "pm25", "pm10", "no2", "so2", "co", "o3", "x07", "x08", "x09", "x10", "x11", "x12", "x13",
    "x14", "x15", "x16", "x17", "x18", "x19", "x20",
];

impl Load {
    fn new(n: usize, sensors: usize, conns: usize) -> Self {
        assert!(
            sensors % conns == 0,
            "each sensor publishes on one connection: CONNS must divide SENSORS"
        );
        Self {
            n,
            sensors,
            conns,
            topics: Arc::new(
                (0..sensors)
                    .map(|s| format!("env/d{}/site{}/air/aq-{s:06}", s % 16, s % 100))
                    .collect(),
            ),
            base_ms: now_ms() - 3_000_000,
            fields: 3,
            extra: Arc::new(String::new()),
        }
    }

    /// The same load with `fields` fields a reading and `extra`
    /// configuration.
    fn with(mut self, fields: usize, extra: String) -> Self {
        self.fields = fields;
        self.extra = Arc::new(extra);
        self
    }

    /// Message `k`: sensor `k % sensors` (returned with the payload), so each connection carries the
    /// sensors `≡ c (mod conns)` in order.
    fn message(&self, k: usize) -> (usize, String) {
        use std::fmt::Write as _;
        let mut payload = format!(
            r#"{{"ts":{}"#,
            self.base_ms + (k / self.sensors) as i64 * 10
        );
        // Each field of a sensor changes from one reading to the next (13
        // is no multiple of any modulus): a fleet of working sensors. (The
        // values were once `(k + 7i) % m`, constant per sensor for m = 500
        // at 1,000 sensors: every sensor flat-lined after 30 readings and
        // the flatline rule judged each reading after that.)
        let (s, r) = (k % self.sensors, k / self.sensors);
        for (i, f) in FIELD_NAMES[..self.fields].iter().enumerate() {
            let _ = write!(
                payload,
                r#","{f}":{}"#,
                (s + 7 * i + 13 * r) % [500, 700, 90][i % 3]
            );
        }
        payload.push('}');
        (k % self.sensors, payload)
    }

    /// Connects the publishers (before any timing starts).
    async fn connect(&self, port: u16, tag: &str) -> Vec<Publisher> {
        let mut pubs = Vec::new();
        for c in 0..self.conns {
            pubs.push(Publisher::connect(port, &format!("{tag}-{c}")).await);
        }
        pubs
    }

    /// Sends everything over `pubs`, flat out; returns once the broker
    /// acknowledged it all.
    async fn send(&self, pubs: Vec<Publisher>) {
        let tasks: Vec<_> = pubs
            .into_iter()
            .enumerate()
            .map(|(c, mut p)| {
                let load = self.clone();
                tokio::spawn(async move {
                    for k in (c..load.n).step_by(load.conns) {
                        let (sensor, payload) = load.message(k);
                        p.publish(&load.topics[sensor], payload).await;
                    }
                    // (Not `flush`: its future is not `Send` for a task.)
                    while !p.all_acked() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

/// `mosquitto_sub` on `port` at QoS 1 under a persistent session, output
/// discarded.
fn sub(port: u16, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("mosquitto_sub");
    c.args([
        "-p",
        &port.to_string(),
        "-c",
        "-i",
        "baseline",
        "-q",
        "1",
        "-t",
        "env/#",
    ])
    .args(extra)
    .stdout(std::process::Stdio::null());
    c
}

/// The broker's ceiling, live: the publishers into a fresh broker drained
/// by `mosquitto_sub`. Returns msg/s.
async fn live_ceiling(load: &Load) -> f64 {
    let broker = Mosquitto::start().await;
    // The session exists before the first publish, so nothing is missed
    // while mosquitto_sub connects.
    assert!(sub(broker.port, &["-E"]).status().unwrap().success());
    let pubs = load.connect(broker.port, "ceiling").await;
    let t = Instant::now();
    let mut child = sub(broker.port, &["-C", &load.n.to_string()])
        .spawn()
        .unwrap();
    load.send(pubs).await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    load.n as f64 / t.elapsed().as_secs_f64()
}

/// One lantian run's figures.
struct Run {
    secs: f64,
    /// CPU seconds over the run: lantian, and everything else.
    lantian_cpu: f64,
    others_cpu: f64,
    rss_kib: u64,
    /// The alert rules lantian ran with (its start-up line), if known.
    rules: Option<usize>,
}

impl Run {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.secs
    }

    /// Cores ÷ the others' CPU per message.
    fn physical_limit(&self, n: usize) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        cores / (self.others_cpu / n as f64)
    }
}

/// Lantian live: fresh broker, database and daemon; the publishers send
/// while it takes the stream.
async fn live_lantian(load: &Load) -> Run {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&(Lantian::v1(broker.port, &influx) + &load.extra));
    lantian.wait_subscribed().await;
    let admin = lantian.admin_port().await;
    let pubs = load.connect(broker.port, "live").await;
    let pids = [
        broker.pid(),
        influx.proc.child.id(),
        std::process::id(),
        lantian.pid(),
    ];
    let cpu = || pids.map(cpu_seconds);
    let (before, t) = (cpu(), Instant::now());
    let sending = tokio::spawn({
        let load = load.clone();
        async move { load.send(pubs).await }
    });
    wait_for(
        "every reading written",
        Duration::from_secs(600),
        async || metric_at(admin, "lantian_readings_written_total").await >= Some(load.n as f64),
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    let after = cpu();
    sending.await.unwrap();
    let used: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let stored = influx.scalar("SELECT count(pm25) FROM air").await;
    assert_eq!(stored, load.n as i64, "lost or extra: {}", lantian.logs());
    let rules = lantian.logs().lines().find_map(|l| {
        let rest = l.split("alerts on rules=").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    });
    Run {
        secs,
        lantian_cpu: used[3],
        others_cpu: used[..3].iter().sum(),
        rss_kib: peak_rss_kib(lantian.pid()),
        rules: Some(rules.unwrap_or(0)),
    }
}

/// Node-RED 4 with node-red-contrib-influxdb, installed from npm into
/// the target directory on first use; its path.
fn node_red() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers");
    let red = dir.join("node_modules/node-red/red.js");
    if !red.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "node-red@4",
                "node-red-contrib-influxdb@0.7",
            ])
            .current_dir(&dir)
            .status()
            .expect("npm (Debian package npm) installs Node-RED");
        assert!(status.success(), "npm install node-red failed");
    }
    red
}

/// The same load through Node-RED, the low-code tool a bureau might pick
/// instead: MQTT in (QoS 1, persistent session, JSON) → a function that
/// maps the reading to a point (tags from the topic, as lantian's) →
/// join (1,000 points or 200 ms) → InfluxDB batch write. Timed from the
/// first publish until InfluxDB holds all N. (Node-RED acknowledges MQTT
/// on receipt, before anything is stored.)
async fn live_node_red(load: &Load) -> Run {
    let red = node_red();
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    influx.exec("CREATE DATABASE env").await;
    let mut session = std::process::Command::new("mosquitto_sub");
    session.args([
        "-p",
        &broker.port.to_string(),
        "-c",
        "-i",
        "node-red",
        "-q",
        "1",
        "-t",
        "env/#",
        "-E",
    ]);
    assert!(session.status().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    // (Node ids must not be node type names: an id "join" makes Node-RED
    // refuse the flow as a circular config-node dependency.)
    let flow = serde_json::json!([
        {"id": "b1", "type": "mqtt-broker", "broker": "127.0.0.1", "port": broker.port.to_string(),
         "clientid": "node-red", "usetls": false, "protocolVersion": "4", "keepalive": "60",
         "cleansession": false, "autoConnect": true},
        {"id": "d1", "type": "influxdb", "hostname": "127.0.0.1",
         "port": influx.url().rsplit(':').next().unwrap(), "protocol": "http", "database": "env",
         "usetls": false, "influxdbVersion": "1.x"},
        {"id": "t1", "type": "tab", "label": "bench"},
        {"id": "n1", "type": "mqtt in", "z": "t1", "topic": "env/#", "qos": "1", "datatype": "json",
         "broker": "b1", "wires": [["n2"]]},
        {"id": "n2", "type": "function", "z": "t1", "outputs": 1, "wires": [["n3"]],
         "func": "const t = msg.topic.split('/'); const r = msg.payload;\n\
                  msg.payload = {measurement: 'air', tags: {district: t[1], site: t[2], sensor: t[4]},\n\
                  fields: {pm25: r.pm25, pm10: r.pm10, no2: r.no2}, timestamp: new Date(r.ts)};\n\
                  return msg;"},
        {"id": "n3", "type": "join", "z": "t1", "mode": "custom", "build": "array",
         "property": "payload", "propertyType": "msg", "count": "1000", "timeout": "0.2",
         "joiner": "\\n", "joinerType": "str", "accumulate": false, "wires": [["n4"]]},
        {"id": "n4", "type": "influxdb batch", "z": "t1", "influxdb": "d1", "precision": "ms",
         "wires": []}
    ]);
    std::fs::write(dir.path().join("flows.json"), flow.to_string()).unwrap();
    // Node-RED loads extra nodes from its user directory's node_modules.
    std::os::unix::fs::symlink(
        red.ancestors().nth(2).unwrap(),
        dir.path().join("node_modules"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("settings.js"),
        format!(
            "module.exports = {{ uiPort: {}, uiHost: '127.0.0.1', flowFile: 'flows.json', \
             credentialSecret: false, logging: {{ console: {{ level: 'warn' }} }} }};\n",
            free_port()
        ),
    )
    .unwrap();
    let proc = Proc::spawn(
        std::process::Command::new("node")
            .arg(&red)
            .args(["--userDir"])
            .arg(dir.path()),
        dir.path().join("node-red.log"),
    );
    let pid = proc.child.id();
    // Ready when a probe reading has gone all the way through (queued in
    // Node-RED's session, made beforehand, if it is not connected yet).
    let mut probe = Publisher::connect(broker.port, "probe").await;
    probe
        .publish(
            "env/probe/probe/air/probe",
            format!(r#"{{"ts":{},"pm25":1,"pm10":1,"no2":1}}"#, now_ms()),
        )
        .await;
    wait_for(
        "Node-RED stores a probe",
        Duration::from_secs(120),
        async || influx.scalar("SELECT count(pm25) FROM air").await > 0,
    )
    .await;
    let probes = 1;
    let pubs = load.connect(broker.port, "red").await;
    let pids = [
        broker.pid(),
        influx.proc.child.id(),
        std::process::id(),
        pid,
    ];
    let cpu = || pids.map(cpu_seconds);
    let (before, t) = (cpu(), Instant::now());
    load.send(pubs).await;
    let want = load.n as i64 + probes;
    let mut stored = 0;
    wait_for(
        "Node-RED stores every reading",
        Duration::from_secs(900),
        async || {
            stored = influx.scalar("SELECT count(pm25) FROM air").await;
            stored >= want
        },
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    let used: Vec<f64> = cpu().iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(stored, want, "Node-RED lost or duplicated readings");
    Run {
        secs,
        lantian_cpu: used[3],
        others_cpu: used[..3].iter().sum(),
        rss_kib: peak_rss_kib(pid),
        rules: None,
    }
}

/// Drain: the backlog is queued at the broker first; then the baseline
/// (`mosquitto_sub -c`) and lantian each take it. Returns (baseline
/// msg/s, lantian's run).
async fn drain(load: &Load) -> (f64, Run) {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let mut lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    lantian.wait_subscribed().await;
    // lantian's persistent session now exists; stop it so the backlog
    // queues for it, and make the baseline's session.
    lantian.proc.signal("TERM");
    lantian
        .proc
        .wait_timeout(Duration::from_secs(30))
        .expect("lantian stops on SIGTERM");
    assert!(sub(broker.port, &["-E"]).status().unwrap().success());
    let pubs = load.connect(broker.port, "drain").await;
    load.send(pubs).await;

    let t = Instant::now();
    let status = sub(broker.port, &["-C", &load.n.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let baseline = load.n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    lantian.restart();
    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            load.n as i64,
            Duration::from_secs(600),
        )
        .await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, load.n as i64, "lost or extra: {}", lantian.logs());
    let pid = lantian.pid();
    let run = Run {
        secs,
        lantian_cpu: cpu_seconds(pid),
        others_cpu: 0.0,
        rss_kib: peak_rss_kib(pid),
        rules: None,
    };
    (baseline, run)
}

/// Reading → webhook latency under background load. A dust site's hour
/// breaches the site limit (`dust.pm10.site` at 100 µg/m³; 12 readings of
/// 200 at a 5-minute interval, stored first); then the reading that closes
/// the hour is published, and the time from that publish to the
/// receiver's having the firing notice (it answers 200 at once) is one
/// sample. Meanwhile `rate` msg/s of air readings from 1,000 sensors
/// flow. Returns the samples in ms, sorted.
async fn latency(samples: usize, rate: usize, flush_interval: &str) -> Vec<f64> {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let duty = Receiver::start().await;
    let config = format!(
        "{}[windows]\nflush_interval = \"{flush_interval}\"\n[windows.intervals]\ndust = \"5m\"\n\
         [alerts]\n[[alerts.targets]]\nid = \"dust.pm10.site\"\nenabled = true\nvalue = 100\n\
         [[alerts.receivers]]\nname = \"duty\"\nurl = \"{}\"\nrules = [\"dust.pm10.site\"]\n",
        Lantian::v1(broker.port, &influx),
        duty.url()
    );
    let lantian = Lantian::start(&config);
    lantian.wait_subscribed().await;
    // The background: air readings now, `rate` a second in 10 ms ticks.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = tokio::spawn({
        let (stop, port) = (stop.clone(), broker.port);
        async move {
            let mut p = Publisher::connect(port, "background").await;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (per_tick, mut k) = (rate.div_ceil(100), 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..per_tick {
                    let s = k % 1000;
                    p.publish(
                        &format!("env/d{}/site{}/air/bg-{s:04}", s % 16, s % 100),
                        format!(r#"{{"ts":{},"pm25":{}}}"#, now_ms(), k % 300),
                    )
                    .await;
                    k += 1;
                }
            }
            while !p.all_acked() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut p = Publisher::connect(broker.port, "breaches").await;
    // An hour of three days ago; each sample has a site of its own.
    let hour = (now_ms() - 3 * 86_400_000) / 3_600_000 * 3_600_000;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let topic = format!("env/d0/lat-{i}/dust/dm-{i}");
        for m in (0..60).step_by(5) {
            let ts = hour + m * 60_000;
            p.publish(&topic, format!(r#"{{"ts":{ts},"pm10":200}}"#))
                .await;
        }
        p.flush().await;
        let q = format!("SELECT count(pm10) FROM dust WHERE site = 'lat-{i}'");
        assert_eq!(influx.wait_count(&q, 12, Duration::from_secs(60)).await, 12);
        let t0 = Instant::now();
        let ts = hour + 3_600_000;
        p.publish(&topic, format!(r#"{{"ts":{ts},"pm10":50}}"#))
            .await;
        p.flush().await;
        let site = format!("lat-{i}");
        let firing = |r: &Received| {
            let n = r.json();
            n["event"] == "firing" && n["alert"]["labels"]["site"] == site.as_str()
        };
        wait_for("the breach's notice", Duration::from_secs(60), async || {
            duty.requests().iter().any(firing)
        })
        .await;
        let at = duty.requests().into_iter().find(firing).unwrap().at;
        out.push(at.duration_since(t0).as_secs_f64() * 1000.0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await.unwrap();
    out.sort_by(f64::total_cmp);
    out
}

/// Cost curves, live over one connection: lantian's rate, CPU per
/// message and peak RSS as one thing at a time grows from the case of
/// 1,000 sensors, 3 fields a reading and the shipped rules: sensors
/// (10,000, 100,000), fields a reading (1, 6, 20), rules (none: alerts
/// off; the shipped plus 177 of the operator's on the fields' hourly
/// means). Returns the markdown table.
async fn curves(n: usize) -> String {
    let more_rules: String = (0..177)
        .map(|i| {
            format!(
                "[[alerts.targets]]\nid = \"bench.r{i:03}\"\nname = \"bench rule {i}\"\nkind = \"air\"\n\
                 metric = \"{}.hour\"\nop = \">\"\nvalue = {}\nunit = \"µg/m³\"\nseverity = \"info\"\n",
                ["pm25", "pm10", "no2"][i % 3],
                1000 + i
            )
        })
        .collect();
    let cases: [(&str, usize, usize, String); 8] = [
        (
            "1,000 sensors, 3 fields, shipped rules",
            1_000,
            3,
            String::new(),
        ),
        ("10,000 sensors", 10_000, 3, String::new()),
        ("100,000 sensors", 100_000, 3, String::new()),
        ("1 field", 1_000, 1, String::new()),
        ("6 fields", 1_000, 6, String::new()),
        ("20 fields", 1_000, 20, String::new()),
        (
            "no rules (alerts off)",
            1_000,
            3,
            "[alerts]\nenabled = false\n".to_owned(),
        ),
        ("shipped + 177 rules", 1_000, 3, more_rules),
    ];
    let mut table = vec![
        "| case (one change from the first) | rules | lantian msg/s | CPU µs/msg | peak RSS MB |"
            .to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for (what, sensors, fields, extra) in cases {
        let load = Load::new(n, sensors, 1).with(fields, extra);
        let run = live_lantian(&load).await;
        let rules = run.rules.map_or("–".to_owned(), |r| r.to_string());
        println!(
            "e2e curve: {what}: {n} readings live, {rules} rules: {:.0} msg/s; CPU {:.1} µs/msg; peak RSS {:.1} MB",
            run.rate(n),
            run.lantian_cpu * 1e6 / n as f64,
            run.rss_kib as f64 / 1024.0
        );
        table.push(format!(
            "| {what} | {rules} | {:.0} | {:.1} | {:.0} |",
            run.rate(n),
            run.lantian_cpu * 1e6 / n as f64,
            run.rss_kib as f64 / 1024.0
        ));
    }
    table.join("\n")
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var).map_or_else(
        |_| default.to_vec(),
        |v| v.split(',').map(|x| x.trim().parse().unwrap()).collect(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = list("N", &[if bench { 200_000 } else { 2_000 }])[0];
    let sensors = list("SENSORS", if bench { &[1_000, 100_000] } else { &[1_000] });
    let conns = list("CONNS", if bench { &[1, 4] } else { &[4] });
    let mode = std::env::var("MODE").unwrap_or_else(|_| "both".into());
    // The Node-RED peer: PEERS=0 leaves it out.
    let peers = std::env::var("PEERS").map_or(true, |v| v != "0");
    let mut table = vec![
        "| sensors | connections | ceiling msg/s | physical limit msg/s | lantian msg/s | % of ceiling | % of limit | lantian CPU µs/msg | others' CPU µs/msg | peak RSS MB | Node-RED msg/s | lantian ÷ Node-RED | Node-RED CPU µs/msg | Node-RED RSS MB |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for &s in sensors
        .iter()
        .filter(|_| mode != "latency" && mode != "curves")
    {
        if mode != "drain" {
            for &c in &conns {
                let load = Load::new(n, s, c);
                let ceiling = live_ceiling(&load).await;
                let run = live_lantian(&load).await;
                let (rate, limit) = (run.rate(n), run.physical_limit(n));
                let us = |cpu: f64| cpu * 1e6 / n as f64;
                println!(
                    "e2e live: {n} QoS 1 readings, {s} sensors, {c} connection(s): \
                     ceiling (broker → mosquitto_sub) {ceiling:.0} msg/s; \
                     lantian {rate:.0} msg/s = {:.0}% of the ceiling, {:.0}% of the physical limit ({limit:.0} msg/s: \
                     broker + InfluxDB + load generator {:.1} µs/msg); lantian CPU {:.1} µs/msg; peak RSS {:.1} MB",
                    100.0 * rate / ceiling,
                    100.0 * rate / limit,
                    us(run.others_cpu),
                    us(run.lantian_cpu),
                    run.rss_kib as f64 / 1024.0
                );
                let red = if peers {
                    let red = live_node_red(&load).await;
                    println!(
                        "e2e live: Node-RED 4 + node-red-contrib-influxdb, same load: {:.0} msg/s \
                         (lantian {:.1}× it); its CPU {:.1} µs/msg; peak RSS {:.1} MB",
                        red.rate(n),
                        rate / red.rate(n),
                        us(red.lantian_cpu),
                        red.rss_kib as f64 / 1024.0
                    );
                    format!(
                        " {:.0} | {:.1}× | {:.1} | {:.0} |",
                        red.rate(n),
                        rate / red.rate(n),
                        us(red.lantian_cpu),
                        red.rss_kib as f64 / 1024.0
                    )
                } else {
                    " – | – | – | – |".to_owned()
                };
                table.push(format!(
                    "| {s} | {c} | {ceiling:.0} | {limit:.0} | {rate:.0} | {:.0} % | {:.0} % | {:.1} | {:.1} | {:.1} |",
                    100.0 * rate / ceiling,
                    100.0 * rate / limit,
                    us(run.lantian_cpu),
                    us(run.others_cpu),
                    run.rss_kib as f64 / 1024.0
                ) + &red);
            }
        }
        if mode != "live" {
            let load = Load::new(n, s, 1);
            let (baseline, run) = drain(&load).await;
            println!(
                "e2e drain: {n} QoS 1 readings from {s} sensors queued at the broker: \
                 mosquitto_sub -c {baseline:.0} msg/s; lantian, start-up to all stored: {:.2}s = {:.0} msg/s = {:.0}% of it; \
                 CPU {:.1} µs/msg; peak RSS {:.1} MB",
                run.secs,
                run.rate(n),
                100.0 * run.rate(n) / baseline,
                run.lantian_cpu * 1e6 / n as f64,
                run.rss_kib as f64 / 1024.0
            );
        }
    }
    if mode == "both" || mode == "live" {
        println!("{}", table.join("\n"));
    }
    if mode == "both" || mode == "curves" {
        println!("{}", curves(n).await);
    }
    if mode == "both" || mode == "latency" {
        let samples = list("SAMPLES", &[if bench { 200 } else { 3 }])[0];
        let rate = list("RATE", &[if bench { 10_000 } else { 1_000 }])[0];
        // The shipped flush interval, and a tenth of it.
        let intervals: Vec<String> = std::env::var("FLUSH").map_or_else(
            |_| vec!["1s".to_owned(), "100ms".to_owned()],
            |v| v.split(',').map(str::to_owned).collect(),
        );
        for flush in &intervals {
            let v = latency(samples, rate, flush).await;
            println!(
                "e2e latency: {samples} breaches (the reading that closes a breaching hour → the webhook receiver has the notice), \
                 {rate} msg/s of background load, windows.flush_interval {flush}: \
                 p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                quantile(&v, 0.5),
                quantile(&v, 0.99),
                v[v.len() - 1]
            );
        }
    }
}
