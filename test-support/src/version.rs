//! `--version` of the workspace's binaries: the release, the git revision and the compiler.

use crate::workspace_root;
use std::path::Path;
use std::process::Command;

/// The 12-character revision of the checkout the tests run in (`unknown` without git), which a
/// binary built from it must report.
pub fn checkout_revision() -> String {
    Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Runs `bin --version` and checks the line: `<name> <release> (revision <checkout>, rustc
/// ...)`, exit status 0.
pub fn assert_version(bin: &Path, name: &str) {
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{name} --version: {out:?}");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = format!(
        "{name} {} (revision {}, rustc ",
        env!("CARGO_PKG_VERSION"),
        checkout_revision()
    );
    assert!(
        line.starts_with(&want) && line.ends_with(')'),
        "{name} --version printed {line:?}, want {want:?}...)"
    );
}
