//! Semantic checks that types alone cannot express. Every problem is
//! collected; nothing stops at the first.

use std::path::Path;

use super::load::Problem;
use super::{InfluxApi, Secret, Settings};
use crate::decode::Template;
use crate::validate::Registry;

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
            readable(&mut err, "mqtt.tls.ca_file", &tls.ca_file);
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(c), Some(k)) => {
                    readable(&mut err, "mqtt.tls.client_cert_file", c);
                    readable(&mut err, "mqtt.tls.client_key_file", k);
                }
                (None, None) => {}
                _ => err(
                    "mqtt.tls",
                    "client_cert_file and client_key_file go together".into(),
                ),
            }
        }

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

        let t = &self.topics;
        if t.templates.is_empty() {
            err("topics.templates", "at least one template is needed".into());
        }
        for (n, tpl) in t.templates.iter().enumerate() {
            if let Err(e) = Template::parse(tpl) {
                err(&format!("topics.templates[{n}]"), format!("{tpl:?}: {e}"));
            }
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

        let v = &self.validation;
        if v.max_payload_bytes.get() == 0 {
            err("validation.max_payload_bytes", "must be above 0".into());
        }
        if v.max_age.get().is_zero() {
            err("validation.max_age", "must be above 0".into());
        }
        if let Err(errors) = Registry::new(&self.quantities, v.unknown_fields) {
            for (key, message) in errors {
                err(&format!("quantities.{key}"), message);
            }
        }

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

        if let Err(errors) = crate::window::Plan::new(&self.windows, &self.aqi) {
            for (key, message) in errors {
                err(&key, message);
            }
        }

        if !self.influxdb.enabled && !self.archive.enabled {
            err(
                "influxdb.enabled",
                "with InfluxDB off, enable the Parquet archive (archive.enabled = true): readings need a sink".into(),
            );
        }
        if self.archive.enabled && self.archive.dir.as_os_str().is_empty() {
            err("archive.dir", "must be set".into());
        }

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
            if let Err(errors) =
                crate::evaluate::targets::merge(crate::evaluate::targets::shipped(), &a.targets)
            {
                for (i, message) in errors {
                    err(&format!("alerts.targets[{i}]"), message);
                }
            }
            if let Err(errors) = self.receivers() {
                for (key, message) in errors {
                    err(&key, message);
                }
            }
        }

        if self.pipeline.channel_capacity == 0 {
            err("pipeline.channel_capacity", "must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            err(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.log.level),
            );
        }
        p
    }

    /// The webhook receivers, validated (secrets read from their files).
    pub fn receivers(&self) -> Result<Vec<crate::alert::outbox::Receiver>, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut out = Vec::new();
        for (i, r) in self.alerts.receivers.iter().enumerate() {
            let at = |k: &str| format!("alerts.receivers[{i}].{k}");
            let name_ok = !r.name.is_empty()
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                errs.push((
                    at("name"),
                    format!("{:?} must be letters, digits, - or _", r.name),
                ));
            }
            if self.alerts.receivers[..i].iter().any(|o| o.name == r.name) {
                errs.push((at("name"), format!("{:?} is used twice", r.name)));
            }
            let url = match reqwest::Url::parse(&r.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    errs.push((at("url"), format!("{:?} is not an http(s) URL", r.url)));
                    None
                }
            };
            let key = match Secret::resolve(r.secret.as_ref(), r.secret_file.as_deref()) {
                Ok(None) => None,
                Ok(Some(s)) => match crate::alert::webhook::key(s.expose()) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errs.push((at("secret"), e));
                        None
                    }
                },
                Err(e) => {
                    errs.push((at("secret"), e));
                    None
                }
            };
            if r.timeout.get().is_zero() {
                errs.push((at("timeout"), "must be above 0".into()));
            }
            if r.retry_initial.get().is_zero() || r.retry_initial > r.retry_max {
                errs.push((
                    at("retry_initial"),
                    "must be above 0 and at most retry_max".into(),
                ));
            }
            if let Some(url) = url {
                out.push(crate::alert::outbox::Receiver {
                    name: r.name.clone(),
                    url,
                    format: r.format,
                    key,
                    timeout: r.timeout.get(),
                    min_severity: r.min_severity,
                    rules: r.rules.clone(),
                    matchers: r.matchers.clone(),
                    retry_initial: r.retry_initial.get(),
                    retry_max: r.retry_max.get(),
                });
            }
        }
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }

    /// The active targets: shipped, with `[[alerts.targets]]` applied.
    pub fn targets(&self) -> Result<Vec<crate::evaluate::targets::Target>, Vec<(usize, String)>> {
        crate::evaluate::targets::merge(crate::evaluate::targets::shipped(), &self.alerts.targets)
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
            self.influxdb.url,
            self.topics.kinds.join(","),
        )
    }
}

fn readable(err: &mut impl FnMut(&str, String), key: &str, path: &Path) {
    if let Err(e) = std::fs::metadata(path).and_then(|_| std::fs::File::open(path)) {
        err(key, format!("cannot read {}: {e}", path.display()));
    }
}
