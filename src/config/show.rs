//! `lantian config`: the effective configuration, every key with its value
//! and where it came from — the built-in default (the reference file,
//! `config/lantian.toml`, states every default), the configuration file,
//! or the environment (`LANTIAN__SECTION__KEY`). Secrets are redacted.

use std::collections::BTreeMap;
use std::fmt::Write;

use config::{Config, File, FileFormat, Value, ValueKind};

use super::Source;

/// The reference configuration: every key at its default.
pub const REFERENCE: &str = include_str!("../../config/lantian.toml");

/// Keys whose values are secrets (their `_file` paths are not).
const SECRET_KEYS: [&str; 4] = ["password", "token", "secret", "sm4_key"];

/// The effective configuration of `source` (what settings were read from)
/// over the defaults, as TOML with each key's origin in a comment.
pub fn effective(source: &Source) -> String {
    let defaults = Config::builder()
        .add_source(File::from_str(REFERENCE, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .and_then(Value::into_table)
        .unwrap_or_default();
    let given = match source.tree().map(|v| &v.kind) {
        Some(ValueKind::Table(t)) => t.clone(),
        _ => Default::default(),
    };
    let mut sections: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    let mut keys: Vec<&String> = defaults.keys().chain(given.keys()).collect();
    keys.sort();
    keys.dedup();
    for section in keys {
        let mut rows = Vec::new();
        leaves(
            source,
            section,
            "",
            defaults.get(section),
            given.get(section),
            &mut rows,
        );
        sections.insert(section.clone(), rows);
    }
    let mut out = String::from(
        "# lantian's effective configuration: each key's value and where it\n\
         # came from (default, the file, or the environment). Secrets redacted.\n",
    );
    let width = sections
        .values()
        .flatten()
        .map(|(k, v, _)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0)
        .min(60);
    for (section, rows) in sections {
        let _ = write!(out, "\n[{section}]\n");
        for (key, value, from) in rows {
            let line = format!("{key} = {value}");
            let _ = writeln!(out, "{line:width$}  # {from}");
        }
    }
    out
}

/// The leaves under one key: the given value where there is one (a table
/// merged key by key, anything else whole), the default otherwise.
fn leaves(
    source: &Source,
    section: &str,
    prefix: &str,
    default: Option<&Value>,
    given: Option<&Value>,
    out: &mut Vec<(String, String, String)>,
) {
    let table = |v: Option<&Value>| match v.map(|v| &v.kind) {
        Some(ValueKind::Table(t)) => Some(t.clone()),
        _ => None,
    };
    let (dt, gt) = (table(default), table(given));
    if dt.is_some() || gt.is_some() {
        let (dt, gt) = (dt.unwrap_or_default(), gt.unwrap_or_default());
        let mut keys: Vec<&String> = dt.keys().chain(gt.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            // A given scalar replaces a default table (and the reverse).
            match (dt.get(k), gt.get(k)) {
                (_, Some(g)) if !matches!(g.kind, ValueKind::Table(_)) => {
                    let from = source.origin(&format!("{section}.{key}"));
                    out.push((key, render(k, g), from));
                }
                (d, g) => leaves(source, section, &key, d, g, out),
            }
        }
        return;
    }
    let last = prefix.rsplit('.').next().unwrap_or(prefix);
    match (given, default) {
        (Some(g), _) => out.push((
            prefix.to_owned(),
            render(last, g),
            source.origin(&format!("{section}.{prefix}")),
        )),
        (None, Some(d)) => out.push((prefix.to_owned(), render(last, d), "default".into())),
        (None, None) => {}
    }
}

/// A value as TOML (inline), a secret as `"<redacted>"`.
fn render(key: &str, v: &Value) -> String {
    if SECRET_KEYS.contains(&key) {
        return "\"<redacted>\"".into();
    }
    match &v.kind {
        ValueKind::Nil => "\"\"".into(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => n.to_string(),
        ValueKind::I128(n) => n.to_string(),
        ValueKind::U64(n) => n.to_string(),
        ValueKind::U128(n) => n.to_string(),
        ValueKind::Float(f) => {
            let s = f.to_string();
            if s.contains(['.', 'e', 'i', 'N']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        ValueKind::String(s) => serde_json::Value::String(s.clone()).to_string(),
        ValueKind::Array(a) => {
            let items: Vec<String> = a.iter().map(|x| render("", x)).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{} = {}", bare(k), render(k, &t[k])))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// A key as TOML writes it: bare when it can be.
fn bare(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        serde_json::Value::String(k.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in\n{text}"))
    }

    /// Each key's origin; a secret never shown; a given array whole.
    #[test]
    fn every_key_says_where_it_came_from() {
        let path = std::env::temp_dir().join(format!("lantian-show-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[mqtt]\nport = 1884\nusername = \"u\"\npassword = \"hunter2\"\n\
             [[mqtt.subscriptions]]\nfilter = \"a/#\"\nqos = 0\n",
        )
        .unwrap();
        let s = super::super::load(Some(&path)).unwrap();
        let text = effective(&s.source);
        let _ = std::fs::remove_file(&path);
        let file = path.display().to_string();
        assert!(
            line(&text, "port").ends_with(&format!("# {file}")),
            "{text}"
        );
        assert!(line(&text, "port").starts_with("port = 1884 "), "{text}");
        assert!(line(&text, "host").ends_with("# default"), "{text}");
        assert!(line(&text, "password").contains("\"<redacted>\""), "{text}");
        assert!(!text.contains("hunter2"));
        let subs = line(&text, "subscriptions");
        assert!(
            subs.starts_with("subscriptions = [{ filter = \"a/#\", qos = 0 }]"),
            "{subs}"
        );
        // Every section of the reference is there.
        for section in [
            "[mqtt]",
            "[influxdb]",
            "[spool]",
            "[windows]",
            "[alerts]",
            "[hj212]",
        ] {
            assert!(text.contains(section), "{section}");
        }
        // What it prints reads back as the same settings (secrets aside).
        let again =
            super::super::load_from_str(&text.replace("\"<redacted>\"", "\"hunter2\"")).unwrap();
        assert_eq!(format!("{again:?}"), format!("{s:?}"));
    }
}
