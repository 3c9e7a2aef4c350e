//! A TCP fault proxy between lantian and a real service: it forwards, or
//! answers every request with a 400 of its own (a gateway's HTML body, no
//! InfluxDB headers), or stalls (reads and never answers), or resets
//! connections. Changing the fault cuts every open connection, so kept-alive
//! ones meet the new fault too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Forward,
    /// `400 Bad Request` with an nginx page, for every request.
    Answer400,
    /// Reads whatever comes, answers nothing.
    Stall,
    /// Closes with a TCP reset as soon as the connection is accepted.
    Reset,
}

/// Connections (or, for [`Fault::Answer400`], requests) met per fault.
#[derive(Default)]
pub struct Met {
    pub forwarded: AtomicU64,
    pub answered_400: AtomicU64,
    pub stalled: AtomicU64,
    pub reset: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    pub met: Arc<Met>,
    fault: watch::Sender<Fault>,
    _task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a loopback port of its own (port 0) in front of
    /// `127.0.0.1:upstream`, forwarding.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, rx) = watch::channel(Fault::Forward);
        let met = Arc::new(Met::default());
        let m = met.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = rx.clone();
                let now = *rx.borrow_and_update();
                let m = m.clone();
                conns.spawn(async move {
                    tokio::select! {
                        _ = handle(sock, now, upstream, &m) => {}
                        // A new fault: this connection ends (dropped).
                        _ = rx.changed() => {}
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            met,
            fault,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, every connection meets `fault`; open ones are cut.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

async fn handle(mut sock: TcpStream, fault: Fault, upstream: u16, met: &Met) {
    match fault {
        Fault::Forward => {
            met.forwarded.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await {
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
            }
        }
        Fault::Reset => {
            met.reset.fetch_add(1, Ordering::Relaxed);
            let _ = sock.set_zero_linger();
        }
        Fault::Stall => {
            met.stalled.fetch_add(1, Ordering::Relaxed);
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            // The client gave up; nothing was ever answered.
        }
        Fault::Answer400 => {
            while read_request(&mut sock).await {
                met.answered_400.fetch_add(1, Ordering::Relaxed);
                let body = "<html>\r\n<head><title>400 Bad Request</title></head>\r\n\
                            <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                            <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                if sock.write_all(head.as_bytes()).await.is_err()
                    || sock.write_all(body.as_bytes()).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reads one HTTP/1.1 request (head and a `content-length` body); false
/// at the end of the stream or on anything it cannot read.
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
        if head.len() > 64 * 1024 {
            return false;
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).await.is_ok()
}
