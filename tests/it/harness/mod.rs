//! Real services for the integration tests, one file a concern: processes
//! (killed when their handle drops, ports read back from /proc), the
//! Mosquitto broker, a NATS JetStream cluster, InfluxDB 1.x and VictoriaMetrics, the real `lantian`
//! binary, an MQTT publisher, an HJ 212 data logger, a webhook receiver,
//! a TCP fault proxy, headless Chromium, and test data. Services listen on
//! loopback ports in temp dirs; readiness is asked of each service (a
//! connection, `/ping`, `/health`, lantian's `/metrics` and `/readyz`),
//! never read from its log.

#![allow(dead_code, unused_imports)]

mod broker;
mod browser;
mod daemon;
mod data;
mod database;
mod logger;
mod nats;
mod openssl_sm4;
mod process;
mod proxy;
mod publisher;
mod receiver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use broker::*;
pub use browser::*;
pub use daemon::*;
pub use data::*;
pub use database::*;
pub use logger::*;
pub use nats::*;
pub use process::*;
pub use proxy::*;
pub use publisher::*;
pub use receiver::*;

/// An HTTP client for the tests (rustls needs its provider first).
pub fn http() -> reqwest::Client {
    lantian::tls::install_crypto_provider();
    reqwest::Client::new()
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

/// Polls `ready` until it holds; panics after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} was not ready within {timeout:?}");
}
