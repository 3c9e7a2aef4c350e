//! HTTP writes to InfluxDB with reqwest: v1 `/write` or v2 `/api/v2/write`,
//! gzip, timeouts always set, retries with capped exponential backoff and
//! jitter (honouring `Retry-After`), and rejected points isolated by
//! splitting the batch so they never block newer data.

use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Request, StatusCode, Url};
use tracing::{debug, error, info, warn};

use super::line::encode_row;
use crate::backoff::Backoff;
use crate::config::{InfluxApi, InfluxConfig};
use crate::metrics::Metrics;
use crate::reading::Reason;
use crate::row::{Quarantined, Row};
use crate::units::Secret;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("influxdb.url {0:?} is not a valid http(s) URL")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("influxdb.{0}: {1}")]
    Secret(&'static str, String),
}

/// What one POST came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Written,
    /// InfluxDB itself refused points of the batch (a line it cannot
    /// parse, a field type conflict, a partial write): split, and
    /// quarantine a single line it still refuses.
    Rejected(String),
    /// The body is too large for the server (413): split; a single line
    /// is retried, never quarantined (the data is not at fault).
    TooLarge(String),
    /// Worth retrying unchanged, after the server's `Retry-After` if given.
    /// This includes a 400 or 422 that InfluxDB did not attribute to
    /// points (a proxy, a gateway, plain HTTP to a TLS port): the data is
    /// kept until an operator fixes the path.
    Retry(Option<Duration>, String),
}

/// Whether a 400/422 answer is InfluxDB saying that points are at fault:
/// it comes from InfluxDB (its version header, which both 1.x and 2.x
/// send) and its error is one InfluxDB gives for points.
fn points_at_fault(headers: &reqwest::header::HeaderMap, body: &str) -> bool {
    let from_influx =
        headers.contains_key("x-influxdb-version") || headers.contains_key("x-influxdb-build");
    let body = body.to_ascii_lowercase();
    from_influx
        && [
            "unable to parse",
            "partial write",
            "field type conflict",
            "points beyond retention policy",
            "invalid field",
            "max-values-per-tag limit exceeded",
        ]
        .iter()
        .any(|m| body.contains(m))
}

/// Lines of line protocol with their start offsets, so a rejected batch
/// can be split line by line without re-encoding.
#[derive(Debug, Default, Clone)]
pub struct Lines {
    pub buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Lines {
    /// Record that a line starting at `start` was appended to `buf`.
    fn mark(&mut self, start: usize) {
        if self.buf.len() > start {
            self.starts.push(start);
        }
    }
    pub fn len(&self) -> usize {
        self.starts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }
    /// Encodes a row as one more line; `false` if it had nothing to write.
    pub fn push(&mut self, row: &Row, time_ns: i64) -> bool {
        let start = self.buf.len();
        let written = encode_row(&mut self.buf, row, time_ns);
        self.mark(start);
        written
    }
    fn bytes(&self, lines: Range<usize>) -> &[u8] {
        let from = self.starts[lines.start];
        let to = self
            .starts
            .get(lines.end)
            .copied()
            .unwrap_or(self.buf.len());
        &self.buf[from..to]
    }
}

/// The InfluxDB writer. Clones share the HTTP client (its connection
/// pool).
#[derive(Clone)]
pub struct Writer {
    client: reqwest::Client,
    /// The complete write URL with query parameters.
    url: Url,
    /// `Authorization` header value (v1 basic auth or v2 token), if any.
    auth: Option<HeaderValue>,
    gzip: bool,
    retry_initial: Duration,
    retry_max: Duration,
    metrics: Arc<Metrics>,
}

impl Writer {
    pub fn new(cfg: &InfluxConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        crate::tls::install_crypto_provider();
        let (url, auth) = endpoint(cfg)?;
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout.get())
            .timeout(cfg.request_timeout.get())
            .user_agent(concat!("lantian/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url,
            auth,
            gzip: cfg.gzip,
            retry_initial: cfg.retry_initial.get(),
            retry_max: cfg.retry_max.get(),
            metrics,
        })
    }

    /// The same writer (its HTTP client shared) to another retention
    /// policy of the same database.
    pub fn to_retention_policy(&self, cfg: &InfluxConfig, rp: &str) -> Result<Self, Error> {
        let cfg = InfluxConfig {
            retention_policy: Some(rp.to_owned()),
            ..cfg.clone()
        };
        Ok(Self {
            url: endpoint(&cfg)?.0,
            ..self.clone()
        })
    }

    /// Whether InfluxDB answers `GET /ping` (2xx), before any write: the
    /// readiness check at start. Sets the sink state in the metrics.
    pub async fn probe(&self) -> bool {
        let mut url = self.url.clone();
        let path = url.path().to_owned();
        let base = path
            .strip_suffix("/api/v2/write")
            .or_else(|| path.strip_suffix("/write"))
            .unwrap_or("");
        url.set_path(&format!("{base}/ping"));
        url.set_query(None);
        let mut req = self.client.get(url);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let ok = req.send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            self.metrics.sink_state(true);
        }
        ok
    }

    /// The request a body becomes (exposed for request-shape tests).
    pub fn request(&self, body: &[u8]) -> Request {
        let mut req = Request::new(Method::POST, self.url.clone());
        let h = req.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(auth) = &self.auth {
            h.insert(AUTHORIZATION, auth.clone());
        }
        let body = if self.gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            // Writing to a Vec cannot fail.
            let _ = enc.write_all(body);
            enc.finish().unwrap_or_default()
        } else {
            body.to_vec()
        };
        *req.body_mut() = Some(body.into());
        req
    }

    /// One POST, classified.
    pub async fn post(&self, body: &[u8]) -> Outcome {
        self.metrics.write_sent();
        let started = std::time::Instant::now();
        let outcome = self.post_once(body).await;
        self.metrics
            .observe_write(started.elapsed(), !matches!(outcome, Outcome::Retry(..)));
        outcome
    }

    async fn post_once(&self, body: &[u8]) -> Outcome {
        let resp = match self.client.execute(self.request(body)).await {
            Ok(r) => r,
            // Without the URL (it can carry credentials); the log line
            // names the endpoint redacted.
            Err(e) => {
                let e = e.without_url();
                return Outcome::Retry(None, format!("request failed: {}", error_chain(&e)));
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Written;
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let msg = format!("HTTP {}: {}", status.as_u16(), text.trim());
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge(msg),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
                if points_at_fault(&headers, &text) =>
            {
                Outcome::Rejected(msg)
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Outcome::Retry(
                retry_after,
                format!("{msg} (not InfluxDB refusing points: the data is kept)"),
            ),
            // 401/403/404 are configuration problems (token, database):
            // retrying keeps the data until an operator fixes them.
            _ => Outcome::Retry(retry_after, msg),
        }
    }

    /// POST until the server answers something other than "retry": Ok
    /// once written, Err with the answer when the batch must be split. A
    /// single line too large for the server is retried (`single`). The
    /// first failure of an outage is logged (an error when the server
    /// answered, a warning when it could not be reached), and again
    /// whenever its cause changes (unreachable, then a gateway's 400: the
    /// operator sees the cause of now, not of the outage's first second);
    /// repeats are debug lines, and the recovery is logged with the
    /// outage's length.
    async fn post_until_answered(&self, body: &[u8], single: bool) -> Result<(), Outcome> {
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        let mut failures = 0u32;
        let mut causes = Causes::default();
        let started = std::time::Instant::now();
        loop {
            let outcome = match self.post(body).await {
                Outcome::TooLarge(msg) if single => Outcome::Retry(None, msg),
                other => other,
            };
            if failures > 0 && !matches!(outcome, Outcome::Retry(..)) {
                info!(failures, after = ?started.elapsed(), "InfluxDB writes recovered");
            }
            match outcome {
                Outcome::Written => return Ok(()),
                split @ (Outcome::Rejected(_) | Outcome::TooLarge(_)) => return Err(split),
                Outcome::Retry(after, msg) => {
                    // Not written: the sink is not writable (readiness).
                    self.metrics.sink_state(false);
                    self.metrics.write_retried();
                    let wait = retry_wait(after, backoff.next_wait(), self.retry_max);
                    let url = crate::units::redact_url(self.url.as_str());
                    match causes.note(&msg) {
                        None => {
                            debug!(error = %msg, retry_in = ?wait, failures, "InfluxDB write failed again")
                        }
                        Some(Cause::Unreachable) => {
                            warn!(error = %msg, %url, failures, "InfluxDB write failed; retrying until it succeeds")
                        }
                        Some(Cause::Answered) => {
                            error!(error = %msg, %url, failures, "InfluxDB refused the write; keeping the data and retrying until it succeeds")
                        }
                    }
                    failures += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Write every line: retry what can be retried, split what is rejected
    /// down to single lines and quarantine those. Returns once every line is
    /// either stored or quarantined, with the number of lines that InfluxDB
    /// rejected (and that went to quarantine instead).
    pub async fn write_all(&self, lines: &Lines, now_ns: impl Fn() -> i64) -> usize {
        if lines.is_empty() {
            return 0;
        }
        let mut rejected = 0;
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..lines.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let single = range.len() == 1;
            match self
                .post_until_answered(lines.bytes(range.clone()), single)
                .await
            {
                Ok(()) => {
                    self.metrics.lines_stored(range.len() as u64);
                }
                Err(Outcome::Rejected(msg)) if single => {
                    rejected += 1;
                    self.quarantine_rejected(lines.bytes(range), &msg, now_ns())
                        .await;
                }
                Err(_) => {
                    self.metrics.batch_split();
                    let mid = range.start + range.len() / 2;
                    // Pushed right first so the left half (older data) goes first.
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        rejected
    }

    async fn quarantine_rejected(&self, line: &[u8], msg: &str, time_ns: i64) {
        let text = String::from_utf8_lossy(line);
        let measurement = text.split([',', ' ']).next().unwrap_or_default();
        self.metrics.quarantined(Reason::Rejected, measurement, msg);
        let record = Row::Quarantined(Quarantined {
            reason: Reason::Rejected,
            detail: msg.to_owned(),
            topic: measurement.to_owned(),
            sample: line.strip_suffix(b"\n").unwrap_or(line).to_vec(),
            payload_bytes: line.len(),
            time_ns: None,
        });
        let mut buf = Vec::new();
        encode_row(&mut buf, &record, time_ns);
        if let Err(e) = self.post_until_answered(&buf, true).await {
            let e = match e {
                Outcome::Rejected(msg) | Outcome::TooLarge(msg) => msg,
                other => format!("{other:?}"),
            };
            self.metrics.quarantine_refused(&e, text.trim_end());
        } else {
            self.metrics.lines_stored(1);
        }
    }
}

/// Why a write failed, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// InfluxDB (or something in its place) answered with an HTTP error.
    Answered,
    /// No answer: connection refused, reset, timed out.
    Unreachable,
}

/// The causes of one outage's failures: each is logged when it differs
/// from the one logged before (unreachable, then a gateway's 400, then
/// a 503…), so the log says the cause of now, not only of the first
/// second; repeats are not.
#[derive(Default)]
struct Causes {
    /// "HTTP 400", "HTTP 503", or "unreachable".
    last: Option<String>,
}

impl Causes {
    /// The failure `msg` (a retry's message): its cause when it is to be
    /// logged, `None` for a repeat.
    fn note(&mut self, msg: &str) -> Option<Cause> {
        let (key, cause) = match msg.strip_prefix("HTTP ") {
            Some(m) => (m.get(..3).unwrap_or(m), Cause::Answered),
            None => ("unreachable", Cause::Unreachable),
        };
        if self.last.as_deref() == Some(key) {
            return None;
        }
        self.last = Some(key.to_owned());
        Some(cause)
    }
}

/// The wait before a retry: the server's `Retry-After` if it gave one,
/// but never longer than `retry_max` (a proxy answering a year must not
/// stall ingestion for a year); else the backoff's step.
fn retry_wait(after: Option<Duration>, step: Duration, max: Duration) -> Duration {
    after.map_or(step, |a| a.min(max.max(step)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Build the write URL and auth header for the configured API. A path
/// prefix in `url` (reverse proxy) is kept.
pub fn endpoint(cfg: &InfluxConfig) -> Result<(Url, Option<HeaderValue>), Error> {
    let mut url = Url::parse(&cfg.url).map_err(|_| Error::BadUrl(cfg.url.clone()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::BadUrl(cfg.url.clone()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let mut q: Vec<(&str, String)> = Vec::new();
    let auth = match cfg.api {
        InfluxApi::V1 => {
            url.set_path(&format!("{path}/write"));
            q.push(("db", cfg.database.clone()));
            if let Some(rp) = &cfg.retention_policy {
                q.push(("rp", rp.clone()));
            }
            let password = Secret::resolve(cfg.password.as_ref(), cfg.password_file.as_deref())
                .map_err(|e| Error::Secret("password", e))?;
            match &cfg.username {
                Some(user) => {
                    use base64::Engine as _;
                    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                    let pw = password.as_ref().map(Secret::expose).unwrap_or_default();
                    let mut v =
                        HeaderValue::try_from(format!("Basic {}", encode(&format!("{user}:{pw}"))))
                            .map_err(|_| {
                                Error::Secret("username", "not a valid header value".into())
                            })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            }
        }
        InfluxApi::V2 => {
            url.set_path(&format!("{path}/api/v2/write"));
            q.push(("org", cfg.org.clone().unwrap_or_default()));
            q.push(("bucket", cfg.bucket.clone().unwrap_or_default()));
            let token = Secret::resolve(cfg.token.as_ref(), cfg.token_file.as_deref())
                .map_err(|e| Error::Secret("token", e))?;
            match token {
                Some(t) => {
                    let mut v = HeaderValue::try_from(format!("Token {}", t.expose()))
                        .map_err(|_| Error::Secret("token", "not a valid header value".into()))?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            }
        }
    };
    q.push(("precision", "ns".into()));
    url.query_pairs_mut().clear().extend_pairs(q);
    Ok((url, auth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn writer(cfg: &InfluxConfig) -> Writer {
        Writer::new(cfg, Arc::new(Metrics::default())).unwrap()
    }

    #[test]
    fn v1_request_shape() {
        let cfg = InfluxConfig {
            url: "http://db.example:8086/proxy/".into(),
            database: "env".into(),
            retention_policy: Some("two weeks".into()),
            username: Some("lantian".into()),
            password: Some(Secret::new("pw")),
            gzip: false,
            ..InfluxConfig::default()
        };
        let req = writer(&cfg).request(b"air pm25=1 1\n");
        assert_eq!(
            req.url().as_str(),
            "http://db.example:8086/proxy/write?db=env&rp=two+weeks&precision=ns"
        );
        assert_eq!(req.headers()[AUTHORIZATION], "Basic bGFudGlhbjpwdw==");
        assert!(req.headers().get(CONTENT_ENCODING).is_none());
        assert_eq!(req.body().unwrap().as_bytes().unwrap(), b"air pm25=1 1\n");
        // Minute windows' writer: another policy, the same database.
        let minute = writer(&cfg).to_retention_policy(&cfg, "minute").unwrap();
        assert_eq!(
            minute.request(b"x").url().as_str(),
            "http://db.example:8086/proxy/write?db=env&rp=minute&precision=ns"
        );
    }

    #[test]
    fn v2_request_shape_is_gzipped_with_token() {
        let cfg = InfluxConfig {
            api: InfluxApi::V2,
            url: "https://influx.example".into(),
            org: Some("bureau".into()),
            bucket: Some("env/raw".into()),
            token: Some(Secret::new("t0k")),
            ..InfluxConfig::default()
        };
        let req = writer(&cfg).request(b"air pm25=1 1\n");
        assert_eq!(
            req.url().as_str(),
            "https://influx.example/api/v2/write?org=bureau&bucket=env%2Fraw&precision=ns"
        );
        assert_eq!(req.headers()[AUTHORIZATION], "Token t0k");
        assert_eq!(req.headers()[CONTENT_ENCODING], "gzip");
        let mut out = String::new();
        use std::io::Read as _;
        flate2::read::GzDecoder::new(req.body().unwrap().as_bytes().unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "air pm25=1 1\n");
    }

    /// An outage whose cause changes is logged at each change: a
    /// connection cut, then a gateway's 400s, then a 503.
    #[test]
    fn each_new_cause_of_an_outage_is_logged_once() {
        let mut c = Causes::default();
        let seen: Vec<Option<Cause>> = [
            "request failed: connection closed before message completed",
            "request failed: connection refused",
            "HTTP 400: <html>400 Bad Request</html> (not InfluxDB refusing points: the data is kept)",
            "HTTP 400: <html>400 Bad Request</html> (not InfluxDB refusing points: the data is kept)",
            "HTTP 503: unavailable",
            "request failed: timed out",
        ]
        .iter()
        .map(|m| c.note(m))
        .collect();
        use Cause::*;
        assert_eq!(
            seen,
            [
                Some(Unreachable),
                None,
                Some(Answered),
                None,
                Some(Answered),
                Some(Unreachable)
            ]
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_retry_max() {
        let s = Duration::from_secs;
        assert_eq!(retry_wait(Some(s(31_536_000)), s(1), s(30)), s(30));
        assert_eq!(retry_wait(Some(s(5)), s(1), s(30)), s(5));
        assert_eq!(retry_wait(None, s(2), s(30)), s(2));
    }

    #[test]
    fn bad_urls_are_errors_not_panics() {
        for url in ["not a url", "ftp://x", "mailto:x@y"] {
            let cfg = InfluxConfig {
                url: url.into(),
                ..InfluxConfig::default()
            };
            assert!(matches!(
                Writer::new(&cfg, Arc::new(Metrics::default())),
                Err(Error::BadUrl(_))
            ));
        }
    }
}
