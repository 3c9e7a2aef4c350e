//! Logging: human-readable by default, JSON lines with `--log-format json`.
//! `RUST_LOG` overrides the configured level. Under systemd, when stderr
//! is the journal (`JOURNAL_STREAM` names stderr's device and inode), each
//! line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace; sd-daemon(3)), which journald takes off
//! and records as PRIORITY, so `journalctl -p warning` works; human lines
//! carry no timestamp and no colour there — journald records the time.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

pub fn init(log_format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journald);
    let _ = match (log_format, journald) {
        (LogFormat::Human, false) => builder.try_init(),
        (LogFormat::Human, true) => builder
            .event_format(Priority(format().without_time()))
            .try_init(),
        (LogFormat::Json, false) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (LogFormat::Json, true) => builder
            .fmt_fields(JsonFields::new())
            .event_format(Priority(
                format().json().flatten_event(true).with_current_span(false),
            ))
            .try_init(),
    };
}

/// Whether stderr is the journal: `JOURNAL_STREAM` (`<device>:<inode>`)
/// is stderr's (systemd.exec(5): compare, since the variable is inherited
/// by children whose stderr may be elsewhere).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| names_stream(&v.to_string_lossy(), m.dev(), m.ino()))
}

/// Whether a `JOURNAL_STREAM` value names the stream `dev`:`ino`.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// The syslog priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A format that starts each line with `<priority>`.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(json: bool) -> Vec<String> {
        let buf = Buffer::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || out.clone());
        let log = || {
            tracing::error!("e");
            tracing::warn!(key = 1, "w");
            tracing::info!("i");
            tracing::debug!("d");
        };
        if json {
            let s = builder
                .fmt_fields(JsonFields::new())
                .event_format(Priority(format().json().flatten_event(true)))
                .finish();
            tracing::subscriber::with_default(s, log);
        } else {
            let s = builder
                .event_format(Priority(format().without_time()))
                .finish();
            tracing::subscriber::with_default(s, log);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn each_line_starts_with_its_syslog_priority() {
        let human = lines(false);
        let prefixes: Vec<&str> = human.iter().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{human:?}");
        assert!(human[1].ends_with("w key=1"), "{human:?}");
        // JSON lines stay JSON once journald takes the prefix off.
        for (line, level) in lines(true).iter().zip(["ERROR", "WARN", "INFO", "DEBUG"]) {
            let v: serde_json::Value = serde_json::from_str(&line[3..]).unwrap();
            assert_eq!(v["level"], level);
        }
    }

    #[test]
    fn the_journal_is_stderr_only_when_the_variable_names_it() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346));
        assert!(!names_stream("garbage", 8, 12345));
        assert!(!names_stream("", 0, 0));
    }
}
