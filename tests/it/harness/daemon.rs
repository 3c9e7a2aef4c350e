//! The real `lantian` binary, and a rig of broker, database, lantian and
//! publisher.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

/// The real `lantian` binary with a config written to a temp dir.
pub struct Lantian {
    pub proc: Proc,
    pub dir: TempDir,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
    /// How many times the binary was started.
    runs: usize,
}

/// A failing test keeps the daemon's directory (its logs, spool and
/// state) and says where, so that a failure on a busy machine can be read
/// afterwards.
impl Drop for Lantian {
    fn drop(&mut self) {
        keep_if_panicking(&mut self.proc, &mut self.dir, "lantian's");
    }
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

    /// [`Lantian::v1`] with alerts to `extra`'s receivers (and whatever
    /// else `extra` adds): per-station alerts, counted exactly, with no
    /// city-wide AQI beside them (its rules are unit-tested in
    /// `alert::tests`).
    pub fn alerting(mqtt_port: u16, influx: &Influx, extra: &str) -> String {
        Self::config(
            mqtt_port,
            &format!(
                "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"",
                influx.url()
            ),
            &format!(
                "[aqi]\ncity_sites = []\n[alerts]\nexternal_url = \"http://lantian.test/\"\n{extra}"
            ),
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
                .env("LANTIAN__ADMIN__LISTEN", "127.0.0.1:0")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env_remove("LANTIAN_CONFIG"),
            self.dir.path().join(format!("lantian-{n}.log")),
        );
    }

    /// The current run's admin port (it binds port 0; read back from
    /// /proc: its only listening socket, or, with the HJ 212 listener on
    /// too, the one that answers `/healthz` — the HJ 212 port answers HTTP
    /// with a 400). Waits for it to be bound.
    pub async fn admin_port(&self) -> u16 {
        let pid = self.pid();
        let mut port = 0;
        wait_for(
            "lantian's admin endpoint",
            Duration::from_secs(60),
            async || {
                let ports = listening_ports(pid);
                port = match ports.as_slice() {
                    [] => 0,
                    [one] => *one,
                    several => {
                        let mut found = 0;
                        for p in several {
                            let ok = http()
                                .get(format!("http://127.0.0.1:{p}/healthz"))
                                .send()
                                .await
                                .is_ok_and(|r| r.status() == 200);
                            if ok {
                                found = *p;
                                break;
                            }
                        }
                        found
                    }
                };
                port != 0
            },
        )
        .await;
        port
    }

    /// The current run's HJ 212 listener port (`hj212.listen` on port 0):
    /// its listening socket that is not the admin endpoint.
    pub async fn hj212_port(&self) -> u16 {
        let admin = self.admin_port().await;
        let pid = self.pid();
        let mut port = 0;
        wait_for(
            "lantian's HJ 212 listener",
            Duration::from_secs(60),
            async || {
                port = listening_ports(pid)
                    .into_iter()
                    .find(|p| *p != admin)
                    .unwrap_or(0);
                port != 0
            },
        )
        .await;
        port
    }

    /// Wait until the current run has subscribed (it says so on /metrics),
    /// so nothing published afterwards can miss the subscription.
    pub async fn wait_subscribed(&self) {
        wait_for(
            "lantian subscription",
            Duration::from_secs(60),
            async || self.metric("lantian_mqtt_subscribed").await == Some(1.0),
        )
        .await;
    }

    /// A metric of the current run (`name` as on /metrics, without labels);
    /// `None` when it cannot be read.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_at(self.admin_port().await, name).await
    }

    /// Wait until the current run reports `name` at `at_least` or more:
    /// lantian counts a point once the sink has acknowledged it.
    pub async fn wait_metric(&self, name: &str, at_least: f64, timeout: Duration) {
        wait_for(name, timeout, async || {
            self.metric(name).await.is_some_and(|v| v >= at_least)
        })
        .await;
    }

    /// Wait until the current run answers /readyz with 200 (subscribed,
    /// sink writable, spool not full).
    pub async fn wait_ready(&self) {
        wait_for("lantian /readyz", Duration::from_secs(60), async || {
            self.admin("/readyz").await.0 == 200
        })
        .await;
    }

    /// Process id of the running lantian.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// GET a path of the admin endpoint: (status, body).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        match http()
            .get(format!(
                "http://127.0.0.1:{}{path}",
                self.admin_port().await
            ))
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

/// A metric (`name` as on /metrics, without labels) of the lantian whose
/// admin endpoint is on `port`; `None` when it cannot be read.
pub async fn metric_at(port: u16, name: &str) -> Option<f64> {
    let r = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.text()
        .await
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
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
