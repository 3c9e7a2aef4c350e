//! A real three-node NATS JetStream cluster (Debian package nats-server)
//! in a temp dir on loopback ports.

use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

pub struct NatsCluster {
    /// Client ports, one per node.
    pub ports: Vec<u16>,
    pub nodes: Vec<Proc>,
    dir: TempDir,
}

impl NatsCluster {
    /// Three nodes with JetStream. NATS can bind port 0 for clients but
    /// routes must name each other's cluster ports, so candidate ports are
    /// tried, the binds confirmed from /proc, and others tried if a node
    /// could not take them. Ready once JetStream answers through each node.
    pub async fn start() -> Self {
        Self::start_with_max_payload("8MB").await
    }

    /// Nodes taking messages of at most `max_payload` (NATS syntax).
    pub async fn start_with_max_payload(max_payload: &str) -> Self {
        for _ in 0..10 {
            if let Some(c) = Self::try_start(max_payload).await {
                return c;
            }
        }
        panic!("a NATS cluster could not bind loopback ports in 10 tries");
    }

    async fn try_start(max_payload: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let conf = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{}\"\nmax_payload: {max_payload}\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 2GB }}\n\
                     cluster {{ name: lt, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    client[i],
                    dir.path().join(format!("js{i}")).display(),
                    cluster[i],
                    routes.join(", ")
                ),
            )
            .unwrap();
            nodes.push(Proc::spawn(
                Command::new(require("nats-server")).arg("-c").arg(&conf),
                dir.path().join(format!("n{i}.log")),
            ));
        }
        let mut me = Self {
            ports: client.clone(),
            nodes,
            dir,
        };
        for i in 0..3 {
            let (pid, want) = (me.nodes[i].child.id(), [client[i], cluster[i]]);
            let mut exited = false;
            let node = &mut me.nodes[i];
            wait_for("nats-server", Duration::from_secs(30), async || {
                exited = node.child.try_wait().ok().flatten().is_some();
                let ports = listening_ports(pid);
                exited || want.iter().all(|p| ports.contains(p))
            })
            .await;
            if exited {
                return None;
            }
        }
        // JetStream's meta group has a leader once a replicated stream can
        // be made (and deleted again) through each node.
        for (i, port) in me.ports.iter().enumerate() {
            let url = format!("nats://127.0.0.1:{port}");
            let client = async_nats::connect(&url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let name = format!("READY_{i}");
            wait_for(
                "JetStream in the cluster",
                Duration::from_secs(60),
                async || {
                    js.get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("ready.{i}")],
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                },
            )
            .await;
            let _ = js.delete_stream(&name).await;
        }
        Some(me)
    }

    /// A lantian configuration for one process of `role` ("edge" or
    /// "worker") named `name` (its MQTT client id and instance): a shared
    /// subscription, InfluxDB v1, no spool (a worker needs none; an edge
    /// uses none), `partitions` partitions with 3 replicas, leases of 3 s.
    pub fn lantian_config(
        &self,
        broker: u16,
        influx: &Influx,
        (role, name): (&str, &str),
        partitions: u32,
    ) -> String {
        let servers: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"{name}\"\nreconnect_max = \"1s\"\n\
             [[mqtt.subscriptions]]\nfilter = \"$share/lantian/env/#\"\nqos = 1\n\
             [influxdb]\napi = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"\nretry_max = \"1s\"\n\
             [pipeline]\nshutdown_timeout = \"20s\"\nstats_interval = \"0s\"\n\
             [spool]\nenabled = false\n\
             [cluster]\n{role} = true\nnats = [{}]\ninstance = \"{name}\"\npartitions = {partitions}\n\
             replicas = 3\nlease_ttl = \"3s\"\n",
            influx.url(),
            servers.join(", ")
        )
    }

    /// Deletes what lantian keeps in JetStream (its streams and buckets),
    /// so the next processes start on an empty log.
    #[allow(dead_code)]
    pub async fn forget_lantian(&self) {
        let client = async_nats::connect(self.urls()[0].as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for name in [
            "LT_IN",
            "LT_ALERTS",
            "LT_SCOPE",
            "KV_lt_state",
            "KV_lt_leases",
            "KV_lt_members",
        ] {
            let _ = js.delete_stream(name).await;
        }
    }

    /// The servers, as `[cluster] nats` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }
}
