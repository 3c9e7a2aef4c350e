//! End to end: readings published at QoS 1 arrive in InfluxDB exactly once,
//! with the right measurement, tags, fields and millisecond timestamps;
//! hostile input goes to quarantine with reasons.

use std::time::Duration;

use crate::harness::*;

const KINDS: [&str; 4] = ["air", "dust", "voc", "sewage"];
const DISTRICTS: [&str; 5] = ["dongcheng", "xicheng", "chaoyang", "haidian", "fengtai"];

/// Sensor `i` of 100: topic and the payload of its `j`-th reading.
fn sensor(i: usize) -> (String, String) {
    let kind = KINDS[i % 4];
    let topic = format!(
        "env/{}/site{:02}/{kind}/{kind}-{i:03}",
        DISTRICTS[i % 5],
        i % 10
    );
    (kind.to_owned(), topic)
}

fn payload(kind: &str, i: usize, j: usize, ts: i64) -> String {
    let x = (i * 7 + j * 13) % 300;
    match kind {
        "air" => format!(
            r#"{{"ts":{ts},"pm25":{x},"pm10":{},"no2":{},"so2":4.5,"o3":60,"co":0.8,"units":{{"no2":"ppb"}}}}"#,
            x + 20,
            x % 50
        ),
        "dust" => format!(r#"{{"ts":{ts},"pm10":{},"pm25":{x}}}"#, x + 40),
        "voc" => format!(
            r#"{{"ts":{ts},"tvoc":{}.25,"oil_fume":0.{}}}"#,
            x % 40,
            x % 9 + 1
        ),
        _ => format!(
            r#"{{"ts":{ts},"inflow_m3h":{},"treated_m3h":{},"cod":{}.5,"nh3n":1.25}}"#,
            4000 + x,
            3900 + x,
            x % 60
        ),
    }
}

/// 1,000 malformed or hostile messages, with the reason each must get.
fn hostile(n: usize, ts: i64) -> (String, Vec<u8>, &'static str) {
    let good_topic = "env/chaoyang/aotizhongxin/air/aq-x";
    match n % 20 {
        0..=3 => (
            good_topic.into(),
            br#"{"pm25": 12, "pm10":"#.to_vec(),
            "bad_json",
        ),
        4 | 5 => (
            good_topic.into(),
            format!(r#"{{"pm25":1,"pad":"{}"}}"#, "x".repeat(100_000)).into_bytes(),
            "oversized",
        ),
        6..=8 => (
            good_topic.into(),
            format!(r#"{{"ts":{ts},"pm25":"NaN"}}"#).into_bytes(),
            "not_finite",
        ),
        9..=11 => (
            good_topic.into(),
            format!(r#"{{"ts":{ts},"pm25":-12}}"#).into_bytes(),
            "out_of_range",
        ),
        12..=14 => (
            "env/nowhere".into(),
            br#"{"pm25":10}"#.to_vec(),
            "unknown_topic",
        ),
        15..=17 => {
            let junk: Vec<u8> = (0..64).map(|k| (k * 37 + n * 11) as u8 | 0x80).collect();
            (good_topic.into(), junk, "bad_json")
        }
        _ => (
            "env/chaoyang/x/noise/n-1".into(),
            br#"{"db":70}"#.to_vec(),
            "unknown_kind",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_and_a_thousand_hostile_messages() {
    let Rig {
        broker: _broker,
        influx,
        lantian,
        mut publisher,
    } = Rig::start().await;

    let base = now_ms() - 3_600_000;
    let mut expected_reasons: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut hostile_n = 0;
    for j in 0..100 {
        for i in 0..100 {
            let (kind, topic) = sensor(i);
            // Distinct, non-round milliseconds per sensor and reading.
            let ts = base + (j as i64) * 10_000 + i as i64 * 7 + 3;
            publisher.publish(&topic, payload(&kind, i, j, ts)).await;
            if (j * 100 + i) % 10 == 9 {
                let (t, p, reason) = hostile(hostile_n, ts);
                hostile_n += 1;
                *expected_reasons.entry(reason).or_default() += 1;
                publisher.publish(&t, p).await;
            }
        }
    }
    assert_eq!(hostile_n, 1000);
    publisher.flush().await;

    let timeout = Duration::from_secs(90);
    // Every kind: 25 sensors × 100 readings.
    for (kind, field) in [
        ("air", "pm25"),
        ("dust", "pm10"),
        ("voc", "tvoc"),
        ("sewage", "cod"),
    ] {
        let n = influx
            .wait_count(&format!("SELECT count({field}) FROM {kind}"), 2500, timeout)
            .await;
        assert_eq!(n, 2500, "{kind}: {}", lantian.logs());
    }
    let q = influx
        .wait_count("SELECT count(payload_bytes) FROM quarantine", 1000, timeout)
        .await;
    // Good readings on the hostile sensor "aq-x" would show up in air: none may.
    assert_eq!(
        influx
            .scalar("SELECT count(pm25) FROM air WHERE sensor = 'aq-x'")
            .await,
        0
    );
    assert_eq!(q, 1000, "{}", lantian.logs());

    // Per sensor: exactly 100 points each, no sensor missing, no extra.
    let series = influx
        .query("SELECT count(pm10) FROM dust GROUP BY sensor")
        .await;
    assert_eq!(series.len(), 25);
    for s in &series {
        assert_eq!(s["values"][0][1].as_i64(), Some(100), "{s}");
    }

    // Quarantine by reason, as published.
    let series = influx
        .query("SELECT count(payload_bytes) FROM quarantine GROUP BY reason")
        .await;
    let got: std::collections::BTreeMap<String, i64> = series
        .iter()
        .map(|s| {
            (
                s["tags"]["reason"].as_str().unwrap().to_owned(),
                s["values"][0][1].as_i64().unwrap(),
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, i64> = expected_reasons
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(got, want);

    // One sensor in detail: tags, converted fields, millisecond timestamps.
    let s = &influx
        .query("SELECT * FROM air WHERE sensor = 'air-004' ORDER BY time")
        .await[0];
    let cols: Vec<&str> = s["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "time", "co", "district", "no2", "o3", "pm10", "pm25", "sensor", "site", "so2"
        ]
    );
    let rows = s["values"].as_array().unwrap();
    assert_eq!(rows.len(), 100);
    for (j, row) in rows.iter().enumerate() {
        let ts = base + (j as i64) * 10_000 + 4 * 7 + 3;
        let x = (4 * 7 + j * 13) % 300;
        assert_eq!(row[0].as_i64(), Some(ts));
        assert_eq!(row[2], "fengtai");
        assert_eq!(row[7], "air-004");
        assert_eq!(row[8], "site04");
        assert_eq!(row[6].as_f64(), Some(x as f64));
        let no2 = (x % 50) as f64 * 46.0055 / 24.465;
        assert!((row[3].as_f64().unwrap() - no2).abs() < 1e-9, "no2 {row}");
    }

    // The quarantine record keeps topic, detail and the payload's first bytes.
    let s = &influx.query("SELECT topic, detail, payload, payload_bytes FROM quarantine WHERE reason = 'oversized' LIMIT 1").await[0];
    let row = &s["values"][0];
    assert_eq!(row[1], "env/chaoyang/aotizhongxin/air/aq-x");
    assert!(
        row[2]
            .as_str()
            .unwrap()
            .contains("exceeds validation.max_payload_bytes")
    );
    assert_eq!(row[3].as_str().unwrap().len(), 256);
    assert!(row[4].as_i64().unwrap() > 100_000);

    // Big payloads did not break the connection: one connect, no loss of link.
    let logs = lantian.logs();
    assert_eq!(
        logs.matches("connected to MQTT broker").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_points_are_isolated_and_do_not_block_newer_data() {
    let Rig {
        broker: _broker,
        influx,
        lantian,
        mut publisher,
    } = Rig::start().await;
    let base = now_ms() - 600_000;
    // Make field "diag" a string in this shard: float writes of it now fail
    // with a 400 "field type conflict".
    let status = influx
        .write(&format!(
            "dust,sensor=seed diag=\"text\" {}",
            base * 1_000_000
        ))
        .await;
    assert_eq!(status.as_u16(), 204);
    for j in 0..200 {
        let ts = base + j * 1000 + 1;
        let extra = if j % 20 == 7 { r#","diag":1"# } else { "" };
        publisher
            .publish(
                "env/haidian/site01/dust/d-001",
                format!(r#"{{"ts":{ts},"pm10":{j}{extra}}}"#),
            )
            .await;
    }
    publisher.flush().await;
    let t = Duration::from_secs(60);
    let stored = influx
        .wait_count("SELECT count(pm10) FROM dust", 190, t)
        .await;
    let rejected = influx
        .wait_count(
            "SELECT count(payload_bytes) FROM quarantine WHERE reason = 'rejected'",
            10,
            t,
        )
        .await;
    assert_eq!((stored, rejected), (190, 10), "{}", lantian.logs());
    let s = &influx
        .query("SELECT detail, payload FROM quarantine WHERE reason = 'rejected' LIMIT 1")
        .await[0];
    assert!(
        s["values"][0][1].as_str().unwrap().contains("HTTP 400"),
        "{s}"
    );
    assert!(
        s["values"][0][2]
            .as_str()
            .unwrap()
            .starts_with("dust,district=haidian,sensor=d-001"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_api_writes_to_a_real_v2_endpoint() {
    let broker = Mosquitto::start().await;
    let vm = Victoria::start().await;
    let section = format!(
        "api = \"v2\"\nurl = \"http://127.0.0.1:{}\"\norg = \"bureau\"\nbucket = \"env\"\ntoken = \"t\"",
        vm.port
    );
    let lantian = Lantian::start(&Lantian::config(broker.port, &section, ""));
    let mut publisher = Publisher::connect(broker.port, "test-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 60_000;
    for j in 0..100 {
        let ts = base + j * 500 + 7;
        publisher
            .publish(
                "env/xicheng/guanyuan/air/aq-0001",
                format!(r#"{{"ts":{ts},"pm25":{j}}}"#),
            )
            .await;
    }
    publisher.flush().await;
    let mut samples = Vec::new();
    for _ in 0..100 {
        samples = vm.export(r#"{__name__="air_pm25"}"#).await;
        if samples
            .first()
            .and_then(|s| s["values"].as_array())
            .map(|v| v.len())
            == Some(100)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(samples.len(), 1, "{}", lantian.logs());
    let s = &samples[0];
    assert_eq!(s["metric"]["site"], "guanyuan");
    assert_eq!(s["metric"]["sensor"], "aq-0001");
    let values: Vec<f64> = s["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let times: Vec<i64> = s["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(values, (0..100).map(|j| j as f64).collect::<Vec<_>>());
    assert_eq!(
        times,
        (0..100).map(|j| base + j * 500 + 7).collect::<Vec<_>>()
    );
}

/// A publisher that invents sensors or field names cannot grow lantian
/// without bound: past `validation.max_series` a new series, and past
/// `validation.max_fields` a reading with a new field name, is quarantined
/// as `cardinality`, counted, and the known sensors go on being stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_inventing_sensors_or_fields_meets_the_bounds() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let section = format!(
        "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"",
        influx.url()
    );
    let lantian = Lantian::start(&Lantian::config(
        broker.port,
        &section,
        "[validation]\nmax_series = 100\nmax_fields = 50\n",
    ));
    let mut publisher = Publisher::connect(broker.port, "inventor").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 60_000;
    // 100 real sensors, then 1,000 invented ones, then the real ones again.
    for i in 0..100 {
        let topic = format!("env/haidian/site01/dust/real-{i}");
        publisher
            .publish(&topic, format!(r#"{{"ts":{base},"pm10":{i}}}"#))
            .await;
    }
    for i in 0..1000 {
        let topic = format!("env/haidian/site01/dust/fake-{i}");
        publisher
            .publish(&topic, format!(r#"{{"ts":{base},"pm10":1}}"#))
            .await;
    }
    for i in 0..100 {
        let topic = format!("env/haidian/site01/dust/real-{i}");
        publisher
            .publish(&topic, format!(r#"{{"ts":{},"pm10":{i}}}"#, base + 1000))
            .await;
    }
    publisher.flush().await;
    let t = Duration::from_secs(120);
    let refused = influx
        .wait_count(
            "SELECT count(payload_bytes) FROM quarantine WHERE reason = 'cardinality'",
            1000,
            t,
        )
        .await;
    let stored = influx
        .wait_count("SELECT count(pm10) FROM dust", 200, t)
        .await;
    println!("series bound 100: {stored} readings stored, {refused} invented series refused");
    assert_eq!((stored, refused), (200, 1000), "{}", lantian.logs());
    assert_eq!(
        influx
            .scalar("SELECT count(pm10) FROM dust WHERE sensor =~ /^fake/")
            .await,
        0
    );
    assert_eq!(
        lantian
            .metric("lantian_quarantined_total{reason=\"cardinality\"}")
            .await,
        Some(1000.0)
    );
    // 200 invented field names from a known sensor: pm10 and 49 more make
    // the 50 the bound allows; the other 151 readings are refused.
    for i in 0..200 {
        publisher
            .publish(
                "env/haidian/site01/dust/real-0",
                format!(r#"{{"ts":{},"f{i}":1}}"#, base + 2000 + i),
            )
            .await;
    }
    publisher.flush().await;
    let refused = influx
        .wait_count(
            "SELECT count(payload_bytes) FROM quarantine WHERE reason = 'cardinality'",
            1151,
            t,
        )
        .await;
    let fields = influx
        .query("SHOW FIELD KEYS FROM dust")
        .await
        .first()
        .map_or(0, |s| s["values"].as_array().map_or(0, Vec::len));
    println!(
        "field bound 50: {fields} field names stored, {} readings with new ones refused",
        refused - 1000
    );
    assert_eq!((refused, fields), (1151, 50), "{}", lantian.logs());
}

/// A hostile publisher invents 200,000 sensors against the default bound
/// (`validation.max_series` = 100,000): the first 100,000 series are taken
/// (10 real ones among them), every later new one is quarantined
/// (`cardinality`), the real sensors go on being stored, and the process
/// stays within a bounded memory (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_invented_sensors_meet_the_default_bound() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    let mut publisher = Publisher::connect(broker.port, "inventor-200k").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 60_000;
    let real = async |p: &mut Publisher, ts: i64| {
        for i in 0..10 {
            let topic = format!("env/haidian/site01/dust/real-{i}");
            p.publish(&topic, format!(r#"{{"ts":{ts},"pm10":{i}}}"#))
                .await;
        }
    };
    real(&mut publisher, base).await;
    for i in 0..200_000 {
        let topic = format!("env/haidian/site01/dust/fake-{i:06}");
        publisher
            .publish(&topic, format!(r#"{{"ts":{base},"pm10":1}}"#))
            .await;
    }
    real(&mut publisher, base + 1000).await;
    publisher.flush().await;
    let t = Duration::from_secs(600);
    lantian
        .wait_metric(
            "lantian_quarantined_total{reason=\"cardinality\"}",
            100_010.0,
            t,
        )
        .await;
    let stored = influx
        .wait_count("SELECT count(pm10) FROM dust", 100_010, t)
        .await;
    let real_stored = influx
        .scalar("SELECT count(pm10) FROM dust WHERE sensor =~ /^real/")
        .await;
    let refused = lantian
        .metric("lantian_quarantined_total{reason=\"cardinality\"}")
        .await;
    let rss_mib = peak_rss_kib(lantian.pid()) / 1024;
    println!(
        "200,000 invented sensors, bound 100,000: {stored} readings stored ({real_stored} of 20 \
         from the real sensors), {refused:?} refused as cardinality; peak RSS {rss_mib} MiB"
    );
    assert_eq!(stored, 100_010, "{}", lantian.logs());
    assert_eq!(real_stored, 20);
    assert_eq!(refused, Some(100_010.0));
    assert!(rss_mib < 1024, "memory stays bounded: {rss_mib} MiB");
}
