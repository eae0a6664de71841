//! What a build script of the workspace's binaries records about the build (git branch and
//! revision, rustc version) for `--version` and `kepler_exporter_build_info`.
//!
//! Never fails the build: without git, or outside a git checkout, every fact is `unknown`.
//! Asks cargo to rerun when `HEAD` (or the branch it points to) moves, so the revision stays
//! current without rebuilding on every change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Prints the `cargo:` lines of a build script: `KEPLER_BUILD_GIT_BRANCH`,
/// `KEPLER_BUILD_GIT_REVISION`, `KEPLER_BUILD_RUSTC_VERSION` and `KEPLER_BUILD_VERSION_LINE`
/// (what `--version` prints after the program name) for `env!`, and when to run again.
pub fn emit() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));

    let branch = git(&manifest_dir, &["rev-parse", "--abbrev-ref", "HEAD"]);
    let revision = git(&manifest_dir, &["rev-parse", "HEAD"]);
    println!(
        "cargo:rustc-env=KEPLER_BUILD_GIT_BRANCH={}",
        branch.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=KEPLER_BUILD_GIT_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| one_line(&o.stdout));
    println!(
        "cargo:rustc-env=KEPLER_BUILD_RUSTC_VERSION={}",
        rustc_version.as_deref().unwrap_or("unknown")
    );
    // What `--version` prints after the program name, the same for every binary: the release,
    // the 12-character revision and the compiler.
    println!(
        "cargo:rustc-env=KEPLER_BUILD_VERSION_LINE={} (revision {}, {})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "unknown".into()),
        revision
            .as_deref()
            .map_or("unknown", |r| r.get(..12).unwrap_or(r)),
        rustc_version.as_deref().unwrap_or("unknown")
    );

    watch_git(&manifest_dir);
}

/// Runs git in `dir`; `None` when git is missing, fails, or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    one_line(&output.stdout)
}

/// The first line of a command's output, trimmed; `None` if empty or not UTF-8.
fn one_line(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Emits `rerun-if-changed` for `.git/HEAD` and the ref it points to, when they exist.
fn watch_git(dir: &Path) {
    let Some(git_dir) = git(dir, &["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let git_dir = PathBuf::from(git_dir);
    let head = git_dir.join("HEAD");
    if !head.is_file() {
        return;
    }
    // A linked worktree keeps its branch refs in the common directory.
    let common_dir = git(dir, &["rev-parse", "--git-common-dir"])
        .map(|d| dir.join(d))
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = BTreeSet::new();
    watched.insert(head.clone());
    if let Some(reference) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        for path in [
            git_dir.join(&reference),
            common_dir.join(&reference),
            common_dir.join("packed-refs"),
        ] {
            if path.is_file() {
                watched.insert(path.canonicalize().unwrap_or(path));
            }
        }
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
