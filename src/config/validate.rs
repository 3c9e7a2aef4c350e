//! Semantic checks that types alone cannot express. Every problem is
//! collected; nothing stops at the first.

use std::path::Path;

use super::load::Problem;
use super::{InfluxApi, Secret, Settings};

impl Settings {
    /// Every semantic problem, each with its key path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut err = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_owned(),
                message,
            })
        };

        self.check_mqtt(&mut err);
        self.check_influxdb(&mut err);
        self.check_topics(&mut err);
        self.check_validation(&mut err);
        self.check_spool(&mut err);
        self.check_sinks(&mut err);
        self.check_alerts(&mut err);
        self.check_pipeline_and_log(&mut err);
        self.check_cluster(&mut err);
        p
    }

    fn check_cluster(&self, err: &mut impl FnMut(&str, String)) {
        let c = &self.cluster;
        if !c.enabled() {
            return;
        }
        if c.nats.is_empty() {
            err("cluster.nats", "name at least one NATS server".into());
        }
        if c.partitions == 0 || c.partitions > 4096 {
            err("cluster.partitions", "must be between 1 and 4096".into());
        }
        if !(1..=5).contains(&c.replicas) {
            err(
                "cluster.replicas",
                "must be between 1 and 5 (JetStream's limit)".into(),
            );
        }
        if c.worker && self.spool.enabled {
            err(
                "spool.enabled",
                "must be false with cluster.worker: JetStream is the durable log, and a worker acknowledges a message once it is stored".into(),
            );
        }
        if c.worker && !c.edge && self.hj212.listen.is_some() {
            err(
                "hj212.listen",
                "needs cluster.edge in cluster mode: data loggers' packets go into JetStream through an edge".into(),
            );
        }
        if c.lease_ttl.get() < std::time::Duration::from_secs(2) {
            err("cluster.lease_ttl", "must be at least 2s".into());
        }
    }

    fn check_mqtt(&self, err: &mut impl FnMut(&str, String)) {
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            err("mqtt.host", "must not be empty".into());
        }
        if m.port == 0 {
            err("mqtt.port", "must be between 1 and 65535".into());
        }
        if m.client_id.is_empty() {
            err(
                "mqtt.client_id",
                "must not be empty (the broker keys the persistent session on it)".into(),
            );
        }
        if m.keep_alive.get().as_secs() < 5 {
            err("mqtt.keep_alive", "must be at least 5s".into());
        }
        if m.reconnect_min.get().is_zero() || m.reconnect_min > m.reconnect_max {
            err(
                "mqtt.reconnect_min",
                "must be above 0 and at most mqtt.reconnect_max".into(),
            );
        }
        if m.max_packet_size.get() < 1024 || m.max_packet_size.get() > super::MQTT_MAX_PACKET {
            err(
                "mqtt.max_packet_size",
                format!("must be between 1KiB and {} bytes", super::MQTT_MAX_PACKET),
            );
        }
        if m.subscriptions.is_empty() {
            err(
                "mqtt.subscriptions",
                "at least one subscription is needed".into(),
            );
        }
        for (i, s) in m.subscriptions.iter().enumerate() {
            if !rumqttc::valid_filter(&s.filter) {
                err(
                    &format!("mqtt.subscriptions[{i}].filter"),
                    format!("{:?} is not a valid MQTT topic filter", s.filter),
                );
            }
            if s.qos > 2 {
                err(
                    &format!("mqtt.subscriptions[{i}].qos"),
                    format!("{} is not a QoS (0, 1 or 2)", s.qos),
                );
            }
        }
        if m.password.is_some() && m.username.is_none() {
            err("mqtt.password", "is set but mqtt.username is not".into());
        }
        if let Err(e) = Secret::resolve(m.password.as_ref(), m.password_file.as_deref()) {
            err("mqtt.password_file", e);
        }
        if let Some(tls) = &m.tls {
            readable(err, "mqtt.tls.ca_file", &tls.ca_file);
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(c), Some(k)) => {
                    readable(err, "mqtt.tls.client_cert_file", c);
                    readable(err, "mqtt.tls.client_key_file", k);
                }
                (None, None) => {}
                _ => err(
                    "mqtt.tls",
                    "client_cert_file and client_key_file go together".into(),
                ),
            }
        }
    }

    fn check_influxdb(&self, err: &mut impl FnMut(&str, String)) {
        let i = &self.influxdb;
        match reqwest::Url::parse(&i.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => err(
                "influxdb.url",
                format!("{:?} is not an http:// or https:// URL", i.url),
            ),
        }
        match i.api {
            InfluxApi::V1 => {
                if i.database.is_empty() {
                    err("influxdb.database", "must be set for api = \"v1\"".into());
                }
                if let Err(e) = Secret::resolve(i.password.as_ref(), i.password_file.as_deref()) {
                    err("influxdb.password_file", e);
                }
            }
            InfluxApi::V2 => {
                if i.minute_retention_policy.is_some() {
                    err(
                        "influxdb.minute_retention_policy",
                        "is for api = \"v1\" (with v2, give minute windows their own bucket retention instead)".into(),
                    );
                }
                for (key, v) in [("influxdb.org", &i.org), ("influxdb.bucket", &i.bucket)] {
                    if v.as_deref().unwrap_or_default().is_empty() {
                        err(key, "must be set for api = \"v2\"".into());
                    }
                }
                match Secret::resolve(i.token.as_ref(), i.token_file.as_deref()) {
                    Ok(Some(_)) => {}
                    Ok(None) => err(
                        "influxdb.token",
                        "must be set for api = \"v2\" (or token_file, or LANTIAN__INFLUXDB__TOKEN)"
                            .into(),
                    ),
                    Err(e) => err("influxdb.token_file", e),
                }
            }
        }
        if i.batch_max_lines == 0 {
            err("influxdb.batch_max_lines", "must be at least 1".into());
        }
        if i.batch_max_bytes.get() < 1024 {
            err("influxdb.batch_max_bytes", "must be at least 1KiB".into());
        }
        if i.request_timeout.get().is_zero() || i.connect_timeout.get().is_zero() {
            err(
                "influxdb.request_timeout",
                "timeouts must be above 0".into(),
            );
        }
        if i.retry_initial.get().is_zero() || i.retry_initial > i.retry_max {
            err(
                "influxdb.retry_initial",
                "must be above 0 and at most influxdb.retry_max".into(),
            );
        }
    }

    fn check_topics(&self, err: &mut impl FnMut(&str, String)) {
        let t = &self.topics;
        if t.templates.is_empty() {
            err("topics.templates", "at least one template is needed".into());
        }
        if t.kinds.is_empty() {
            err("topics.kinds", "at least one kind is needed".into());
        }
        for (n, k) in t.kinds.iter().enumerate() {
            let ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok || k == "quarantine" {
                err(
                    &format!("topics.kinds[{n}]"),
                    format!(
                        "{k:?} must be lowercase letters, digits or _ (and not \"quarantine\")"
                    ),
                );
            }
        }
    }

    fn check_validation(&self, err: &mut impl FnMut(&str, String)) {
        let v = &self.validation;
        if v.max_payload_bytes.get() == 0 {
            err("validation.max_payload_bytes", "must be above 0".into());
        }
        if v.max_age.get().is_zero() {
            err("validation.max_age", "must be above 0".into());
        }
    }

    fn check_spool(&self, err: &mut impl FnMut(&str, String)) {
        let sp = &self.spool;
        if sp.max_bytes.get() < 1 << 20 {
            err("spool.max_bytes", "must be at least 1MiB".into());
        }
        if sp.segment_bytes.get() < 64 << 10 {
            err("spool.segment_bytes", "must be at least 64KiB".into());
        }
        if sp.dir.as_os_str().is_empty() {
            err("spool.dir", "must be set".into());
        }
    }

    fn check_sinks(&self, err: &mut impl FnMut(&str, String)) {
        if !self.influxdb.enabled && !self.archive.enabled {
            err(
                "influxdb.enabled",
                "with InfluxDB off, enable the Parquet archive (archive.enabled = true): readings need a sink".into(),
            );
        }
        if self.archive.enabled && self.archive.dir.as_os_str().is_empty() {
            err("archive.dir", "must be set".into());
        }
    }

    fn check_alerts(&self, err: &mut impl FnMut(&str, String)) {
        let a = &self.alerts;
        if a.enabled {
            if !self.windows.enabled {
                err(
                    "alerts.enabled",
                    "alerts need windows (windows.enabled = true), or set alerts.enabled = false"
                        .into(),
                );
            }
            if a.dir.as_os_str().is_empty() {
                err("alerts.dir", "must be set".into());
            }
            if a.max_queued == 0 {
                err("alerts.max_queued", "must be at least 1".into());
            }
        }
    }

    fn check_pipeline_and_log(&self, err: &mut impl FnMut(&str, String)) {
        if self.pipeline.channel_capacity == 0 {
            err("pipeline.channel_capacity", "must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            err(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.log.level),
            );
        }
    }

    /// The active targets: shipped, with `[[alerts.targets]]` applied.
    pub fn targets(&self) -> Result<Vec<crate::evaluate::targets::Target>, Vec<(usize, String)>> {
        use crate::evaluate::targets::{merge, select_gb3095, shipped};
        let mut shipped = shipped();
        select_gb3095(&mut shipped, self.gb3095());
        let mut targets = merge(shipped, &self.alerts.targets)?;
        crate::evaluate::targets::resolve_site_labels(&mut targets, &self.alerts.site_labels);
        Ok(targets)
    }

    /// The GB 3095 edition whose limits apply: `alerts.gb3095`, or with
    /// "auto" the one that goes with the AQI edition (HJ 633-2012 with GB
    /// 3095-2012; otherwise the current GB 3095-2026).
    pub fn gb3095(&self) -> crate::evaluate::targets::Gb3095 {
        use crate::evaluate::aqi::Standard;
        use crate::evaluate::targets::Gb3095;
        match (self.alerts.gb3095, self.aqi.standard) {
            (super::Gb3095Choice::Gb3095_2012, _) => Gb3095::Y2012,
            (super::Gb3095Choice::Gb3095_2026, _) => Gb3095::Y2026,
            (super::Gb3095Choice::Auto, Standard::Hj633_2012) => Gb3095::Y2012,
            (super::Gb3095Choice::Auto, _) => Gb3095::Y2026,
        }
    }

    /// One line for `check-config` and the start-up log (no secrets).
    pub fn summary(&self) -> String {
        let filters: Vec<&str> = self
            .mqtt
            .subscriptions
            .iter()
            .map(|s| s.filter.as_str())
            .collect();
        format!(
            "mqtt {}:{} ({}) as {:?} subscribing to {}; influxdb {} {}; kinds {}",
            self.mqtt.host,
            self.mqtt.port,
            if self.mqtt.tls.is_some() {
                "tls"
            } else {
                "plain"
            },
            self.mqtt.client_id,
            filters.join(", "),
            match self.influxdb.api {
                InfluxApi::V1 => "v1",
                InfluxApi::V2 => "v2",
            },
            crate::units::redact_url(&self.influxdb.url),
            self.topics.kinds.join(","),
        ) + &match (&self.hj212.listen, self.hj212.devices.len()) {
            (None, 0) => String::new(),
            (None, n) => format!("; hj212 {n} devices (no listener)"),
            (Some(addr), n) => format!("; hj212 listening on {addr}, {n} devices"),
        }
    }
}

fn readable(err: &mut impl FnMut(&str, String), key: &str, path: &Path) {
    if let Err(e) = std::fs::metadata(path).and_then(|_| std::fs::File::open(path)) {
        err(key, format!("cannot read {}: {e}", path.display()));
    }
}
