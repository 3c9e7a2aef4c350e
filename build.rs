//! Records the git revision the binary was built from (`lantian
//! --version`, `lantian_build_info`): `LANTIAN_GIT_REVISION`, the short
//! commit hash, or "unknown" outside a git checkout (a source tarball).

use std::process::Command;

fn main() {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LANTIAN_GIT_REVISION={revision}");
    // A new commit moves the branch's ref (or packed-refs), not HEAD.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
