//! Topic templates: `env/{district}/{site}/{kind}/{sensor}` → measurement
//! `kind` and tags `district`, `site`, `sensor`.

use std::fmt;

/// One parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The text as configured, for messages.
    source: String,
    levels: Vec<Level>,
    payload: Payload,
}

pub use crate::config::Payload;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    Capture(String),
}

/// What a topic says about its readings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The sensor network, used as the InfluxDB measurement (empty for an
    /// HJ 212 topic: the device says).
    pub kind: String,
    /// Every other capture, sorted by key (InfluxDB's preferred order).
    pub tags: Vec<(String, String)>,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is empty")]
    Empty,
    #[error("template must contain {{kind}}")]
    NoKind,
    #[error("placeholder {{{0}}} appears twice")]
    Duplicate(String),
    #[error("level {0:?} is neither a literal nor a {{name}} placeholder")]
    BadLevel(String),
    #[error("placeholder name {0:?} must be lowercase letters, digits or _")]
    BadName(String),
    #[error("MQTT wildcards (+, #) are not allowed in templates; use {{name}}")]
    Wildcard,
}

impl Template {
    /// A template of JSON readings (`{kind}` required).
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        Self::parse_for(s, Payload::Json)
    }

    /// A configured template (a string, or a table naming the payload).
    pub fn from_entry(e: &crate::config::TemplateEntry) -> Result<Self, TemplateError> {
        Self::parse_for(e.text(), e.payload())
    }

    pub fn parse_for(s: &str, payload: Payload) -> Result<Self, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut levels = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for level in s.split('/') {
            if level.contains(['+', '#']) {
                return Err(TemplateError::Wildcard);
            }
            if let Some(name) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(TemplateError::BadName(name.to_owned()));
                }
                if names.contains(&name) {
                    return Err(TemplateError::Duplicate(name.to_owned()));
                }
                names.push(name);
                levels.push(Level::Capture(name.to_owned()));
            } else if level.contains(['{', '}']) {
                return Err(TemplateError::BadLevel(level.to_owned()));
            } else {
                levels.push(Level::Literal(level.to_owned()));
            }
        }
        if payload == Payload::Json && !names.contains(&"kind") {
            return Err(TemplateError::NoKind);
        }
        Ok(Self {
            source: s.to_owned(),
            levels,
            payload,
        })
    }

    /// Match a topic; `None` when the shape differs or a captured level is
    /// empty (an empty tag value cannot be stored).
    pub fn capture(&self, topic: &str) -> Option<TopicInfo> {
        let mut kind = None;
        let mut tags = Vec::with_capacity(self.levels.len());
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(l) if l == part => {}
                Level::Literal(_) => return None,
                Level::Capture(_) if part.is_empty() => return None,
                Level::Capture(name) if name == "kind" => kind = Some(part.to_owned()),
                Level::Capture(name) => tags.push((name.clone(), part.to_owned())),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        tags.sort();
        let kind = match self.payload {
            Payload::Json => kind?,
            Payload::Hj212 => kind.unwrap_or_default(),
        };
        Some(TopicInfo {
            kind,
            tags,
            payload: self.payload,
        })
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why a topic was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// No template matched.
    NoTemplate,
    /// A template matched but the kind is not configured.
    UnknownKind(String),
    /// A level holds control characters.
    ControlChars,
}

/// The configured templates and kinds.
#[derive(Clone, Debug)]
pub struct TopicMap {
    templates: Vec<Template>,
    kinds: Vec<String>,
}

impl TopicMap {
    pub fn new(templates: Vec<Template>, kinds: Vec<String>) -> Self {
        Self { templates, kinds }
    }

    pub fn resolve(&self, topic: &str) -> Result<TopicInfo, TopicError> {
        if topic.chars().any(char::is_control) {
            return Err(TopicError::ControlChars);
        }
        let info = self
            .templates
            .iter()
            .find_map(|t| t.capture(topic))
            .ok_or(TopicError::NoTemplate)?;
        if info.payload == Payload::Hj212 || self.kinds.contains(&info.kind) {
            Ok(info)
        } else {
            Err(TopicError::UnknownKind(info.kind))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_map() -> TopicMap {
        TopicMap::new(
            vec![Template::parse("env/{district}/{site}/{kind}/{sensor}").unwrap()],
            vec!["air".into(), "dust".into()],
        )
    }

    #[test]
    fn default_template_yields_kind_and_sorted_tags() {
        let info = default_map()
            .resolve("env/dongcheng/dongsi/air/aq-0012")
            .unwrap();
        assert_eq!(info.kind, "air");
        assert_eq!(
            info.tags,
            vec![
                ("district".into(), "dongcheng".into()),
                ("sensor".into(), "aq-0012".into()),
                ("site".into(), "dongsi".into()),
            ]
        );
    }

    #[test]
    fn shape_kind_and_control_characters_are_checked() {
        let m = default_map();
        assert_eq!(m.resolve("env/a/b/air"), Err(TopicError::NoTemplate));
        assert_eq!(m.resolve("env/a/b/air/c/d"), Err(TopicError::NoTemplate));
        assert_eq!(m.resolve("other/a/b/air/c"), Err(TopicError::NoTemplate));
        assert_eq!(m.resolve("env/a//air/c"), Err(TopicError::NoTemplate));
        assert_eq!(
            m.resolve("env/a/b/water/c"),
            Err(TopicError::UnknownKind("water".into()))
        );
        assert_eq!(m.resolve("env/a\n/b/air/c"), Err(TopicError::ControlChars));
    }

    #[test]
    fn template_errors_are_specific() {
        assert_eq!(Template::parse("env/{site}"), Err(TemplateError::NoKind));
        assert_eq!(
            Template::parse("env/{kind}/{kind}"),
            Err(TemplateError::Duplicate("kind".into()))
        );
        assert_eq!(
            Template::parse("env/+/{kind}"),
            Err(TemplateError::Wildcard)
        );
        assert_eq!(
            Template::parse("env/x{kind}"),
            Err(TemplateError::BadLevel("x{kind}".into()))
        );
        assert_eq!(
            Template::parse("env/{Kind}"),
            Err(TemplateError::BadName("Kind".into()))
        );
    }
}
