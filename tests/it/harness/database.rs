//! Real InfluxDB 1.x and VictoriaMetrics processes in temp dirs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

pub struct Influx {
    pub port: u16,
    pub proc: Proc,
    dir: TempDir,
    conf: PathBuf,
    pub http: reqwest::Client,
}

impl Influx {
    /// Binds port 0 (HTTP and RPC) and reads the ports back from /proc;
    /// the config is then rewritten with them, so a restart comes back on
    /// the same ports.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("influxdb.conf");
        let mut me = Self {
            port: 0,
            proc: Proc::spawn(&mut Command::new("true"), dir.path().join("unused.log")),
            dir,
            conf,
            http: http(),
        };
        me.write_config(0, 0);
        me.launch();
        let pid = me.proc.child.id();
        let mut ports = Vec::new();
        wait_for("influxd ports", Duration::from_secs(30), async || {
            ports = listening_ports(pid);
            ports.len() >= 2
        })
        .await;
        for &p in &ports {
            me.port = p;
            if me.answers_ping().await {
                break;
            }
        }
        me.wait_ready().await;
        let rpc = ports.iter().copied().find(|p| *p != me.port).unwrap();
        me.write_config(me.port, rpc);
        me.query_post("CREATE DATABASE env").await;
        me
    }

    fn write_config(&self, http: u16, rpc: u16) {
        let d = self.dir.path().display();
        std::fs::write(
            &self.conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n"
            ),
        )
        .unwrap();
    }

    fn launch(&mut self) {
        self.proc.kill();
        self.proc = Proc::spawn(
            Command::new(require("influxd"))
                .arg("-config")
                .arg(&self.conf),
            self.dir.path().join("influxd.log"),
        );
    }

    async fn answers_ping(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/ping", self.port);
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().as_u16() == 204)
    }

    async fn wait_ready(&self) {
        wait_for("influxd", Duration::from_secs(30), async || {
            self.answers_ping().await
        })
        .await;
    }

    /// Start (again) on the same ports and data.
    pub async fn restart(&mut self) {
        self.launch();
        self.wait_ready().await;
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
    /// Binds port 0 and reads the port back from /proc.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Victoria::start`], scraping the Prometheus endpoints `targets`
    /// (`host:port`, path `/metrics`) every second.
    pub async fn scraping(targets: &[String]) -> Self {
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "scrape_configs:\n  - job_name: lantian\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), config).unwrap();
        let (_, path) = file.keep().unwrap();
        Self::start_with(&[format!("-promscrape.config={}", path.display())]).await
    }

    async fn start_with(args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let proc = Proc::spawn(
            Command::new(require("victoria-metrics"))
                .args(args)
                .arg("-httpListenAddr=127.0.0.1:0")
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg("-retentionPeriod=100y"),
            dir.path().join("vm.log"),
        );
        let pid = proc.child.id();
        let mut port = 0;
        wait_for("victoria-metrics", Duration::from_secs(30), async || {
            for p in listening_ports(pid) {
                let url = format!("http://127.0.0.1:{p}/health");
                if matches!(http().get(&url).send().await, Ok(r) if r.status().is_success()) {
                    port = p;
                    return true;
                }
            }
            false
        })
        .await;
        Self {
            port,
            _proc: proc,
            _dir: dir,
        }
    }

    /// The instant vector a PromQL query gives now (`data.result`).
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let v: Value = http()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
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
