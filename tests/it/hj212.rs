//! HJ 212 data loggers over TCP against the real daemon: a sewage plant, a
//! VOC source and a dust monitor send a day of hourly data (CN=2061)
//! asking for ACKs; lantian is kill -9'd mid-stream; the loggers send again
//! what was not acknowledged. Every acknowledged packet is in InfluxDB,
//! each hour once, and the plant's treatment-rate and effluent alerts fire
//! from HJ 212 data alone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const HOUR: i64 = 3_600_000;
const PLANT: &str = "PLANT-GBD-0001";
const VOC: &str = "VOC-YZ-0001";
const DUST: &str = "DUST-TZ-0001";

fn config(broker: u16, influx: &Influx, hook: &Receiver) -> String {
    Lantian::alerting(
        broker,
        influx,
        &format!(
            "[[alerts.receivers]]\nname = \"water\"\nurl = \"{}\"\nrules = [\"water.*\"]\nretry_max = \"1s\"\n\
             [hj212]\nlisten = \"127.0.0.1:0\"\n\
             [[hj212.devices]]\nmn = \"{PLANT}\"\npassword = \"pw-plant\"\ndistrict = \"chaoyang\"\n\
             site = \"gaobeidian\"\nkind = \"sewage\"\n\
             units = {{ w00000 = \"m3/h\", e10101 = \"m3/h\" }}\n\
             fields = {{ w00000 = \"treated_m3h\", e10101 = \"inflow_m3h\" }}\n\
             [[hj212.devices]]\nmn = \"{VOC}\"\npassword = \"pw-voc\"\ndistrict = \"fangshan\"\n\
             site = \"yanshan\"\nkind = \"voc\"\n\
             [[hj212.devices]]\nmn = \"{DUST}\"\npassword = \"pw-dust\"\ndistrict = \"tongzhou\"\n\
             site = \"site-17\"\nkind = \"dust\"\nsm4_key = \"{DUST_KEY}\"\n",
            hook.url()
        ),
    )
}

/// The dust monitor's SM4 key (HJ 212-2025 encryption); the others have
/// none.
const DUST_KEY: &str = "0123456789abcdeffedcba9876543210";

/// Hour `h` of the day starting at `day` from device `mn`: an upload
/// asking for an ACK (Flag=5), its QN unique per device and hour.
fn hourly(mn: &str, pw: &str, st: &str, day: i64, h: i64, cp: &str) -> (String, String) {
    let qn = format!("{}{h:03}", beijing_time(day + h * HOUR));
    let data = format!(
        "QN={qn};ST={st};CN=2061;PW={pw};MN={mn};Flag=5;CP=&&DataTime={};{cp}&&",
        beijing_time(day + h * HOUR)
    );
    (hj212_packet(&data), qn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_loggers_through_a_kill_9_store_every_acknowledged_hour_once_and_fire_the_plants_alerts()
 {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    let mut lantian = Lantian::start(&config(broker.port, &influx, &hook));
    lantian.wait_subscribed().await;
    let (port_tx, port) = tokio::sync::watch::channel(lantian.hj212_port().await);
    let day = two_days_ago_beijing();
    // 25 hours: the day, and the first hour of the next, which closes it.
    let hours = 0..25;
    let plant: Vec<_> = hours
        .clone()
        .map(|h| {
            // 10,000 m³/h in, 9,000 treated (90 %); COD 60 mg/L (above
            // the 50 of Grade 1A), ammonia and phosphorus within.
            let wobble = [0.0, 40.0, -40.0][h as usize % 3];
            let cp = format!(
                "e10101-Avg={},e10101-Flag=N;w00000-Avg={},w00000-Flag=N;w01018-Avg={},w01018-Flag=N;\
                 w21003-Avg=1.2,w21003-Flag=N;w21011-Avg=0.3,w21011-Flag=N",
                10_000.0 + wobble,
                9_000.0 + wobble * 0.9,
                60.0 + wobble / 100.0
            );
            hourly(PLANT, "pw-plant", "32", day, h, &cp)
        })
        .collect();
    let voc: Vec<_> = hours
        .clone()
        .map(|h| {
            let cp = format!("a24088-Avg={:.2},a24088-Flag=N", 3.0 + h as f64 / 10.0);
            hourly(VOC, "pw-voc", "31", day, h, &cp)
        })
        .collect();
    let dust: Vec<_> = hours
        .clone()
        .map(|h| {
            let cp = format!(
                "a34002-Avg={},a34002-Flag=N;a34001-Avg=120,a34001-Flag=N",
                60 + h
            );
            hourly(DUST, "pw-dust", "39", day, h, &cp)
        })
        .collect();

    // Each logger on its own connection; the killer waits for 30 ACKs.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut loggers = Vec::new();
    for packets in [plant, voc, dust] {
        let (port, acked) = (port.clone(), acked.clone());
        loggers.push(tokio::spawn(async move {
            let mut logger = Logger::new();
            for (packet, qn) in &packets {
                logger.send(packet, qn, &port).await;
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            logger
        }));
    }
    wait_for(
        "30 packets acknowledged",
        Duration::from_secs(120),
        async || acked.load(std::sync::atomic::Ordering::Relaxed) >= 30,
    )
    .await;
    let before = acked.load(std::sync::atomic::Ordering::Relaxed);
    lantian.restart(); // SIGKILL, then start again
    port_tx.send_replace(lantian.hj212_port().await);
    let mut resent = 0;
    for l in loggers {
        let logger = l.await.unwrap();
        assert_eq!(logger.acked, 25);
        resent += logger.resent;
    }
    println!("75 packets acknowledged ({before} before the kill -9), {resent} sent again after it");

    // Every acknowledged hour is stored, once.
    for (q, want) in [
        ("SELECT count(cod) FROM sewage", 25),
        ("SELECT count(inflow_m3h) FROM sewage", 25),
        ("SELECT count(nmhc) FROM voc", 25),
        ("SELECT count(pm10) FROM dust", 25),
    ] {
        let n = influx.wait_count(q, want, Duration::from_secs(120)).await;
        assert_eq!(n, want, "{q}\n{}", lantian.logs());
    }
    let hours_stored = influx
        .query(&format!(
            "SELECT cod FROM sewage WHERE time >= {}ms AND time < {}ms",
            day,
            day + 24 * HOUR
        ))
        .await;
    assert_eq!(hours_stored[0]["values"].as_array().unwrap().len(), 24);
    // DataTime 00:00 Beijing (the start of the day's first hour).
    assert_eq!(
        hours_stored[0]["values"][0][0].as_i64(),
        Some(day),
        "DataTime is the start of the hour, Beijing time"
    );

    // The plant's alerts, from these packets alone.
    let want = [
        ("water.effluent.cod", "gaobeidian"),
        ("water.treatment-rate.day", "gaobeidian"),
    ];
    let seen = async || -> Vec<(String, String)> {
        hook.requests()
            .iter()
            .map(|r| r.json())
            .filter(|b: &Value| b["event"] == "firing")
            .map(|b| {
                let a = &b["alert"];
                (
                    a["rule"].as_str().unwrap_or_default().to_owned(),
                    a["labels"]["site"].as_str().unwrap_or("city").to_owned(),
                )
            })
            .collect()
    };
    wait_for("the plant's alerts", Duration::from_secs(120), async || {
        let seen = seen().await;
        want.iter()
            .all(|(r, s)| seen.iter().any(|(a, b)| a == r && b == s))
    })
    .await;
    let bodies: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
    let cod = bodies
        .iter()
        .find(|b| b["alert"]["rule"] == "water.effluent.cod")
        .unwrap();
    assert!(
        (cod["alert"]["value"].as_f64().unwrap() - 60.0).abs() < 0.5,
        "{cod}"
    );
    let rate = bodies
        .iter()
        .find(|b| {
            b["alert"]["rule"] == "water.treatment-rate.day"
                && b["alert"]["labels"]["site"] == "gaobeidian"
        })
        .unwrap();
    assert!(
        (rate["alert"]["value"].as_f64().unwrap() - 90.0).abs() < 0.01,
        "{rate}"
    );
    assert_eq!(
        influx
            .scalar("SELECT count(payload_bytes) FROM quarantine")
            .await,
        0,
        "nothing quarantined"
    );
}

/// Packets that fail a check (an encrypted one from a device with no key
/// among them) are quarantined with their reason and get no
/// ACK; a good one on the same connection after them does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_unknown_device_a_bad_crc_and_no_key_are_quarantined_unacknowledged() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    let lantian = Lantian::start(&config(broker.port, &influx, &hook));
    lantian.wait_subscribed().await;
    let port = lantian.hj212_port().await;
    let day = two_days_ago_beijing();
    let cp = "a34002-Avg=61,a34002-Flag=N";
    let (wrong_pw, _) = hourly(DUST, "guess", "39", day, 1, cp);
    let (unknown, _) = hourly("NOBODY-0001", "pw-dust", "39", day, 1, cp);
    let (good, qn) = hourly(DUST, "pw-dust", "39", day, 2, cp);
    let (crc_of, _) = hourly(DUST, "pw-dust", "39", day, 3, cp);
    let bad_crc = format!("{}0000", &crc_of[..crc_of.len() - 4]);
    // HJ 212-2025 encrypted data areas: the dust monitor's key is
    // configured, the VOC monitor's is not.
    let sealed_data = |mn: &str, pw: &str, h: i64| {
        format!(
            "QN={h:017};ST=39;CN=2061;PW={pw};MN={mn};Flag=9;CP=&&DataTime={};{cp}&&",
            beijing_time(day + h * HOUR)
        )
    };
    let sealed = hj212_sealed(&sealed_data(DUST, "pw-dust", 4), DUST_KEY);
    let sealed_no_key = hj212_sealed(&sealed_data(VOC, "pw-voc", 4), DUST_KEY);
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut sock = tokio::io::BufReader::new(sock);
    for p in [
        &wrong_pw,
        &unknown,
        &bad_crc,
        &sealed_no_key,
        &good,
        &sealed,
    ] {
        sock.get_mut()
            .write_all(format!("{p}\r\n").as_bytes())
            .await
            .unwrap();
    }
    // Packets are taken in order: the answers are the good one's, then
    // the decrypted one's.
    let mut line = String::new();
    sock.read_line(&mut line).await.unwrap();
    assert!(
        line.contains(&format!("QN={qn};")) && line.contains("CN=9014"),
        "{line}"
    );
    line.clear();
    sock.read_line(&mut line).await.unwrap();
    assert!(
        line.contains(&format!("QN={:017};", 4)) && line.contains("Flag=8"),
        "{line}"
    );
    let q = "SELECT count(payload_bytes) FROM quarantine GROUP BY reason";
    influx
        .wait_count(
            "SELECT count(payload_bytes) FROM quarantine",
            4,
            Duration::from_secs(60),
        )
        .await;
    let mut reasons: Vec<(String, i64)> = influx
        .query(q)
        .await
        .iter()
        .map(|s| {
            (
                s["tags"]["reason"].as_str().unwrap().to_owned(),
                s["values"][0][1].as_i64().unwrap(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("bad_crc", 1),
            ("bad_password", 1),
            ("encrypted", 1),
            ("unknown_device", 1)
        ]
        .map(|(r, n)| (r.to_owned(), n))
    );
    // The ACK says the packet is in the spool; InfluxDB gets it after.
    let stored = influx
        .wait_count("SELECT count(pm10) FROM dust", 2, Duration::from_secs(60))
        .await;
    assert_eq!(stored, 2);
    let sum = influx.query("SELECT sum(pm10) FROM dust").await;
    assert_eq!(sum[0]["values"][0][1].as_f64(), Some(122.0));
    assert_eq!(lantian.metric("lantian_hj212_acks_total").await, Some(2.0));
    assert_eq!(
        lantian.metric("lantian_hj212_packets_total").await,
        Some(6.0)
    );
    // An HTTP client on the HJ 212 port is told what the port is.
    let r = http()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("HJ 212"));
}

/// A gateway forwards raw packets over MQTT: a template declares the
/// payload, the packet's MN finds the device, and the broker's PUBACK is
/// the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_forwarded_over_mqtt_by_a_gateway_are_stored() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    let config = config(broker.port, &influx, &hook)
        .replace(
            "[hj212]\n",
            "[topics]\ntemplates = [\"env/{district}/{site}/{kind}/{sensor}\", \
             { template = \"gw/{gateway}/hj212\", payload = \"hj212\" }]\n[hj212]\n",
        )
        .replace(
            "[influxdb]\n",
            "[[mqtt.subscriptions]]\nfilter = \"gw/#\"\nqos = 1\n[influxdb]\n",
        );
    let lantian = Lantian::start(&config);
    let mut p = Publisher::connect(broker.port, "gateway-7").await;
    lantian.wait_subscribed().await;
    let day = two_days_ago_beijing();
    for h in 0..5 {
        let (packet, _) = hourly(
            DUST,
            "pw-dust",
            "39",
            day,
            h,
            &format!("a34002-Avg={},a34002-Flag=N", 70 + h),
        );
        p.publish("gw/gw-7/hj212", packet).await;
    }
    // And one from an MN nobody registered.
    let (stranger, _) = hourly("NOBODY-0001", "pw", "39", day, 0, "a34002-Avg=1");
    p.publish("gw/gw-7/hj212", stranger).await;
    p.flush().await;
    let n = influx
        .wait_count("SELECT count(pm10) FROM dust", 5, Duration::from_secs(60))
        .await;
    assert_eq!(n, 5, "{}", lantian.logs());
    assert_eq!(
        influx
            .wait_count(
                "SELECT count(payload_bytes) FROM quarantine WHERE reason = 'unknown_device'",
                1,
                Duration::from_secs(60)
            )
            .await,
        1
    );
    let sum = influx.query("SELECT sum(pm10) FROM dust").await;
    assert_eq!(
        sum[0]["values"][0][1].as_f64(),
        Some(70.0 + 71.0 + 72.0 + 73.0 + 74.0)
    );
}

/// `lantian simulate --hj212` sends the fleet's emission sources as data
/// loggers to a real lantian, whose devices come from
/// `lantian simulate --print-hj212-devices`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_sends_the_fleets_emission_sources_as_loggers() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let devices = std::process::Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["simulate", "--print-hj212-devices"])
        .output()
        .unwrap();
    assert!(devices.status.success());
    let devices = String::from_utf8(devices.stdout).unwrap();
    assert_eq!(devices.matches("[[hj212.devices]]").count(), 14);
    let config =
        Lantian::v1(broker.port, &influx) + "[hj212]\nlisten = \"127.0.0.1:0\"\n" + &devices;
    let lantian = Lantian::start(&config);
    lantian.wait_subscribed().await;
    let port = lantian.hj212_port().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args([
            "simulate",
            "--broker",
            &format!("127.0.0.1:{}", broker.port),
        ])
        .args(["--hj212", &format!("127.0.0.1:{port}")])
        .args(["--history", "3h", "--no-live", "--rate", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    // Each of the 14 loggers sent the hours that ended within the 3 h.
    let acks = lantian
        .metric("lantian_hj212_acks_total")
        .await
        .unwrap_or(0.0);
    println!("{stderr}");
    assert!(
        acks >= 14.0 * 2.0 && acks % 14.0 == 0.0,
        "{acks} ACKs\n{stderr}"
    );
    let hours = (acks / 14.0) as i64;
    for (q, per_hour) in [
        ("SELECT count(pm10) FROM dust WHERE cn = '2061'", 5),
        ("SELECT count(treated_m3h) FROM sewage WHERE cn = '2061'", 4),
        (
            "SELECT count(oil_fume) FROM voc WHERE industry = 'catering'",
            2,
        ),
    ] {
        let n = influx
            .wait_count(q, per_hour * hours, Duration::from_secs(60))
            .await;
        assert_eq!(n, per_hour * hours, "{q}\n{}", lantian.logs());
    }
    assert_eq!(
        influx
            .scalar("SELECT count(payload_bytes) FROM quarantine")
            .await,
        0
    );
}
