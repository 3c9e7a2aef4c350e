//! Typed configuration: one struct tree, every field documented, defaults in
//! one place (the `Default` impls below), loaded from a TOML file overlaid
//! with `LANTIAN__SECTION__KEY` environment variables (see [`load`]).
//!
//! `config/lantian.toml` in the repository is the annotated reference; a
//! unit test checks that it parses and equals these defaults where it says so.

mod load;
mod show;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use crate::units::{ByteSize, HumanDuration, Secret};
pub use load::{
    Check, Problem, Problems, Source, load, load_checked, load_from_str, load_from_str_checked,
};
pub use show::effective;

/// The whole configuration. Unknown keys anywhere are errors.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where readings come from.
    pub mqtt: MqttConfig,
    /// Where readings go.
    pub influxdb: InfluxConfig,
    /// How topics map to measurement and tags.
    pub topics: TopicsConfig,
    /// What counts as a valid reading.
    pub validation: ValidationConfig,
    /// Per-quantity overrides of the built-in registry (unit, min, max), and
    /// new quantities. Keyed by field name, e.g. `[quantities.pm25]`.
    pub quantities: BTreeMap<String, QuantityOverride>,
    /// Buffers between stages and process lifecycle.
    pub pipeline: PipelineConfig,
    /// The durable spool between MQTT and the sinks.
    pub spool: SpoolConfig,
    /// Event-time windows (aggregates written as `{kind}_{size}`).
    pub windows: WindowsConfig,
    /// The Air Quality Index per site (measurement `aqi`).
    pub aqi: AqiConfig,
    /// Alerts: target overrides, webhook receivers, the outbox.
    pub alerts: AlertsConfig,
    /// The local Parquet archive (a second sink, or the only one).
    pub archive: ArchiveConfig,
    /// The admin HTTP endpoint: health, readiness, metrics, status page.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// HJ 212 data loggers: the device registry and the TCP listener.
    pub hj212: Hj212Config,
    /// Several processes over NATS JetStream: edges and workers.
    pub cluster: ClusterConfig,
    /// The merged tree these settings were read from (file and
    /// environment): what a reload compares.
    #[serde(skip)]
    pub source: Source,
}

/// The longest HJ 212 packet: `##`, 4 digits of length, 9,999 bytes of
/// data, the CRC and CR LF.
pub const HJ212_MAX_PACKET: usize = 2 + 4 + 9999 + 4 + 2;

/// HJ 212 (HJ 212-2017/2025, HJ/T 212-2005) equipment: the devices lantian
/// takes packets from, and a TCP listener for data loggers (off unless
/// `listen` is set). Packets may also arrive over MQTT, on a topic
/// template with `payload = "hj212"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hj212Config {
    /// Address the TCP listener binds, e.g. "0.0.0.0:9212"; off when unset.
    pub listen: Option<String>,
    /// Loggers connected at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection silent this long is closed (loggers reconnect).
    pub idle_timeout: HumanDuration,
    /// The longest packet taken, bytes (`##`, length, data, CRC, CR LF).
    pub max_packet_bytes: usize,
    /// Packets a second taken from one device (MN); faster senders are
    /// read more slowly (TCP pushes back), never dropped.
    pub max_packets_per_second: f64,
    /// The devices; a packet from any other MN is quarantined
    /// (`unknown_device`).
    pub devices: Vec<Hj212Device>,
}

impl Default for Hj212Config {
    fn default() -> Self {
        Self {
            listen: None,
            max_connections: 1024,
            idle_timeout: HumanDuration::from_secs(600),
            max_packet_bytes: HJ212_MAX_PACKET,
            max_packets_per_second: 20.0,
            devices: Vec::new(),
        }
    }
}

/// One HJ 212 device (data logger), known by its MN.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hj212Device {
    /// The device's MN (unique).
    pub mn: String,
    /// Its access password (PW); packets with another are quarantined
    /// (`bad_password`). Unset: not checked. Prefer `password_file`.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Its SM4 key, when it encrypts its data area (HJ 212-2025 §6.4): 32
    /// hex digits, or 16 characters. Without one, its encrypted packets
    /// are quarantined (`encrypted`). Prefer `sm4_key_file`.
    #[serde(default)]
    pub sm4_key: Option<Secret>,
    #[serde(default)]
    pub sm4_key_file: Option<PathBuf>,
    /// Tags of its readings, as a topic would give them.
    pub district: String,
    pub site: String,
    /// The sensor network (measurement): one of `topics.kinds`.
    pub kind: String,
    /// The `sensor` tag; the MN when unset.
    #[serde(default)]
    pub sensor: Option<String>,
    /// More tags of its readings, e.g. `{ industry = "catering" }` (which
    /// the VOC targets match on).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The CRC it writes: "hj212" (the standard's), "modbus",
    /// "modbus-swapped", "arc", or "any" (not checked).
    #[serde(default = "Hj212Device::default_crc")]
    pub crc: String,
    /// Units it sends, per pollutant code, where they differ from the
    /// defaults (PM and gases µg/m³, CO, NMHC and oil fume mg/m³, water
    /// mg/L, flow L/s), e.g. `{ a34002 = "mg/m3" }`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Field names per pollutant code, where they differ from the built-in
    /// map (w01018 cod, w21003 nh3n, …), e.g. `{ w00000 = "inflow_m3h" }`
    /// for the flow meter at a plant's inlet.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Which data feeds the windows, the AQI and the alerts: "hour" (CN
    /// 2061, the default), "minute" (2051), "day" (2031), "realtime"
    /// (2011) or "none". The others are stored, not aggregated.
    #[serde(default = "Hj212Device::default_aggregate")]
    pub aggregate: String,
    /// The period of its minute data (CN 2051), when it aggregates them.
    #[serde(default = "Hj212Device::default_minute_interval")]
    pub minute_interval: HumanDuration,
}

impl Hj212Device {
    fn default_crc() -> String {
        "hj212".into()
    }
    fn default_aggregate() -> String {
        "hour".into()
    }
    fn default_minute_interval() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 usually TLS).
    pub port: u16,
    /// Client id. With a persistent session the broker keys the session
    /// (subscriptions and queued messages) on it, so keep it stable.
    pub client_id: String,
    /// Keep the session across restarts (MQTT clean-session off), so the
    /// broker holds messages while lantian is down. Turning this on loses
    /// whatever the broker queued for us when we disconnect.
    pub clean_session: bool,
    /// Username, if the broker requires one.
    pub username: Option<String>,
    /// Password (prefer `password_file` or `LANTIAN__MQTT__PASSWORD`).
    pub password: Option<Secret>,
    /// File whose content (trailing newline removed) is the password.
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval: a ping goes out when the link is idle this long.
    pub keep_alive: HumanDuration,
    /// How long one connection attempt may take.
    pub connect_timeout: HumanDuration,
    /// First delay before reconnecting after a failure; doubles each time.
    pub reconnect_min: HumanDuration,
    /// Cap on the reconnect delay.
    pub reconnect_max: HumanDuration,
    /// Largest MQTT packet accepted. Keep this at the protocol maximum
    /// (256 MiB) so a big message reaches validation and is quarantined
    /// (`validation.max_payload_bytes`) instead of breaking the connection,
    /// which the broker would answer by redelivering it forever.
    pub max_packet_size: ByteSize,
    /// Topic filters to subscribe to.
    pub subscriptions: Vec<Subscription>,
    /// TLS; present means on.
    pub tls: Option<TlsConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "lantian".into(),
            clean_session: false,
            username: None,
            password: None,
            password_file: None,
            keep_alive: HumanDuration::from_secs(60),
            connect_timeout: HumanDuration::from_secs(10),
            reconnect_min: HumanDuration::from_millis(250),
            reconnect_max: HumanDuration::from_secs(30),
            max_packet_size: ByteSize(MQTT_MAX_PACKET),
            subscriptions: vec![Subscription::default()],
            tls: None,
        }
    }
}

/// The largest packet MQTT 3.1.1 can express (remaining length 268,435,455).
pub const MQTT_MAX_PACKET: u64 = 268_435_455;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic filter, wildcards allowed (`env/#`, `env/+/+/air/+`,
    /// `$share/lantian/env/#` to share the load between instances).
    pub filter: String,
    /// 0, 1 or 2. QoS 0 readings can be lost by the broker; use 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            filter: "env/#".into(),
            qos: 1,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require client auth.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// InfluxDB 1.x `/write` (db, rp, user/password).
    V1,
    /// InfluxDB 2.x/3.x and compatibles `/api/v2/write` (org, bucket, token).
    V2,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Write to InfluxDB (false: only the Parquet archive, which must then
    /// be enabled).
    pub enabled: bool,
    /// "v1" or "v2".
    pub api: InfluxApi,
    /// Base URL; a path prefix (reverse proxy) is kept.
    pub url: String,
    /// v1: database.
    pub database: String,
    /// v1: retention policy (the database default when unset).
    pub retention_policy: Option<String>,
    /// v1: the retention policy of the minute windows (`*_1m`), which
    /// are many and needed briefly (e.g. "minute", 30 days, as
    /// deploy/influxdb/setup.iql creates it); unset: `retention_policy`.
    pub minute_retention_policy: Option<String>,
    /// v1: user, if authentication is on.
    pub username: Option<String>,
    /// v1: password.
    pub password: Option<Secret>,
    /// v1: file holding the password.
    pub password_file: Option<PathBuf>,
    /// v2: organisation.
    pub org: Option<String>,
    /// v2: bucket.
    pub bucket: Option<String>,
    /// v2: API token (prefer `token_file` or `LANTIAN__INFLUXDB__TOKEN`).
    pub token: Option<Secret>,
    /// v2: file holding the token.
    pub token_file: Option<PathBuf>,
    /// Compress request bodies with gzip.
    pub gzip: bool,
    /// TCP/TLS connect timeout.
    pub connect_timeout: HumanDuration,
    /// Whole-request timeout.
    pub request_timeout: HumanDuration,
    /// A batch is written when it holds this many lines...
    pub batch_max_lines: usize,
    /// ...or this many bytes of line protocol...
    pub batch_max_bytes: ByteSize,
    /// ...or when the input goes idle for this long (0 = write as soon as
    /// no more messages are waiting; the broker's in-flight window is small,
    /// so waiting longer usually costs throughput, not gains it).
    pub batch_linger: HumanDuration,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    /// Writes are retried until they succeed or lantian stops: a reading is
    /// never dropped because InfluxDB is away.
    pub retry_initial: HumanDuration,
    /// Cap on the retry delay (a `Retry-After` from the server wins).
    pub retry_max: HumanDuration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            api: InfluxApi::V1,
            url: "http://127.0.0.1:8086".into(),
            database: "env".into(),
            retention_policy: None,
            minute_retention_policy: None,
            username: None,
            password: None,
            password_file: None,
            org: None,
            bucket: None,
            token: None,
            token_file: None,
            gzip: true,
            connect_timeout: HumanDuration::from_secs(5),
            request_timeout: HumanDuration::from_secs(30),
            batch_max_lines: 5000,
            batch_max_bytes: ByteSize(4 << 20),
            batch_linger: HumanDuration::from_millis(0),
            retry_initial: HumanDuration::from_millis(200),
            retry_max: HumanDuration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Topic templates, tried in order; the first that matches wins.
    /// `{name}` captures one topic level as tag `name`; `{kind}` is required
    /// and becomes the measurement; other levels must match literally.
    pub templates: Vec<TemplateEntry>,
    /// Accepted kinds (sensor networks). A topic with another kind is
    /// quarantined as `unknown_kind`.
    pub kinds: Vec<String>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            templates: vec![
                TemplateEntry::Text("env/{district}/{site}/{kind}/{sensor}".into()),
                TemplateEntry::Text("env/{district}/{site}/{kind}/{industry}/{sensor}".into()),
            ],
            kinds: ["air", "dust", "voc", "sewage"].map(String::from).to_vec(),
        }
    }
}

/// A topic template: a string (JSON readings), or a table that names the
/// payload, e.g. `{ template = "gw/{gateway}/hj212", payload = "hj212" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TemplateEntry {
    Text(String),
    Table {
        template: String,
        #[serde(default)]
        payload: Payload,
    },
}

/// What the payload of a topic is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// lantian's JSON reading or a SenML pack.
    #[default]
    Json,
    /// A raw HJ 212 packet (a gateway forwarding a data logger): the
    /// device registry gives kind and tags, so `{kind}` is not needed.
    Hj212,
}

impl TemplateEntry {
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Table { template: t, .. } => t,
        }
    }
    pub fn payload(&self) -> Payload {
        match self {
            Self::Text(_) => Default::default(),
            Self::Table { payload, .. } => *payload,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// Store numeric fields the registry does not know, unconverted.
    Store,
    /// Quarantine them.
    Reject,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Payloads larger than this are quarantined unread.
    pub max_payload_bytes: ByteSize,
    /// Distinct series (kind and topic tags) taken in; a new one past this
    /// is quarantined (reason `cardinality`), so a publisher inventing
    /// sensors cannot exhaust memory. 0: no bound.
    pub max_series: usize,
    /// Distinct field names taken in (all kinds together); a reading with
    /// a new one past this is quarantined (reason `cardinality`): every
    /// name is kept per sensor by the windows and the flatline check.
    /// 0: no bound.
    pub max_fields: usize,
    /// Readings stamped further than this into the future are rejected.
    pub max_future: HumanDuration,
    /// Readings older than this are rejected.
    pub max_age: HumanDuration,
    /// What to do with numeric fields the quantity registry does not know.
    pub unknown_fields: UnknownFields,
    /// How many leading bytes of a bad payload the quarantine record keeps.
    pub quarantine_sample_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: ByteSize(64 << 10),
            max_series: 100_000,
            max_fields: 1_000,
            max_future: HumanDuration::from_secs(300),
            max_age: HumanDuration::from_secs(7 * 86_400),
            unknown_fields: UnknownFields::Store,
            quarantine_sample_bytes: 256,
        }
    }
}

/// Override of one registry entry; unset keys keep the built-in value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityOverride {
    /// Canonical unit (one the unit table knows, e.g. "ug/m3", "mg/L").
    pub unit: Option<String>,
    /// Lowest physically plausible value, in the canonical unit.
    pub min: Option<f64>,
    /// Highest physically plausible value, in the canonical unit.
    pub max: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Messages buffered between the MQTT source and the writer. When full,
    /// lantian stops reading from the broker, which holds the rest.
    pub channel_capacity: usize,
    /// On SIGTERM/SIGINT: time allowed to flush and acknowledge before exit.
    pub shutdown_timeout: HumanDuration,
    /// Interval of the one-line throughput summary in the log (0 = off).
    pub stats_interval: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 1024,
            shutdown_timeout: HumanDuration::from_secs(30),
            stats_interval: HumanDuration::from_secs(60),
        }
    }
}

/// Scale-out and high availability on NATS JetStream. Off: one process
/// does everything (`lantian run` as ever).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Take MQTT messages (a shared subscription, e.g.
    /// `$share/lantian/env/#`), decode and validate them, publish each to
    /// JetStream on its site's partition, and acknowledge MQTT once
    /// JetStream has it. Stateless: run any number.
    pub edge: bool,
    /// Own partitions (leases in a JetStream key-value bucket, spread over
    /// the live workers): store their readings and run their windows,
    /// checkpointing each partition's state and stream position to
    /// JetStream once stored. Needs `spool.enabled = false`: the stream is
    /// the durable log.
    pub worker: bool,
    /// NATS servers (any of the cluster's).
    pub nats: Vec<String>,
    /// This process's name in leases and logs: unique per process.
    /// Default: the host name and process id.
    pub instance: String,
    /// Partitions readings are spread over (by district and site). Fixed
    /// for a stream's life. A partition's checkpoint must fit NATS's
    /// max_payload: about 1,000–1,800 sensors a partition at 8 MB.
    pub partitions: u32,
    /// Copies JetStream keeps of the stream and the lease bucket: 3 on a
    /// three-node cluster, 1 on a single server.
    pub replicas: usize,
    /// A lease not renewed within this lapses and another worker may take
    /// its partitions; the holder stops working them before then.
    pub lease_ttl: HumanDuration,
    /// JetStream drops a second message with the same id within this.
    pub duplicate_window: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            edge: false,
            worker: false,
            nats: vec!["nats://127.0.0.1:4222".into()],
            instance: String::new(),
            partitions: 16,
            replicas: 1,
            lease_ttl: HumanDuration::from_secs(6),
            duplicate_window: HumanDuration::from_secs(600),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        self.edge || self.worker
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool messages to disk and acknowledge them once synced. Off: a
    /// message is acknowledged only after InfluxDB stored its readings
    /// (slower: the broker's in-flight window caps throughput), and a long
    /// InfluxDB outage leans on the broker's queue.
    pub enabled: bool,
    /// Directory of the spool (created if missing). Under systemd,
    /// `StateDirectory=lantian` provides /var/lib/lantian.
    pub dir: PathBuf,
    /// Most bytes on disk. When reached, lantian stops reading from the
    /// broker (which holds the rest) until delivery frees space.
    pub max_bytes: ByteSize,
    /// Size at which a segment file is closed and a new one started; whole
    /// delivered segments are deleted. At most a quarter of max_bytes.
    pub segment_bytes: ByteSize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("/var/lib/lantian/spool"),
            max_bytes: ByteSize(2 << 30),
            segment_bytes: ByteSize(64 << 20),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Compute and write windows at all.
    pub enabled: bool,
    /// Window sizes written, smallest first. The first is the base:
    /// readings are reduced to it (with polars) and every larger window is
    /// built from base-window partials, never from held raw readings. Each
    /// size must be a multiple of the base and divide a day; "1d" is the
    /// local calendar day of `timezone`. Hourly windows are always kept
    /// (daily means and the AQI need them) but written only if listed.
    pub sizes: Vec<String>,
    /// Time zone of daily windows (IANA name).
    pub timezone: String,
    /// How long after a window's end its readings may still arrive before
    /// it closes and is written. Each source (a site, or a sensor of no
    /// site) has a watermark: the end of its newest reading's reporting
    /// interval minus this.
    pub allowed_lateness: HumanDuration,
    /// A reading for a closed window no older than this (behind its
    /// source's watermark) rewrites the window's aggregates and the AQI
    /// (InfluxDB overwrites the point: same series and time). Older
    /// readings are stored raw only and counted. The default covers a
    /// station that was offline for a day and then uploads its buffer.
    /// Hourly windows are held this long (about 60 bytes an hour per
    /// series and field).
    pub correction_horizon: HumanDuration,
    /// Windows shorter than an hour (e.g. 1 min) are held this long behind
    /// the watermark (at most `correction_horizon`). A later reading still
    /// corrects its hour and day, and writes its short window anew with the
    /// late readings only.
    pub fine_correction_horizon: HumanDuration,
    /// When no reading has arrived from a source (a site, or a sensor of no
    /// site) for this long, its watermark moves on with the wall clock, so
    /// its windows close even while it is silent.
    pub idle_timeout: HumanDuration,
    /// How often buffered readings are reduced and closed windows written.
    pub flush_interval: HumanDuration,
    /// How often the window state is saved to `<spool.dir>/windows.snapshot`
    /// (with the spool on). After a restart or crash, windows are restored
    /// from it and the spool replays what came after; the spool keeps
    /// delivered segments back to the last snapshot.
    pub snapshot_interval: HumanDuration,
    /// Readings buffered before a flush is forced; the pipeline waits while
    /// the window stage is behind (backpressure).
    pub max_pending_readings: usize,
    /// Tags that identify a site: per-site windows (tag `scope=site`) pool
    /// every sensor with the same values of these tags; per-sensor windows
    /// have `scope=sensor`. Empty: no per-site windows (and no AQI).
    pub site_tags: Vec<String>,
    /// Expected reporting interval of a sensor, for the completeness
    /// counts (`_expected`, `_received`) and validity.
    pub default_interval: HumanDuration,
    /// Per-kind reporting intervals, e.g. `dust = "5m"`.
    pub intervals: BTreeMap<String, HumanDuration>,
    /// When an average is valid (from GB 3095-2012's
    /// data-validity table; marked unconfirmed there).
    pub completeness: CompletenessConfig,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sizes: vec!["1m".into(), "1h".into(), "1d".into()],
            timezone: "Asia/Shanghai".into(),
            allowed_lateness: HumanDuration::from_secs(120),
            correction_horizon: HumanDuration::from_secs(48 * 3600),
            fine_correction_horizon: HumanDuration::from_secs(3600),
            idle_timeout: HumanDuration::from_secs(300),
            flush_interval: HumanDuration::from_secs(1),
            snapshot_interval: HumanDuration::from_secs(30),
            max_pending_readings: 50_000,
            site_tags: vec!["district".into(), "site".into()],
            default_interval: HumanDuration::from_secs(60),
            intervals: BTreeMap::new(),
            completeness: CompletenessConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletenessConfig {
    /// Minutes of sampling per hour for a valid 1 h mean (and, pro rata,
    /// for other sizes above the base).
    pub hour_min_minutes: u32,
    /// Valid hourly means for a valid 24 h mean.
    pub day_min_hours: u32,
    /// Valid hourly means for a valid 8 h mean (O3, EPA CO).
    pub eight_hour_min_hours: u32,
}

impl Default for CompletenessConfig {
    fn default() -> Self {
        Self {
            hour_min_minutes: 45,
            day_min_hours: 20,
            eight_hour_min_hours: 6,
        }
    }
}

/// `alerts.gb3095`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Gb3095Choice {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "gb3095-2012")]
    Gb3095_2012,
    #[serde(rename = "gb3095-2026")]
    Gb3095_2026,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AqiConfig {
    /// Compute the AQI (needs windows with site tags).
    pub enabled: bool,
    /// "hj633-2026" (current Chinese standard), "hj633-2012" (historical
    /// data) or "epa-2024".
    pub standard: crate::evaluate::aqi::Standard,
    /// Kinds whose sites are ambient air-quality stations.
    pub kinds: Vec<String>,
    /// Sites whose mean concentrations make the city-wide AQI (points
    /// with `scope=city`; the observed alert level is judged on it).
    /// Default: Beijing's 12 national stations. Empty: none.
    pub city_sites: Vec<String>,
}

impl Default for AqiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            standard: crate::evaluate::aqi::Standard::Hj633_2026,
            kinds: vec!["air".into()],
            // Beijing's 12 national stations (seeds/sites.toml).
            city_sites: crate::evaluate::sites::national(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Write everything (readings, windows, AQI, alerts, quarantine) as
    /// Parquet files too.
    pub enabled: bool,
    /// `<dir>/<measurement>/date=<YYYY-MM-DD>/*.parquet` (created).
    pub dir: PathBuf,
    /// Date partitions older than this are deleted ("0s": kept for ever).
    pub max_age: HumanDuration,
    /// When the archive is larger, its oldest date partitions are deleted
    /// until it fits (it shares the disk with the spool). 0: no bound.
    pub max_bytes: ByteSize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/lantian/archive"),
            max_age: HumanDuration::from_secs(400 * 86_400),
            max_bytes: ByteSize(20 << 30),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate the targets and send alerts (needs windows).
    pub enabled: bool,
    /// Which GB 3095 edition's ambient limits apply: "auto" (the one that
    /// goes with `aqi.standard`: GB 3095-2012 with HJ 633-2012, else GB
    /// 3095-2026), "gb3095-2012" or "gb3095-2026". One at a time, so a day
    /// above both editions' limits alerts once.
    pub gb3095: Gb3095Choice,
    /// Alert state and the outbox (created if missing).
    pub dir: PathBuf,
    /// Default reminder interval while an alert fires ("0s" = none).
    pub repeat_interval: HumanDuration,
    /// Base URL put in webhooks (Alertmanager `externalURL`,
    /// `generatorURL`): where people look, e.g. the status page. Empty:
    /// the admin endpoint's own address.
    pub external_url: String,
    /// Bound on notices queued per receiver. When reached, alerting and
    /// with it the window stage wait (backpressure), nothing is dropped.
    pub max_queued: usize,
    /// Overrides of shipped targets (by id) and new targets.
    pub targets: Vec<crate::evaluate::targets::TargetPatch>,
    /// Labels of sites that their readings do not carry, for targets'
    /// `when = { label = ... }` conditions, e.g.
    /// `[alerts.site_labels.gaobeidian] built = "1993"` (GB 18918's TP
    /// limit is 1 mg/L for plants built before 2006, 0.5 otherwise).
    pub site_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Webhook receivers.
    pub receivers: Vec<ReceiverConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gb3095: Gb3095Choice::Auto,
            dir: PathBuf::from("/var/lib/lantian/alerts"),
            repeat_interval: HumanDuration::from_secs(4 * 3600),
            external_url: "http://127.0.0.1:9184/".into(),
            max_queued: 100_000,
            targets: Vec::new(),
            site_labels: BTreeMap::new(),
            receivers: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique; names the outbox directory and appears in logs.
    pub name: String,
    /// http(s) URL the notices are POSTed to.
    pub url: String,
    /// "lantian" (native JSON) or "alertmanager" (Alertmanager webhook v4).
    #[serde(default)]
    pub format: WebhookFormat,
    /// HMAC-SHA256 signing secret (Standard Webhooks); `whsec_<base64>` or
    /// any string. Prefer `secret_file` (e.g. a systemd credential).
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Time allowed for one request.
    #[serde(default = "ReceiverConfig::default_timeout")]
    pub timeout: HumanDuration,
    /// Lowest severity sent: "info", "warning" or "critical".
    #[serde(default = "ReceiverConfig::default_severity")]
    pub min_severity: crate::evaluate::targets::Severity,
    /// Rule ids, or prefixes ending in `*` ("air.*"); empty: all rules.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Labels that must be equal, e.g. `{ district = "chaoyang" }`.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Retry backoff: from retry_initial, doubling, capped at retry_max,
    /// with jitter. Retries go on until the receiver accepts.
    #[serde(default = "ReceiverConfig::default_retry_initial")]
    pub retry_initial: HumanDuration,
    #[serde(default = "ReceiverConfig::default_retry_max")]
    pub retry_max: HumanDuration,
}

impl ReceiverConfig {
    fn default_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    fn default_severity() -> crate::evaluate::targets::Severity {
        crate::evaluate::targets::Severity::Info
    }
    fn default_retry_initial() -> HumanDuration {
        HumanDuration::from_secs(1)
    }
    fn default_retry_max() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve /healthz, /readyz, /metrics and the status page.
    pub enabled: bool,
    /// Address of the admin endpoint (loopback by default).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9184)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "human" or "json" (`--log-format` wins).
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "lantian=debug,info"
    /// (`RUST_LOG` wins).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// The body a webhook receiver gets.
pub enum WebhookFormat {
    /// lantian's JSON.
    #[default]
    Lantian,
    /// Alertmanager webhook v4.
    Alertmanager,
}
