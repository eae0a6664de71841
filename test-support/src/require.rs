//! Whether a test can run here, decided in one place for the whole workspace.
//!
//! A test that needs root or an external tool asks first. When it cannot run:
//! - under CI (`CI=true`), or with `KEPLER_REQUIRE_ROOT=1` for root and `KEPLER_REQUIRE_TOOLS=1`
//!   for tools, it fails: a green CI run has run every test;
//! - elsewhere it prints a `SKIPPED` line on the terminal (past the test harness's output
//!   capture, so `cargo test` shows it) and returns without asserting anything.

use std::io::Write;
use std::path::{Path, PathBuf};

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// Whether this run is CI (`CI=true`, as CI services set it).
pub fn under_ci() -> bool {
    env_is("CI", "true")
}

/// Whether root-only tests must run: CI, or `KEPLER_REQUIRE_ROOT=1`.
pub fn root_required() -> bool {
    under_ci() || env_is("KEPLER_REQUIRE_ROOT", "1")
}

/// Whether external tools must be present: CI, or `KEPLER_REQUIRE_TOOLS=1`.
pub fn tools_required() -> bool {
    under_ci() || env_is("KEPLER_REQUIRE_TOOLS", "1")
}

/// Prints a skip line that `cargo test` shows even for a passing test: written to the process's
/// stderr directly, which the harness does not capture (it captures `print!`/`eprint!`).
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!("{n}: "))
        .unwrap_or_default();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}{why}");
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// Whether `what` can run as this user: true as root. Otherwise fails under CI or
/// `KEPLER_REQUIRE_ROOT=1`, and prints the skip line elsewhere.
pub fn require_root(what: &str) -> bool {
    let euid = euid();
    if euid == 0 {
        return true;
    }
    cannot_run(
        &format!("{what} needs root (euid {euid})"),
        root_required(),
        "CI=true or KEPLER_REQUIRE_ROOT=1",
    );
    false
}

/// An executable named `name` on `PATH`, else in the workspace's Python venv (`.venv/bin`,
/// where scripts/setup.sh installs the PyPI tools).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([crate::workspace_root().join(".venv/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where the workspace's binaries are: `KEPLER_E2E_BIN_DIR`, else the profile directory above
/// this test executable (`target/<profile>/`, where `cargo test --workspace` builds them).
pub fn binary_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEPLER_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The workspace binary `name` (`kepler-rs`, `kepler-collector`) if it is built.
pub fn built_binary(name: &str) -> Option<PathBuf> {
    Some(binary_dir().join(name)).filter(|p| p.is_file())
}

/// The workspace binary `name`. When it is not built (`cargo test -p` of one crate builds only
/// that crate's): fails under CI, prints the skip line elsewhere.
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let found = built_binary(name);
    if found.is_none() {
        tool_missing(&format!(
            "{name} is not built in {} (cargo test --workspace builds it; or set KEPLER_E2E_BIN_DIR)",
            binary_dir().display()
        ));
    }
    found
}

/// The tool `name` on `PATH`. When it is missing: fails under CI or `KEPLER_REQUIRE_TOOLS=1`,
/// prints the skip line elsewhere.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        tool_missing(&format!(
            "{name} is not installed (scripts/setup.sh installs it)"
        ));
    }
    found
}

/// Reports that something a test needs beyond a binary on `PATH` (a Python package, a built
/// binary) is missing: fails under CI or `KEPLER_REQUIRE_TOOLS=1`, prints the skip line elsewhere.
pub fn tool_missing(what: &str) {
    cannot_run(what, tools_required(), "CI=true or KEPLER_REQUIRE_TOOLS=1");
}

fn cannot_run(why: &str, required: bool, rule: &str) {
    if required {
        panic!("{why}, and {rule} requires this test to run");
    }
    skip(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_and_not_a_made_up_name() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-kepler-test").is_none());
    }

    #[test]
    fn a_test_that_cannot_run_fails_only_when_required() {
        cannot_run("needs something", false, "the rule");
        let result = std::panic::catch_unwind(|| cannot_run("needs something", true, "the rule"));
        let message = result.expect_err("a required test that cannot run must fail");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            text,
            "needs something, and the rule requires this test to run"
        );
    }

    #[test]
    fn a_missing_tool_fails_when_tools_are_required() {
        if !tools_required() {
            // Outside CI: a visible skip and no panic.
            assert!(require_tool("no-such-tool-kepler-test").is_none());
            return;
        }
        let result = std::panic::catch_unwind(|| require_tool("no-such-tool-kepler-test"));
        let message = result.expect_err("a missing tool must fail under CI");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("no-such-tool-kepler-test"), "{text}");
    }
}
