//! deploy/: the InfluxDB set-up applied to a real InfluxDB, and every query
//! of the Grafana dashboard run against data that `lantian simulate` sent
//! through Mosquitto and lantian.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Grafana's macros, as Grafana would expand them for "last 7 days".
fn expand(q: &str) -> String {
    q.replace("$timeFilter", "time > now() - 7d")
        .replace("$__interval", "1h")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_influx_setup_applies_and_every_dashboard_query_runs_on_simulated_data() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    influx.query_post("DROP DATABASE env").await;
    for round in 0..2 {
        let out = Command::new("bash")
            .arg(repo("deploy/influxdb/setup.sh"))
            .arg(influx.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setup.sh round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rps = influx.query("SHOW RETENTION POLICIES ON env").await;
    let rows = rps[0]["values"].as_array().unwrap();
    let default: Vec<&str> = rows
        .iter()
        .filter(|r| r[4] == true)
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(default, ["raw"], "{rows:?}");
    assert!(rows.iter().any(|r| r[0] == "forever" && r[1] == "0s"));
    let cqs = influx.query("SHOW CONTINUOUS QUERIES").await;
    let env = cqs.iter().find(|s| s["name"] == "env").unwrap();
    assert_eq!(env["values"].as_array().unwrap().len(), 4, "{env}");

    // Two days of the simulated fleet through the real pipeline.
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    lantian.wait_subscribed().await;
    let n = simulate(broker.port, "48h");
    assert_eq!(n % 26, 0);
    assert!(n / 26 >= 48 * 60);
    let want = 12 * n / 26;
    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            want,
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(got, want, "{}", lantian.logs());
    influx
        .wait_count(
            "SELECT count(aqi) FROM aqi WHERE period = 'day' AND scope != 'city'",
            12,
            Duration::from_secs(60),
        )
        .await;

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/lantian-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(move |t| {
                (
                    p["title"].as_str().unwrap().to_owned(),
                    t["query"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    for a in dash["annotations"]["list"].as_array().unwrap() {
        queries.push(("annotation".into(), a["query"].as_str().unwrap().to_owned()));
    }
    assert!(queries.len() >= 17, "{}", queries.len());
    for (title, q) in &queries {
        // Nothing was quarantined: that panel is rightly empty (the query
        // must still run).
        if title.starts_with("Quarantined") {
            influx.query(&expand(q)).await;
            continue;
        }
        // The stages write in turn (windows, then AQI, then alerts), each
        // as it catches up: wait for this panel's data, not for a time.
        let t = std::time::Instant::now();
        while influx.query(&expand(q)).await.is_empty() && t.elapsed() < Duration::from_secs(180) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let series = influx.query(&expand(q)).await;
        assert!(!series.is_empty(), "{title}: {q} returned nothing");
    }
    // The treatment rate the dashboard shows: huaifang bypasses 9 %.
    let rate = influx
        .query(&expand(
            "SELECT mean(\"treated_m3h_mean\") / mean(\"inflow_m3h_mean\") * 100 FROM \"sewage_1d\" \
             WHERE \"scope\" = 'site' AND \"site\" = 'huaifang' AND $timeFilter",
        ))
        .await;
    let r = rate[0]["values"][0][1].as_f64().unwrap();
    assert!((r - 91.0).abs() < 0.5, "{r}");

    // The continuous queries' bodies, run once by hand over the data.
    let iql = std::fs::read_to_string(repo("deploy/influxdb/setup.iql")).unwrap();
    for cq in iql
        .lines()
        .filter(|l| l.starts_with("CREATE CONTINUOUS QUERY"))
    {
        let body = cq.split(" BEGIN ").nth(1).unwrap().trim_end_matches(" END");
        let body = body.replace(" GROUP BY", " AND time > now() - 7d GROUP BY");
        influx.query_post(&body).await;
    }
    let kept = influx
        .scalar("SELECT count(pm25_mean) FROM env.forever.air_1d")
        .await;
    assert!(kept >= 12, "{kept}");
    assert!(
        influx
            .scalar("SELECT count(aqi) FROM env.forever.aqi_1d")
            .await
            >= 12
    );
}
