//! Real services for the integration tests: Mosquitto, InfluxDB 1.x and
//! VictoriaMetrics processes on free loopback ports in temp dirs, the real
//! `lantian` binary, and a real MQTT publisher. Every process is killed
//! when its handle drops.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use tempfile::TempDir;

/// An HTTP client for the tests (rustls needs its provider first).
pub fn http() -> reqwest::Client {
    lantian::tls::install_crypto_provider();
    reqwest::Client::new()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} is not installed: run scripts/test.sh, which installs the Debian packages");
}

async fn wait_for(what: &str, timeout: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} was not ready within {timeout:?}");
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for exit; `None` on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Mosquitto {
    pub port: u16,
    proc: Proc,
    dir: TempDir,
}

impl Mosquitto {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // The lossless settings from deploy/mosquitto/lantian.conf; the
        // session store is saved at shutdown (so a restart keeps it).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n\
                 persistence true\npersistence_location {}/\nautosave_interval 0\n\
                 max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n\
                 log_dest stdout\nlog_type error\nlog_type warning\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut me = Self {
            port,
            proc: Proc::spawn(&mut Command::new("true"), dir.path().join("unused.log")),
            dir,
        };
        me.launch().await;
        me
    }

    async fn launch(&mut self) {
        let port = self.port;
        self.proc = Proc::spawn(
            Command::new(require("mosquitto"))
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf")),
            self.dir.path().join("mosquitto.log"),
        );
        wait_for("mosquitto", Duration::from_secs(10), async || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    /// Stop cleanly (SIGTERM: the session store is saved) and start again.
    #[allow(dead_code)]
    pub async fn restart(&mut self) {
        self.proc.signal("TERM");
        assert!(self.proc.wait_timeout(Duration::from_secs(20)).is_some());
        self.launch().await;
    }
}

pub struct Influx {
    pub port: u16,
    pub proc: Proc,
    dir: TempDir,
    conf: PathBuf,
    pub http: reqwest::Client,
}

impl Influx {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let conf = dir.path().join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n"
            ),
        )
        .unwrap();
        let mut me = Self {
            port,
            proc: Proc::spawn(&mut Command::new("true"), dir.path().join("unused.log")),
            dir,
            conf,
            http: http(),
        };
        me.restart().await;
        me.query_post("CREATE DATABASE env").await;
        me
    }

    /// Start (again) on the same port and data.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.proc = Proc::spawn(
            Command::new(require("influxd"))
                .arg("-config")
                .arg(&self.conf),
            self.dir.path().join("influxd.log"),
        );
        let url = format!("http://127.0.0.1:{}/ping", self.port);
        let http = self.http.clone();
        wait_for(
            "influxd",
            Duration::from_secs(30),
            async || matches!(http.get(&url).send().await, Ok(r) if r.status().as_u16() == 204),
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn query_post(&self, q: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/query", self.url()))
            .form(&[("q", q)])
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// A statement (DELETE, DROP...) against database `env`.
    #[allow(dead_code)]
    pub async fn exec(&self, q: &str) {
        let v: Value = self
            .http
            .post(format!("{}/query", self.url()))
            .form(&[("db", "env"), ("q", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["results"][0]["error"].is_null(), "{q}: {v}");
    }

    /// InfluxQL against database `env`, times in ms. Returns the series.
    pub async fn query(&self, q: &str) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/query", self.url()))
            .query(&[("db", "env"), ("epoch", "ms"), ("q", q)])
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if let Some(e) = v["results"][0]["error"].as_str() {
            panic!("query {q:?} failed: {e}");
        }
        v["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A single number from e.g. `SELECT count(x) FROM m`.
    pub async fn scalar(&self, q: &str) -> i64 {
        let series = self.query(q).await;
        series
            .first()
            .and_then(|s| s["values"][0][1].as_i64())
            .unwrap_or(0)
    }

    /// Write raw line protocol (test set-up).
    pub async fn write(&self, lines: &str) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/write?db=env", self.url()))
            .body(lines.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Poll `q` until it returns at least `want`, then return what it returns.
    pub async fn wait_count(&self, q: &str, want: i64, timeout: Duration) -> i64 {
        let start = Instant::now();
        loop {
            let n = self.scalar(q).await;
            if n >= want || start.elapsed() > timeout {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub struct Victoria {
    pub port: u16,
    _proc: Proc,
    _dir: TempDir,
}

impl Victoria {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            Command::new(require("victoria-metrics"))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg("-retentionPeriod=100y"),
            dir.path().join("vm.log"),
        );
        let url = format!("http://127.0.0.1:{port}/health");
        wait_for(
            "victoria-metrics",
            Duration::from_secs(30),
            async || matches!(http().get(&url).send().await, Ok(r) if r.status().is_success()),
        )
        .await;
        Self {
            port,
            _proc: proc,
            _dir: dir,
        }
    }

    /// Raw samples of metrics matching `selector`, as (labels, values, timestamps).
    pub async fn export(&self, selector: &str) -> Vec<Value> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let _ = http()
            .get(format!("{base}/internal/force_flush"))
            .send()
            .await;
        let text = http()
            .get(format!("{base}/api/v1/export"))
            .query(&[("match[]", selector)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The real `lantian` binary with a config written to a temp dir.
pub struct Lantian {
    pub proc: Proc,
    pub dir: TempDir,
    /// Port of the admin endpoint (/healthz, /metrics, /).
    pub admin_port: u16,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
    /// How many times the binary was started.
    runs: usize,
}

impl Lantian {
    pub fn config(mqtt_port: u16, influx_section: &str, extra: &str) -> String {
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"lantian-test\"\n\
             reconnect_max = \"1s\"\n\
             [[mqtt.subscriptions]]\nfilter = \"env/#\"\nqos = 1\n\
             [influxdb]\n{influx_section}\nretry_max = \"1s\"\n\
             [pipeline]\nshutdown_timeout = \"20s\"\nstats_interval = \"0s\"\n{extra}"
        )
    }

    pub fn v1(mqtt_port: u16, influx: &Influx) -> String {
        Self::config(
            mqtt_port,
            &format!(
                "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"",
                influx.url()
            ),
            "",
        )
    }

    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Lantian::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut me = Self {
            proc: Proc::spawn(&mut Command::new("true"), dir.path().join("unused.log")),
            dir,
            admin_port: free_port(),
            env: Vec::new(),
            runs: 0,
        };
        let mut config = config.to_owned();
        if !config.contains("[spool]") {
            let spool = me.dir.path().join("spool");
            config.push_str(&format!("\n[spool]\ndir = \"{}\"\n", spool.display()));
        }
        std::fs::write(me.dir.path().join("lantian.toml"), config).unwrap();
        me.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        me.restart();
        me
    }

    pub fn restart(&mut self) {
        self.proc.kill();
        self.runs += 1;
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        self.proc = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_lantian"))
                .args(["run", "--config"])
                .arg(self.dir.path().join("lantian.toml"))
                .env("RUST_LOG", "info")
                .env("LANTIAN__ALERTS__DIR", self.dir.path().join("alerts"))
                .env(
                    "LANTIAN__ADMIN__LISTEN",
                    format!("127.0.0.1:{}", self.admin_port),
                )
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env_remove("LANTIAN_CONFIG"),
            self.dir.path().join(format!("lantian-{n}.log")),
        );
    }

    /// Wait until the current run has subscribed (read from its log), so
    /// nothing published afterwards can miss the subscription.
    pub async fn wait_subscribed(&self) {
        let runs = self.runs;
        wait_for(
            "lantian subscription",
            Duration::from_secs(30),
            async || self.logs().matches("subscribed filter").count() >= runs,
        )
        .await;
    }

    /// Process id of the running lantian (used by benches/e2e.rs).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// GET a path of the admin endpoint: (status, body).
    #[allow(dead_code)]
    pub async fn admin(&self, path: &str) -> (u16, String) {
        match http()
            .get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// Everything every run of lantian logged.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.to_string_lossy().contains("lantian-"))
        {
            let _ = writeln!(
                out,
                "--- {}\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            );
        }
        out
    }
}

/// Broker, InfluxDB 1.x, lantian (subscribed) and a publisher.
pub struct Rig {
    /// Kept alive for the test's duration (dropping it stops the broker).
    pub broker: Mosquitto,
    pub influx: Influx,
    pub lantian: Lantian,
    pub publisher: Publisher,
}

impl Rig {
    pub async fn start() -> Self {
        let broker = Mosquitto::start().await;
        let influx = Influx::start().await;
        let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
        let publisher = Publisher::connect(broker.port, "test-publisher").await;
        lantian.wait_subscribed().await;
        Self {
            broker,
            influx,
            lantian,
            publisher,
        }
    }
}

/// A real MQTT client publishing at QoS 1 and counting the broker's acks.
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    sent: u64,
    _task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(port: u16, id: &str) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(200)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            acked,
            sent: 0,
            _task: task,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Wait until the broker acknowledged everything published.
    pub async fn flush(&self) {
        let (acked, sent) = (self.acked.clone(), self.sent);
        wait_for("broker acks", Duration::from_secs(120), async || {
            acked.load(Ordering::Relaxed) >= sent
        })
        .await;
    }
}

/// Peak resident memory of a process (VmHWM), KiB; 0 if unknown.
#[allow(dead_code)]
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Received {
    /// Header names lowercased.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A real HTTP/1.1 server on a loopback port that records every POST and
/// answers `status` (200 unless a test changes it); it can go down (stop
/// listening: connections are refused) and come back on the same port.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<std::sync::Mutex<Vec<Received>>>,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[allow(dead_code)]
impl Receiver {
    pub async fn start() -> Self {
        let mut me = Self {
            port: free_port(),
            got: Default::default(),
            status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            task: None,
        };
        me.up().await;
        me
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let got = self.got.clone();
        let status = self.status.clone();
        self.task = Some(tokio::spawn(async move {
            // Connections die with this task (a JoinSet aborts its tasks
            // when dropped): down means down, kept-alive ones included.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (got, status) = (got.clone(), status.clone());
                conns.spawn(async move {
                    let _ = serve(sock, got, status).await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    /// Stop listening (the port refuses connections until `up`).
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for("webhook requests", timeout, async || {
            self.got.lock().unwrap().len() >= n
        })
        .await;
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut headers = std::collections::BTreeMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[end + 4..end + 4 + len].to_vec();
        buf.drain(..end + 4 + len);
        let code = status.load(Ordering::Relaxed);
        got.lock().unwrap().push(Received {
            headers,
            body,
            status: code,
        });
        sock.write_all(format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await?;
    }
}

/// Local (Beijing) midnight two days ago, as epoch ms.
#[allow(dead_code)]
pub fn two_days_ago_beijing() -> i64 {
    const HOUR: i64 = 3_600_000;
    let local = now_ms() + 8 * HOUR;
    local - local.rem_euclid(24 * HOUR) - 8 * HOUR - 48 * HOUR
}

/// Publishes minute readings of PM2.5 for `stations` (topics
/// `env/dongcheng/{station}/air/aq1`), hour by hour from `from_hour`: the
/// hourly means are `hours[s][h]`, with a little variation so nothing
/// flat-lines. Then one reading 3 minutes into the next hour moves the
/// watermark past the last hour. Returns how many were published.
#[allow(dead_code, clippy::needless_range_loop)]
pub async fn publish_pm25_hours(
    p: &mut Publisher,
    start: i64,
    stations: &[&str],
    hours: &[Vec<f64>],
    from_hour: usize,
) -> u64 {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    let mut sent = 0;
    let n = hours[0].len();
    for h in from_hour..n {
        for m in 0..60 {
            for (s, name) in stations.iter().enumerate() {
                let v = hours[s][h] + [-1.0, 0.5, 0.0, 1.0, -0.5][m % 5];
                let ts = start + h as i64 * HOUR + m as i64 * MIN;
                p.publish(
                    &format!("env/dongcheng/{name}/air/aq1"),
                    format!("{{\"ts\":{ts},\"pm25\":{v}}}"),
                )
                .await;
                sent += 1;
            }
        }
    }
    for name in stations {
        let ts = start + n as i64 * HOUR + 3 * MIN;
        p.publish(
            &format!("env/dongcheng/{name}/air/aq1"),
            format!("{{\"ts\":{ts},\"pm25\":20}}"),
        )
        .await;
        sent += 1;
    }
    p.flush().await;
    sent
}

/// Headless Chromium (the Debian package), or a panic saying how to get it.
#[allow(dead_code)]
pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "headless Chromium is needed (scripts/test.sh installs the Debian package `chromium`)",
        )
}

fn chromium_cmd(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM Chromium builds for `url`.
#[allow(dead_code)]
pub fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium_cmd(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 1280×900 screenshot of `url`, kept in target/test-artefacts/`name`;
/// returns the PNG bytes.
#[allow(dead_code)]
pub fn chromium_screenshot(url: &str, name: &str) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(name);
    let _ = std::fs::remove_file(&shot);
    let out = chromium_cmd(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
    png
}

/// Runs `lantian simulate --rate 0 --history HISTORY --no-live` against the
/// broker on `port`; returns how many messages it published (it says so).
#[allow(dead_code)]
pub fn simulate(port: u16, history: &str) -> i64 {
    let sim = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args([
            "simulate",
            "--rate",
            "0",
            "--history",
            history,
            "--no-live",
            "--broker",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sim.stderr).into_owned();
    assert!(sim.status.success(), "{said}");
    eprintln!("{said}");
    // "history: N messages in ..."
    said.split("history: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}
