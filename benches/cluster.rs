//! Cluster throughput (issue 16), live: a publisher sends N QoS 1 readings
//! (1,000 sensors at 100 sites) while real Mosquitto → one lantian edge →
//! a real three-node NATS JetStream cluster → W lantian workers → real
//! InfluxDB 1.x take them, for W = 1, 2 and 3; and, in the same run, the
//! single process (`lantian run`, spool on) on the same broker and
//! database. Timed from the first publish until InfluxDB holds all N;
//! with the CPU seconds per message of lantian's processes and of the
//! NATS nodes, Mosquitto and InfluxDB (what limits each on 2 cores).
//!
//!   cargo bench --bench cluster              # N = 40,000
//!   N=100000 cargo bench --bench cluster
//!
//! Under `cargo test` it runs once, N = 1,000, single process and W = 1,
//! as a smoke test.

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;

const PARTITIONS: u32 = 12;

struct Case {
    name: String,
    secs: f64,
    lantian_cpu: f64,
    others_cpu: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 40_000 } else { 1_000 });
    let workers: Vec<usize> = if bench { vec![1, 2, 3] } else { vec![1] };
    let nats = NatsCluster::start().await;
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let state = tempfile::tempdir().unwrap();
    let sensors = 1000;
    let topics: Vec<String> = (0..sensors)
        .map(|s| format!("env/d{}/site{}/air/aq-{s:06}", s % 10, s % 100))
        .collect();
    let others = |nats: &NatsCluster, broker_pid: u32, influx_pid: u32| {
        nats.nodes
            .iter()
            .map(|p| cpu_seconds(p.child.id()))
            .sum::<f64>()
            + cpu_seconds(broker_pid)
            + cpu_seconds(influx_pid)
    };
    let (broker_pid, influx_pid) = (broker.pid(), influx.proc.child.id());
    let mut cases: Vec<Case> = Vec::new();
    let mut plan: Vec<Option<usize>> = vec![None];
    plan.extend(workers.iter().map(|w| Some(*w)));
    for (k, w) in plan.into_iter().enumerate() {
        influx.query_post("DROP DATABASE env").await;
        influx.query_post("CREATE DATABASE env").await;
        let mut procs: Vec<Lantian> = Vec::new();
        let name = match w {
            None => {
                let l = Lantian::start(&Lantian::v1(broker.port, &influx));
                l.wait_ready().await;
                procs.push(l);
                "single process (lantian run, spool on)".to_owned()
            }
            Some(w) => {
                let start = |role: &str, name: String| {
                    let dir = state.path().join(&name);
                    Lantian::start_with_env(
                        &nats.lantian_config(broker.port, &influx, (role, &name), PARTITIONS),
                        &[("LANTIAN__SPOOL__DIR", dir.to_str().unwrap())],
                    )
                };
                // One edge session for every case: an MQTT session left
                // behind keeps its share of a shared subscription's
                // messages for as long as it lives.
                let edge = start("edge", "bench-edge".to_owned());
                for i in 0..w {
                    procs.push(start("worker", format!("worker-{k}-{i}")));
                }
                edge.wait_subscribed().await;
                // Every unit owned, and none above a worker's share (a
                // worker giving partitions up mid-run would pause them).
                let units = PARTITIONS + 1;
                let share = f64::from(units.div_ceil(w as u32));
                wait_for(
                    "the partitions owned, each worker within its share",
                    Duration::from_secs(60),
                    async || {
                        let mut owned = Vec::new();
                        for p in &procs {
                            owned.push(
                                p.metric("lantian_cluster_partitions_owned")
                                    .await
                                    .unwrap_or(0.0),
                            );
                        }
                        // The partitions and the city unit.
                        owned.iter().sum::<f64>() == f64::from(units)
                            && owned.iter().all(|o| *o > 0.0 && *o <= share)
                    },
                )
                .await;
                procs.push(edge);
                format!(
                    "cluster: 1 edge, {w} worker{}",
                    if w > 1 { "s" } else { "" }
                )
            }
        };
        let cpu0: f64 = procs.iter().map(|p| cpu_seconds(p.pid())).sum();
        let others0 = others(&nats, broker_pid, influx_pid);
        let mut publisher = Publisher::connect(broker.port, &format!("bench-publisher-{k}")).await;
        let base = now_ms() - 3_000_000 - k as i64 * 100_000;
        let t = Instant::now();
        for i in 0..n {
            let payload = format!(
                r#"{{"ts":{},"pm25":{},"pm10":{}}}"#,
                base + (i / sensors) as i64 * 10,
                // Changing from one reading of a sensor to the next (`i %
                // 500` was constant per sensor: a fleet flat-lining).
                (i + 13 * (i / sensors)) % 500,
                i % 700
            );
            publisher.publish(&topics[i % sensors], payload).await;
        }
        publisher.flush().await;
        let got = influx
            .wait_count(
                "SELECT count(pm25) FROM air",
                n as i64,
                Duration::from_secs(900),
            )
            .await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(got, n as i64, "{name}: lost or extra readings");
        let lantian_cpu = procs.iter().map(|p| cpu_seconds(p.pid())).sum::<f64>() - cpu0;
        let others_cpu = others(&nats, broker_pid, influx_pid) - others0;
        cases.push(Case {
            name,
            secs,
            lantian_cpu,
            others_cpu,
        });
        drop(procs);
        // Each case on an empty log: a worker killed at the end of a case
        // would have the next case's workers replay what came after its
        // last checkpoint (stored again: into a database emptied since).
        nats.forget_lantian().await;
    }
    println!("cluster: {n} QoS 1 readings from {sensors} sensors, published live; 2 cores");
    for c in &cases {
        println!(
            "cluster: {:<40} {:6.2} s = {:6.0} msg/s; lantian CPU {:5.1} µs/msg; NATS + Mosquitto + InfluxDB CPU {:5.1} µs/msg",
            c.name,
            c.secs,
            n as f64 / c.secs,
            c.lantian_cpu * 1e6 / n as f64,
            c.others_cpu * 1e6 / n as f64,
        );
    }
}
