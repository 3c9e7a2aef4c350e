//! Text for people: HTML escaping, and numbers rounded as a person writes
//! them. Used by the status page, the report's charts and webhook texts.

/// HTML-escapes text (also safe in XML/SVG attributes and text).
/// A name safe as a file name or a NATS subject token: characters other
/// than ASCII letters, digits, `_` and `-` become `_`.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn escape_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A value for people: three significant digits, never fewer than the
/// integer part has (245, 81.3, 1.23, 0.0523), no trailing zeros.
pub fn for_people(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let magnitude = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    let text = format!("{v:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_rounded_for_people() {
        let cases = [
            (81.27083333333333, "81.3"),
            (245.0, "245"),
            (1234.56, "1235"),
            (1.2345, "1.23"),
            (0.05234, "0.0523"),
            (90.0, "90"),
            (0.0, "0"),
            (-3.2468, "-3.25"),
            (-0.0001, "-0.0001"),
        ];
        for (v, want) in cases {
            assert_eq!(for_people(v), want, "{v}");
        }
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
