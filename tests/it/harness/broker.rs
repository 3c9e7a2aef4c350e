//! A real Mosquitto broker in a temp dir.

use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

pub struct Mosquitto {
    pub port: u16,
    proc: Proc,
    dir: TempDir,
    /// Launches so far (each writes its own log).
    launches: u32,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        keep_if_panicking(&mut self.proc, &mut self.dir, "the broker's");
    }
}

impl Mosquitto {
    /// Mosquitto cannot bind port 0 (it takes `listener 0` for a Unix
    /// socket): a candidate port is tried, the bind confirmed from /proc,
    /// and another tried if the broker could not take it.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut me = Self {
            port: 0,
            proc: Proc::spawn(&mut Command::new("true"), dir.path().join("unused.log")),
            dir,
            launches: 0,
        };
        for _ in 0..20 {
            me.port = free_port();
            me.write_config();
            if me.launch().await {
                return me;
            }
        }
        panic!("mosquitto could not bind a loopback port in 20 tries");
    }

    fn write_config(&self) {
        // The lossless settings from deploy/mosquitto/lantian.conf; the
        // session store is saved at shutdown (so a restart keeps it). Run
        // as root (CI), Mosquitto would drop to its own user, which cannot
        // write the database into this 0700 root directory: every session
        // was lost at a restart ("Error saving in-memory database …
        // Permission denied" in its log).
        let user = if running_as_root() { "user root\n" } else { "" };
        std::fs::write(
            self.dir.path().join("mosquitto.conf"),
            format!(
                "listener {} 127.0.0.1\n{user}allow_anonymous true\n\
                 persistence true\npersistence_location {}/\nautosave_interval 0\n\
                 max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n\
                 log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n",
                self.port,
                self.dir.path().display()
            ),
        )
        .unwrap();
    }

    /// Starts the broker; whether it listens on `self.port` (false: it
    /// exited, the port was taken).
    async fn launch(&mut self) -> bool {
        self.launches += 1;
        self.proc = Proc::spawn(
            Command::new(require("mosquitto"))
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf")),
            self.dir
                .path()
                .join(format!("mosquitto-{}.log", self.launches)),
        );
        let (pid, port) = (self.proc.child.id(), self.port);
        let mut exited = false;
        wait_for("mosquitto", Duration::from_secs(30), async || {
            exited = self.proc.child.try_wait().ok().flatten().is_some();
            exited || listening_ports(pid).contains(&port)
        })
        .await;
        !exited
    }

    /// The broker's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Stop cleanly (SIGTERM: the session store is saved) and start again
    /// on the same port.
    pub async fn restart(&mut self) {
        self.proc.signal("TERM");
        assert!(self.proc.wait_timeout(Duration::from_secs(20)).is_some());
        assert!(
            self.launch().await,
            "mosquitto could not bind its port again"
        );
    }
}
