//! Conformance with the published record: the hourly AQI that CNEMC
//! published for Beijing's 12 national stations on 2023-03-22 (a dust
//! storm; `tests/data/conformance/`), replayed through a real Mosquitto
//! into the daemon, and through `lantian aqi`. A rule is right when it
//! reproduces what the authority published: every station-hour with a
//! published AQI must come out equal.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const HOUR: i64 = 3_600_000;
/// Beijing time is UTC+8 (no daylight saving).
const BEIJING: i64 = 8 * HOUR;

/// (CSV column, lantian field): the 1-hour concentrations. The archive
/// the data comes from swaps the ozone columns: `o3_24h` holds the current
/// 1-hour O3 (see the data's README).
const FIELDS: [(&str, &str); 6] = [
    ("pm2_5", "pm25"),
    ("pm10", "pm10"),
    ("so2", "so2"),
    ("no2", "no2"),
    ("co", "co"),
    ("o3_24h", "o3"),
];

/// One published station-hour.
#[derive(Debug)]
struct Published {
    station: String,
    /// Start of the averaging hour (the CSV's time is hour-ending).
    start_ms: i64,
    /// The published AQI; None where CNEMC published none.
    aqi: Option<i64>,
    /// lantian field → 1-hour concentration; blank cells left out.
    values: BTreeMap<&'static str, f64>,
}

/// Splits a CSV line, honouring double quotes (the primary pollutant
/// column can hold "PM10,PM2.5").
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fn published() -> Vec<Published> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/conformance/cnemc-beijing-2023-03-22-hourly.csv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = split_csv(lines.next().unwrap());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut out = Vec::new();
    for line in lines {
        let row = split_csv(line);
        let local =
            chrono::NaiveDateTime::parse_from_str(&row[col("timepoint")], "%Y-%m-%dT%H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_millis();
        let values = FIELDS
            .iter()
            .filter_map(|(c, f)| Some((*f, row[col(c)].parse::<f64>().ok()?)))
            .collect();
        out.push(Published {
            station: row[col("stationcode")].clone(),
            start_ms: local - BEIJING - HOUR,
            aqi: row[col("aqi")].parse().ok(),
            values,
        });
    }
    out
}

/// The `lantian aqi` keys of an hourly (real-time) AQI.
fn hourly_keys(values: &BTreeMap<&str, f64>) -> String {
    let key = |f: &str| match f {
        "pm25" => "pm25_24h",
        "pm10" => "pm10_24h",
        "so2" => "so2_1h",
        "no2" => "no2_1h",
        "co" => "co_1h",
        _ => "o3_1h",
    };
    let pairs: Vec<String> = values
        .iter()
        .map(|(f, v)| format!("\"{}\": {v}", key(f)))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// How many of `rows` agree, with the first disagreements for the message.
fn agreement(rows: &[(&Published, Option<i64>)]) -> (usize, Vec<String>) {
    let mut same = 0;
    let mut differ = Vec::new();
    for (p, got) in rows {
        if *got == p.aqi {
            same += 1;
        } else {
            differ.push(format!(
                "{} {}: published {:?}, lantian {got:?} from {:?}",
                p.station,
                chrono::DateTime::from_timestamp_millis(p.start_ms + HOUR + BEIJING).unwrap(),
                p.aqi,
                p.values
            ));
        }
    }
    (same, differ)
}

#[test]
fn lantian_aqi_gives_the_published_hourly_aqi_on_every_station_hour() {
    let all = published();
    let rated: Vec<&Published> = all.iter().filter(|p| p.aqi.is_some()).collect();
    assert_eq!((all.len(), rated.len()), (288, 286));
    let input: String = rated
        .iter()
        .map(|p| hourly_keys(&p.values) + "\n")
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["aqi", "--standard", "hj633-2012", "--json-lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let got: Vec<Option<i64>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["aqi"].as_i64())
        .collect();
    let rows: Vec<(&Published, Option<i64>)> = rated.iter().copied().zip(got).collect();
    let (same, differ) = agreement(&rows);
    println!(
        "lantian aqi: {same} of {} published station-hours equal",
        rated.len()
    );
    assert_eq!(same, rated.len(), "{}", differ.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reproduces_the_published_hourly_aqi_of_a_dust_storm_day() {
    let all = published();
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let config = Lantian::config(
        broker.port,
        &format!(
            "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"",
            influx.url()
        ),
        // Stations report one value an hour, stamped with the start of
        // the hour it averages (so it covers the data through the hour's
        // end, and with no allowed lateness it closes its hour); the data
        // is from 2023.
        "[validation]\nmax_age = \"3650d\"\n\
         [aqi]\nstandard = \"hj633-2012\"\n\
         [windows]\nflush_interval = \"200ms\"\nallowed_lateness = \"0s\"\n\
         [windows.intervals]\nair = \"1h\"\n\
         [alerts]\nenabled = false\n",
    );
    let lantian = Lantian::start(&config);
    let mut publisher = Publisher::connect(broker.port, "cnemc-replay").await;
    lantian.wait_subscribed().await;

    let mut hours_with_data = 0;
    for p in all.iter().filter(|p| !p.values.is_empty()) {
        let fields: Vec<String> = p
            .values
            .iter()
            .map(|(f, v)| format!("\"{f}\":{v}"))
            .collect();
        publisher
            .publish(
                &format!("env/beijing/{}/air/{}", p.station, p.station),
                format!("{{\"ts\":{},{}}}", p.start_ms, fields.join(",")),
            )
            .await;
        hours_with_data += 1;
    }
    publisher.flush().await;
    // An hourly AQI point for every station-hour with data.
    let n = influx
        .wait_count(
            "SELECT count(\"primary\") FROM aqi WHERE period = 'hour'",
            hours_with_data,
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(n, hours_with_data, "{}", lantian.logs());

    let mut stored: BTreeMap<(String, i64), Option<i64>> = BTreeMap::new();
    for s in influx
        .query("SELECT aqi, \"primary\" FROM aqi WHERE period = 'hour' GROUP BY site")
        .await
    {
        let site = s["tags"]["site"].as_str().unwrap().to_owned();
        for v in s["values"].as_array().unwrap() {
            stored.insert((site.clone(), v[0].as_i64().unwrap()), v[1].as_i64());
        }
    }
    let rated: Vec<(&Published, Option<i64>)> = all
        .iter()
        .filter(|p| p.aqi.is_some())
        .map(|p| {
            let got = stored
                .get(&(p.station.clone(), p.start_ms))
                .copied()
                .flatten();
            (p, got)
        })
        .collect();
    let (same, differ) = agreement(&rated);
    println!(
        "daemon: {same} of {} published station-hours equal",
        rated.len()
    );
    assert_eq!(
        same,
        rated.len(),
        "{}\n{}",
        differ.join("\n"),
        lantian.logs()
    );
}
