//! HJ 212 over TCP: data loggers (real TCP clients, one packet at a time
//! per connection, each waiting for its data ACK, as loggers do) →
//! lantian's listener → spool → real InfluxDB 1.x. Reports packets a
//! second acknowledged (durable in the spool) and stored (in InfluxDB),
//! lantian's CPU time per packet and its peak RSS.
//!
//!   cargo bench --bench hj212                 # 100,000 hourly packets
//!   N=20000 CONNECTIONS=10 cargo bench --bench hj212
//!
//! Each packet is one device's hourly data (CN=2061) with 6 values (a
//! sewage plant's flow, COD, NH3-N, TP, TN, pH); 1,000 devices, 100
//! connections by default. Under `cargo test` it runs once with N = 500
//! as a smoke test.

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;

fn env(name: &str, bench: usize, smoke: usize, is_bench: bool) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { bench } else { smoke })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let is_bench = std::env::args().any(|a| a == "--bench");
    let n = env("N", 100_000, 500, is_bench);
    let devices = env("DEVICES", 1000, 20, is_bench);
    let connections = env("CONNECTIONS", 100, 5, is_bench).min(devices);
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let mut config = Lantian::v1(broker.port, &influx)
        + "[hj212]\nlisten = \"127.0.0.1:0\"\nmax_packets_per_second = 1000000.0\n";
    for d in 0..devices {
        config += &format!(
            "[[hj212.devices]]\nmn = \"BENCH{d:06}\"\npassword = \"123456\"\ndistrict = \"d{}\"\n\
             site = \"plant{d}\"\nkind = \"sewage\"\n",
            d % 16
        );
    }
    let lantian = Lantian::start(&config);
    lantian.wait_subscribed().await;
    let (_port_tx, port) = tokio::sync::watch::channel(lantian.hj212_port().await);
    let pid = lantian.pid();
    let per_device = n.div_ceil(devices);
    // Hours back from the last full hour, within validation.max_age.
    let last_hour = now_ms() / 3_600_000 * 3_600_000 - 3_600_000;
    let packet = |d: usize, k: usize| -> (String, String) {
        let t = last_hour - k as i64 * 3_600_000;
        let qn = format!("{}{:03}", beijing_time(t), d % 1000);
        let cp = format!(
            "w00000-Avg={:.1},w00000-Flag=N;w01018-Avg={:.1},w01018-Flag=N;w21003-Avg=1.2,w21003-Flag=N;\
             w21011-Avg=0.31,w21011-Flag=N;w21001-Avg=9.8,w21001-Flag=N;w01001-Avg=7.1,w01001-Flag=N",
            2500.0 + (d % 100) as f64,
            30.0 + (k % 20) as f64
        );
        let data = format!(
            "QN={qn};ST=32;CN=2061;PW=123456;MN=BENCH{d:06};Flag=5;CP=&&DataTime={};{cp}&&",
            beijing_time(t)
        );
        (hj212_packet(&data), qn)
    };
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let port = port.clone();
        let mine: Vec<(String, String)> = (0..per_device)
            .flat_map(|k| (c..devices).step_by(connections).map(move |d| (d, k)))
            .filter(|(d, k)| k * devices + d < n)
            .map(|(d, k)| packet(d, k))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut logger = Logger::new();
            for (p, qn) in &mine {
                logger.send(p, qn, &port).await;
            }
            logger.acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    let acked_in = start.elapsed();
    let stored = influx
        .wait_count(
            "SELECT count(cod) FROM sewage",
            n as i64,
            Duration::from_secs(600),
        )
        .await;
    let stored_in = start.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    assert_eq!(acked as usize, n);
    assert_eq!(stored, n as i64, "{}", lantian.logs());
    println!(
        "hj212: {n} hourly packets (6 values) from {devices} devices over {connections} connections, \
         each waiting for its ACK\n\
         hj212: all acknowledged (durable in the spool) in {:.2}s = {:.0} packets/s\n\
         hj212: all stored in InfluxDB in {:.2}s = {:.0} packets/s; lantian CPU {:.2}s = {:.1} µs/packet; \
         peak RSS {:.1} MB",
        acked_in.as_secs_f64(),
        n as f64 / acked_in.as_secs_f64(),
        stored_in.as_secs_f64(),
        n as f64 / stored_in.as_secs_f64(),
        cpu,
        cpu * 1e6 / n as f64,
        peak_rss_kib(pid) as f64 / 1024.0
    );
}
