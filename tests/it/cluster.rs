//! Past one process (issue 16): edges and workers over a real three-node
//! NATS JetStream cluster, with Mosquitto and InfluxDB. A worker and an
//! edge are killed with SIGKILL mid-stream and restarted, and a worker is
//! added; InfluxDB must end with exactly the readings published, and the
//! leases' log must show no partition held by two workers at once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

const PARTITIONS: u32 = 8;

/// One lease event from a worker's log: (time ms, instance, partition,
/// acquired?).
fn lease_events(logs: &str) -> Vec<(i64, String, u32, bool)> {
    let mut out = Vec::new();
    for line in logs.lines() {
        let acquired = line.contains("lease acquired");
        if !acquired && !line.contains("lease released") && !line.contains("lease lost") {
            continue;
        }
        let Some(t) = line
            .split_whitespace()
            .next()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let (Some(p), Some(who)) = (field("partition"), field("instance")) else {
            continue;
        };
        out.push((t.timestamp_millis(), who, p.parse().unwrap(), acquired));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_and_workers_over_a_nats_cluster_lose_nothing_through_kills_and_a_join() {
    let nats = NatsCluster::start().await;
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let state = tempfile::tempdir().unwrap();
    let start = |role: &str, name: &str| {
        let dir = state.path().join(name);
        Lantian::start_with_env(
            &nats.lantian_config(broker.port, &influx, (role, name), PARTITIONS, "5s"),
            &[("LANTIAN__SPOOL__DIR", dir.to_str().unwrap())],
        )
    };
    let mut edges = vec![start("edge", "edge-a"), start("edge", "edge-b")];
    let mut workers = vec![start("worker", "worker-1"), start("worker", "worker-2")];
    for e in &edges {
        e.wait_subscribed().await;
    }
    let shares = async |ws: &[Lantian]| {
        let mut v = Vec::new();
        for w in ws {
            v.push(
                w.metric("lantian_cluster_partitions_owned")
                    .await
                    .unwrap_or(0.0),
            );
        }
        v
    };
    // Both workers up, the partitions shared evenly (4 each).
    wait_for(
        "the partitions shared by two workers",
        Duration::from_secs(60),
        async || shares(&workers).await == [4.0, 4.0],
    )
    .await;

    // 200 sensors at 40 sites in 8 districts, 100 readings each, in four
    // phases with a fault between them.
    let sensors: Vec<String> = (0..200)
        .map(|i| format!("env/d{}/site{}/air/aq-{i}", i % 8, i % 40))
        .collect();
    let base = now_ms() - 3 * 86_400_000;
    let mut p = Publisher::connect(broker.port, "cluster-publisher").await;
    let mut published = 0i64;
    let phase = async |p: &mut Publisher, k: i64| {
        for round in 25 * k..25 * (k + 1) {
            for (i, topic) in sensors.iter().enumerate() {
                let ts = base + round * 60_000;
                p.publish(
                    topic,
                    format!("{{\"ts\":{ts},\"pm25\":{}}}", (i as i64 + round) % 300),
                )
                .await;
            }
        }
        p.flush().await;
        25 * sensors.len() as i64
    };
    let stored = async || influx.scalar("SELECT count(pm25) FROM air").await as i64;

    published += phase(&mut p, 0).await;
    // Bad input through the edges: 10 messages that are not JSON and one of
    // 100 KB (the edge keeps its first 64 KiB and says how long it was).
    for topic in &sensors[..10] {
        p.publish(topic, "not json").await;
    }
    p.publish(&sensors[10], vec![b'x'; 100_000]).await;
    p.flush().await;
    wait_for(
        "some readings stored",
        Duration::from_secs(120),
        async || stored().await >= 1_000,
    )
    .await;
    let killed_at = now_ms();
    workers[0].proc.kill(); // SIGKILL: its leases lapse, nothing is released
    published += phase(&mut p, 1).await;
    edges[0].restart(); // SIGKILL, then started again (same MQTT session)
    edges[0].wait_subscribed().await;
    published += phase(&mut p, 2).await;
    workers[0].restart();
    workers.push(start("worker", "worker-3"));
    published += phase(&mut p, 3).await;

    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            published,
            Duration::from_secs(240),
        )
        .await;
    assert_eq!(
        got, published,
        "InfluxDB holds exactly the published readings"
    );
    let per_sensor = influx
        .query("SELECT count(pm25) FROM air GROUP BY sensor")
        .await;
    assert_eq!(per_sensor.len(), 200);
    for s in &per_sensor {
        assert_eq!(s["values"][0][1], 100, "{s}");
    }
    // The bad messages reached a worker and are quarantined with their
    // reasons, the oversized one with its real length.
    influx
        .wait_count(
            "SELECT count(payload_bytes) FROM quarantine",
            11,
            Duration::from_secs(60),
        )
        .await;
    let reasons = influx
        .query("SELECT count(payload_bytes), max(payload_bytes) FROM quarantine GROUP BY reason")
        .await;
    let by_reason: BTreeMap<String, (i64, i64)> = reasons
        .iter()
        .map(|r| {
            let v = &r["values"][0];
            (
                r["tags"]["reason"].as_str().unwrap().to_owned(),
                (v[1].as_i64().unwrap(), v[2].as_i64().unwrap()),
            )
        })
        .collect();
    assert_eq!(by_reason["bad_json"].0, 10, "{by_reason:?}");
    assert_eq!(by_reason["oversized"], (1, 100_000), "{by_reason:?}");
    // JetStream holds each message once (whatever the broker delivered
    // again to the edge that was killed and restarted, the deduplication
    // id dropped the second copy).
    let client = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("LT_IN")
        .await
        .unwrap();
    let held = stream.info().await.unwrap().state.messages;
    assert_eq!(held, published as u64 + 11, "messages in the stream");
    let mut forwarded = 0.0;
    for e in &edges {
        forwarded += e
            .metric("lantian_cluster_forwarded_total")
            .await
            .unwrap_or(0.0);
    }
    eprintln!(
        "edges forwarded {forwarded} (the restarted edge's count starts again at 0); stream holds {held}"
    );
    // The three workers share the partitions once the newcomer is in.
    wait_for(
        "the partitions spread over three workers",
        Duration::from_secs(60),
        async || {
            let v = shares(&workers).await;
            v.iter().sum::<f64>() == f64::from(PARTITIONS) && v.iter().all(|s| *s >= 2.0)
        },
    )
    .await;

    // Each worker reports its partitions' lag; everything was stored, so
    // it drains to 0 on all 8.
    wait_for(
        "every partition's lag at 0",
        Duration::from_secs(60),
        async || {
            let mut series = 0;
            let mut total = 0.0;
            for w in &workers {
                let text = w.admin("/metrics").await.1;
                for line in text
                    .lines()
                    .filter(|l| l.starts_with("lantian_cluster_partition_lag{"))
                {
                    series += 1;
                    total += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
                }
            }
            series == PARTITIONS && total == 0.0
        },
    )
    .await;

    // The leases' log: per partition, holding intervals never overlap. A
    // killed worker's holding ends when it was killed.
    let mut events: Vec<(i64, String, u32, bool)> = Vec::new();
    for w in &workers {
        events.extend(lease_events(&w.logs()));
    }
    events.sort_by_key(|e| e.0);
    let restarted_at = events
        .iter()
        .filter(|e| e.1 == "worker-1" && e.0 > killed_at)
        .map(|e| e.0)
        .min()
        .unwrap_or(i64::MAX);
    let mut holder: BTreeMap<u32, (String, i64)> = BTreeMap::new();
    let mut takeover_ms = 0;
    let mut orphaned: Vec<u32> = Vec::new();
    for (t, who, p, acquired) in &events {
        // worker-1's leases end at its death.
        if *t > killed_at && *t < restarted_at {
            let dead: Vec<u32> = holder
                .iter()
                .filter(|(_, (w, _))| w == "worker-1")
                .map(|(p, _)| *p)
                .collect();
            for d in dead {
                holder.remove(&d);
                orphaned.push(d);
            }
        }
        if *acquired {
            if let Some((other, since)) = holder.get(p) {
                panic!("partition {p}: {who} acquired at {t} while {other} held it since {since}");
            }
            holder.insert(*p, (who.clone(), *t));
            if orphaned.contains(p) && *t > killed_at {
                takeover_ms = takeover_ms.max(t - killed_at);
                orphaned.retain(|o| o != p);
            }
        } else if holder.get(p).is_some_and(|(w, _)| w == who) {
            holder.remove(p);
        }
    }
    assert!(
        orphaned.is_empty(),
        "partitions of the killed worker never taken over: {orphaned:?}"
    );
    eprintln!("takeover after kill -9: {takeover_ms} ms (lease_ttl 3 s)");
    assert!(takeover_ms > 0 && takeover_ms <= 20_000, "{takeover_ms} ms");
    drop(edges);
}
