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
use tracing::{debug, info};

pub use board::Board;

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
    if !m.mqtt_connected.load(Relaxed) {
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
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "admin accept failed");
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await
                {
                    debug!(%peer, error = %e, "admin connection ended");
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
