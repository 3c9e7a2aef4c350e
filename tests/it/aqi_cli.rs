//! `lantian aqi` as a script would use it, checked against the independent
//! reference in `aqi_ref.rs`: large random samples, every breakpoint, and
//! the edge rules — exact integers.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::aqi_ref::{self, HJ_DECIMALS};

fn run_lines(standard: &str, input: &str) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["aqi", "--standard", standard, "--json-lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(got: &Value, want: &aqi_ref::Ref, input: &str) {
    assert_eq!(got["aqi"].as_i64(), want.aqi, "aqi for {input}: {got}");
    let iaqi: BTreeMap<String, i64> = got["iaqi"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    assert_eq!(iaqi, want.iaqi, "iaqi for {input}: {got}");
    let primary: Vec<String> = got["primary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(primary, want.primary, "primary for {input}: {got}");
}

/// Random inputs: each key present with probability 1/2, values up to a
/// bit beyond the top breakpoint (and concentrated near the low end, where
/// most real readings are).
fn random_hj(
    rng: &mut fastrand::Rng,
    edition: u32,
    n: usize,
) -> (String, Vec<BTreeMap<&'static str, i64>>) {
    let table = aqi_ref::hj_table(edition);
    let scale = 10i64.pow(HJ_DECIMALS);
    let mut text = String::new();
    let mut all = Vec::new();
    for _ in 0..n {
        let mut inputs = BTreeMap::new();
        for (key, bp) in &table {
            if rng.bool() {
                let top = *bp.last().unwrap() * scale;
                let max = if rng.u8(..4) == 0 {
                    top * 11 / 10
                } else {
                    top / 4
                };
                inputs.insert(*key, rng.i64(0..=max));
            }
        }
        let obj: Vec<String> = inputs
            .iter()
            .map(|(k, v)| format!("\"{k}\": {}", aqi_ref::text(*v, HJ_DECIMALS)))
            .collect();
        text.push_str(&format!("{{{}}}\n", obj.join(", ")));
        all.push(inputs);
    }
    (text, all)
}

#[test]
fn hj633_agrees_with_the_formula_on_random_samples() {
    let mut rng = fastrand::Rng::with_seed(633);
    for (standard, edition) in [("hj633-2026", 2026), ("hj633-2012", 2012)] {
        let (input, all) = random_hj(&mut rng, edition, 20_000);
        let got = run_lines(standard, &input);
        assert_eq!(got.len(), all.len());
        for ((g, inputs), line) in got.iter().zip(&all).zip(input.lines()) {
            check(g, &aqi_ref::hj(edition, inputs), line);
        }
    }
}

#[test]
fn epa_agrees_with_the_formula_on_random_samples() {
    let mut rng = fastrand::Rng::with_seed(2024);
    let table = aqi_ref::epa_table();
    let mut input = String::new();
    let mut all = Vec::new();
    for _ in 0..20_000 {
        let mut inputs = BTreeMap::new();
        let mut obj = Vec::new();
        for (key, d, bands) in &table {
            if rng.bool() {
                let top = bands.last().unwrap().1 * 10 + 9;
                let max = if rng.u8(..4) == 0 {
                    top * 11 / 10
                } else {
                    top / 3
                };
                let v = rng.i64(0..=max);
                inputs.insert(*key, v);
                obj.push(format!("\"{key}\": {}", aqi_ref::text(v, d + 1)));
            }
        }
        input.push_str(&format!("{{{}}}\n", obj.join(", ")));
        all.push(inputs);
    }
    let got = run_lines("epa-2024", &input);
    assert_eq!(got.len(), all.len());
    for ((g, inputs), line) in got.iter().zip(&all).zip(input.lines()) {
        check(g, &aqi_ref::epa(inputs), line);
    }
}

#[test]
fn every_breakpoint_gives_its_index() {
    for (standard, edition) in [("hj633-2026", 2026), ("hj633-2012", 2012)] {
        let mut input = String::new();
        let mut want = Vec::new();
        for (key, bp) in aqi_ref::hj_table(edition) {
            for (i, c) in bp.iter().enumerate() {
                input.push_str(&format!("{{\"{key}\": {c}}}\n"));
                want.push([0, 50, 100, 150, 200, 300, 400, 500][i]);
            }
        }
        let got = run_lines(standard, &input);
        let got: Vec<i64> = got.iter().map(|g| g["aqi"].as_i64().unwrap()).collect();
        assert_eq!(got, want, "{standard}");
    }
    // EPA: both ends of every band.
    let mut input = String::new();
    let mut want = Vec::new();
    for (key, d, bands) in aqi_ref::epa_table() {
        for (clo, chi, ilo, ihi) in bands {
            input.push_str(&format!("{{\"{key}\": {}}}\n", aqi_ref::text(clo, d)));
            input.push_str(&format!("{{\"{key}\": {}}}\n", aqi_ref::text(chi, d)));
            want.extend([ilo, ihi]);
        }
    }
    let got = run_lines("epa-2024", &input);
    let got: Vec<i64> = got.iter().map(|g| g["aqi"].as_i64().unwrap()).collect();
    assert_eq!(got, want);
}

fn aqi(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .arg("aqi")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn edge_rules_and_errors() {
    // SO2 1 h above 800 uses the 24 h IAQI.
    let (code, v, _) = aqi(&["so2_1h=801", "so2_24h=200"]);
    assert_eq!(code, 0);
    assert_eq!(v["iaqi"]["so2_1h"], 108);
    // O3 8 h above 800 uses the 1 h IAQI; without it HJ 633-2026 gives 300.
    let (_, v, _) = aqi(&["o3_8h=900", "o3_1h=1000"]);
    assert_eq!(v["aqi"], 400);
    let (_, v, _) = aqi(&["o3_8h=900"]);
    assert_eq!(v["aqi"], 300);
    assert!(v["notes"][0].as_str().unwrap().contains("unconfirmed"));
    let (_, v, _) = aqi(&["--standard", "hj633-2012", "o3_8h=900"]);
    assert_eq!(v["aqi"], Value::Null);
    assert_eq!(v["beyond_index"][0], "o3_8h");
    // The example.
    let (_, v, _) = aqi(&["pm25_24h=80", "o3_8h=120"]);
    assert_eq!(v["aqi"], 119);
    assert_eq!(v["category"], "lightly_polluted");
    assert_eq!(v["level"], 3);
    assert_eq!(v["color"], "#FF7E00");
    assert_eq!(v["primary"][0], "pm25_24h");
    // Primary only above 50.
    let (_, v, _) = aqi(&["pm25_24h=35"]);
    assert_eq!(v["aqi"], 50);
    assert_eq!(v["primary"], serde_json::json!([]));
    // EPA names.
    let (_, v, _) = aqi(&["-s", "epa-2024", "pm25_24h=100"]);
    assert_eq!(v["aqi"], 182);
    assert_eq!(v["category"], "unhealthy");
    // Errors: stderr and exit 2.
    for bad in [
        &["pm25=80"][..],
        &["pm25_24h=abc"],
        &["pm25_24h=-1"],
        &["--standard", "epa-2024", "co_24h=1"],
    ] {
        let (code, _, stderr) = aqi(bad);
        assert_eq!(code, 2, "{bad:?}");
        assert!(stderr.starts_with("lantian aqi: "), "{stderr}");
    }
    let (code, _, stderr) = aqi(&["--standard", "who-2021", "pm25_24h=1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("hj633-2026"), "{stderr}");
}
