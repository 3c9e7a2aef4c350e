//! systemd integration without a library: `sd_notify` is one datagram to
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! - `READY=1` once lantian is subscribed to MQTT and InfluxDB answers
//!   (`Type=notify`: `systemctl start` returns then, and units ordered
//!   after lantian start only then);
//! - `WATCHDOG=1` every half `WatchdogSec`, only while the runtime is
//!   responsive (a task round trip through the async scheduler and the
//!   blocking pool must finish in time). A hung lantian stops pinging and
//!   systemd kills and restarts it;
//! - `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` on
//!   shutdown, and `STATUS=` lines `systemctl status` shows.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::{debug, warn};

/// Sends one notification; false if there is no socket or it failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        abstract_send(&sock, name, state)
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
            .map(|_| ())
    };
    match sent {
        Ok(()) => {
            debug!(state, "sd_notify");
            true
        }
        Err(e) => {
            warn!(error = %e, state, "sd_notify failed");
            false
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(sock: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("abstract sockets need Linux"))
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this
/// process if `WATCHDOG_PID` is set).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog every half interval while the runtime answers a
/// round trip (async task + blocking pool) within a quarter interval.
pub async fn watchdog(every: Duration) {
    let half = every / 2;
    let mut tick = tokio::time::interval(half);
    loop {
        tick.tick().await;
        let probe = tokio::time::timeout(every / 4, async {
            tokio::spawn(async { tokio::task::spawn_blocking(|| ()).await })
                .await
                .is_ok()
        })
        .await;
        if matches!(probe, Ok(true)) {
            notify("WATCHDOG=1");
        } else {
            warn!("runtime did not answer in time; withholding the watchdog ping");
        }
    }
}
