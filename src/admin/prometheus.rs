//! `/metrics` in the Prometheus text exposition format (0.0.4): every
//! metric of [`CATALOG`] with its HELP and TYPE lines, the quarantine
//! counts by reason, the write-latency histogram and the standard
//! `process_*` metrics.

use std::fmt::Write;

use crate::metrics::{CATALOG, Metrics, WRITE_BUCKETS};
use crate::reading::Reason;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

pub fn render(m: &Metrics, ready: bool) -> String {
    let mut o = String::with_capacity(8 << 10);
    header(
        &mut o,
        "lantian_build_info",
        "gauge",
        "lantian version and git revision",
    );
    let _ = writeln!(
        o,
        "lantian_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("LANTIAN_GIT_REVISION")
    );
    one(
        &mut o,
        "lantian_ready",
        "gauge",
        "1 when /readyz answers 200",
        u8::from(ready),
    );
    for e in CATALOG {
        let name = format!("lantian_{}", e.name);
        one(&mut o, &name, e.kind.as_str(), e.help, (e.read)(m));
    }
    quarantine(&mut o, m);
    one(
        &mut o,
        "lantian_spool_oldest_record_age_seconds",
        "gauge",
        "How long the oldest message in the spool not yet written has waited (0: none waits)",
        m.spool_oldest_age_seconds(chrono::Utc::now().timestamp_millis()),
    );
    freshness(&mut o, m);
    partitions(&mut o, m);
    receivers(&mut o, m);
    write_latency(&mut o, m);
    process(&mut o);
    o
}

fn quarantine(o: &mut String, m: &Metrics) {
    header(
        o,
        "lantian_quarantined_total",
        "counter",
        "Inputs quarantined, by reason",
    );
    for r in Reason::ALL {
        let _ = writeln!(
            o,
            "lantian_quarantined_total{{reason=\"{}\"}} {}",
            r.as_str(),
            m.quarantined_count(r)
        );
    }
}

/// A label value as the text format writes it: `\\`, `\"` and `\n`
/// escaped.
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The reading time of the newest reading written, per kind: its age is
/// `time() - lantian_last_reading_timestamp_seconds`.
fn freshness(o: &mut String, m: &Metrics) {
    let name = "lantian_last_reading_timestamp_seconds";
    header(
        o,
        name,
        "gauge",
        "Reading time of the newest reading written, per kind (Unix time)",
    );
    for (kind, ms) in m.newest_readings() {
        let _ = writeln!(
            o,
            "{name}{{kind=\"{}\"}} {}",
            label_value(&kind),
            ms as f64 / 1000.0
        );
    }
}

/// A cluster worker's partitions: one series per partition it holds.
fn partitions(o: &mut String, m: &Metrics) {
    let lags = m.partition_lags();
    if lags.is_empty() {
        return;
    }
    let name = "lantian_cluster_partition_lag";
    header(
        o,
        name,
        "gauge",
        "Messages of a partition this worker holds that are not yet acknowledged (waiting or in hand)",
    );
    for (p, lag) in lags {
        let _ = writeln!(o, "{name}{{partition=\"{p}\"}} {lag}");
    }
}

/// Webhook delivery per receiver.
fn receivers(o: &mut String, m: &Metrics) {
    let stats = m.receiver_stats();
    type Read = fn(&crate::metrics::ReceiverStats) -> Option<f64>;
    let families: [(&str, &str, &str, Read); 5] = [
        (
            "lantian_webhook_sent_total",
            "counter",
            "Notices the receiver accepted",
            |r| Some(r.sent as f64),
        ),
        (
            "lantian_webhook_failed_total",
            "counter",
            "Delivery attempts to the receiver that failed (each is retried)",
            |r| Some(r.failed as f64),
        ),
        (
            "lantian_webhook_dead_total",
            "counter",
            "Notices the receiver refused for good (kept in its dead directory)",
            |r| Some(r.dead as f64),
        ),
        (
            "lantian_webhook_queued",
            "gauge",
            "Notices waiting in the receiver's queue",
            |r| Some(r.queued as f64),
        ),
        (
            "lantian_webhook_last_success_timestamp_seconds",
            "gauge",
            "When the receiver last accepted a notice (Unix time)",
            |r| r.last_success,
        ),
    ];
    for (name, kind, help, read) in families {
        header(o, name, kind, help);
        for (receiver, r) in &stats {
            if let Some(v) = read(r) {
                let _ = writeln!(o, "{name}{{receiver=\"{}\"}} {v}", label_value(receiver));
            }
        }
    }
}

fn write_latency(o: &mut String, m: &Metrics) {
    let name = "lantian_influx_write_duration_seconds";
    header(o, name, "histogram", "InfluxDB write request latency");
    let (buckets, sum) = m.write_histogram();
    for (i, n) in buckets.iter().enumerate() {
        let le = WRITE_BUCKETS
            .get(i)
            .map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_sum {sum}");
    let _ = writeln!(o, "{name}_count {}", buckets.last().copied().unwrap_or(0));
}

/// The standard process metrics (as the Prometheus client libraries
/// export them), read from /proc.
fn process(o: &mut String) {
    let Some(p) = ProcessStats::read() else {
        return;
    };
    one(
        o,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    one(
        o,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes,
    );
    one(
        o,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    );
    one(
        o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
    one(
        o,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    one(
        o,
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads,
    );
}

/// What /proc says of this process.
#[derive(Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: usize,
    pub threads: u64,
}

/// Clock ticks per second and page size: the values of every Linux
/// platform lantian targets (x86_64, aarch64).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Self::parse(&stat, btime, open_fds)
    }

    /// From the text of /proc/self/stat (see proc(5)).
    pub fn parse(stat: &str, boot_time: f64, open_fds: usize) -> Option<ProcessStats> {
        // The command name is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields from the third (state) on: utime is the 14th, so index 11.
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(ProcessStats {
            cpu_seconds: (num(11)? + num(12)?) as f64 / TICKS,
            threads: num(17)?,
            start_time_seconds: boot_time + num(19)? as f64 / TICKS,
            virtual_bytes: num(20)?,
            resident_bytes: num(21)? * PAGE,
            open_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_past_a_command_name_with_spaces() {
        let stat = "1234 (lantian (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 7 0 1000 123456789 2000 18446744073709551615";
        let p = ProcessStats::parse(stat, 1_700_000_000.0, 9).unwrap();
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 2000 * 4096,
                virtual_bytes: 123_456_789,
                start_time_seconds: 1_700_000_010.0,
                open_fds: 9,
                threads: 7,
            }
        );
    }

    #[test]
    fn every_catalogued_metric_has_help_and_type() {
        let text = render(&Metrics::default(), true);
        for e in CATALOG {
            let name = format!("lantian_{}", e.name);
            assert!(text.contains(&format!("# TYPE {name} {}\n", e.kind.as_str())));
            let help = text
                .lines()
                .find(|l| l.starts_with(&format!("# HELP {name} ")))
                .unwrap();
            assert!(help.len() > name.len() + 12, "{help}");
            assert!(text.contains(&format!("\n{name} 0\n")), "{name}");
        }
        assert!(text.contains("process_resident_memory_bytes "));
    }

    /// Deliveries per receiver: counted by name, the queue going up and
    /// down, the last success stamped; a removed receiver's queue leaves
    /// the total.
    #[test]
    fn webhook_deliveries_are_counted_per_receiver() {
        let m = Metrics::default();
        m.notices_queued("duty", 3);
        m.notices_queued("ops \"x\"", 1);
        m.notice_failed("duty", "id1", 0, "timeout");
        m.notice_delivered("duty", "id1", 1);
        m.notice_dequeued("duty");
        m.notice_dead("duty", "id2", 5, "400");
        m.notice_dequeued("duty");
        let text = render(&m, true);
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{series} ")))
                .unwrap_or_else(|| panic!("{series} in\n{text}"))
                .parse()
                .unwrap()
        };
        assert_eq!(value("lantian_webhook_sent_total{receiver=\"duty\"}"), 1.0);
        assert_eq!(
            value("lantian_webhook_failed_total{receiver=\"duty\"}"),
            2.0
        );
        assert_eq!(value("lantian_webhook_dead_total{receiver=\"duty\"}"), 1.0);
        assert_eq!(value("lantian_webhook_queued{receiver=\"duty\"}"), 1.0);
        assert_eq!(
            value("lantian_webhook_queued{receiver=\"ops \\\"x\\\"\"}"),
            1.0
        );
        let last = value("lantian_webhook_last_success_timestamp_seconds{receiver=\"duty\"}");
        assert!(last > 1.7e9, "{last}");
        assert!(!text.contains("lantian_webhook_last_success_timestamp_seconds{receiver=\"ops"));
        assert_eq!(value("lantian_alerts_queued"), 2.0);
        m.receiver_removed("duty");
        let text = render(&m, true);
        assert!(!text.contains("receiver=\"duty\""));
        assert!(text.contains("\nlantian_alerts_queued 1\n"));
    }
}
