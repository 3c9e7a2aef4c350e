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
