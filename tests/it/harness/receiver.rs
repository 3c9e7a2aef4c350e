//! A real HTTP server standing in for a webhook receiver.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Received {
    /// Header names lowercased.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub status: u16,
    /// When the request had arrived whole (just before the answer).
    pub at: std::time::Instant,
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
        // Bound on port 0 by the first `up`, and on that port again after.
        let mut me = Self {
            port: 0,
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
        self.port = listener.local_addr().unwrap().port();
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
            at: std::time::Instant::now(),
        });
        sock.write_all(format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await?;
    }
}
