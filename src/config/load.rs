//! Loading: file + environment → [`Settings`], with every problem reported
//! at once, each with its key path.
//!
//! serde stops at the first error, so loading runs a loop: deserialize; on
//! an error, record it with its path, delete that key from the raw tree (so
//! its default applies) and try again. Semantic checks run once the tree
//! deserializes.

use std::fmt;
use std::path::Path;

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use serde_path_to_error::Segment;

use super::Settings;

/// Environment variables `LANTIAN__SECTION__KEY` override the file.
pub const ENV_PREFIX: &str = "LANTIAN";

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.subscriptions[0].qos`; empty for the file
    /// as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found, in file order where possible.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Load from `path` (or built-in defaults when `None`) plus the environment.
pub fn load(path: Option<&Path>) -> Result<Settings, Problems> {
    load_checked(path, |_| Vec::new())
}

/// [`load`], adding the problems `check` finds in settings that deserialize
/// (the application's checks between components), so that every problem
/// is reported at once.
pub fn load_checked(path: Option<&Path>, check: Check) -> Result<Settings, Problems> {
    let mut builder = Config::builder();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(Problems(vec![Problem {
                key: String::new(),
                message: format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                ),
            }]));
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    let file = path.map(|p| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .display()
            .to_string()
    });
    build(builder.add_source(env_source()), file, check)
}

/// Load from TOML text plus the environment (for tests and `--config -`).
pub fn load_from_str(toml: &str) -> Result<Settings, Problems> {
    load_from_str_checked(toml, |_| Vec::new())
}

/// [`load_from_str`] with the application's checks (see [`load_checked`]).
pub fn load_from_str_checked(toml: &str, check: Check) -> Result<Settings, Problems> {
    build(
        Config::builder()
            .add_source(File::from_str(toml, FileFormat::Toml))
            .add_source(env_source()),
        Some("(text)".into()),
        check,
    )
}

/// The merged configuration tree settings were read from. Its `Debug`
/// shows nothing: it holds the secrets as written.
#[derive(Clone, Default)]
pub struct Source {
    /// File and environment merged.
    tree: Option<Value>,
    /// The file's path (or a name for text).
    file: Option<String>,
    /// What the environment alone gave.
    env: Option<Value>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source(..)")
    }
}

impl Source {
    /// The tree itself (`None` for settings not read from one).
    pub fn tree(&self) -> Option<&Value> {
        self.tree.as_ref()
    }

    /// Where the value at `path` (`section.key…`) came from: the
    /// environment (naming its variable), the file, or the default.
    pub fn origin(&self, path: &str) -> String {
        fn find<'a>(tree: Option<&'a Value>, path: &str) -> Option<&'a Value> {
            path.split('.').try_fold(tree?, |v, k| match &v.kind {
                ValueKind::Table(t) => t.get(k),
                _ => None,
            })
        }
        if find(self.env.as_ref(), path).is_some() {
            format!(
                "environment ({ENV_PREFIX}__{})",
                path.replace('.', "__").to_uppercase()
            )
        } else if find(self.tree.as_ref(), path).is_some() {
            self.file.clone().unwrap_or_else(|| "file".into())
        } else {
            "default".into()
        }
    }

    /// The keys whose values differ between two trees: a top-level
    /// section (`mqtt`), or `alerts.<key>` within `alerts` (whose targets
    /// and receivers a reload applies), sorted.
    pub fn changed(&self, new: &Source) -> Vec<String> {
        fn table(v: Option<&Value>) -> std::collections::HashMap<String, Value> {
            match v.map(|v| &v.kind) {
                Some(ValueKind::Table(t)) => t.clone(),
                _ => Default::default(),
            }
        }
        fn diff(old: Option<&Value>, new: Option<&Value>, prefix: &str, out: &mut Vec<String>) {
            let (old, new) = (table(old), table(new));
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (a, b) = (old.get(k), new.get(k));
                if a == b {
                    continue;
                }
                if prefix.is_empty() && k == "alerts" {
                    diff(a, b, "alerts.", out);
                } else {
                    out.push(format!("{prefix}{k}"));
                }
            }
        }
        let mut out = Vec::new();
        diff(self.tree.as_ref(), new.tree.as_ref(), "", &mut out);
        out
    }
}

/// Checks beyond one section's own, supplied by the application.
pub type Check = fn(&Settings) -> Vec<Problem>;

fn env_source() -> Environment {
    // No try_parsing: it turns a token like "0123" into the number 123.
    // Typed fields still parse numbers and booleans from the strings.
    Environment::with_prefix(ENV_PREFIX).separator("__")
}

fn build(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    file: Option<String>,
    check: Check,
) -> Result<Settings, Problems> {
    let raw: Value = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            Problems(vec![Problem {
                key: String::new(),
                message: e.to_string(),
            }])
        })?;
    let env = Config::builder()
        .add_source(env_source())
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .ok();
    let source = Source {
        tree: Some(raw.clone()),
        file,
        env,
    };
    let (mut settings, mut problems) = deserialize_collecting(raw);
    if let Some(s) = &mut settings {
        s.source = source;
    }
    // The raw tree is a hash map: sort so the report is stable.
    problems.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(settings) = &settings {
        problems.extend(settings.validate());
        problems.extend(check(settings));
    }
    match settings {
        Some(s) if problems.is_empty() => Ok(s),
        _ => Err(Problems(problems)),
    }
}

/// Deserialize, collecting each type error and dropping the offending key
/// until the rest deserializes (at most 200 rounds).
fn deserialize_collecting(mut raw: Value) -> (Option<Settings>, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..200 {
        match serde_path_to_error::deserialize::<_, Settings>(raw.clone()) {
            Ok(s) => return (Some(s), problems),
            Err(e) => {
                let mut segments: Vec<Segment> = e.path().iter().cloned().collect();
                let mut message = strip_key_suffix(&e.inner().to_string());
                let mut key = e.path().to_string();
                // Unknown keys: make sure the path ends with the key itself.
                if let Some(unknown) = unknown_field_name(&message) {
                    let named =
                        matches!(segments.last(), Some(Segment::Map { key }) if *key == unknown);
                    if !named {
                        key = join_key(&key, &unknown);
                        segments.push(Segment::Map { key: unknown });
                    }
                    message = format!("unknown key{}", expected_suffix(&message));
                }
                if key == "." {
                    key.clear();
                }
                problems.push(Problem { key, message });
                if !remove(&mut raw, &segments) {
                    return (None, problems);
                }
            }
        }
    }
    (None, problems)
}

/// config appends " for key `x`" to some messages; the path says it already.
fn strip_key_suffix(message: &str) -> String {
    match message.rfind(" for key `") {
        Some(i) if message.ends_with('`') => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

fn join_key(parent: &str, child: &str) -> String {
    if parent.is_empty() || parent == "." {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// serde's message is "unknown field `x`, expected one of `a`, `b`".
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn expected_suffix(message: &str) -> String {
    message
        .find(", expected")
        .map(|i| format!(" ({})", &message[i + 2..]))
        .unwrap_or_default()
}

/// Remove the value at `path` from the raw tree; false if nothing changed.
fn remove(root: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for seg in parents {
        node = match (seg, &mut node.kind) {
            (Segment::Map { key }, ValueKind::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, ValueKind::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, &mut node.kind) {
        (Segment::Map { key }, ValueKind::Table(t)) => t.remove(key).is_some(),
        (Segment::Seq { index }, ValueKind::Array(a)) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload names what changed: top-level sections, and keys within
    /// `alerts`; a secret's change counts though it is never shown.
    #[test]
    fn the_source_tells_which_sections_changed() {
        let a = load_from_str("[mqtt]\nport = 1883\nusername = \"u\"\npassword = \"x\"\n[alerts]\nrepeat_interval = \"4h\"\n")
            .unwrap();
        let same = load_from_str("[alerts]\nrepeat_interval = \"4h\"\n[mqtt]\npassword = \"x\"\nusername = \"u\"\nport = 1883\n")
            .unwrap();
        assert!(a.source.changed(&same.source).is_empty());
        let b = load_from_str(
            "[mqtt]\nport = 1883\nusername = \"u\"\npassword = \"y\"\n[alerts]\nrepeat_interval = \"1h\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(
            a.source.changed(&b.source),
            ["alerts.repeat_interval", "log", "mqtt"]
        );
        assert_eq!(format!("{:?}", b.source), "Source(..)");
    }

    /// A minute retention policy is a v1 notion: with v2 it is an error.
    #[test]
    fn a_minute_retention_policy_needs_the_v1_api() {
        let v2 = "[influxdb]\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\n";
        assert!(load_from_str(v2).is_ok());
        let e = load_from_str(&format!("{v2}minute_retention_policy = \"minute\"\n")).unwrap_err();
        assert!(
            e.0.iter()
                .any(|p| p.key == "influxdb.minute_retention_policy"),
            "{e:?}"
        );
        assert!(load_from_str("[influxdb]\nminute_retention_policy = \"minute\"\n").is_ok());
    }

    /// A worker's data loggers would bypass the partitions: HJ 212 over
    /// TCP goes into JetStream through an edge; a worker keeps no spool.
    #[test]
    fn a_cluster_worker_takes_no_hj212_listener_and_no_spool() {
        let worker = "[spool]\nenabled = false\n[cluster]\nworker = true\n";
        assert!(load_from_str(worker).is_ok());
        let hj212 = format!("{worker}[hj212]\nlisten = \"127.0.0.1:9212\"\n");
        let e = load_from_str(&hj212).unwrap_err();
        assert!(e.0.iter().any(|p| p.key == "hj212.listen"), "{e:?}");
        let both = hj212.replace("worker = true", "worker = true\nedge = true");
        assert!(load_from_str(&both).is_ok());
        let e = load_from_str("[cluster]\nworker = true\n").unwrap_err();
        assert!(e.0.iter().any(|p| p.key == "spool.enabled"), "{e:?}");
    }

    #[test]
    fn shipped_reference_config_states_the_defaults() {
        let shipped = load_from_str(include_str!("../../config/lantian.toml")).unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{:?}", Settings::default()));
    }

    /// One GB 3095 edition's PM limits at a time, by default the one that
    /// goes with the AQI edition: a day above 75 µg/m³ PM2.5 alerts once.
    #[test]
    fn one_gb3095_edition_applies_at_a_time() {
        let enabled = |toml: &str| -> Vec<String> {
            let s = load_from_str(toml).unwrap();
            let mut ids: Vec<String> = s
                .targets()
                .unwrap()
                .into_iter()
                .filter(|t| t.enabled && t.id.contains("gb3095") && t.id.contains("pm"))
                .map(|t| t.id)
                .collect();
            ids.sort();
            ids
        };
        let y2026 = ["air.gb3095-2026.pm10_24h", "air.gb3095-2026.pm25_24h"];
        let y2012 = ["air.gb3095-2012.pm10_24h", "air.gb3095-2012.pm25_24h"];
        assert_eq!(enabled(""), y2026);
        assert_eq!(enabled("[aqi]\nstandard = \"hj633-2012\"\n"), y2012);
        assert_eq!(enabled("[alerts]\ngb3095 = \"gb3095-2012\"\n"), y2012);
        assert_eq!(
            enabled("[aqi]\nstandard = \"hj633-2012\"\n[alerts]\ngb3095 = \"gb3095-2026\"\n"),
            y2026
        );
        // An operator can still turn one back on by hand.
        let both =
            enabled("[[alerts.targets]]\nid = \"air.gb3095-2012.pm25_24h\"\nenabled = true\n");
        assert_eq!(both.len(), 3, "{both:?}");
        // The gas limits are the same in both editions: always on.
        let s = load_from_str("[aqi]\nstandard = \"hj633-2012\"\n").unwrap();
        let so2 = s.targets().unwrap();
        assert!(
            so2.iter()
                .any(|t| t.id == "air.gb3095-2012.so2_24h" && t.enabled)
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let toml = "[mqtt]\nport = \"x\"\nhots = 1\n[[mqtt.subscriptions]]\nfilter = \"a/#/b\"\n\
                    [influxdb]\nbatch_max_lines = 0\n";
        let keys: Vec<String> = load_from_str(toml)
            .unwrap_err()
            .0
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "mqtt.hots",
                "mqtt.port",
                "mqtt.subscriptions[0].filter",
                "influxdb.batch_max_lines"
            ]
        );
    }
}
