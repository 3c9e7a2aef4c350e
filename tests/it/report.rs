//! `lantian report` over a simulated week: the same report from the
//! Parquet archive and from InfluxDB, checked against InfluxDB's own points.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const HOUR: i64 = 3_600_000;

fn beijing_date(ms: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms + 8 * HOUR)
        .unwrap()
        .date_naive()
}

fn report(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .arg("report")
        .args(args)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{o}{e}");
    (o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_week_gives_the_same_report_from_the_archive_and_from_influxdb() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let config = format!(
        "{}\n[archive]\nenabled = true\ndir = \"{}\"\n",
        Lantian::v1(broker.port, &influx),
        archive.display()
    );
    let lantian = Lantian::start(&config);
    lantian.wait_subscribed().await;
    let n = simulate(broker.port, "167h");
    let got = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            12 * n / 26,
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(got, 12 * n / 26, "{}", lantian.logs());

    // The six complete local days before today (167 h of history: 7 days
    // would reach past validation.max_age and be quarantined as too_old).
    let today = beijing_date(now_ms());
    let (from, to) = (today - chrono::Days::new(6), today - chrono::Days::new(1));
    // Those days' AQI (near midnight in Beijing, the last one closes
    // after the earlier days have all been counted).
    influx
        .wait_count(
            &format!(
                "SELECT count(aqi) FROM aqi WHERE period = 'day' AND scope != 'city' \
                 AND time >= '{from}T00:00:00+08:00' AND time < '{}T00:00:00+08:00'",
                to + chrono::Days::new(1)
            ),
            12 * 6,
            Duration::from_secs(120),
        )
        .await;
    // InfluxDB's own daily AQI points: (date, site) → AQI.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in influx
        .query("SELECT aqi FROM aqi WHERE period = 'day' AND scope != 'city' GROUP BY site")
        .await
    {
        let site = s["tags"]["site"].as_str().unwrap().to_owned();
        for row in s["values"].as_array().unwrap() {
            let d = beijing_date(row[0].as_i64().unwrap());
            if d >= from && d <= to {
                want.insert((d.to_string(), site.clone()), row[1].as_i64().unwrap());
            }
        }
    }
    assert_eq!(want.len(), 12 * 6, "{want:?}");

    let (f, t) = (from.to_string(), to.to_string());
    let md_dir = dir.path().join("md");
    let (files, progress) = report(&[
        "--archive",
        archive.to_str().unwrap(),
        "--from",
        &f,
        "--to",
        &t,
        "--dust-limit",
        "150",
        "--out",
        md_dir.to_str().unwrap(),
    ]);
    assert!(
        progress.contains("report: aqi:"),
        "progress shown: {progress}"
    );
    assert!(
        files.contains("report.md") && files.contains("daily-aqi.svg"),
        "{files}"
    );
    // The charts: SVG with the stations' Chinese names as text, linked
    // from the report, 1100×560 (the calendar as wide as its days), and
    // drawn by a real browser (with the CJK font).
    for (chart, texts) in [
        (
            "daily-aqi.svg",
            &["东四 dongsi", "天坛 tiantan", "各站日空气质量指数"][..],
        ),
        ("aqi-calendar.svg", &["东四", "天坛", "奥体中心"][..]),
        (
            "treatment-rate.svg",
            &["污水处理率", "全市 city", "huaifang"][..],
        ),
    ] {
        let svg = std::fs::read_to_string(md_dir.join(chart)).unwrap();
        for zh in texts {
            assert!(svg.contains(zh), "{zh} in {chart}");
        }
        if chart != "aqi-calendar.svg" {
            assert!(svg.contains("width=\"1100\" height=\"560\""), "{chart}");
        }
        let png = chromium_screenshot(
            &format!("file://{}", md_dir.join(chart).display()),
            &chart.replace(".svg", ".png"),
        );
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!(
            w >= 400 && png.len() > 10_000,
            "{chart}: {w} px, {} bytes",
            png.len()
        );
    }
    let md = std::fs::read_to_string(md_dir.join("report.md")).unwrap();
    for chart in ["daily-aqi.svg", "aqi-calendar.svg", "treatment-rate.svg"] {
        assert!(md.contains(&format!("![{chart}]({chart})")), "{chart}");
    }
    // The daily AQI table: a row per date, a column per station.
    let header = md.lines().find(|l| l.starts_with("| date |")).unwrap();
    let stations: Vec<&str> = header
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .skip(1)
        .collect();
    assert_eq!(stations.len(), 12, "{header}");
    let mut from_md = BTreeMap::new();
    for line in md.lines().filter(|l| l.starts_with("| 20")) {
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cells.len() != 13 {
            continue;
        }
        for (st, v) in stations.iter().zip(&cells[1..]) {
            let v: i64 = v.trim_matches('*').parse().unwrap();
            from_md.insert((cells[0].to_owned(), (*st).to_owned()), v);
        }
    }
    assert_eq!(from_md, want, "the report's daily AQI equals InfluxDB's");
    assert!(md.contains("| huaifang | 6 |"), "{md}");
    let huaifang = md.lines().find(|l| l.starts_with("| huaifang |")).unwrap();
    assert!(huaifang.contains("| 91.00 | **no** |"), "{huaifang}");
    assert!(md.contains("## Reclaimed water") && md.contains("## Construction dust per district"));

    // The same from InfluxDB, as CSV.
    let csv_dir = dir.path().join("csv");
    report(&[
        "--influx",
        &influx.url(),
        "--from",
        &f,
        "--to",
        &t,
        "--format",
        "csv",
        "--out",
        csv_dir.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(csv_dir.join("daily_aqi.csv")).unwrap();
    let mut from_csv = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        from_csv.insert(
            (c[0].to_owned(), c[1].to_owned()),
            c[3].parse::<i64>().unwrap(),
        );
    }
    assert_eq!(from_csv, want);
    // City-wide treatment rate, independently from InfluxDB's daily means.
    let sums = influx
        .query(&format!(
            "SELECT sum(treated_m3h_mean), sum(inflow_m3h_mean) FROM sewage_1d WHERE scope = 'site' \
             AND time >= '{f}T00:00:00+08:00' AND time < '{}T00:00:00+08:00'",
            to + chrono::Days::new(1)
        ))
        .await;
    let v = &sums[0]["values"][0];
    let city = v[1].as_f64().unwrap() / v[2].as_f64().unwrap() * 100.0;
    let sewage = std::fs::read_to_string(csv_dir.join("sewage.csv")).unwrap();
    let row = sewage.lines().find(|l| l.starts_with("city,")).unwrap();
    let reported: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
    assert!((reported - city).abs() < 0.001, "{reported} vs {city}");
    for f in ["stations.csv", "dust.csv", "reclaimed.csv"] {
        assert!(csv_dir.join(f).exists(), "{f}");
    }

    // The city-wide daily AQI, as InfluxDB has it, with a level.
    let mut city_want = BTreeMap::new();
    for s in influx
        .query("SELECT aqi FROM aqi WHERE period = 'day' AND scope = 'city'")
        .await
    {
        for row in s["values"].as_array().unwrap() {
            let d = beijing_date(row[0].as_i64().unwrap());
            if d >= from && d <= to {
                city_want.insert(d.to_string(), row[1].as_i64().unwrap());
            }
        }
    }
    assert_eq!(city_want.len(), 6, "{city_want:?}");
    let city_csv = std::fs::read_to_string(csv_dir.join("city.csv")).unwrap();
    let city_got: BTreeMap<String, i64> = city_csv
        .lines()
        .skip(1)
        .map(|l| {
            // date,aqi,category,"primary, maybe quoted",stations,level,level
            let c: Vec<&str> = l.split(',').collect();
            let level = c[c.len() - 2];
            assert!(
                ["none", "blue", "yellow", "orange", "red"].contains(&level),
                "{l}"
            );
            (c[0].to_owned(), c[1].parse().unwrap())
        })
        .collect();
    assert_eq!(city_got, city_want, "{city_csv}");
    assert!(md.contains("## City-wide daily AQI and observed heavy-pollution level"));

    // Year-to-date PM2.5 per station: the mean of the valid daily means
    // InfluxDB holds since 1 January.
    let year_start = format!("{}-01-01T00:00:00+08:00", chrono::Datelike::year(&to));
    let mut annual_want = BTreeMap::new();
    for s in influx
        .query(&format!(
            "SELECT mean(pm25_mean), count(pm25_mean) FROM air_1d WHERE scope = 'site' \
             AND pm25_valid = true AND time >= '{year_start}' AND time < '{}T00:00:00+08:00' GROUP BY site",
            to + chrono::Days::new(1)
        ))
        .await
    {
        let site = s["tags"]["site"].as_str().unwrap().to_owned();
        let v = &s["values"][0];
        annual_want.insert(site, (v[1].as_f64().unwrap(), v[2].as_i64().unwrap()));
    }
    assert_eq!(annual_want.len(), 12, "{annual_want:?}");
    let annual = std::fs::read_to_string(csv_dir.join("annual_means.csv")).unwrap();
    let mut annual_got = BTreeMap::new();
    for l in annual
        .lines()
        .filter(|l| l.starts_with("station,") && l.contains(",pm25,"))
    {
        let c: Vec<&str> = l.split(',').collect();
        annual_got.insert(
            c[1].to_owned(),
            (c[4].parse::<f64>().unwrap(), c[5].parse::<i64>().unwrap()),
        );
        assert_eq!(c[6], "false", "a few days are not a valid annual mean: {l}");
    }
    assert_eq!(annual_got.len(), 12, "{annual}");
    for (site, (mean, days)) in &annual_want {
        let (m, d) = annual_got[site];
        assert_eq!(d, *days, "{site}");
        assert!((m - mean).abs() < 0.005, "{site}: {m} vs {mean}");
    }
    assert!(md.contains("## Annual means, year to date"), "{md}");
    assert!(
        annual.lines().any(|l| l.starts_with("district,")),
        "{annual}"
    );
}
