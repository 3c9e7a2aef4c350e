//! The admin HTTP endpoint (loopback by default, `[admin] listen`):
//!
//! | path       | what |
//! |------------|------|
//! | `/healthz` | 200 while the process serves requests |
//! | `/readyz`  | 200 when subscribed to MQTT, the sink writable and the spool below its limit; else 503 with the reasons |
//! | `/metrics` | Prometheus text format ([`prometheus`]) |
//! | `/api/status` | the status page's data, JSON |
//! | `/`        | the duty officer's status page: AQI per station, active alerts, pipeline health |

pub mod board;
pub mod page;
pub mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use board::Board;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest a connection stays open (Prometheus and browsers reconnect).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

use crate::metrics::Metrics;

/// What the endpoint reads.
#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub board: Arc<Board>,
}

/// Why lantian is not ready (empty: ready).
pub fn not_ready(m: &Metrics) -> Vec<&'static str> {
    let mut why = Vec::new();
    if m.jetstream_intake() {
        // A cluster worker: its input is JetStream (it works whatever
        // partitions it holds, none while there are more workers).
    } else if !m.mqtt_connected.load(Relaxed) {
        why.push("mqtt: not connected");
    } else if !m.mqtt_subscribed.load(Relaxed) {
        why.push("mqtt: not subscribed");
    }
    if !m.sink_ok.load(Relaxed) {
        why.push("influxdb: not writable (last write failed, or not reached yet)");
    }
    if m.spool_full.load(Relaxed) {
        why.push("spool: full (intake paused)");
    }
    if m.spool_blocked.load(Relaxed) {
        why.push("spool: cannot be written, disk full? (intake paused)");
    }
    if m.snapshot_failing.load(Relaxed) {
        why.push("windows: a snapshot cannot be saved (what a restart replays grows)");
    }
    why
}

/// Binds `addr` and serves until `stop`. Errors only if it cannot bind.
pub async fn serve(
    addr: SocketAddr,
    state: State,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // With port 0, the port the kernel chose.
    let addr = listener.local_addr()?;
    info!(%addr, "admin endpoint listening (/healthz /readyz /metrics /)");
    let task = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut failures = 0u32;
        loop {
            // A connection slot first: past the cap, new connections wait
            // in the kernel's backlog instead of taking file descriptors.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            };
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => {
                        failures = 0;
                        x
                    }
                    Err(e) => {
                        // EMFILE and the like: wait instead of spinning
                        // (the spool needs descriptors too).
                        failures += 1;
                        let wait = crate::backoff::wait_after(
                            std::time::Duration::from_millis(10),
                            std::time::Duration::from_secs(1),
                            failures,
                        );
                        warn!(error = %e, retry_in = ?wait, "admin endpoint cannot accept a connection");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = stop.cancelled() => return,
                        }
                    }
                },
                _ = stop.cancelled() => return,
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(sock), svc);
                // A kept-alive connection idle past the limit is closed too.
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended"),
                    Err(_) => debug!(%peer, "admin connection closed after its lifetime"),
                    Ok(Ok(())) => {}
                }
            });
        }
    });
    Ok((addr, task))
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn route(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only\n",
        );
    }
    let m = &state.metrics;
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => {
            let why = not_ready(m);
            if why.is_empty() {
                reply(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("not ready:\n{}\n", why.join("\n")),
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus::render(m, not_ready(m).is_empty()),
        ),
        "/api/status" => reply(
            StatusCode::OK,
            "application/json",
            state.board.to_json(m, &not_ready(m)).to_string(),
        ),
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::render(&state.board, m, &not_ready(m)),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /, /healthz, /readyz, /metrics, /api/status\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The endpoint on a loopback port of its own.
    async fn start() -> (SocketAddr, CancellationToken) {
        let state = State {
            metrics: Arc::new(Metrics::default()),
            board: Arc::new(Board::new(
                crate::evaluate::aqi::Standard::Hj633_2026,
                chrono_tz::Asia::Shanghai,
            )),
        };
        let stop = CancellationToken::new();
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), state, stop.clone())
            .await
            .unwrap();
        (addr, stop)
    }

    /// A worker saves a snapshot per partition: one partition's failing
    /// keeps the worker unready whatever the others do, until it saves.
    #[test]
    fn a_failing_snapshot_keeps_the_worker_unready_until_that_one_saves() {
        let m = Metrics::default();
        let (p1, p2) = (
            std::path::Path::new("nats:p1"),
            std::path::Path::new("nats:p2"),
        );
        let failing = |m: &Metrics| not_ready(m).iter().any(|w| w.starts_with("windows:"));
        m.snapshot_saved(false, p1, "too large");
        assert!(failing(&m));
        m.snapshot_saved(true, p2, "");
        assert!(failing(&m), "another partition's save does not clear it");
        m.snapshot_saved(false, p1, "too large");
        m.snapshot_saved(true, p1, "");
        assert!(!failing(&m));
    }

    /// A client that connects and sends nothing is disconnected (the
    /// header timeout), so idle clients cannot pile up; requests are still
    /// answered meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_client_is_disconnected_and_others_are_served() {
        let (addr, stop) = start().await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut other = tokio::net::TcpStream::connect(addr).await.unwrap();
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The server closes the silent one (end of stream); the bound is
        // only there so a regression fails instead of hanging.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(4 * HEADER_TIMEOUT, silent.read(&mut buf))
            .await
            .expect("the silent connection was never closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        stop.cancel();
    }

    /// At most `MAX_CONNECTIONS` are served at once: with that many silent
    /// clients connected, a further request waits (in the kernel's
    /// backlog, holding no descriptor of ours), and is answered as soon as
    /// one of them goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let (addr, stop) = start().await;
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Each silent one is accepted (a request on one of them would be
        // answered): shown by the last, which asks and gets its answer.
        let mut last = silent.pop().unwrap();
        last.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = last.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Now all the slots are held; one more client waits. (Without the
        // cap it is answered at once: "answered past the cap: Ok(Ok(163))".)
        let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            waiting.read(&mut buf),
        )
        .await;
        assert!(early.is_err(), "answered past the cap: {early:?}");
        drop(last);
        let mut answer = String::new();
        waiting.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.cancel();
    }
}
