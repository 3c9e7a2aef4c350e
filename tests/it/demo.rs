//! `lantian demo` as a new user runs it: nothing installed but the binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_all_twelve_stations_within_a_minute_and_archives_readings() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["demo", "--history", "3h", "--every", "5s"])
        .args(["--admin", "127.0.0.1:0", "--broker", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Port 0: the port the kernel gave the status page, read back.
    let admin = http_port(child.id()).await;
    let output = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let status = loop {
        let got = http()
            .get(format!("http://127.0.0.1:{admin}/api/status"))
            .send()
            .await;
        if let Ok(r) = got {
            let v: Value = r.json().await.unwrap();
            let with_aqi = v["stations"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|x| x["aqi"].is_u64()).count());
            if with_aqi == 12 {
                break v;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all 12 stations within a minute:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = started.elapsed();
    eprintln!(
        "all 12 stations with an AQI {:.1} s after start",
        took.as_secs_f64()
    );
    let sites: Vec<&str> = status["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    for (s, ..) in lantian::demo::fleet::STATIONS {
        assert!(sites.contains(&s), "{s} missing: {sites:?}");
    }
    // The episode: heavy pollution fires alerts. (Whether they are still
    // firing depends on the hour of day the test runs at: near midnight
    // the night's lower traffic can take a station below 200 in the last
    // closed hour, and its alert has fired and resolved.)
    let t = Instant::now();
    let notices = loop {
        let n = metric_at(admin, "lantian_alert_notices_total")
            .await
            .unwrap_or(0.0);
        if n > 0.0 || t.elapsed() > Duration::from_secs(120) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(notices > 0.0, "{}", output());
    let url = format!("http://127.0.0.1:{admin}/");
    let dom = chromium_dom(&url);
    assert_eq!(dom.matches("data-site=").count(), 12, "{dom}");
    chromium_screenshot(&url, "demo-status-page.png");

    // The archive holds the readings, openable with polars.
    let archive = dir.path().join("state/archive");
    let air = lantian::sink::archive::read_measurement(&archive, "air")
        .unwrap()
        .expect("air readings in the archive");
    assert!(air.height() >= 12 * 180, "{} rows", air.height());
    for c in ["time", "site", "district", "pm25", "o3"] {
        assert!(air.column(c).is_ok(), "column {c}");
    }
    let aqi = lantian::sink::archive::read_measurement(&archive, "aqi")
        .unwrap()
        .expect("AQI in the archive");
    assert!(aqi.height() >= 12);
    // The emission sources are HJ 212 data loggers: hourly data over TCP,
    // each packet acknowledged; their readings carry CN 2061.
    let acks = metric_at(admin, "lantian_hj212_acks_total")
        .await
        .unwrap_or(0.0);
    // 14 loggers, an hour each for the 2 hours of history before this one.
    assert!(acks >= 14.0 * 2.0, "{acks} HJ 212 ACKs\n{}", output());
    let sewage = lantian::sink::archive::read_measurement(&archive, "sewage")
        .unwrap()
        .expect("sewage readings in the archive");
    let cn = sewage.column("cn").unwrap().str().unwrap();
    assert!(
        cn.iter().all(|v| v == Some("2061")),
        "sewage data via HJ 212"
    );
    assert!(sewage.column("treated_m3h").is_ok());

    // Ctrl-C stops it cleanly.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no exit after SIGINT:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = output();
    assert!(code.success(), "{out}");
    for want in [
        "status page   http://127.0.0.1:",
        "archive",
        "stopped.",
        "alerts firing",
        "## City-wide daily AQI and observed heavy-pollution level",
        "## Annual means, year to date",
    ] {
        assert!(out.contains(want), "{want:?} not printed:\n{out}");
    }
}
