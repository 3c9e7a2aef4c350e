//! Alerts through the running daemon: readings published to a real
//! broker, windows and the AQI computed, notices delivered to real HTTP
//! receivers. Time is the readings' own (backdated) timestamps — the alert
//! engine runs on the stream clock — so no test waits for an alert's
//! timing; the waits are for delivery only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const SECRET_B64: &str = "bGFudGlhbi10ZXN0LXNlY3JldC0yNC1ieXRlcw==";

/// Verifies a Standard Webhooks signature with Python's own hmac module
/// (an implementation independent of lantian's).
fn signature_verifies(r: &Received) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &r.body).unwrap();
    let script = "import base64,hashlib,hmac,sys\n\
        key = base64.b64decode(sys.argv[1])\n\
        msg = sys.argv[2].encode() + b'.' + sys.argv[3].encode() + b'.' + open(sys.argv[4], 'rb').read()\n\
        want = 'v1,' + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()\n\
        sys.exit(0 if hmac.compare_digest(want, sys.argv[5]) else 1)\n";
    std::process::Command::new("python3")
        .args(["-c", script, SECRET_B64])
        .arg(&r.headers["webhook-id"])
        .arg(&r.headers["webhook-timestamp"])
        .arg(&body)
        .arg(&r.headers["webhook-signature"])
        .status()
        .unwrap()
        .success()
}

/// The Alertmanager webhook v4 message, key by key (Alertmanager's
/// `notify/webhook` Message: template.Data plus version, groupKey and
/// truncatedAlerts).
fn assert_alertmanager_v4(b: &Value) {
    let keys: BTreeSet<&str> = b.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "receiver",
            "status",
            "alerts",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "version",
            "groupKey",
            "truncatedAlerts"
        ]),
        "{b}"
    );
    assert_eq!(b["version"], "4");
    assert!(matches!(b["status"].as_str(), Some("firing" | "resolved")));
    assert!(b["receiver"].is_string() && b["externalURL"].is_string());
    assert!(b["groupKey"].is_string() && b["truncatedAlerts"].is_u64());
    let strings = |v: &Value| v.as_object().unwrap().values().all(|x| x.is_string());
    for k in ["groupLabels", "commonLabels", "commonAnnotations"] {
        assert!(strings(&b[k]), "{k}: {}", b[k]);
    }
    let alerts = b["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty());
    for a in alerts {
        let keys: BTreeSet<&str> = a.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint"
            ])
        );
        assert!(strings(&a["labels"]) && strings(&a["annotations"]));
        assert!(a["labels"]["alertname"].is_string());
        for t in ["startsAt", "endsAt"] {
            chrono::DateTime::parse_from_rfc3339(a[t].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        assert_eq!(a["status"], b["status"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hours_above_200_give_one_signed_firing_and_one_resolve() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let duty = Receiver::start().await;
    let critical = Receiver::start().await;
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"duty\"\nurl = \"{}\"\nformat = \"alertmanager\"\n\
         secret = \"whsec_{SECRET_B64}\"\nrules = [\"air.*\"]\nretry_max = \"1s\"\n\
         [[alerts.receivers]]\nname = \"critical-only\"\nurl = \"{}\"\nmin_severity = \"critical\"\n",
        duty.url(),
        critical.url()
    );
    let lantian = Lantian::start(&Lantian::alerting(broker.port, &influx, &receivers));
    let mut p = Publisher::connect(broker.port, "alert-publisher").await;
    lantian.wait_subscribed().await;

    // 12:00 normal, 13:00 and 14:00 heavily polluted (PM2.5 180 and 190
    // µg/m³ → AQI 231 and 240), 15:00 and 16:00 normal.
    let start = two_days_ago_beijing() + 12 * HOUR;
    publish_pm25_hours(
        &mut p,
        start,
        &["dongsi"],
        &[vec![60.0, 180.0, 190.0, 60.0, 55.0]],
        0,
    )
    .await;

    let got = duty.wait_for(2, Duration::from_secs(60)).await;
    // Let anything extra arrive before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = {
        let all = duty.requests();
        assert!(all.len() >= got.len());
        all
    };
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let heavy: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["groupLabels"]["alertname"] == "air.aqi.hour.heavy")
        .collect();
    assert_eq!(
        heavy.len(),
        2,
        "one firing, one resolve: {bodies:#?}\n{}",
        lantian.logs()
    );
    assert_eq!(bodies.len(), 2, "nothing else for air.*: {bodies:#?}");
    for (r, b) in got.iter().zip(&bodies) {
        assert_alertmanager_v4(b);
        assert!(
            signature_verifies(r),
            "signature of {}",
            r.headers["webhook-id"]
        );
        assert_eq!(r.headers["webhook-id"], b["commonAnnotations"]["event_id"]);
    }
    let (fire, resolve) = (heavy[0], heavy[1]);
    assert_eq!(fire["status"], "firing");
    assert_eq!(resolve["status"], "resolved");
    let (fa, ra) = (&fire["alerts"][0], &resolve["alerts"][0]);
    assert_eq!(fa["fingerprint"], ra["fingerprint"], "stable id");
    // The station's incident: its own group, closed by its own resolve.
    assert_eq!(fire["groupKey"], resolve["groupKey"]);
    assert!(
        fire["groupKey"]
            .as_str()
            .unwrap()
            .contains("site=\"dongsi\""),
        "{}",
        fire["groupKey"]
    );
    assert_eq!(fire["groupLabels"], fa["labels"]);
    // Deliveries are counted per receiver (counted once accepted).
    lantian
        .wait_metric(
            "lantian_webhook_sent_total{receiver=\"duty\"}",
            2.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        lantian
            .metric("lantian_webhook_queued{receiver=\"duty\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(fa["labels"]["site"], "dongsi");
    assert_eq!(fa["labels"]["severity"], "warning");
    // Fired for the 14:00 hour (after `for` = 1h), started at 13:00.
    assert_eq!(fa["annotations"]["value"], "240");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(fa["startsAt"].as_str().unwrap())
            .unwrap()
            .timestamp_millis(),
        start + HOUR
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(ra["endsAt"].as_str().unwrap())
            .unwrap()
            .timestamp_millis(),
        start + 4 * HOUR,
        "resolved with the 15:00 hour"
    );
    assert!(
        fa["annotations"]["report"]
            .as_str()
            .unwrap()
            .starts_with("§5")
    );
    // Wrong key: the signature must not verify.
    let mut forged = got[0].clone();
    forged.body.push(b' ');
    assert!(!signature_verifies(&forged));
    // The critical-only receiver got nothing (no AQI above 300).
    assert!(critical.requests().is_empty(), "{:?}", critical.requests());
    // Both notices are in InfluxDB for dashboards.
    let n = influx
        .wait_count(
            "SELECT count(value) FROM alerts WHERE rule = 'air.aqi.hour.heavy'",
            2,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(n, 2);
}

/// The receiver's down time (seconds); the issue asks for 10 minutes.
fn down_secs() -> u64 {
    std::env::var("LANTIAN_RECEIVER_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

fn outbox_files(lantian: &Lantian, name: &str) -> usize {
    std::fs::read_dir(lantian.dir.path().join("alerts/outbox").join(name))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_ten_minutes_gets_every_alert_in_order_across_a_restart() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let mut hook = Receiver::start().await;
    hook.down();
    let went_down = Instant::now();
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"hook\"\nurl = \"{}\"\nrules = [\"air.aqi.*\"]\n\
         retry_initial = \"200ms\"\nretry_max = \"5s\"\n",
        hook.url()
    );
    let mut lantian = Lantian::start(&Lantian::alerting(broker.port, &influx, &receivers));
    let mut p = Publisher::connect(broker.port, "outage-publisher").await;
    lantian.wait_subscribed().await;

    // Six stations: three with a two-hour episode, three with a longer one
    // that resolves only after lantian restarts.
    let stations = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let short = vec![60.0, 180.0, 190.0, 60.0, 60.0, 60.0];
    let long = vec![60.0, 180.0, 190.0, 200.0, 195.0, 60.0];
    let hours: Vec<Vec<f64>> = (0..6)
        .map(|i| if i < 3 { short.clone() } else { long.clone() })
        .collect();
    let start = two_days_ago_beijing();
    // Hours 0–3 (and the push into hour 4).
    let first: Vec<Vec<f64>> = hours.iter().map(|h| h[..4].to_vec()).collect();
    publish_pm25_hours(&mut p, start, &stations, &first, 0).await;
    // 3 firing + 3 resolved (short) + 3 firing (long) queued on disk.
    let t = Instant::now();
    while outbox_files(&lantian, "hook") < 9 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(outbox_files(&lantian, "hook"), 9, "{}", lantian.logs());

    // lantian dies (SIGKILL) and comes back while the receiver is down.
    // (The broker keeps the persistent session's subscription and queues
    // what is published meanwhile.)
    lantian.restart();
    publish_pm25_hours(&mut p, start, &stations, &hours, 4).await;
    let t = Instant::now();
    while outbox_files(&lantian, "hook") < 12 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(outbox_files(&lantian, "hook"), 12, "{}", lantian.logs());
    assert!(hook.requests().is_empty());

    let down = Duration::from_secs(down_secs());
    if let Some(rest) = down.checked_sub(went_down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    hook.up().await;
    let came_up = Instant::now();
    let got = hook.wait_for(12, Duration::from_secs(60)).await;
    let delivered_in = came_up.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = {
        let all = hook.requests();
        assert!(all.len() >= got.len());
        all
    };
    eprintln!(
        "receiver down {:.0} s: {} notices delivered {:.1} s after it came back",
        went_down.elapsed().as_secs_f64() - delivered_in.as_secs_f64(),
        got.len(),
        delivered_in.as_secs_f64()
    );
    assert_eq!(got.len(), 12, "every notice exactly once");
    let ids: BTreeSet<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 12, "no duplicates");
    // In order: the order lantian logged them in, across both runs.
    // (A replay after the SIGKILL produces some notices again, with the
    // same ids; the outbox takes each once: first occurrences count.)
    let mut seen = BTreeSet::new();
    let logged: Vec<String> = lantian
        .logs()
        .lines()
        .filter(|l| l.contains(" alert ") && l.contains("rule=air.aqi.hour.heavy"))
        .filter_map(|l| {
            l.split("event_id=")
                .nth(1)
                .map(|s| s.split_whitespace().next().unwrap().to_owned())
        })
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let sent: Vec<String> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(sent, logged, "delivered in the order produced");
    // Per station: firing then resolved, one id.
    let mut per: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in &got {
        let b = r.json();
        let a = &b["alert"];
        per.entry(a["labels"]["site"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                b["event"].as_str().unwrap().to_owned(),
                a["id"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(per.len(), 6);
    for (site, ev) in &per {
        let kinds: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(kinds, ["firing", "resolved"], "{site}");
        assert_eq!(
            ev[0].1, ev[1].1,
            "{site}: stable alert id across the restart"
        );
    }
    assert_eq!(outbox_files(&lantian, "hook"), 0);
}

fn lantian_events(lantian: &Lantian, rule: &str) -> Vec<String> {
    lantian
        .logs()
        .lines()
        .filter(|l| l.contains(" alert ") && l.contains(&format!("rule={rule} ")))
        .filter_map(|l| {
            l.split("event=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_fires_deadman_which_neither_backfill_nor_replay_clears() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"ops\"\nurl = \"{}\"\nrules = [\"sensor.deadman\"]\nretry_max = \"1s\"\n",
        hook.url()
    );
    let mut lantian = Lantian::start(&Lantian::alerting(broker.port, &influx, &receivers));
    let mut p = Publisher::connect(broker.port, "deadman-publisher").await;
    lantian.wait_subscribed().await;
    let t0 = two_days_ago_beijing() + 9 * HOUR;
    let reading = |sensor: &str, m: i64| {
        (
            format!("env/dongcheng/dongsi/air/{sensor}"),
            format!("{{\"ts\":{},\"pm25\":{}}}", t0 + m * MIN, 30 + m % 17),
        )
    };
    // "a" reports for 40 minutes, "b" stops after minute 10.
    for m in 0..=40 {
        for s in ["a", "b"] {
            if s == "a" || m <= 10 {
                let (t, b) = reading(s, m);
                p.publish(&t, b).await;
            }
        }
    }
    p.flush().await;
    let got = hook.wait_for(1, Duration::from_secs(30)).await;
    let fire = got[0].json();
    assert_eq!(fire["event"], "firing");
    assert_eq!(fire["alert"]["rule"], "sensor.deadman");
    assert_eq!(fire["alert"]["labels"]["sensor"], "b");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(fire["alert"]["starts_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis(),
        t0 + 10 * MIN,
        "silent since its last reading"
    );
    assert!(fire["alert"]["value"].as_f64().unwrap() > 15.0);

    // "b" backfills minutes 11–20 (old timestamps), and lantian is killed
    // and replays its spool: neither clears the alert nor fires it again.
    for m in 11..=20 {
        let (t, b) = reading("b", m);
        p.publish(&t, b).await;
    }
    p.flush().await;
    influx
        .wait_count(
            "SELECT count(pm25) FROM air WHERE sensor = 'b'",
            21,
            Duration::from_secs(30),
        )
        .await;
    lantian.restart(); // SIGKILL
    let (t, b) = reading("a", 41);
    p.publish(&t, b).await;
    p.flush().await;
    influx
        .wait_count(
            "SELECT count(pm25) FROM air WHERE sensor = 'a'",
            42,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few flushes
    assert_eq!(hook.requests().len(), 1, "{:#?}", hook.requests());
    let events = lantian_events(&lantian, "sensor.deadman");
    assert_eq!(events, ["firing"], "{}", lantian.logs());

    // Live again: resolved.
    for s in ["a", "b"] {
        let (t, b) = reading(s, 42);
        p.publish(&t, b).await;
    }
    p.flush().await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    let resolved = got[1].json();
    assert_eq!(resolved["event"], "resolved");
    assert_eq!(resolved["alert"]["id"], fire["alert"]["id"]);
    assert_eq!(
        lantian_events(&lantian, "sensor.deadman"),
        ["firing", "resolved"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plant_treating_90_percent_for_a_day_fires_the_treatment_and_reclaimed_targets() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"water\"\nurl = \"{}\"\nrules = [\"water.*\"]\nretry_max = \"1s\"\n\
         [windows.intervals]\nsewage = \"10m\"\n",
        hook.url()
    );
    let lantian = Lantian::start(&Lantian::alerting(broker.port, &influx, &receivers));
    let mut p = Publisher::connect(broker.port, "plant-publisher").await;
    lantian.wait_subscribed().await;
    let day = two_days_ago_beijing();
    // Every 10 minutes for a day: 10,000 m³/h in, 9,000 treated (90 %),
    // 2,000 reclaimed — far behind the 1.2 billion m³ a year pace.
    for k in 0..=144 {
        let ts = day + k * 10 * MIN + if k == 144 { 3 * MIN } else { 0 };
        let wobble = [0.0, 50.0, -50.0][k as usize % 3];
        p.publish(
            "env/chaoyang/gaobeidian/sewage/flow1",
            format!(
                "{{\"ts\":{ts},\"inflow_m3h\":{},\"treated_m3h\":{},\"reclaimed_m3h\":{}}}",
                10_000.0 + wobble,
                9_000.0 + wobble * 0.9,
                2_000.0 + wobble * 0.2
            ),
        )
        .await;
    }
    p.flush().await;
    let got = hook.wait_for(5, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
    let mut seen: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            let a = &b["alert"];
            let scope = a["labels"]
                .get("site")
                .and_then(|v| v.as_str())
                .unwrap_or("city")
                .to_owned();
            (a["rule"].as_str().unwrap().to_owned(), scope)
        })
        .collect();
    seen.sort();
    let want = [
        ("water.reclaimed.pace", "city"),
        ("water.treatment-rate.day", "city"),
        ("water.treatment-rate.day", "gaobeidian"),
        ("water.treatment-rate.month", "city"),
        ("water.treatment-rate.month", "gaobeidian"),
    ];
    assert_eq!(
        seen,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{bodies:#?}\n{}",
        lantian.logs()
    );
    assert!(got.len() >= 5);
    for b in &bodies {
        assert_eq!(b["event"], "firing");
        let a = &b["alert"];
        match a["rule"].as_str().unwrap() {
            "water.treatment-rate.day" | "water.treatment-rate.month" => {
                let v = a["value"].as_f64().unwrap();
                assert!((v - 90.0).abs() < 0.01, "{v}");
                assert_eq!(a["threshold"], 95.0);
                assert!(a["citation"]["report"].as_str().unwrap().contains("95"));
            }
            _ => {
                // 2,000 m³/h for a day = 48,000 m³ year to date.
                assert_eq!(a["details"]["year_to_date_m3"], "48000");
                assert_eq!(a["threshold"], 1.2e9);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_refused_five_times_goes_to_dead_and_does_not_block_the_next() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let hook = Receiver::start().await;
    hook.status.store(400, std::sync::atomic::Ordering::Relaxed);
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"strict\"\nurl = \"{}\"\nrules = [\"air.aqi.*\"]\n\
         retry_initial = \"100ms\"\nretry_max = \"200ms\"\n",
        hook.url()
    );
    let lantian = Lantian::start(&Lantian::alerting(broker.port, &influx, &receivers));
    let mut p = Publisher::connect(broker.port, "dead-publisher").await;
    lantian.wait_subscribed().await;
    publish_pm25_hours(
        &mut p,
        two_days_ago_beijing(),
        &["dongsi"],
        &[vec![60.0, 180.0, 190.0, 60.0]],
        0,
    )
    .await;
    // The firing notice is refused (400) five times, then set aside.
    let dead = lantian.dir.path().join("alerts/outbox/strict/dead");
    let t = Instant::now();
    let dead_files = || std::fs::read_dir(&dead).map_or(0, |d| d.count());
    while dead_files() < 1 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead_files(), 1, "{}", lantian.logs());
    hook.status.store(200, std::sync::atomic::Ordering::Relaxed);
    // The resolve behind it is delivered once the receiver accepts.
    let t = Instant::now();
    while !hook.requests().iter().any(|r| r.status == 200) && t.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = hook.requests();
    let firing: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["event"] == "firing")
        .collect();
    assert_eq!(firing.len(), 5, "refused five times, then no more");
    assert!(firing.iter().all(|r| r.status == 400));
    let accepted: Vec<Value> = got
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json())
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["event"], "resolved");
    assert!(lantian.logs().contains("refused this notice 5 times"));
    let (_, metrics) = lantian.admin("/metrics").await;
    assert!(metrics.contains("lantian_alerts_dead_total 1"), "{metrics}");
    assert!(metrics.contains("lantian_alerts_sent_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_holds_readings_back_instead_of_dropping_alerts() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let mut hook = Receiver::start().await;
    hook.down();
    let receivers = format!(
        "[[alerts.receivers]]\nname = \"slow\"\nurl = \"{}\"\nrules = [\"air.aqi.*\"]\n\
         retry_initial = \"100ms\"\nretry_max = \"500ms\"\n\
         [windows]\nallowed_lateness = \"0s\"\n",
        hook.url()
    );
    let config = Lantian::alerting(broker.port, &influx, &receivers)
        .replace("[alerts]\n", "[alerts]\nmax_queued = 2\n");
    let lantian = Lantian::start(&config);
    let mut p = Publisher::connect(broker.port, "full-publisher").await;
    lantian.wait_subscribed().await;
    let stations = ["s1", "s2", "s3"];
    let start = two_days_ago_beijing();
    let hours: Vec<Vec<f64>> = vec![vec![60.0, 180.0, 190.0, 60.0, 60.0]; 3];
    // Hours 0–2: three firing notices in one flush (one over the bound).
    let first: Vec<Vec<f64>> = hours.iter().map(|h| h[..3].to_vec()).collect();
    publish_pm25_hours(&mut p, start, &stations, &first, 0).await;
    let t = Instant::now();
    while outbox_files(&lantian, "slow") < 3 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox_files(&lantian, "slow"), 3, "{}", lantian.logs());
    // The resolving hours arrive, but the stage takes no more readings
    // while the outbox is full: no new notice, nothing dropped.
    let before = influx.scalar("SELECT count(pm25) FROM air").await;
    let more = publish_pm25_hours(&mut p, start, &stations, &hours, 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(outbox_files(&lantian, "slow"), 3);
    assert!(lantian.logs().contains("alert outbox full"));
    // The receiver returns: all six, in order, and every reading stored.
    hook.up().await;
    let got = hook.wait_for(6, Duration::from_secs(60)).await;
    let ev: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["alert"]["labels"]["site"].as_str().unwrap().to_owned(),
                v["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let firing: Vec<&str> = ev[..3].iter().map(|e| e.1.as_str()).collect();
    assert_eq!(firing, ["firing"; 3], "{ev:?}");
    let resolved: Vec<&str> = ev[3..].iter().map(|e| e.1.as_str()).collect();
    assert_eq!(resolved, ["resolved"; 3], "{ev:?}");
    let ids: BTreeSet<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 6);
    // (The first batch's push readings, at hour 3 + 3 min, are the same
    // points as three readings of the second batch: InfluxDB keeps one.)
    let want = before + more as i64 - stations.len() as i64;
    let stored = influx
        .wait_count("SELECT count(pm25) FROM air", want, Duration::from_secs(30))
        .await;
    assert_eq!(stored, want);
    assert!(lantian.logs().contains("alert outbox has room again"));
}
