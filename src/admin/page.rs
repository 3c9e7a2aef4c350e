//! The duty officer's status page: one self-contained HTML document (no
//! scripts, no external assets), refreshed every 15 s by the browser.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::Board;
use crate::metrics::Metrics;

use crate::units::escape_html as esc;

/// Black or white text on a category colour.
fn ink(color: &str) -> &'static str {
    let hex = color.trim_start_matches('#');
    let v = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0) as f64
    };
    if 0.299 * v(0) + 0.587 * v(2) + 0.114 * v(4) > 128.0 {
        "#000"
    } else {
        "#fff"
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}\
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}\
table{border-collapse:collapse;background:#fff}td,th{padding:.35rem .7rem;border:1px solid #ddd;text-align:left}\
th{background:#eee}.aqi{font-weight:700;text-align:center;min-width:3rem}\
.ok{color:#0a7d32}.bad{color:#b00020;font-weight:700}.muted{color:#777}\
.sev-critical{background:#7e0023;color:#fff}.sev-warning{background:#ff7e00}.sev-info{background:#dde}\
.stale{background:#eee;color:#555;border:1px solid #bbb;border-radius:3px;padding:0 .3rem;font-size:.85em}";

/// Stale stations' colour: no category.
const STALE: &str = "#BBBBBB";

/// A station's last 24 hours as a strip of squares in the AQI colours
/// (inline SVG, no script): oldest left, its newest hour right; an hour
/// without a value is left light grey. Each square's tooltip gives the
/// hour and the AQI.
fn strip(board: &Board, s: &super::board::Station) -> String {
    const W: i64 = 6;
    let mut o = format!(
        "<svg class=\"strip\" width=\"{}\" height=\"14\" role=\"img\" \
         aria-label=\"hourly AQI, the 24 hours to {}\">",
        24 * W,
        board.local(s.hour_ms)
    );
    for i in 0..24 {
        let hour = s.hour_ms - (23 - i) * 3_600_000;
        let (fill, tip) = match s.recent.get(&hour) {
            Some(aqi) => (
                board.standard().category(*aqi).color.to_owned(),
                format!("{}: AQI {aqi}", board.local(hour)),
            ),
            None => (
                "#EEEEEE".to_owned(),
                format!("{}: no value", board.local(hour)),
            ),
        };
        let _ = write!(
            o,
            "<rect x=\"{}\" y=\"0\" width=\"{}\" height=\"14\" fill=\"{}\"><title>{}</title></rect>",
            i * W,
            W - 1,
            esc(&fill),
            esc(&tip)
        );
    }
    o.push_str("</svg>");
    o
}

pub fn render(board: &Board, m: &Metrics, not_ready: &[&str]) -> String {
    render_at(board, m, not_ready, chrono::Utc::now().timestamp_millis())
}

/// The page at `now` (which stations are stale).
pub fn render_at(board: &Board, m: &Metrics, not_ready: &[&str], now: i64) -> String {
    let mut o = String::with_capacity(16 << 10);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"15\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>lantian 蓝天 — status</title><style>{STYLE}</style></head><body>\
         <h1>lantian 蓝天 — Beijing sensor networks</h1>\
         <p class=\"muted\">{} · AQI standard {} · times in {} · page generated {} (refreshes every 15 s)</p>",
        if not_ready.is_empty() {
            "<span class=\"ok\" id=\"ready\">ready</span>".to_owned()
        } else {
            format!(
                "<span class=\"bad\" id=\"ready\">not ready: {}</span>",
                esc(&not_ready.join("; "))
            )
        },
        board.standard().as_str(),
        esc(board.tz_name()),
        board.local(now)
    );
    stations(&mut o, board, now);
    alerts(&mut o, board);
    pipeline(&mut o, board, m, now);
    o
}

/// The latest hourly AQI per station, under the city-wide one.
fn stations(o: &mut String, board: &Board, now: i64) {
    // A stale value is shown grey and says since when nothing came.
    let colour = |s: &super::board::Station| {
        if s.stale(now) {
            STALE.to_owned()
        } else {
            s.color.clone()
        }
    };
    let badge = |s: &super::board::Station| {
        if s.stale(now) {
            format!(
                " <span class=\"stale\">stale: nothing newer for {} h</span>",
                (now - s.hour_ms - 3_600_000) / 3_600_000
            )
        } else {
            String::new()
        }
    };
    if let Some(c) = board.city() {
        let _ = write!(
            o,
            "<p id=\"city\">City-wide (mean of the national stations): \
             <span class=\"aqi\" style=\"background:{};color:{}\">AQI {}</span> {} {}, \
             primary {}, hour {}{}</p>",
            esc(&colour(&c)),
            ink(&colour(&c)),
            c.aqi,
            esc(&c.label),
            esc(&c.category.replace('_', " ")),
            esc(&crate::evaluate::aqi::pollutants(&c.primary)),
            board.local(c.hour_ms),
            badge(&c)
        );
    }
    let levels = board.city_levels();
    if !levels.is_empty() {
        o.push_str(
            "<p id=\"level\">Observed heavy-pollution level, city-wide (what the measured \
             days call for; Beijing declares levels on forecasts):",
        );
        for (set, day, level) in levels {
            let _ = write!(
                o,
                " <b>{}</b> by the {} plan (day of {});",
                crate::alert::derive::level_name(level),
                esc(match set.as_str() {
                    "beijing-2016" => "2016–2018",
                    "beijing-2023" => "2023 (unconfirmed)",
                    other => other,
                }),
                board.local(day).get(..10).unwrap_or_default()
            );
        }
        o.push_str("</p>");
    }
    let stations = board.stations();
    let _ = write!(
        o,
        "<h2>Air quality — latest hourly AQI per station ({})</h2>",
        stations.len()
    );
    if stations.is_empty() {
        o.push_str("<p class=\"muted\">No complete hour yet.</p>");
    } else {
        o.push_str(
            "<table id=\"stations\"><tr><th>Station</th><th>District</th><th>AQI</th>\
             <th>Category</th><th>Primary pollutant</th><th>Hour</th><th>Last 24 h</th></tr>",
        );
        for s in &stations {
            let _ = write!(
                o,
                "<tr data-site=\"{}\"><td>{}</td><td>{}</td>\
                 <td class=\"aqi\" style=\"background:{};color:{}\">{}</td>\
                 <td>{} {}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&s.site),
                // The registered Chinese name beside the site tag.
                match crate::evaluate::sites::find(&s.site) {
                    Some(r) => format!(
                        "<span lang=\"zh\">{}</span> <span class=\"muted\">{}</span>",
                        esc(&r.name_zh),
                        esc(&s.site)
                    ),
                    None => esc(&s.site),
                },
                esc(&s.district),
                esc(&colour(s)),
                ink(&colour(s)),
                s.aqi,
                esc(&s.label),
                esc(&s.category.replace('_', " ")),
                esc(&crate::evaluate::aqi::pollutants(&s.primary)),
                board.local(s.hour_ms),
                badge(s),
                strip(board, s)
            );
        }
        o.push_str("</table>");
    }
}

/// A value with its unit as a person reads it: "AQI 231", "82.5 µg/m³",
/// "94.5 %", "1,200,000,000 m³" (three significant digits, thousands
/// grouped).
fn quantity(v: f64, unit: &str) -> String {
    let text = crate::units::for_people(v);
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let number = if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    };
    match unit {
        "AQI" => format!("AQI {number}"),
        "" => number,
        "%" => format!("{number} %"),
        u if u.starts_with("level") => format!("level {number}{}", &u["level".len()..]),
        u => format!("{number} {u}"),
    }
}

/// Alerts firing now (the first 200).
fn alerts(o: &mut String, board: &Board) {
    let alerts = board.alerts();
    let _ = write!(o, "<h2>Active alerts ({})</h2>", alerts.len());
    if alerts.is_empty() {
        o.push_str("<p class=\"muted\" id=\"no-alerts\">None firing.</p>");
    } else {
        o.push_str(
            "<table id=\"alerts\"><tr><th>Severity</th><th>Alert</th><th>Where</th>\
             <th>Value</th><th>Since</th><th>Basis</th></tr>",
        );
        const SHOWN: usize = 200;
        for a in alerts.iter().take(SHOWN) {
            let wh: Vec<String> = ["district", "site", "sensor", "scope", "field"]
                .iter()
                .filter_map(|k| a.labels.get(*k).map(|v| format!("{k}={v}")))
                .collect();
            let _ = write!(
                o,
                "<tr><td class=\"sev-{0}\">{0}</td><td>{1}<br><span class=\"muted\">{2}</span></td>\
                 <td>{3}</td><td>{4} (threshold {5})</td><td>{6}</td><td class=\"muted\">{7}</td></tr>",
                a.severity.as_str(),
                esc(&a.name),
                esc(&a.rule),
                esc(&wh.join(" ")),
                esc(&quantity(a.value, &a.unit)),
                esc(&quantity(a.threshold, &a.unit)),
                board.local(a.starts_at_ms),
                esc(&a.standard)
            );
        }
        o.push_str("</table>");
        if alerts.len() > SHOWN {
            let _ = write!(
                o,
                "<p class=\"muted\">…and {} more (all in <a href=\"/api/status\">/api/status</a>).</p>",
                alerts.len() - SHOWN
            );
        }
    }
}

/// Pipeline health, and the links to the machine-readable endpoints.
fn pipeline(o: &mut String, board: &Board, m: &Metrics, now: i64) {
    let c = |x: &std::sync::atomic::AtomicU64| x.load(Relaxed);
    let flag = |b: bool, yes: &str, no: &str| {
        if b {
            format!("<span class=\"ok\">{yes}</span>")
        } else {
            format!("<span class=\"bad\">{no}</span>")
        }
    };
    let _ = write!(
        o,
        "<h2>Pipeline</h2><table id=\"pipeline\">\
         <tr><th>MQTT</th><td>{}</td></tr>\
         <tr><th>InfluxDB</th><td>{}</td></tr>\
         <tr><th>Spool</th><td id=\"spool\">{:.1} MiB on disk, {}{}</td></tr>\
         <tr><th>Newest reading</th><td id=\"newest\">{}</td></tr>\
         <tr><th>Messages in / acknowledged</th><td>{} / {}</td></tr>\
         <tr><th>Readings written</th><td>{}</td></tr>\
         <tr><th>Quarantined</th><td>{}</td></tr>\
         <tr><th>Webhook notices sent / queued / failed attempts</th><td>{} / {} / {}</td></tr>\
         <tr><th>Up since</th><td>{}</td></tr></table>\
         <p class=\"muted\">Machine-readable: <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/api/status\">/api/status</a> · <a href=\"/readyz\">/readyz</a></p></body></html>",
        flag(
            m.mqtt_subscribed.load(Relaxed),
            "connected, subscribed",
            "not subscribed"
        ),
        flag(m.sink_ok.load(Relaxed), "writable", "not writable"),
        c(&m.spool_bytes) as f64 / f64::from(1u32 << 20),
        waiting(m.spool_oldest_age_seconds(now)),
        if m.spool_full.load(Relaxed) {
            " — <span class=\"bad\">FULL, intake paused</span>"
        } else {
            ""
        },
        {
            let newest: Vec<String> = m
                .newest_readings()
                .into_iter()
                .map(|(kind, ms)| format!("{} {}", esc(&kind), board.local(ms)))
                .collect();
            if newest.is_empty() {
                "none yet".to_owned()
            } else {
                newest.join(" · ")
            }
        },
        c(&m.messages_in),
        c(&m.messages_acked),
        c(&m.points_written),
        m.quarantined_total(),
        c(&m.alerts_sent),
        c(&m.alerts_queued),
        c(&m.alerts_failed),
        board.local(board.started_ms())
    );
}

/// How long the oldest spooled message has waited, for people.
fn waiting(seconds: f64) -> String {
    if seconds <= 0.0 {
        return "nothing waiting".to_owned();
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("oldest waiting {s} s"),
        60..3600 => format!("oldest waiting {} min", s / 60),
        _ => format!("oldest waiting {} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spools_wait_is_said_in_seconds_minutes_or_hours() {
        assert_eq!(waiting(0.0), "nothing waiting");
        assert_eq!(waiting(0.4), "oldest waiting 0 s");
        assert_eq!(waiting(12.0), "oldest waiting 12 s");
        assert_eq!(waiting(600.0), "oldest waiting 10 min");
        assert_eq!(waiting(7_500.0), "oldest waiting 2 h 5 min");
    }
    use crate::alert::Observation;
    use crate::evaluate::aqi::Standard;

    #[test]
    fn the_page_escapes_what_sensors_name_and_colours_by_category() {
        let b = Board::new(Standard::Hj633_2026, chrono_tz::Asia::Shanghai);
        let obs = |site: &str, aqi: f64, hour: i64| Observation {
            kind: "air".into(),
            labels: vec![
                ("district".into(), "dongcheng".into()),
                ("site".into(), site.into()),
            ],
            metric: "aqi.hour".into(),
            start_ms: hour,
            end_ms: hour + 3_600_000,
            value: aqi,
            valid: true,
            details: Default::default(),
        };
        b.observe(&[
            obs("<script>x</script>", 35.0, 0),
            obs("dongsi", 260.0, 3_600_000),
        ]);
        // An older hour does not replace a newer one.
        b.observe(&[obs("dongsi", 20.0, 0)]);
        let m = Metrics::default();
        // Two hours after the newest hour began: current.
        let now = 3 * 3_600_000;
        let html = render_at(&b, &m, &["mqtt: not connected"], now);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(
            html.contains("background:#99004C;color:#fff\">260<"),
            "{html}"
        );
        assert!(
            html.contains("background:#00E400;color:#000\">35<"),
            "{html}"
        );
        assert!(html.contains("not ready: mqtt: not connected"));
        assert!(html.contains("None firing."));
        let j = b.to_json_at(&m, &[], now);
        assert_eq!(j["stations"].as_array().unwrap().len(), 2);
        assert_eq!(j["ready"], true);
        // Just over three hours after the 00:00 hour ended, the station
        // whose newest hour is 00:00 is stale and dongsi (01:00) is not; a
        // day later both are, grey, with how long nothing came.
        let now = 4 * 3_600_000 + 1;
        let j = b.to_json_at(&m, &[], now);
        let stale: Vec<(String, bool)> = j["stations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["site"].as_str().unwrap().to_owned(), s["stale"] == true))
            .collect();
        assert_eq!(
            stale,
            [("&lt;script&gt;x&lt;/script&gt;", true), ("dongsi", false)]
                .map(|(s, b)| (s.replace("&lt;", "<").replace("&gt;", ">"), b))
        );
        let html = render_at(&b, &m, &[], 26 * 3_600_000);
        assert!(!html.contains("background:#99004C"), "{html}");
        assert!(
            html.contains("background:#BBBBBB;color:#000\">260<"),
            "{html}"
        );
        assert!(html.contains("stale: nothing newer for 24 h"), "{html}");
        assert_eq!(
            b.to_json_at(&m, &[], 26 * 3_600_000)["stations"][1]["color"],
            "#99004C"
        );
    }

    /// The strip holds the 24 hours up to the newest, whatever order they
    /// came in: an hour missing is grey, a correction replaces its hour,
    /// older hours drop out.
    #[test]
    fn each_station_has_a_strip_of_its_last_24_hours() {
        let b = Board::new(Standard::Hj633_2026, chrono_tz::Asia::Shanghai);
        let h = |i: i64| 1_795_622_400_000 + i * 3_600_000;
        let obs = |i: i64, aqi: f64| Observation {
            kind: "air".into(),
            labels: vec![
                ("district".into(), "dongcheng".into()),
                ("site".into(), "dongsi".into()),
            ],
            metric: "aqi.hour".into(),
            start_ms: h(i),
            end_ms: h(i) + 3_600_000,
            value: aqi,
            valid: true,
            details: Default::default(),
        };
        // Hours 0..30, hour 20 missing, newest first then the rest; hour
        // 25 corrected from 40 to 260.
        let mut hours: Vec<i64> = (0..30).filter(|i| *i != 20).rev().collect();
        hours.swap(0, 10);
        for i in hours {
            b.observe(&[obs(i, if i == 25 { 40.0 } else { 30.0 + i as f64 })]);
        }
        b.observe(&[obs(25, 260.0)]);
        let s = &b.stations()[0];
        assert_eq!(s.hour_ms, h(29));
        let want: Vec<i64> = (6..30).filter(|i| *i != 20).map(h).collect();
        assert_eq!(s.recent.keys().copied().collect::<Vec<_>>(), want);
        assert_eq!(s.recent[&h(25)], 260);
        let html = render_at(&b, &Metrics::default(), &[], h(30));
        let svg = &html[html.find("<svg class=\"strip\"").unwrap()..];
        let svg = &svg[..svg.find("</svg>").unwrap()];
        assert_eq!(svg.matches("<rect ").count(), 24);
        // The 15th square is hour 20 (6 + 14): grey; the 20th is hour 25:
        // the colour of AQI 260; the last is hour 29 (AQI 59: moderate).
        let fills: Vec<&str> = svg.split("fill=\"").skip(1).map(|r| &r[..7]).collect();
        assert_eq!(fills[14], "#EEEEEE");
        assert_eq!(fills[19], "#99004C");
        assert_eq!(fills[23], "#FFFF00");
        assert!(svg.contains("AQI 260"), "{svg}");
        let j = b.to_json_at(&Metrics::default(), &[], h(30));
        assert_eq!(j["stations"][0]["last_24h"].as_array().unwrap().len(), 23);
    }

    /// The city's observed level is shown with its rule set and day; a
    /// station's level is not (it is detail, not the headline), and an
    /// older day does not replace a newer one.
    #[test]
    fn the_page_shows_the_city_observed_level() {
        let b = Board::new(Standard::Hj633_2026, chrono_tz::Asia::Shanghai);
        // 2026-11-26 00:00 and the day before, in Beijing.
        let (day, before) = (1_795_622_400_000, 1_795_536_000_000);
        let level = |scope: &str, set: &str, start: i64, v: f64| Observation {
            kind: "air".into(),
            labels: vec![(
                if scope == "city" { "scope" } else { "site" }.into(),
                scope.into(),
            )],
            metric: format!("alert_level.{set}"),
            start_ms: start,
            end_ms: start + 86_400_000,
            value: v,
            valid: true,
            details: Default::default(),
        };
        b.observe(&[
            level("city", "beijing-2016", day, 2.0),
            level("city", "beijing-2016", before, 1.0),
            level("dongsi", "beijing-2016", day, 4.0),
        ]);
        let html = render(&b, &Metrics::default(), &[]);
        assert!(
            html.contains("<b>yellow</b> by the 2016–2018 plan (day of 2026-11-26)"),
            "{html}"
        );
        assert!(!html.contains("<b>red</b>"), "{html}");
        let j = b.to_json(&Metrics::default(), &[]);
        assert_eq!(j["city_observed_level"][0]["name"], "yellow");
    }

    /// People see pollutant names and values with their units, not keys.
    #[test]
    fn values_and_pollutants_read_as_a_person_writes_them() {
        assert_eq!(quantity(231.0, "AQI"), "AQI 231");
        assert_eq!(quantity(82.456, "µg/m³"), "82.5 µg/m³");
        assert_eq!(quantity(94.5, "%"), "94.5 %");
        assert_eq!(quantity(1.2e9, "m³ per year"), "1,200,000,000 m³ per year");
        assert_eq!(quantity(-1234.6, "m³"), "-1,235 m³");
        assert_eq!(
            quantity(3.0, "level (1 blue, 2 yellow, 3 orange, 4 red)"),
            "level 3 (1 blue, 2 yellow, 3 orange, 4 red)"
        );
        assert_eq!(
            crate::evaluate::aqi::pollutants("pm25_24h,pm10_24h,o3_8h"),
            "PM2.5, PM10, O₃ 8 h"
        );
    }
}
