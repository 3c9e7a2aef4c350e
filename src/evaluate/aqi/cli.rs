//! `lantian aqi`: the index for concentrations given as `KEY=VALUE`
//! arguments, or as JSON objects one per line on stdin.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

use super::{Standard, evaluate};

/// Evaluates `KEY=VALUE` pairs; prints one JSON object. Err is the message
/// for stderr (exit 2).
pub fn from_args(standard: Standard, pairs: &[String]) -> Result<Value, String> {
    let mut inputs = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?}: expected KEY=VALUE, e.g. pm25_24h=80"));
        };
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key}: {value:?} is not a number"))?;
        inputs.push((key.trim(), value));
    }
    evaluate(standard, &inputs)
        .map(|e| e.to_json())
        .map_err(|e| e.to_string())
}

/// Evaluates one JSON object per input line, writing one JSON object per
/// output line in the same order; a bad line gives `{"error": ...}`.
pub fn json_lines(
    standard: Standard,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let result = from_json_line(standard, &line)
            .unwrap_or_else(|e| json!({"error": format!("line {}: {e}", n + 1)}));
        serde_json::to_writer(&mut output, &result)?;
        output.write_all(b"\n")?;
    }
    output.flush()
}

fn from_json_line(standard: Standard, line: &str) -> Result<Value, String> {
    let obj: serde_json::Map<String, Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut inputs = Vec::with_capacity(obj.len());
    for (key, value) in &obj {
        let Some(v) = value.as_f64() else {
            return Err(format!("{key}: {value} is not a number"));
        };
        inputs.push((key.as_str(), v));
    }
    evaluate(standard, &inputs)
        .map(|e| e.to_json())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let v = from_args(Standard::Hj633_2026, &["pm25_24h=80".into()]).unwrap();
        assert_eq!(v["aqi"], 119);
        let e = from_args(Standard::Hj633_2026, &["pm25_24h".into()]).unwrap_err();
        assert!(e.contains("KEY=VALUE"));
        let e = from_args(Standard::Hj633_2026, &["pm25_24h=abc".into()]).unwrap_err();
        assert!(e.contains("not a number"));
    }

    #[test]
    fn lines_keep_order_and_carry_on_after_errors() {
        let input = "{\"pm25_24h\": 80}\nnot json\n{\"co_8h\": 1}\n{\"pm10_24h\": \"x\"}\n{}\n";
        let mut out = Vec::new();
        json_lines(Standard::Hj633_2026, input.as_bytes(), &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["aqi"], 119);
        assert!(lines[1]["error"].as_str().unwrap().starts_with("line 2"));
        assert!(lines[2]["error"].as_str().unwrap().contains("co_8h"));
        assert!(lines[3]["error"].as_str().unwrap().contains("not a number"));
        assert_eq!(lines[4]["aqi"], Value::Null);
    }
}
