//! Operations: the admin endpoint (/healthz, /readyz, /metrics, the
//! status page in headless Chromium), systemd readiness and watchdog
//! notifications on a real notify socket, SIGHUP reload, and the unit
//! file checked by systemd-analyze.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const HOUR: i64 = 3_600_000;

/// A strict reading of the Prometheus text format (0.0.4): every line is
/// a comment (`# HELP name text`, `# TYPE name counter|gauge|histogram|
/// summary|untyped`) or a sample `name{label="value",...} number`; every
/// sample belongs to a family with a TYPE line given before it; names and
/// label names are valid. Returns sample → value, keyed `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "{at}");
            match kw {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{at}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{at}: TYPE twice"
                    );
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{at}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: value")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{at}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{at}: labels"));
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{at}"));
                assert!(valid_name(k), "{at}: label name");
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{at}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{at}: no TYPE for {family}");
        assert!(
            out.insert(series.to_owned(), v).is_none(),
            "{at}: duplicate sample"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_was_published_and_the_status_page_renders() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    let mut p = Publisher::connect(broker.port, "ops-publisher").await;
    lantian.wait_subscribed().await;

    let stations = ["dongsi", "tiantan", "guanyuan"];
    let start = two_days_ago_beijing() + 10 * HOUR;
    let good = publish_pm25_hours(&mut p, start, &stations, &vec![vec![80.0, 120.0]; 3], 0).await;
    for i in 0..7 {
        p.publish("env/dongcheng/dongsi/air/aq1", format!("not json {i}"))
            .await;
    }
    for _ in 0..3 {
        p.publish("env/too/short", "{\"pm25\":1}").await;
    }
    p.flush().await;
    let stored = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            good as i64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(stored, good as i64);
    influx
        .wait_count(
            "SELECT count(detail) FROM quarantine",
            10,
            Duration::from_secs(30),
        )
        .await;
    // The hourly AQI of the second hour (the first is partial at 10:00 +
    // nothing before it: still complete, 60 minutes). The first hour may
    // show first (it closes as soon as the second hour's readings come):
    // wait for every station's newest hour to be the second, 11:00.
    let second = lantian::alert::rfc3339(start + HOUR);
    let t = Instant::now();
    let status = loop {
        let (code, body) = lantian.admin("/api/status").await;
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        let at_second = |s: &Vec<Value>| s.len() == 3 && s.iter().all(|r| r["hour"] == second);
        if v["stations"].as_array().is_some_and(at_second) || t.elapsed() > Duration::from_secs(30)
        {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows = status["stations"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{status:#}");
    for r in rows {
        // PM2.5 120 µg/m³ → HJ 633-2026 IAQI 158 (115–150 → 150–200).
        assert_eq!(r["aqi"], 158, "{r}");
        assert_eq!(r["category"], "moderately_polluted");
        assert_eq!(r["color"], "#FF0000");
        // Two days old: stale, though the category's colour is kept here.
        assert_eq!(r["stale"], true, "{r}");
        let zh = match r["site"].as_str().unwrap() {
            "dongsi" => "东四",
            "tiantan" => "天坛",
            _ => "官园",
        };
        assert_eq!(r["name_zh"], zh);
    }
    assert!(status["pipeline"]["newest_reading"]["air"].is_string());

    assert_eq!(lantian.admin("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(lantian.admin("/readyz").await.0, 200);
    let (code, text) = lantian.admin("/metrics").await;
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(get("lantian_messages_received_total"), (good + 10) as f64);
    assert_eq!(get("lantian_messages_acked_total"), (good + 10) as f64);
    assert_eq!(get("lantian_readings_written_total"), good as f64);
    assert_eq!(get("lantian_quarantined_total{reason=\"bad_json\"}"), 7.0);
    assert_eq!(
        get("lantian_quarantined_total{reason=\"unknown_topic\"}"),
        3.0
    );
    assert_eq!(get("lantian_quarantined_total{reason=\"too_old\"}"), 0.0);
    assert_eq!(get("lantian_mqtt_connected"), 1.0);
    assert_eq!(get("lantian_ready"), 1.0);
    assert_eq!(get("lantian_spool_full"), 0.0);
    assert!(get("lantian_aqi_points_total") >= 6.0);
    // The newest reading's time, per kind: within the hours published.
    let newest = get("lantian_last_reading_timestamp_seconds{kind=\"air\"}") * 1000.0;
    let from = start as f64;
    assert!(
        newest >= from && newest < from + 3.0 * HOUR as f64,
        "{newest} not within 3 h after {from}"
    );
    assert_eq!(
        get("lantian_influx_write_duration_seconds_count"),
        get("lantian_influx_write_duration_seconds_bucket{le=\"+Inf\"}")
    );
    assert_eq!(
        get("lantian_influx_write_duration_seconds_count"),
        get("lantian_influx_write_requests_total")
    );
    assert_eq!(lantian.admin("/nope").await.0, 404);

    let (code, html) = lantian.admin("/").await;
    assert_eq!(code, 200);
    assert!(html.contains("data-site=\"guanyuan\""), "{html}");
    // Days-old hours are grey with a badge, not red as if current.
    assert!(!html.contains("background:#FF0000"), "{html}");
    assert!(html.contains("background:#BBBBBB"), "{html}");
    assert!(html.contains("stale: nothing newer for"), "{html}");
    // When each kind's newest reading was taken, and the spool in MiB.
    assert!(html.contains("<td id=\"newest\">air "), "{html}");
    assert!(html.contains(" MiB on disk"), "{html}");

    // Rendered by a real browser: the DOM it built, and a screenshot kept
    // as a test artefact.
    let url = format!("http://127.0.0.1:{}/", lantian.admin_port().await);
    let dom = chromium_dom(&url);
    assert!(dom.contains("id=\"stations\""), "{dom}");
    // The registered stations by their Chinese names too.
    for zh in ["东四", "天坛", "官园"] {
        assert!(dom.contains(zh), "{zh}: {dom}");
    }
    // Each station's 24-hour strip, as the browser built it.
    assert_eq!(dom.matches("<svg class=\"strip\"").count(), 3, "{dom}");
    for s in stations {
        assert!(dom.contains(&format!("data-site=\"{s}\"")), "{s}");
    }
    let png = chromium_screenshot(&url, "status-page.png");
    // Width and height from the IHDR chunk.
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (1280, 900));
}

/// Reads notify datagrams until `want` arrives or the timeout passes.
fn wait_datagram(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < timeout {
        if let Ok(n) = sock.recv(&mut buf) {
            let s = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = s.lines().any(|l| l == want);
            got.push(s);
            if hit {
                break;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_subscribed_with_the_spool_even_if_influxdb_is_down_and_the_watchdog_stops_for_a_hung_daemon()
 {
    let broker = Mosquitto::start().await;
    let mut influx = Influx::start().await;
    influx.proc.kill(); // InfluxDB down at start
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut lantian = Lantian::start_with_env(
        &Lantian::v1(broker.port, &influx),
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    lantian.wait_subscribed().await;
    // Subscribed, and the spool takes the readings: READY, though InfluxDB
    // does not answer (a boot during an outage must not loop on systemd's
    // start timeout). The sink's state is told apart: STATUS= and /readyz.
    let got = wait_datagram(&sock, "READY=1", Duration::from_secs(30));
    let ready = got
        .iter()
        .find(|d| d.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    assert!(ready.contains("InfluxDB not answering"), "{ready}");
    let (code, why) = lantian.admin("/readyz").await;
    assert_eq!(code, 503);
    assert!(why.contains("influxdb"), "{why}");
    // A reading taken meanwhile waits in the spool: its age shows on
    // /metrics and the status page, and is back to 0 once written.
    let mut p = Publisher::connect(broker.port, "spool-age-publisher").await;
    p.publish(
        "env/dongcheng/dongsi/air/aq-1",
        format!(
            "{{\"ts\":{},\"pm25\":35.0}}",
            chrono::Utc::now().timestamp_millis()
        ),
    )
    .await;
    p.flush().await;
    let age = "lantian_spool_oldest_record_age_seconds";
    lantian.wait_metric(age, 1.0, Duration::from_secs(60)).await;
    let page = lantian.admin("/").await.1;
    assert!(page.contains("MiB on disk, oldest waiting "), "{page}");

    influx.restart().await;
    let got = wait_datagram(&sock, "STATUS=subscribed, writing", Duration::from_secs(30));
    assert!(
        got.iter()
            .any(|d| d.lines().any(|l| l == "STATUS=subscribed, writing")),
        "{got:?}"
    );
    lantian.wait_ready().await;
    wait_for("the spool emptied", Duration::from_secs(60), async || {
        lantian.metric(age).await == Some(0.0)
    })
    .await;
    assert!(
        lantian
            .admin("/")
            .await
            .1
            .contains("MiB on disk, nothing waiting")
    );

    // Pings every half second while healthy...
    while sock.recv(&mut [0u8; 256]).is_ok() {}
    let pings = wait_datagram(&sock, "never", Duration::from_secs(2))
        .iter()
        .filter(|d| *d == "WATCHDOG=1")
        .count();
    assert!((3..=5).contains(&pings), "{pings} pings in 2 s");
    // ...and none while hung (stopped): systemd would kill it after
    // WatchdogSec.
    lantian.proc.signal("STOP");
    while sock.recv(&mut [0u8; 256]).is_ok() {}
    let hung = wait_datagram(&sock, "never", Duration::from_secs(3));
    assert!(hung.is_empty(), "{hung:?}");
    lantian.proc.signal("CONT");
    let back = wait_datagram(&sock, "WATCHDOG=1", Duration::from_secs(3));
    assert!(back.iter().any(|d| d == "WATCHDOG=1"), "{back:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    lantian.proc.signal("TERM");
    let stop = wait_datagram(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(stop.iter().any(|d| d == "STOPPING=1"), "{stop:?}");
    let status = lantian.proc.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_targets_and_receivers_without_losing_readings() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let base = Lantian::v1(broker.port, &influx);
    let one = format!(
        "{base}\n[alerts]\n[[alerts.receivers]]\nname = \"a\"\nurl = \"{}\"\nrules = [\"air.aqi.*\"]\n",
        a.url()
    );
    // systemd's view of the reloads: the notify socket.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let lantian = Lantian::start_with_env(&one, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut p = Publisher::connect(broker.port, "reload-publisher").await;
    lantian.wait_subscribed().await;
    let day = two_days_ago_beijing();
    // One hour above 200 at s1: with `for` = 1h nothing fires.
    let mut published = publish_pm25_hours(
        &mut p,
        day + 8 * HOUR,
        &["s1"],
        &[vec![60.0, 190.0, 60.0]],
        0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.requests().is_empty());

    // Reload: a second receiver, and the heavy-AQI rule without `for`;
    // and a change a reload does not apply ([log]).
    // (The file as the harness wrote it: with its [spool] section.)
    let one = std::fs::read_to_string(lantian.dir.path().join("lantian.toml")).unwrap();
    let two = format!(
        "{one}\n[[alerts.receivers]]\nname = \"b\"\nurl = \"{}\"\nrules = [\"air.aqi.*\"]\n\
         [[alerts.targets]]\nid = \"air.aqi.hour.heavy\"\nfor = \"0s\"\n[log]\nlevel = \"info\"\n",
        b.url()
    );
    std::fs::write(lantian.dir.path().join("lantian.toml"), two).unwrap();
    // Readings keep flowing across the SIGHUP.
    let stream = async {
        let mut n = 0;
        for m in 0..300 {
            let ts = day + 14 * HOUR + m * 1000;
            p.publish(
                "env/dongcheng/s9/air/aq1",
                format!("{{\"ts\":{ts},\"pm25\":{m}}}"),
            )
            .await;
            n += 1;
            if m == 150 {
                lantian.proc.signal("HUP");
            }
        }
        n
    };
    published += stream.await;
    p.flush().await;
    let t = Instant::now();
    while !lantian.logs().contains("configuration reloaded")
        && t.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lantian.logs().contains("configuration reloaded"),
        "{}",
        lantian.logs()
    );
    assert!(lantian.logs().contains("alert rules reloaded"));
    // What it did not apply is named, and only that.
    let logs = lantian.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("NOT applied until a restart"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.trim_end().ends_with("changed=log"), "{line}");
    // And `systemctl status` shows it: RELOADING=1, the STATUS= line, then
    // READY=1 again.
    let status = "STATUS=reloaded targets and receivers; restart to apply: log";
    let got = wait_datagram(&sock, status, Duration::from_secs(30));
    assert!(
        got.iter().any(|d| d.lines().any(|l| l == status)),
        "{got:?}"
    );
    assert!(got.iter().any(|d| d == "RELOADING=1"), "{got:?}");
    let ready = wait_datagram(&sock, "READY=1", Duration::from_secs(30));
    assert!(ready.iter().any(|d| d == "READY=1"), "{ready:?}");
    // One hour above 200 at s2 now fires at once, to both receivers.
    published += publish_pm25_hours(
        &mut p,
        day + 15 * HOUR,
        &["s2"],
        &[vec![60.0, 190.0, 60.0]],
        0,
    )
    .await;
    for r in [&a, &b] {
        let got = r.wait_for(2, Duration::from_secs(30)).await;
        let ev: Vec<(String, String)> = got
            .iter()
            .map(|x| {
                let v = x.json();
                (
                    v["event"].as_str().unwrap().to_owned(),
                    v["alert"]["labels"]["site"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            ev,
            [
                ("firing".to_owned(), "s2".to_owned()),
                ("resolved".into(), "s2".into())
            ]
        );
    }
    // Nothing buffered was lost across the reload.
    let stored = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            published as i64,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stored, published as i64);
    // A broken file is refused and the running configuration kept.
    std::fs::write(
        lantian.dir.path().join("lantian.toml"),
        "[alerts]\nnope = 1\n",
    )
    .unwrap();
    lantian.proc.signal("HUP");
    let t = Instant::now();
    while !lantian.logs().contains("reload refused") && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lantian.logs().contains("reload refused"));
    let refused = "STATUS=reload refused: the file has problems (see the log); running the previous configuration";
    let got = wait_datagram(&sock, refused, Duration::from_secs(30));
    assert!(got.iter().any(|d| d == refused), "{got:?}");
    assert_eq!(lantian.admin("/healthz").await.0, 200);
}

#[test]
fn the_systemd_unit_verifies_and_scores_well() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/lantian.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // The reload checks the file before signalling (a refused file fails
    // `systemctl reload`); a configuration error is not restarted.
    let reload: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecReload="))
        .collect();
    assert_eq!(
        reload,
        [
            "ExecReload=/usr/local/bin/lantian check-config --config /etc/lantian/lantian.toml",
            "ExecReload=/bin/kill -HUP $MAINPID"
        ]
    );
    assert!(unit.contains("\nRestartPreventExitStatus=78\n"));
    // The start itself checks the configuration: no ExecStartPre, whose
    // failure RestartPreventExitStatus would not cover.
    assert!(!unit.contains("ExecStartPre="));
    // The unit as shipped, with the binary path pointed at this build
    // (verify checks the executable exists).
    let dir = tempfile::tempdir().unwrap();
    let path = verified_unit(&unit, &dir.path().join("lantian.service"));
    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for lantian.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}

/// The cluster roles' unit template (`lantian@.service`) verifies for
/// both roles' instances, runs the role's own configuration with its own
/// state directory, and the example configurations of both roles pass
/// `lantian check-config`.
#[test]
fn the_cluster_roles_unit_template_and_configurations_check_out() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/systemd/lantian@.service")).unwrap();
    let single = std::fs::read_to_string(root.join("deploy/systemd/lantian.service")).unwrap();
    // The same hardening as the single process's unit.
    let hardening = |u: &str| -> Vec<String> {
        let from = u.find("# Least privilege.").unwrap();
        u[from..].lines().map(str::to_owned).collect()
    };
    assert_eq!(
        hardening(&unit)
            .into_iter()
            .filter(|l| !l.starts_with("StateDirectory="))
            .collect::<Vec<_>>(),
        hardening(&single)
            .into_iter()
            .filter(|l| !l.starts_with("StateDirectory="))
            .collect::<Vec<_>>()
    );
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/lantian run --config /etc/lantian/%i.toml\n")
    );
    assert!(unit.contains("\nStateDirectory=lantian/%i\n"));
    let dir = tempfile::tempdir().unwrap();
    for role in ["edge", "worker"] {
        let config = root.join(format!("deploy/cluster/{role}.toml"));
        let check = Command::new(env!("CARGO_BIN_EXE_lantian"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{role}.toml: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&format!("\n{role} = true\n")), "{role}.toml");
        verified_unit(&unit, &dir.path().join(format!("lantian@{role}.service")));
    }
}

/// Writes `unit` to `path` with the binary pointed at this build (verify
/// checks the executable exists) and asserts `systemd-analyze verify`
/// accepts it; returns the path.
fn verified_unit(unit: &str, path: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(
        path,
        unit.replace("/usr/local/bin/lantian", env!("CARGO_BIN_EXE_lantian")),
    )
    .unwrap();
    let v = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        v.status.success(),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    path.to_owned()
}

/// `ulimit -n` reached (issue 13 item 8): the admin port is flooded while
/// lantian's descriptor limit (lowered with `prlimit`) is 8 above what it
/// uses. Accepting fails with EMFILE and backs off instead of spinning;
/// the spool's next segment cannot be opened, so intake pauses (an error
/// line) instead of the process ending; once the flood goes, the spool
/// resumes and every reading is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_admin_port_backs_off_and_the_spool_pauses_then_resumes() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Lantian::v1(broker.port, &influx)
        + &format!(
            "[spool]\ndir = \"{}\"\nsegment_bytes = \"64KiB\"\n",
            dir.path().join("spool").display()
        );
    let lantian = Lantian::start(&config);
    let mut publisher = Publisher::connect(broker.port, "emfile-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - HOUR;
    let publish = async |p: &mut Publisher, from: i64, to: i64| {
        for j in from..to {
            let topic = format!("env/haidian/site01/dust/d-{:03}", j % 100);
            p.publish(
                &topic,
                format!(r#"{{"ts":{},"pm10":{}}}"#, base + j, j % 500),
            )
            .await;
        }
    };
    publish(&mut publisher, 0, 100).await;
    influx
        .wait_count("SELECT count(pm10) FROM dust", 100, Duration::from_secs(60))
        .await;

    let pid = lantian.pid();
    let port = lantian.admin_port().await;
    let in_use = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = in_use + 8;
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let refusals = || {
        lantian
            .logs()
            .matches("admin endpoint cannot accept a connection")
            .count()
    };
    wait_for(
        "accept failing with EMFILE",
        Duration::from_secs(60),
        async || refusals() > 0,
    )
    .await;
    // 2,000 readings: the 64 KiB segments roll, which needs a descriptor.
    publish(&mut publisher, 100, 2_100).await;
    wait_for(
        "the spool paused for want of a descriptor",
        Duration::from_secs(120),
        async || lantian.logs().contains("cannot write the spool"),
    )
    .await;
    let flood = Instant::now();
    // Held a while so a spinning accept loop would show (thousands of lines).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = refusals();
    let held = flood.elapsed();
    drop(idle);

    publisher.flush().await;
    let stored = influx
        .wait_count(
            "SELECT count(pm10) FROM dust",
            2_100,
            Duration::from_secs(120),
        )
        .await;
    wait_for(
        "the spool writable again",
        Duration::from_secs(60),
        async || lantian.logs().contains("spool writable again"),
    )
    .await;
    println!(
        "limit {limit} descriptors ({in_use} in use): {during} accept failures logged \
         (the last {held:.1?} of them with the spool paused); {stored} of 2100 readings stored"
    );
    assert_eq!(stored, 2_100, "{}", lantian.logs());
    assert!(
        during < 200,
        "the accept loop backs off: {during} failures logged"
    );
    let mut lantian = lantian;
    assert!(
        lantian.proc.child.try_wait().unwrap().is_none(),
        "{}",
        lantian.logs()
    );
    // The limit stays low: the endpoint serves again once descriptors free.
    lantian.wait_ready().await;
}

/// Under systemd, stderr is the journal and `JOURNAL_STREAM` names it
/// (device:inode): each line then starts with its syslog priority, which
/// journald records as PRIORITY. The variable naming another stream (a
/// child whose stderr went elsewhere) changes nothing. No journald runs
/// here: stderr is a file, named by the variable as systemd would name
/// the journal's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_their_syslog_priority_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens: lantian warns that the broker cannot be reached.
    let config = format!(
        "[mqtt]\nport = {}\n[influxdb]\napi = \"v1\"\nurl = \"http://127.0.0.1:{}\"\n\
         [spool]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        free_port(),
        free_port(),
        dir.path().join("spool").display()
    );
    let cfg = dir.path().join("lantian.toml");
    std::fs::write(&cfg, config).unwrap();
    let run = |name: &str, stream: &dyn Fn(&std::fs::Metadata) -> String| {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        let value = stream(&file.metadata().unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_lantian"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("JOURNAL_STREAM", value)
            .env("RUST_LOG", "info")
            .env_remove("LANTIAN_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        (child, path)
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let (mut journal, journal_log) = run("journal.log", &|m| format!("{}:{}", m.dev(), m.ino()));
    let (mut other, other_log) = run("other.log", &|m| format!("{}:{}", m.dev(), m.ino() + 1));
    for log in [&journal_log, &other_log] {
        wait_for(
            "a warning and an info line",
            Duration::from_secs(60),
            async || {
                let text = read(log);
                text.contains("WARN") && text.contains("INFO")
            },
        )
        .await;
    }
    for c in [&mut journal, &mut other] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let text = read(&journal_log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with('<')),
        "every line has a priority:\n{text}"
    );
    let warn = lines.iter().find(|l| l.contains("WARN")).unwrap();
    assert!(warn.starts_with("<4>"), "{warn}");
    let info = lines.iter().find(|l| l.contains("INFO")).unwrap();
    assert!(info.starts_with("<6>"), "{info}");
    let text = read(&other_log);
    assert!(
        text.lines().all(|l| !l.starts_with('<')),
        "no priorities when stderr is not the journal:\n{text}"
    );
}

/// The daemon's archive maintenance (at start, then every 10 minutes): a
/// past day written in several batches is one file, sorted by time, once
/// lantian has been restarted; nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_compacts_the_archives_past_days() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let archive = tempfile::tempdir().unwrap();
    let config = Lantian::v1(broker.port, &influx)
        + &format!(
            "[archive]\nenabled = true\ndir = \"{}\"\n",
            archive.path().display()
        );
    let mut lantian = Lantian::start(&config);
    let mut p = Publisher::connect(broker.port, "archive-publisher").await;
    lantian.wait_subscribed().await;
    let day = two_days_ago_beijing(); // local midnight, two days ago
    for batch in 0..3i64 {
        for i in 0..10 {
            let ts = day + batch * 3_600_000 + i * 60_000;
            p.publish(
                "env/dongcheng/dongsi/air/aq-1",
                format!("{{\"ts\":{ts},\"pm25\":{i}}}"),
            )
            .await;
        }
        p.flush().await;
        influx
            .wait_count(
                "SELECT count(pm25) FROM air",
                (batch + 1) * 10,
                Duration::from_secs(60),
            )
            .await;
    }
    let date = chrono::DateTime::from_timestamp_millis(day + 8 * 3_600_000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let partition = archive.path().join(format!("air/date={date}"));
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&partition)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert!(files().len() >= 3, "a file per batch: {:?}", files());
    // A clean stop (SIGTERM saves the spool's cursor: nothing is replayed
    // into a new file after the start's compaction), then a start.
    lantian.proc.signal("TERM");
    assert!(lantian.proc.wait_timeout(Duration::from_secs(30)).is_some());
    lantian.restart();
    let t = Instant::now();
    while files() != [format!("{date}.parquet")] && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(files(), [format!("{date}.parquet")], "{}", lantian.logs());
    let air = lantian::sink::archive::read_measurement(archive.path(), "air")
        .unwrap()
        .unwrap();
    assert_eq!(air.height(), 30);
    lantian
        .wait_metric(
            "lantian_archive_files_compacted_total",
            3.0,
            Duration::from_secs(30),
        )
        .await;
}
