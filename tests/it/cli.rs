//! The command line as an operator meets it.

use std::process::Command;

fn lantian(args: &[&str]) -> (i32, String, String) {
    lantian_with(args, &[])
}

/// [`lantian`] with environment variables set.
fn lantian_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LANTIAN_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_every_mistake_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nprot = 1883\n[[mqtt.subscriptions]]\nfilter = \"env/#\"\nqos = 5\n\
         [influxdb]\nrequest_timeout = \"soon\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = lantian(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 78, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(stderr.contains("mqtt.prot: unknown key"), "{stderr}");
    assert!(
        stderr.contains("mqtt.subscriptions[0].qos: 5 is not a QoS"),
        "{stderr}"
    );
    assert!(
        stderr.contains("influxdb.request_timeout: invalid duration \"soon\""),
        "{stderr}"
    );
}

#[test]
fn shipped_config_is_valid_and_env_overrides_it() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/lantian.toml");
    let (code, stdout, stderr) = lantian(&["check-config", "--config", cfg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("configuration OK: mqtt 127.0.0.1:1883"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["check-config", "--config", cfg])
        .env("LANTIAN__MQTT__PORT", "1884")
        .env("LANTIAN__INFLUXDB__URL", "http://influx.internal:8086")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("127.0.0.1:1884") && stdout.contains("http://influx.internal:8086"),
        "{stdout}"
    );
    // The summary names the HJ 212 listener when one is on.
    assert!(!stdout.contains("hj212"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["check-config", "--config", cfg])
        .env("LANTIAN__HJ212__LISTEN", "0.0.0.0:9212")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("; hj212 listening on 0.0.0.0:9212, 0 devices"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["check-config", "--config", cfg])
        .env("LANTIAN__MQTT__NOSUCHKEY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.nosuchkey: unknown key"));
    // The daemon refuses to start on it with the same status (EX_CONFIG,
    // which the unit does not restart on).
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["run", "--config", cfg])
        .env("LANTIAN__MQTT__NOSUCHKEY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start"));
}

#[test]
fn secrets_never_reach_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[influxdb]\napi = \"v2\"\nurl = \"http://x:8086\"\norg = \"o\"\nbucket = \"b\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lantian"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("LANTIAN__INFLUXDB__TOKEN", "sup3rs3cret")
        .env("LANTIAN__MQTT__PORT", "0")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(78), "{all}");
    assert!(all.contains("mqtt.port"), "{all}");
    assert!(!all.contains("sup3rs3cret"), "{all}");
}

#[test]
fn help_explains_configuration() {
    let (code, stdout, _) = lantian(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("LANTIAN__SECTION__KEY"), "{stdout}");
    assert!(stdout.contains("check-config"), "{stdout}");
    let (code, _, stderr) = lantian(&["run", "--config", "/nonexistent/lantian.toml"]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("/nonexistent/lantian.toml does not exist"),
        "{stderr}"
    );
}

#[test]
fn targets_lists_rules_with_citations() {
    let (code, stdout, _) = lantian(&["targets"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("air.aqi.hour.heavy"), "{stdout}");
    assert!(
        stdout.contains("rule: treatment_rate.day < 95 %"),
        "{stdout}"
    );
    assert!(stdout.contains("report: §5: raise the city's sewage treatment rate to 95 %"));
    assert!(
        !stdout.contains("UNCONFIRMED"),
        "unconfirmed targets ship disabled"
    );
    let (code, all, _) = lantian(&["targets", "--all"]);
    assert_eq!(code, 0);
    assert!(
        all.contains("air.alert-level.2023  [off, UNCONFIRMED"),
        "{all}"
    );
}

#[test]
fn targets_apply_the_operators_overrides_and_check_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[alerts.targets]]\nid = \"dust.pm10.site\"\nenabled = true\nvalue = 150\n\
         [[alerts.targets]]\nid = \"air.alert-level.2016\"\nenabled = false\n\
         [[alerts.targets]]\nid = \"local.no2.hour\"\nname = \"NO2 hour\"\nkind = \"air\"\n\
         metric = \"no2.hour\"\nop = \">\"\nvalue = 200\nclear = 180\nunit = \"µg/m³\"\n\
         severity = \"warning\"\nfor = \"1h\"\n",
    )
    .unwrap();
    let (code, out, err) = lantian(&["targets", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dust.pm10.site  [on, operational, Warning]"),
        "{out}"
    );
    assert!(out.contains("rule: pm10.hour > 150 µg/m³"), "{out}");
    assert!(out.contains("report: §5: dusting"), "citation kept: {out}");
    assert!(!out.contains("air.alert-level.2016"), "{out}");
    assert!(
        out.contains("rule: no2.hour > 200 µg/m³  [for 1h, clears at 180]"),
        "{out}"
    );
    assert!(out.contains("report: operator"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[alerts.targets]]\nid = \"voc.printing.tvoc\"\nenabled = true\n\
         [[alerts.targets]]\nid = \"air.aqi.hour.heavy\"\nclear = 250\n",
    )
    .unwrap();
    let (code, _, err) = lantian(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        err.contains("alerts.targets[0]: voc.printing.tvoc: enabled but has no value"),
        "{err}"
    );
    assert!(err.contains("alerts.targets[1]"), "{err}");
}

/// `lantian hj212 parse` over the sample files: one JSON object a line
/// in, each a packet or an error; exit 0 only when every packet decoded;
/// no password in the output.
#[test]
fn hj212_parse_reads_the_field_samples_line_by_line() {
    let run = |file: &str, crc: &str| -> (i32, Vec<serde_json::Value>, String) {
        let input = std::fs::read(format!(
            "{}/tests/data/hj212/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lantian"))
            .args(["hj212", "parse", "--crc", crc])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Comment lines are not packets; CR LF as a logger sends them.
        let packets: Vec<u8> = String::from_utf8(input)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("##"))
            .flat_map(|l| format!("{l}\r\n").into_bytes())
            .collect();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&packets).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains("BF470F88957588DE902D1A52"),
            "a password printed"
        );
        (
            out.status.code().unwrap_or(-1),
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run("samples-verified.txt", "hj212");
    assert_eq!((code, out.len()), (0, 40));
    assert!(
        out.iter()
            .all(|o| o["crc"] == "ok" && o.get("error").is_none())
    );
    let (code, out, _) = run("samples-from-the-standard.txt", "hj212");
    assert_eq!((code, out.len()), (0, 12));
    // MODBUS devices under the default policy: refused, one error a line.
    let (code, out, stderr) = run("samples-other-crc.txt", "hj212");
    assert_eq!((code, out.len()), (1, 23));
    let errors = out.iter().filter(|o| o["error"].is_string()).count();
    assert_eq!(errors, 23, "{stderr}");
    assert!(stderr.contains("23 of 23 packets refused"), "{stderr}");
    let (_, out, _) = run("samples-other-crc.txt", "modbus");
    assert_eq!(out.iter().filter(|o| o["crc"] == "ok").count(), 13);
    let (code, out, _) = run("samples-other-crc.txt", "any");
    assert_eq!((code, out.len()), (0, 23));
    assert!(out.iter().all(|o| o["crc"] == "mismatch"));
}

/// `lantian config`: the effective configuration, each key with where it
/// came from; the environment names its variable; secrets never shown;
/// what it prints is a configuration that checks.
#[test]
fn config_prints_the_effective_configuration_with_origins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[mqtt]\nhost = \"broker.example\"\nusername = \"u\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let (code, text, _) = lantian_with(
        &["config", "--config", path.to_str().unwrap()],
        &[
            ("LANTIAN__MQTT__PORT", "1999"),
            ("LANTIAN__INFLUXDB__TOKEN", "s3cr3t-token"),
        ],
    );
    assert_eq!(code, 0, "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key}:\n{text}"))
            .to_owned()
    };
    let canonical = std::fs::canonicalize(&path).unwrap();
    assert!(
        line("host").ends_with(&format!("# {}", canonical.display())),
        "{text}"
    );
    assert!(
        line("port").ends_with("# environment (LANTIAN__MQTT__PORT)"),
        "{text}"
    );
    assert!(line("client_id").ends_with("# default"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cr3t-token"),
        "{text}"
    );
    // Printed, redacted secrets put back, it is a configuration that checks.
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, text.replace("\"<redacted>\"", "\"x\"")).unwrap();
    let (code, _, err) = lantian(&["check-config", "--config", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// `lantian try`: a message in, the lines it would write out (or why it
/// would be quarantined); a packet on standard input for an HJ 212 topic.
#[test]
fn try_shows_what_a_message_becomes() {
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lantian"))
            .args(args)
            .env_remove("LANTIAN_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (code, out) = run(
        &[
            "try",
            "env/dongcheng/dongsi/air/aq1",
            &format!("{{\"ts\":{now_ms},\"pm25\":35,\"no2\":40}}"),
        ],
        "",
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        format!(
            "air,district=dongcheng,sensor=aq1,site=dongsi no2=40,pm25=35 {}\n",
            now_ms * 1_000_000
        )
    );
    // A bad field is quarantined with its reason; the good one still goes.
    let (code, out) = run(
        &[
            "try",
            "env/dongcheng/dongsi/air/aq1",
            &format!("{{\"ts\":{now_ms},\"pm25\":-5,\"no2\":40}}"),
        ],
        "",
    );
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("air,district=dongcheng,sensor=aq1,site=dongsi no2=40 "));
    assert!(
        lines[1].starts_with("# quarantined: out_of_range: pm25"),
        "{out}"
    );
    // An HJ 212 packet on standard input, from a registered device.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[hj212.devices]]\nmn = \"LOGGER-1\"\npassword = \"123456\"\ndistrict = \"chaoyang\"\n\
         site = \"gaobeidian\"\nkind = \"sewage\"\n",
    )
    .unwrap();
    let hour = chrono::Utc::now() - chrono::Duration::hours(2);
    let t = (hour + chrono::Duration::hours(8)).format("%Y%m%d%H0000");
    let packet = crate::harness::hj212_packet(&format!(
        "QN=1;ST=32;CN=2061;PW=123456;MN=LOGGER-1;Flag=4;CP=&&DataTime={t};w01018-Avg=40.5,w01018-Flag=N&&"
    ));
    let (code, out) = run(
        &[
            "try",
            "--config",
            cfg.to_str().unwrap(),
            "$hj212/tcp/10.0.0.7:5000",
        ],
        &format!("{packet}\r\n"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with(
            "sewage,cn=2061,district=chaoyang,sensor=LOGGER-1,site=gaobeidian cod=40.5 "
        ),
        "{out}"
    );
}

/// `--version` names the git revision it was built from.
#[test]
fn version_names_the_git_revision() {
    let (code, stdout, _) = lantian(&["--version"]);
    assert_eq!(code, 0);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        stdout.trim(),
        format!("lantian {} (git {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// Shell completions that the shell accepts, and manual pages that groff
/// renders without a warning, from the command line's own help.
#[test]
fn completions_and_manual_pages_are_generated() {
    let (code, bash, _) = lantian(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(bash.contains("check-config") && bash.contains("--config"));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lantian.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let (code, zsh, _) = lantian(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef lantian"));

    let out = dir.path().join("man1");
    let (code, _, err) = lantian(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for p in [
        "lantian.1",
        "lantian-run.1",
        "lantian-check-config.1",
        "lantian-hj212-parse.1",
    ] {
        assert!(pages.contains(&p.to_owned()), "{p} in {pages:?}");
    }
    for p in &pages {
        let r = Command::new("groff")
            .args(["-K", "utf8", "-man", "-Tutf8", "-ww"])
            .arg(out.join(p))
            .output()
            .expect("groff (Debian package groff-base)");
        // A packet example is one word longer than a line: it overflows,
        // which groff says; anything else is a defect of the page.
        let stderr = String::from_utf8_lossy(&r.stderr);
        let other: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("can't break line"))
            .collect();
        assert!(r.status.success() && other.is_empty(), "{p}: {stderr}");
        if p == "lantian.1" {
            let text = String::from_utf8_lossy(&r.stdout);
            assert!(text.contains("LANTIAN__SECTION__KEY"), "{text}");
        }
    }
}
