//! Checks that span components: each section of the settings is checked on
//! its own when it is loaded (`config`); what needs another component's
//! knowledge — topic templates, the quantity registry, the window plan,
//! the targets and the webhook receivers — is checked here, so that
//! `config` depends on none of them.

use std::path::Path;

use crate::config::{self, Problem, Problems, Settings};
use crate::validate::Registry;

/// Loads the settings from `path` (or the defaults) and the environment,
/// and checks them whole: every problem, each with its key path.
pub fn load(path: Option<&Path>) -> Result<Settings, Problems> {
    config::load_checked(path, check)
}

/// [`load`] from TOML text (tests, `--config -`).
pub fn load_from_str(toml: &str) -> Result<Settings, Problems> {
    config::load_from_str_checked(toml, check)
}

/// Every problem between the components, each with its key path.
pub fn check(s: &Settings) -> Vec<Problem> {
    let mut p = Vec::new();
    check_topics(s, &mut p);
    check_quantities(s, &mut p);
    check_windows(s, &mut p);
    check_spool_record(s, &mut p);
    check_hj212(s, &mut p);
    if s.alerts.enabled {
        check_alerts(s, &mut p);
    }
    p
}

fn problem(p: &mut Vec<Problem>, key: String, message: String) {
    p.push(Problem { key, message });
}

/// A payload the spool cannot hold would read back as corrupt.
fn check_spool_record(s: &Settings, p: &mut Vec<Problem>) {
    let max = crate::spool::format::MAX_PAYLOAD as u64;
    let asked = s.validation.max_payload_bytes.get();
    if s.spool.enabled && asked > max {
        problem(
            p,
            "validation.max_payload_bytes".into(),
            format!("{asked} bytes is more than a spool record holds: at most {max}"),
        );
    }
}

fn check_topics(s: &Settings, p: &mut Vec<Problem>) {
    for (n, tpl) in s.topics.templates.iter().enumerate() {
        if let Err(e) = crate::decode::Template::from_entry(tpl) {
            problem(
                p,
                format!("topics.templates[{n}]"),
                format!("{:?}: {e}", tpl.text()),
            );
        }
    }
}

/// The device registry (MN, CRC policy, units, password file), each
/// device's kind, and the listener's address and bounds.
fn check_hj212(s: &Settings, p: &mut Vec<Problem>) {
    let h = &s.hj212;
    if let Err(errors) = crate::decode::hj212::devices::Devices::from_config(h) {
        for (key, message) in errors {
            problem(p, key, message);
        }
    }
    for (i, d) in h.devices.iter().enumerate() {
        if !s.topics.kinds.contains(&d.kind) {
            problem(
                p,
                format!("hj212.devices[{i}].kind"),
                format!("{:?} is not in topics.kinds {:?}", d.kind, s.topics.kinds),
            );
        }
    }
    if let Some(addr) = &h.listen
        && addr.parse::<std::net::SocketAddr>().is_err()
    {
        problem(
            p,
            "hj212.listen".into(),
            format!("{addr:?} is not an address:port (e.g. \"0.0.0.0:9212\")"),
        );
    }
    if h.max_connections == 0 {
        problem(
            p,
            "hj212.max_connections".into(),
            "must be at least 1".into(),
        );
    }
    if !(h.max_packets_per_second > 0.0 && h.max_packets_per_second.is_finite()) {
        problem(
            p,
            "hj212.max_packets_per_second".into(),
            "must be a number above 0".into(),
        );
    }
    let least = 64;
    if h.max_packet_bytes < least {
        problem(
            p,
            "hj212.max_packet_bytes".into(),
            format!("must be at least {least}"),
        );
    }
    let spool = crate::spool::format::MAX_PAYLOAD;
    if h.max_packet_bytes > spool {
        problem(
            p,
            "hj212.max_packet_bytes".into(),
            format!("must be at most {spool} (a spool record)"),
        );
    }
}

fn check_quantities(s: &Settings, p: &mut Vec<Problem>) {
    if let Err(errors) = Registry::new(&s.quantities, s.validation.unknown_fields) {
        for (key, message) in errors {
            problem(p, format!("quantities.{key}"), message);
        }
    }
}

fn check_windows(s: &Settings, p: &mut Vec<Problem>) {
    if let Err(errors) = crate::window::Plan::new(&s.windows, &s.aqi) {
        for (key, message) in errors {
            problem(p, key, message);
        }
    }
}

fn check_alerts(s: &Settings, p: &mut Vec<Problem>) {
    if let Err(errors) = s.targets() {
        for (i, message) in errors {
            problem(p, format!("alerts.targets[{i}]"), message);
        }
    }
    for (site, labels) in &s.alerts.site_labels {
        for (label, v) in labels {
            if v.trim().parse::<f64>().is_err() {
                problem(
                    p,
                    format!("alerts.site_labels.{site}.{label}"),
                    format!("{v:?} is not a number (conditions compare it with one)"),
                );
            }
        }
    }
    if let Err(errors) = crate::alert::outbox::receivers(&s.alerts) {
        for (key, message) in errors {
            problem(p, key, message);
        }
    }
}

#[cfg(test)]
mod tests {
    /// A payload limit above what a spool record holds is refused at load
    /// (it would read back as corrupt), and at the limit it is accepted.
    #[test]
    fn max_payload_bytes_must_fit_a_spool_record() {
        let max = crate::spool::format::MAX_PAYLOAD;
        let toml = |n: usize| format!("[validation]\nmax_payload_bytes = {n}\n");
        assert!(super::load_from_str(&toml(max)).is_ok());
        let problems = super::load_from_str(&toml(max + 1)).unwrap_err().0;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "validation.max_payload_bytes");
        assert!(problems[0].message.contains("spool record"), "{problems:?}");
        // Without the spool there is no record to fit.
        let no_spool = format!("{}[spool]\nenabled = false\n", toml(max + 1));
        assert!(super::load_from_str(&no_spool).is_ok());
    }
}
