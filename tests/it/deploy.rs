//! deploy/: the InfluxDB set-up applied to a real InfluxDB, and every query
//! of the Grafana dashboard run against data that `lantian simulate` sent
//! through Mosquitto and lantian.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Grafana's macros, as Grafana would expand them for "last 7 days",
/// and the dashboard's variables at "All" (their `allValue`, `.*`).
fn expand(q: &str) -> String {
    q.replace("$timeFilter", "time > now() - 7d")
        .replace("$__interval", "1h")
        .replace("$district", ".*")
        .replace("$site", ".*")
}

/// What Grafana resolves when it loads the dashboard (imported, or
/// provisioned from a file, where `__inputs` are not filled in): every
/// data source is the `datasource` variable, and every `$name` in a query
/// is a variable of the dashboard or a Grafana macro.
#[test]
fn the_dashboards_data_sources_and_variables_resolve() {
    let text = std::fs::read_to_string(repo("deploy/grafana/lantian-dashboard.json")).unwrap();
    assert!(!text.contains("${DS_"), "an import-only input is left");
    let dash: Value = serde_json::from_str(&text).unwrap();
    assert!(dash.get("__inputs").is_none());
    let vars: Vec<&Value> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "district", "site"]);
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "influxdb");
    // Every data source reference, anywhere in the JSON.
    fn sources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "datasource" {
                        out.push(x);
                    } else {
                        sources(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| sources(x, out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    sources(&dash, &mut refs);
    assert!(refs.len() > 20, "{}", refs.len());
    for r in refs {
        assert_eq!(r["uid"], "${datasource}", "{r}");
        assert_eq!(r["type"], "influxdb", "{r}");
    }
    // Every variable used is defined (or a macro), in panels, annotations
    // and the variables' own queries; and each panel filters by them
    // where it shows stations.
    let mut queries: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push(t["query"].as_str().unwrap().to_owned());
        }
    }
    for a in dash["annotations"]["list"].as_array().unwrap() {
        queries.push(a["query"].as_str().unwrap().to_owned());
    }
    for v in &vars[1..] {
        queries.push(v["query"].as_str().unwrap().to_owned());
    }
    for q in &queries {
        for used in q.split('$').skip(1) {
            let name: String = used
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$/`: a regex's end anchor, not a variable.
            assert!(
                name.is_empty()
                    || names.contains(&name.as_str())
                    || ["timeFilter", "__interval"].contains(&name.as_str()),
                "${name} in {q}"
            );
        }
    }
    // Station panels follow the district and site chosen.
    for q in &queries {
        let per_station = (q.contains("FROM \"aqi\"") || q.contains("FROM \"air"))
            && q.contains("\"site\"")
            && !q.contains("'city'")
            && !q.starts_with("SHOW");
        if per_station {
            assert!(
                q.contains("\"district\" =~ /^$district$/ AND \"site\" =~ /^$site$/"),
                "{q}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_influx_setup_applies_and_every_dashboard_query_runs_on_simulated_data() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    influx.query_post("DROP DATABASE env").await;
    // As an operator may have made it before: the set-up takes it over,
    // and replaces an older version of a continuous query by the file's.
    influx.query_post("CREATE DATABASE env").await;
    influx
        .query_post(
            "CREATE CONTINUOUS QUERY \"cq_dust_1d_forever\" ON \"env\" BEGIN SELECT mean(\"pm10_mean\") \
             AS \"pm10_mean\" INTO \"env\".\"autogen\".\"dust_1d\" FROM \"env\".\"autogen\".\"dust_1h\" \
             GROUP BY time(1d) END",
        )
        .await;
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
    assert!(
        rows.iter().any(|r| r[0] == "minute" && r[1] == "720h0m0s"),
        "{rows:?}"
    );
    let cqs = influx.query("SHOW CONTINUOUS QUERIES").await;
    let env = cqs.iter().find(|s| s["name"] == "env").unwrap();
    assert_eq!(env["values"].as_array().unwrap().len(), 4, "{env}");
    let dust = env["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q[0] == "cq_dust_1d_forever")
        .unwrap();
    assert!(dust[1].as_str().unwrap().contains("pm10_hours"), "{dust}");

    // Two days of the simulated fleet through the real pipeline.
    let lantian = Lantian::start_with_env(
        &Lantian::v1(broker.port, &influx),
        &[("LANTIAN__INFLUXDB__MINUTE_RETENTION_POLICY", "minute")],
    );
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
    // A panel with its own range ("now/y": this year so far) gets a
    // range that holds the year's start (a value stamped 1 January).
    let mut queries: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let own = p["timeFrom"] == "now/y";
            p["targets"].as_array().unwrap().iter().map(move |t| {
                let q = t["query"].as_str().unwrap();
                let q = if own {
                    q.replace("$timeFilter", "time > now() - 400d")
                } else {
                    q.to_owned()
                };
                (p["title"].as_str().unwrap().to_owned(), q)
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
    // "Alerts firing now" lists what lantian holds firing, no more.
    let firing_now = &queries
        .iter()
        .find(|(t, _)| t == "Alerts firing now")
        .unwrap()
        .1;
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    wait_for(
        "the firing-now panel to match /api/status",
        Duration::from_secs(60),
        async || {
            let status: Value =
                serde_json::from_str(&lantian.admin("/api/status").await.1).unwrap();
            let want: BTreeSet<(String, String)> = status["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (text(&a["rule"]), text(&a["labels"]["site"])))
                .collect();
            let got: BTreeSet<(String, String)> = influx
                .query(&expand(firing_now))
                .await
                .iter()
                .map(|s| (text(&s["tags"]["rule"]), text(&s["tags"]["site"])))
                .collect();
            !want.is_empty() && want == got
        },
    )
    .await;

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
    // With their validity and counts, which an annual mean needs.
    let valid = influx
        .scalar("SELECT count(pm25_mean) FROM env.forever.air_1d WHERE pm25_valid = true")
        .await;
    assert!(valid >= 12, "{valid}");
    assert!(
        influx
            .scalar("SELECT min(pm25_count) FROM env.forever.air_1d")
            .await
            >= 1
    );
    // Minute windows went to their own retention policy, and only there.
    assert!(
        influx
            .scalar("SELECT count(pm25_mean) FROM env.minute.air_1m")
            .await
            > 0
    );
    assert_eq!(
        influx
            .query("SELECT count(pm25_mean) FROM env.raw.air_1m")
            .await
            .len(),
        0
    );
    assert!(
        influx
            .scalar("SELECT count(aqi) FROM env.forever.aqi_1d")
            .await
            >= 12
    );
}
