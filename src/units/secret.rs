//! Secrets (passwords, tokens): never printed, loadable from a file.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// A secret string. `Debug` and `Display` print `<redacted>`, so a secret
/// cannot reach a log line by accident.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The inline value, or else the content of `file` (a trailing newline
    /// is removed). Setting both is an error.
    pub fn resolve(inline: Option<&Secret>, file: Option<&Path>) -> Result<Option<Secret>, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err("set either the value or the _file, not both".into()),
            (Some(s), None) => Ok(Some(s.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Some(Secret(s.trim_end_matches(['\n', '\r']).to_owned())))
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn secret_from_file_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = Secret::resolve(None, Some(&p)).unwrap().unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(Secret::resolve(Some(&s), Some(&p)).is_err());
    }
}

/// A URL as it may be logged: credentials in the authority replaced
/// (`***@host`) and every query value masked (`?key=***`: DingTalk's
/// `access_token`, WeCom's `key`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, None), |(a, p)| (a, Some(p)));
            let authority = match authority.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => authority.to_owned(),
            };
            match path {
                Some(p) => format!("{scheme}://{authority}/{p}"),
                None => format!("{scheme}://{authority}"),
            }
        }
        None => base.to_owned(),
    };
    let Some(query) = query else {
        return base;
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", masked.join("&"))
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn credentials_and_query_values_never_reach_the_log() {
        assert_eq!(
            redact_url("https://oapi.dingtalk.com/robot/send?access_token=abc123"),
            "https://oapi.dingtalk.com/robot/send?access_token=***"
        );
        assert_eq!(
            redact_url("http://lantian:s3cret@db.example:8086/write?db=env&u=x"),
            "http://***@db.example:8086/write?db=***&u=***"
        );
        assert_eq!(redact_url("http://127.0.0.1:8086"), "http://127.0.0.1:8086");
    }
}
