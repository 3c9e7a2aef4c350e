//! The `lantian` command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lantian::config::LogFormat;
use tokio_util::sync::CancellationToken;

/// `lantian --version`: the release and the git revision built.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("LANTIAN_GIT_REVISION"),
    ")"
);

/// The exit status of a configuration that has problems (sysexits.h
/// EX_CONFIG): the unit does not restart on it.
const EX_CONFIG: u8 = 78;

/// lantian (蓝天) — ingest environmental sensor networks from MQTT into
/// InfluxDB, losslessly.
///
/// Configuration comes from a TOML file (`--config`; every key is documented
/// in config/lantian.toml) overlaid with environment variables named
/// LANTIAN__SECTION__KEY, e.g. LANTIAN__MQTT__PORT=1884 or
/// LANTIAN__INFLUXDB__TOKEN=... Without a file, built-in defaults apply:
/// broker 127.0.0.1:1883, topics env/#, InfluxDB 1.x at
/// http://127.0.0.1:8086, database "env".
///
/// New here? `lantian demo` runs the whole pipeline on this machine with
/// nothing installed, and prints where to look.
///
/// Effective configuration: `lantian config`. Exit status 78 (EX_CONFIG):
/// the configuration has problems.
#[derive(Parser)]
#[command(version = VERSION, about, long_about, propagate_version = true)]
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
    /// The whole thing on this machine with nothing installed: an embedded
    /// MQTT broker, a simulated Beijing fleet (the 12 national stations,
    /// construction dust, VOC and catering sources, sewage plants) with a
    /// pollution episode, the full pipeline, and a local Parquet archive.
    /// Prints where to look (status page, archive); Ctrl-C stops.
    Demo(lantian::demo::DemoOptions),
    /// Run the simulated fleet against a real broker (development, load):
    /// HISTORY of minute readings at RATE messages a second, then a reading
    /// a minute until Ctrl-C (unless --no-live).
    Simulate {
        /// Broker address.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
        broker: String,
        /// Messages a second while publishing history (0: as fast as the
        /// broker takes them).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        history: std::time::Duration,
        /// Stop after the history.
        #[arg(long)]
        no_live: bool,
        /// Send the emission sources (dust, VOC, catering, sewage) as HJ 212
        /// data loggers to this lantian listener (`hj212.listen`): hourly
        /// data over TCP, each packet waiting for its ACK. Register them
        /// first: --print-hj212-devices.
        #[arg(long, value_name = "HOST:PORT")]
        hj212: Option<String>,
        /// Print the fleet's `[[hj212.devices]]` (TOML for lantian.toml)
        /// and exit.
        #[arg(long)]
        print_hj212_devices: bool,
    },
    /// A compliance report for a date range, from the Parquet archive or
    /// InfluxDB: daily AQI per station, exceedance and heavy-pollution
    /// days, sewage treatment rate per plant and city-wide, reclaimed-water
    /// pace, construction dust per district; with PNG charts.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["archive", "influx"])))]
    Report {
        /// First local date (YYYY-MM-DD), included.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last local date, included.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// md: one report.md with the charts; csv: one file per table.
        #[arg(long, value_enum, default_value = "md")]
        format: lantian::report::Format,
        /// Read the Parquet archive in DIR (e.g. lantian-demo/archive).
        #[arg(long, value_name = "DIR")]
        archive: Option<PathBuf>,
        /// Read InfluxDB 1.x at URL.
        #[arg(long, value_name = "URL")]
        influx: Option<String>,
        /// InfluxDB database (with --influx).
        #[arg(long, default_value = "env")]
        database: String,
        /// Where the report and charts go.
        #[arg(long, default_value = "lantian-report", value_name = "DIR")]
        out: PathBuf,
        /// Time zone of the dates.
        #[arg(long, default_value = "Asia/Shanghai")]
        timezone: String,
        /// Count construction-dust hours above this PM10 (µg/m³).
        #[arg(long, value_name = "UG_M3")]
        dust_limit: Option<f64>,
    },
    /// Check a configuration: print every problem with its key path and
    /// exit 78 (EX_CONFIG), or print a one-line summary and exit 0.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration: every key with its value and
    /// where it came from (default, the file, or the environment), as
    /// TOML; secrets redacted. A configuration with problems prints them
    /// and exits 78, as check-config does.
    Config {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Show what lantian would do with one message: the InfluxDB lines of
    /// its readings (stdout), or why it would be quarantined.
    ///
    /// Decodes and validates TOPIC and PAYLOAD (standard input when no
    /// PAYLOAD is given: a JSON or SenML body, or an HJ 212 packet on a
    /// `payload = "hj212"` topic) under the configuration, the way the
    /// daemon does, and prints one line-protocol line per reading, then
    /// `# quarantined: REASON: DETAIL` for what it refuses. Nothing is
    /// written anywhere. A reading without a time gets the current time.
    /// Exits 0 when nothing was quarantined, 1 otherwise, 78 when the
    /// configuration has problems.
    ///
    /// Example:
    ///   lantian try env/dongcheng/dongsi/air/aq1 '{"pm25": 35, "no2": 40}'
    #[command(verbatim_doc_comment)]
    Try {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// The MQTT topic (or `$hj212/tcp/ADDR` for the HJ 212 listener).
        topic: String,
        /// The payload; standard input when absent.
        payload: Option<String>,
    },
    /// Print a shell completion script, e.g.
    /// `lantian completions bash > /usr/share/bash-completion/completions/lantian`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (roff): lantian(1) on standard output, or
    /// with --out, lantian.1 and a page per command (lantian-run.1, …)
    /// into DIR, e.g. `lantian man --out /usr/share/man/man1`.
    Man {
        /// A directory for every page.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List the targets lantian checks (seeds/targets.toml, built in, with
    /// the configuration's [[alerts.targets]] applied), with each rule, its
    /// value and unit, and its citations: the city report's section and the
    /// standard and clause. Unconfirmed figures ship disabled.
    Targets {
        /// Include disabled targets.
        #[arg(long)]
        all: bool,
        /// Configuration file whose [[alerts.targets]] apply.
        #[arg(long, short, env = "LANTIAN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// HJ 212 tools (the national protocol of monitoring equipment).
    #[command(subcommand)]
    Hj212(Hj212Command),
    /// Compute the Air Quality Index for given concentrations.
    ///
    /// Prints one JSON object: aqi, iaqi per key, primary pollutant(s),
    /// category, level, colour, and any keys beyond the index, missing, or
    /// handled by a special rule (notes). Units: µg/m³ (CO mg/m³) for HJ
    /// 633; for EPA, PM µg/m³, o3_8h o3_1h co_8h ppm, so2_1h so2_24h
    /// no2_1h ppb. Every key given is indexed: which ones to give is yours.
    ///
    /// HJ 633 keys: pm25_24h pm10_24h so2_24h so2_1h no2_24h no2_1h co_24h
    /// co_1h o3_1h o3_8h. EPA keys: pm25_24h pm10_24h o3_8h o3_1h co_8h
    /// so2_1h so2_24h no2_1h.
    ///
    /// Which keys make which AQI (HJ 633, as CNEMC publishes it):
    ///   hourly (real-time)  pm25_24h pm10_24h = the 1-hour PM means,
    ///                       so2_1h no2_1h co_1h o3_1h; no o3_8h
    ///   daily, hj633-2026   the 24-hour means pm25_24h pm10_24h so2_24h
    ///                       no2_24h co_24h, and o3_8h = the day's highest
    ///                       8-hour O3 mean
    ///   daily, hj633-2012   the same, and o3_1h = the day's highest hour
    /// hj633-2026 rounds each concentration (to an integer, CO to 0.1)
    /// before interpolating; hj633-2012 uses it as given.
    ///
    /// Examples:
    ///   lantian aqi pm25_24h=80 o3_1h=120 so2_1h=8 no2_1h=40 co_1h=0.6
    ///   echo '{"pm25_24h": 80}' | lantian aqi --standard epa-2024 --json-lines
    #[command(verbatim_doc_comment)]
    Aqi {
        /// Index edition.
        #[arg(long, short, default_value = "hj633-2026",
              value_parser = ["hj633-2026", "hj633-2012", "epa-2024"])]
        standard: String,
        /// Read one JSON object per line from stdin and write one result per
        /// line; a bad line gives {"error": ...} and processing carries on.
        #[arg(long, conflicts_with = "values")]
        json_lines: bool,
        /// Concentrations as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE", required_unless_present = "json_lines")]
        values: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Hj212Command {
    /// Decode HJ 212 packets from standard input into JSON lines.
    ///
    /// One packet a line on standard input (`##`, length, data segment,
    /// CRC; CR LF optional), one JSON object a line
    /// on standard output: qn, st, cn, mn, flag {raw, ack, split,
    /// version}, data_time (RFC 3339, Beijing time: the start of the
    /// period for minute, hour and day data), crc (ok, or mismatch under
    /// --crc any), values {code: {Rtd/Avg/Min/Max/Cou: number, Flag:
    /// letter, …}}, and fields, codes_2005 (old codes mapped), encrypted
    /// (an HJ 212-2025 SM4-encrypted data area, decrypted with
    /// --sm4-key-file), notes when there are any. A packet it refuses
    /// (CRC mismatch, encrypted without a key) gives {"error": "..."} and the
    /// next line is read. Passwords (PW, and NewPW in the data area) are
    /// never printed. Exits 0 when
    /// every packet decoded, 1 when any was refused.
    ///
    /// Example:
    ///   printf '%s\r\n' '##0137QN=20160801085857223;ST=32;CN=2081;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;RestartTime=20160801085624&&9AC1' | lantian hj212 parse
    #[command(verbatim_doc_comment)]
    Parse {
        /// The CRC the device writes: hj212 (the standard's), modbus,
        /// modbus-swapped, arc, or any (not checked; a mismatch is
        /// reported, not refused).
        #[arg(long, default_value = "hj212", value_parser = lantian::decode::hj212::CrcPolicy::NAMES)]
        crc: String,
        /// A file holding the device's SM4 key (32 hex digits, or 16
        /// characters), to decrypt HJ 212-2025 encrypted data areas.
        #[arg(long, value_name = "PATH")]
        sm4_key_file: Option<std::path::PathBuf>,
    },
}

fn hj212(cmd: Hj212Command) -> ExitCode {
    use lantian::decode::hj212::{CrcPolicy, crypt::Key, parse_lines};
    let Hj212Command::Parse { crc, sm4_key_file } = cmd;
    let policy = CrcPolicy::parse(&crc).unwrap_or_default();
    let key = match sm4_key_file.map(|path| {
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Key::parse(&text).map_err(|e| format!("{}: {e}", path.display())))
    }) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            eprintln!("lantian hj212 parse: --sm4-key-file {e}");
            return ExitCode::from(2);
        }
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    match parse_lines(policy, key.as_ref(), stdin, stdout) {
        Ok((_, 0)) => ExitCode::SUCCESS,
        Ok((parsed, refused)) => {
            eprintln!(
                "lantian hj212 parse: {refused} of {} packets refused",
                parsed + refused
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lantian hj212 parse: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    // polars sizes its thread pool from this on first use; by default it
    // takes every core, which would starve the async runtime on small
    // machines. Set before any thread exists.
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        // SAFETY: single-threaded here, before the runtime starts.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", "2") };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Targets { all, config } => targets(all, config),
        Command::Hj212(cmd) => hj212(cmd),
        Command::Aqi {
            standard,
            json_lines,
            values,
        } => aqi(&standard, json_lines, &values),
        Command::Demo(opts) => {
            async_main(|stop| async move { lantian::demo::demo(opts, stop).await })
        }
        Command::Simulate {
            print_hj212_devices: true,
            ..
        } => {
            print!("{}", lantian::demo::hj212_devices_toml());
            ExitCode::SUCCESS
        }
        Command::Simulate {
            broker,
            rate,
            history,
            no_live,
            hj212,
            ..
        } => {
            lantian::telemetry::init(LogFormat::Human, "warn");
            async_main(|stop| async move {
                let o = lantian::demo::Simulation {
                    broker,
                    rate,
                    history,
                    live: !no_live,
                    hj212,
                };
                lantian::demo::simulate(o, stop).await
            })
        }
        Command::Report {
            from,
            to,
            format,
            archive,
            influx,
            database,
            out,
            timezone,
            dust_limit,
        } => report(&timezone, |tz| lantian::report::Options {
            source: match (archive, influx) {
                (Some(dir), _) => lantian::report::Source::Archive(dir),
                (None, Some(url)) => lantian::report::Source::Influx { url, database },
                (None, None) => unreachable!("clap requires one"),
            },
            from,
            to,
            format,
            out,
            tz,
            dust_limit,
        }),
        Command::CheckConfig { config } => check_config(config),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lantian",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { out } => man(out),
        Command::Try {
            config,
            topic,
            payload,
        } => try_message(config, &topic, payload),
        Command::Config { config } => match load_or_exit("config", config) {
            Ok(s) => {
                print!("{}", lantian::config::effective(&s.source));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config, log_format } => run(config, log_format),
    }
}

/// `lantian man`: the manual pages from the command line's own help.
fn man(out: Option<PathBuf>) -> ExitCode {
    use clap::CommandFactory;
    let cmd = Cli::command().name("lantian");
    let written = match &out {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lantian man: {e}");
            ExitCode::from(2)
        }
    }
}

/// The configuration for command `cmd`, or its problems printed (each
/// prefixed `lantian cmd:`) and the exit status EX_CONFIG.
fn load_or_exit(cmd: &str, config: Option<PathBuf>) -> Result<lantian::config::Settings, ExitCode> {
    lantian::app::load(config.as_deref()).map_err(|problems| {
        for p in &problems.0 {
            eprintln!("lantian {cmd}: {p}");
        }
        ExitCode::from(EX_CONFIG)
    })
}

/// `lantian try`: what one message becomes.
fn try_message(config: Option<PathBuf>, topic: &str, payload: Option<String>) -> ExitCode {
    let settings = match load_or_exit("try", config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let payload = match payload {
        Some(p) => p.into_bytes(),
        None => {
            let mut b = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut b) {
                eprintln!("lantian try: standard input: {e}");
                return ExitCode::from(2);
            }
            b
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    match lantian::app::try_message(&settings, topic, &payload, now) {
        Ok(tried) => {
            for l in &tried.lines {
                println!("{l}");
            }
            for (reason, detail) in &tried.quarantined {
                println!("# quarantined: {reason}: {detail}");
            }
            if tried.quarantined.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("lantian try: {e:#}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `lantian targets`: the active targets with their sources.
fn targets(all: bool, config: Option<PathBuf>) -> ExitCode {
    let settings = match load_or_exit("targets", config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match settings.targets().map_err(|e| format!("{e:?}")) {
        Ok(t) => {
            print!("{}", lantian::evaluate::targets::render(&t, all));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lantian targets: {e}");
            ExitCode::from(2)
        }
    }
}

/// `lantian aqi`: the AQI of values given as arguments or JSON lines.
fn aqi(standard: &str, json_lines: bool, values: &[String]) -> ExitCode {
    use lantian::evaluate::aqi::{Standard, cli};
    let standard: Standard = match standard.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lantian aqi: {e}");
            return ExitCode::from(2);
        }
    };
    if json_lines {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::BufWriter::new(std::io::stdout().lock());
        return match cli::json_lines(standard, stdin, stdout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lantian aqi: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match cli::from_args(standard, values) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lantian aqi: {e}");
            ExitCode::from(2)
        }
    }
}

/// `lantian report`: daily tables and charts from the archive or InfluxDB.
fn report(
    timezone: &str,
    options: impl FnOnce(chrono_tz::Tz) -> lantian::report::Options,
) -> ExitCode {
    let opts = match timezone.parse() {
        Ok(tz) => options(tz),
        Err(_) => {
            eprintln!("lantian report: --timezone {timezone:?} is not an IANA zone");
            return ExitCode::from(2);
        }
    };
    async_main(|_stop| async move {
        let files = lantian::report::run(&opts).await?;
        for f in files {
            println!("{}", f.display());
        }
        Ok(())
    })
}

/// `lantian check-config`: every problem, or a one-line summary.
fn check_config(config: Option<PathBuf>) -> ExitCode {
    match lantian::app::load(config.as_deref()) {
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
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `lantian run`: the daemon.
fn run(config: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let settings = match lantian::app::load(config.as_deref()) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("lantian: cannot start, the configuration has problems:");
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            // Not restarted by systemd (RestartPreventExitStatus=78):
            // the same file would fail the same way.
            return ExitCode::from(EX_CONFIG);
        }
    };
    lantian::telemetry::init(
        log_format.unwrap_or(settings.log.format),
        &settings.log.level,
    );
    if config.is_none() {
        tracing::info!("no --config given: using built-in defaults and LANTIAN__* variables");
    }
    async_main(|shutdown| async move {
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(config.clone(), reload_tx));
        let hooks = lantian::app::Hooks {
            reload: Some(reload_rx),
            ..Default::default()
        };
        lantian::app::run_with(settings, shutdown, hooks)
            .await
            .map(|_| ())
    })
}

/// Runs `f` on a multi-threaded runtime with SIGINT/SIGTERM cancelling
/// its token (a second signal exits at once); exit 0 on Ok.
fn async_main<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    lantian::tls::install_crypto_provider();
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
        let stop = CancellationToken::new();
        tokio::spawn(wait_for_signal(stop.clone()));
        match f(stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // Through the log when there is one (JSON logs stay JSON).
                if tracing::dispatcher::has_been_set() {
                    tracing::error!("{e:#}");
                } else {
                    eprintln!("lantian: {e:#}");
                }
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP: read the configuration file again and hand it to the daemon,
/// which applies its targets and webhook receivers (other sections need a
/// restart). A file with problems is refused and the running one kept.
async fn reload_on_sighup(
    path: Option<PathBuf>,
    tx: tokio::sync::mpsc::Sender<lantian::config::Settings>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading targets and receivers");
        match lantian::app::load(path.as_deref()) {
            Ok(s) => {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
            Err(problems) => {
                for p in &problems.0 {
                    tracing::warn!(problem = %p, "reload refused");
                }
                lantian::systemd::notify(
                    "STATUS=reload refused: the file has problems (see the log); running the previous configuration",
                );
            }
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
            lantian::systemd::notify("STOPPING=1");
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting now");
            std::process::exit(130);
        }
    }
}
