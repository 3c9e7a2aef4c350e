//! Logging: human-readable by default, JSON lines with `--log-format json`.
//! `RUST_LOG` overrides the configured level. Under systemd (stderr is the
//! journal: `JOURNAL_STREAM` set) human lines carry no timestamp and no
//! colour — journald records the time itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journald);
    let _ = match (format, journald) {
        (LogFormat::Human, false) => builder.try_init(),
        (LogFormat::Human, true) => builder.without_time().try_init(),
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
