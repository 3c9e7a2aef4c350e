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
/// `access_token`, WeCom's `key`). Not a URL: said so, not echoed.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "(not a URL)".into();
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    let masked: Vec<(String, &str)> = u
        .query_pairs()
        .map(|(k, _)| (k.into_owned(), "***"))
        .collect();
    if !masked.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(masked);
    }
    u.to_string()
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
        assert_eq!(
            redact_url("http://127.0.0.1:8086"),
            "http://127.0.0.1:8086/"
        );
        assert_eq!(redact_url("not a url ?token=x"), "(not a URL)");
    }
}
