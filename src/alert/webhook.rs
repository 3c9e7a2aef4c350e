//! Webhook bodies and signatures.
//!
//! - `lantian`: one notice per request, lantian's own JSON (README,
//!   "Webhooks").
//! - `alertmanager`: the Alertmanager webhook body, `"version": "4"`, with
//!   the one alert of the notice in `alerts`, so receivers written for
//!   Prometheus Alertmanager work unchanged. Each alert instance (rule and
//!   series labels) is its own group (`groupKey`, `groupLabels`).
//!
//! Values in text (descriptions, annotations) are rounded for people
//! ([`for_people`]); the exact value stays in `value` (lantian) or the
//! `value_exact` annotation (Alertmanager).
//!
//! Signing follows Standard Webhooks: headers `webhook-id` (the notice's
//! event id: the same on every retry, for deduplication),
//! `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//! A secret written `whsec_<base64>` is used as the decoded bytes (the
//! Standard Webhooks convention); any other string as its UTF-8 bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{Notice, rfc3339};
pub use crate::units::for_people;

pub use crate::config::WebhookFormat as Format;

/// Alertmanager's "zero time" for the end of an alert still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// "aqi.hour = 245 AQI (threshold > 200 AQI)", values for people.
pub fn description(a: &super::Alert) -> String {
    format!(
        "{} = {} {} (threshold {} {} {})",
        a.metric,
        for_people(a.value),
        a.unit,
        a.op.as_str(),
        for_people(a.threshold),
        a.unit
    )
}

/// The labels of an alert instance as Alertmanager writes a label set:
/// `{alertname="…", site="…"}`, sorted by name.
fn label_set(labels: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", Value::String(v.clone())))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The request body for a notice.
pub fn body(format: Format, n: &Notice, receiver: &str, external_url: &str) -> Vec<u8> {
    let a = &n.alert;
    let status = if n.event == super::Event::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let v = match format {
        Format::Lantian => json!({
            "version": "1",
            "event_id": n.event_id,
            "event": n.event.as_str(),
            "status": status,
            "at": rfc3339(n.at_ms),
            "receiver": receiver,
            "alert": {
                "id": a.id,
                "rule": a.rule,
                "name": a.name,
                "severity": a.severity.as_str(),
                "labels": a.labels,
                "metric": a.metric,
                "value": number(a.value),
                "op": a.op.as_str(),
                "threshold": number(a.threshold),
                "unit": a.unit,
                "description": description(a),
                "window": { "start": rfc3339(a.window_start_ms), "end": rfc3339(a.window_end_ms) },
                "starts_at": rfc3339(a.starts_at_ms),
                "ends_at": a.ends_at_ms.map(rfc3339),
                "citation": { "report": a.report, "standard": a.standard },
                "details": a.details,
            },
        }),
        Format::Alertmanager => {
            let mut ann = serde_json::Map::new();
            let text = |s: String| Value::String(s);
            ann.insert("summary".into(), text(a.name.clone()));
            ann.insert("description".into(), text(description(a)));
            // Annotations are for people; the exact value is kept beside.
            ann.insert("value".into(), text(for_people(a.value)));
            ann.insert("value_exact".into(), text(a.value.to_string()));
            ann.insert("threshold".into(), text(for_people(a.threshold)));
            ann.insert("unit".into(), text(a.unit.clone()));
            ann.insert("window_start".into(), text(rfc3339(a.window_start_ms)));
            ann.insert("window_end".into(), text(rfc3339(a.window_end_ms)));
            ann.insert("report".into(), text(a.report.clone()));
            ann.insert("standard".into(), text(a.standard.clone()));
            ann.insert("event".into(), text(n.event.as_str().into()));
            ann.insert("event_id".into(), text(n.event_id.clone()));
            for (k, v) in &a.details {
                ann.insert(k.clone(), text(v.clone()));
            }
            // One group per alert instance (rule and series labels): a
            // receiver that keys incidents on groupKey gets one incident
            // per station, and one station's resolve closes only its own.
            json!({
                "version": "4",
                "groupKey": format!("{{}}:{}", label_set(&a.labels)),
                "truncatedAlerts": 0,
                "status": status,
                "receiver": receiver,
                "groupLabels": a.labels,
                "commonLabels": a.labels,
                "commonAnnotations": ann,
                "externalURL": external_url,
                "alerts": [{
                    "status": status,
                    "labels": a.labels,
                    "annotations": ann,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": a.ends_at_ms.map_or(ZERO_TIME.to_owned(), rfc3339),
                    "generatorURL": format!("{}#{}", external_url.trim_end_matches('/'), a.rule),
                    "fingerprint": a.id,
                }],
            })
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The HMAC key of a configured secret.
pub fn key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b) => B64
            .decode(b.trim())
            .map_err(|e| format!("whsec_ secret is not valid base64: {e}")),
        None if secret.is_empty() => Err("the secret is empty".into()),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header value.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", B64.encode(ctx.sign().as_ref()))
}
