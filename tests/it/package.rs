//! The Debian package (`scripts/package-deb.sh`, cargo-deb) installed on a
//! clean Debian root made by mmdebstrap: `dpkg -i`, the unit enabled and
//! accepted by `systemd-analyze verify`, the installed configuration
//! accepted by `lantian check-config`, debug info in the dbgsym package,
//! and a purge that leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chroot(root: &Path, args: &[&str]) -> Output {
    run(
        &format!("chroot {}", args.join(" ")),
        Command::new("chroot").arg(root).args(args),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The section names of an ELF file.
fn sections(file: &Path) -> String {
    text(&run(
        "readelf -S",
        Command::new("readelf").args(["-S", "-W"]).arg(file),
    ))
}

/// This machine's Debian release (the clean root is the same release).
fn codename() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .expect("VERSION_CODENAME in /etc/os-release (Debian)")
}

#[test]
fn the_debian_package_installs_on_a_clean_root_and_its_unit_and_config_check_out() {
    if !crate::harness::running_as_root() {
        // chroot needs root; CI runs the suite as root.
        assert!(
            std::env::var_os("CI").is_none(),
            "the package install test needs root (chroot)"
        );
        eprintln!("skipped: the package install test needs root (chroot)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The packages, from this build's binary (the release build takes
    // 20 minutes; what is checked here does not depend on optimisation).
    let bin = Path::new(env!("CARGO_BIN_EXE_lantian"));
    let profile_dir = bin.parent().unwrap();
    let target = profile_dir.parent().unwrap();
    assert_eq!(profile_dir.file_name().unwrap(), "debug");
    run(
        "scripts/package-deb.sh",
        Command::new(repo.join("scripts/package-deb.sh"))
            .args(["--profile", "dev", "--no-build", "--fast"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(repo),
    );
    let version = env!("CARGO_PKG_VERSION");
    let debian = repo.join("target/debian");
    let deb = debian.join(format!("lantian_{version}-1_amd64.deb"));
    let ddeb = debian.join(format!("lantian-dbgsym_{version}-1_amd64.ddeb"));
    assert!(deb.exists() && ddeb.exists(), "{}", debian.display());

    // A clean Debian root with systemd (for deb-systemd-helper and
    // systemd-analyze), from the Debian mirror.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    run(
        "mmdebstrap (Debian package mmdebstrap)",
        Command::new("mmdebstrap")
            .args([
                "--quiet",
                "--mode=root",
                "--variant=minbase",
                "--include=systemd",
            ])
            .arg(codename())
            .arg(&root)
            .arg("http://deb.debian.org/debian"),
    );
    assert!(!root.join("usr/bin/lantian").exists());
    for f in [&deb, &ddeb] {
        std::fs::copy(f, root.join("tmp").join(f.file_name().unwrap())).unwrap();
    }
    let inside = |f: &PathBuf| format!("/tmp/{}", f.file_name().unwrap().to_string_lossy());

    let installed = chroot(&root, &["dpkg", "-i", &inside(&deb)]);
    assert!(
        text(&installed).contains("enabled, not started"),
        "{}",
        text(&installed)
    );
    // The unit: enabled, accepted by systemd-analyze, running /usr/bin.
    let enabled = chroot(&root, &["systemctl", "is-enabled", "lantian.service"]);
    assert_eq!(text(&enabled).trim(), "enabled");
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/lantian.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/lantian run --config /etc/lantian/lantian.toml\n"));
    assert!(!unit.contains("/usr/local/"), "{unit}");
    chroot(
        &root,
        &["systemd-analyze", "verify", "--man=no", "lantian.service"],
    );
    // The installed configuration, as lantian reads it.
    let checked = chroot(
        &root,
        &[
            "lantian",
            "check-config",
            "--config",
            "/etc/lantian/lantian.toml",
        ],
    );
    assert!(
        text(&checked).starts_with("configuration OK"),
        "{}",
        text(&checked)
    );
    let conffiles = chroot(&root, &["dpkg-query", "-W", "-f=${Conffiles}", "lantian"]);
    assert!(text(&conffiles).contains("/etc/lantian/lantian.toml"));
    // Manual pages and completions.
    for f in [
        "usr/share/man/man1/lantian.1.gz",
        "usr/share/man/man1/lantian-run.1.gz",
        "usr/share/bash-completion/completions/lantian",
        "usr/share/zsh/vendor-completions/_lantian",
        "usr/share/fish/vendor_completions.d/lantian.fish",
        "usr/share/lantian/influxdb/setup.sh",
        "usr/share/lantian/grafana/lantian-dashboard.json",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    // A stripped binary; its debug info in the dbgsym package, under its
    // build id.
    let binary = root.join("usr/bin/lantian");
    assert!(!sections(&binary).contains(".debug_line"));
    let notes = text(&run(
        "readelf -n",
        Command::new("readelf").arg("-n").arg(&binary),
    ));
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .to_owned();
    chroot(&root, &["dpkg", "-i", &inside(&ddeb)]);
    let debug = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    assert!(
        sections(&debug).contains(".debug_line"),
        "{}",
        debug.display()
    );
    eprintln!(
        "package: binary {} MB stripped, debug info {} MB",
        binary.metadata().unwrap().len() >> 20,
        debug.metadata().unwrap().len() >> 20
    );

    // Purged: the unit's links, the configuration and the files go.
    chroot(&root, &["dpkg", "--purge", "lantian-dbgsym", "lantian"]);
    assert!(!root.join("usr/bin/lantian").exists());
    assert!(!root.join("etc/lantian").exists());
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/lantian.service")
            .exists()
    );
}
