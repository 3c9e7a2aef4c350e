//! The `lantian` command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lantian::config::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// lantian (蓝天) — ingest environmental sensor networks from MQTT into
/// InfluxDB, losslessly.
///
/// Configuration comes from a TOML file (`--config`; every key is documented
/// in config/lantian.toml) overlaid with environment variables named
/// LANTIAN__SECTION__KEY, e.g. LANTIAN__MQTT__PORT=1884 or
/// LANTIAN__INFLUXDB__TOKEN=... Without a file, built-in defaults apply:
/// broker 127.0.0.1:1883, topics env/#, InfluxDB 1.x at
/// http://127.0.0.1:8086, database "env".
#[derive(Parser)]
#[command(version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT, then flush, acknowledge and exit.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Log format; overrides log.format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a configuration: print every problem with its key path and
    /// exit 2, or print a one-line summary and exit 0.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match config::load(config.as_deref()) {
            Ok(s) => {
                println!("configuration OK: {}", s.summary());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!(
                    "{} problem{} in the configuration:",
                    problems.0.len(),
                    if problems.0.len() == 1 { "" } else { "s" }
                );
                for p in &problems.0 {
                    eprintln!("  {p}");
                }
                ExitCode::from(2)
            }
        },
        Command::Run { config, log_format } => {
            let settings = match config::load(config.as_deref()) {
                Ok(s) => s,
                Err(problems) => {
                    eprintln!("lantian: cannot start, the configuration has problems:");
                    for p in &problems.0 {
                        eprintln!("  {p}");
                    }
                    return ExitCode::from(2);
                }
            };
            lantian::telemetry::init(
                log_format.unwrap_or(settings.log.format),
                &settings.log.level,
            );
            if config.is_none() {
                tracing::info!(
                    "no --config given: using built-in defaults and LANTIAN__* variables"
                );
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lantian: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                match lantian::app::run(settings, shutdown).await {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// First SIGTERM/SIGINT: orderly shutdown. Second: exit at once (nothing
/// unacknowledged is lost; the broker redelivers it).
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if n == 0 {
            tracing::info!(
                signal = name,
                "stopping: flushing and acknowledging what is in hand"
            );
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting now");
            std::process::exit(130);
        }
    }
}
