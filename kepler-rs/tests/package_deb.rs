#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Debian package as an operator installs it: `scripts/package-deb.sh --profile dev`
//! builds it with cargo-deb (the debug binaries: the same package, quicker), dpkg installs it
//! into a throwaway root (its own dpkg database; `--force-depends` because that root has no
//! libc6 package), and then: both binaries answer `--version` with the checkout's revision,
//! every man page renders with `man -l`, the completions are there (bash's parses), the units
//! pass `systemd-analyze verify` inside that root (the host's targets and slices are copied in,
//! as a system has them) with the package's binary paths, the default configuration is valid
//! and its files are conffiles, and `dpkg --purge` leaves nothing of the package behind. Root
//! only (dpkg); the tools come from Debian (scripts/setup.sh).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kepler_test_support::require::{require_root, require_tool};
use kepler_test_support::version::assert_version;
use kepler_test_support::workspace_root;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Every file (not directory) under `root`, relative to it.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_debian_package_installs_works_and_purges_cleanly() {
    if !require_root("installing the Debian package with dpkg") {
        return;
    }
    let tools: Vec<PathBuf> = ["dpkg", "dpkg-query", "man", "systemd-analyze", "bash"]
        .iter()
        .filter_map(|t| require_tool(t))
        .collect();
    if tools.len() != 5 {
        return;
    }
    // The package's path is the last line of standard output; messages (installing cargo-deb
    // on a fresh machine, say) go to standard error.
    let script = Command::new("bash")
        .arg(workspace_root().join("scripts/package-deb.sh"))
        .args(["--profile", "dev"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&script.stdout);
    let out = format!("{stdout}{}", String::from_utf8_lossy(&script.stderr));
    assert!(
        script.status.success(),
        "scripts/package-deb.sh failed:\n{out}"
    );
    let deb = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "no package path on the last line:\n{out}"
    );

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let admin = r.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(dir)).unwrap();
    }
    fs::write(admin.join("status"), "").unwrap();
    fs::write(admin.join("available"), "").unwrap();
    let (ok, out) = run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .arg("--force-depends")
        .arg("-i")
        .arg(&deb));
    assert!(ok, "dpkg -i:\n{out}");

    // The binaries, with the checkout's revision.
    assert_version(&r.join("usr/bin/kepler-rs"), "kepler-rs");
    assert_version(&r.join("usr/bin/kepler-collector"), "kepler-collector");

    // Man pages render and describe the flags.
    for (page, flag) in [
        ("kepler-rs", "--web.listen-address"),
        ("kepler-rs-doctor", "doctor"),
        ("kepler-rs-top", "--interval"),
        ("kepler-collector", "--config.file"),
    ] {
        let path = r.join(format!("usr/share/man/man1/{page}.1.gz"));
        let (ok, text) = run(Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"));
        assert!(ok && text.contains(flag), "man -l {page}:\n{text}");
    }

    // Completions where the shells look for them.
    for program in ["kepler-rs", "kepler-collector"] {
        let bash = r
            .join("usr/share/bash-completion/completions")
            .join(program);
        let (ok, out) = run(Command::new("bash").arg("-n").arg(&bash));
        assert!(ok, "bash -n {}: {out}", bash.display());
        assert!(r
            .join(format!("usr/share/zsh/vendor-completions/_{program}"))
            .is_file());
        assert!(r
            .join(format!(
                "usr/share/fish/vendor_completions.d/{program}.fish"
            ))
            .is_file());
    }

    // The units verify inside the root, against the installed binaries.
    let units = r.join("lib/systemd/system");
    for host_unit in fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let path = host_unit.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e == "target" || e == "slice")
        {
            let to = units.join(path.file_name().unwrap());
            if !to.exists() {
                fs::copy(&path, to).unwrap();
            }
        }
    }
    for unit in ["kepler-rs.service", "kepler-collector.service"] {
        let text = fs::read_to_string(units.join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/"), "{unit}:\n{text}");
        let (ok, out) = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .arg(format!("/lib/systemd/system/{unit}")));
        assert!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{out}"
        );
    }

    // The default configuration: conffiles, read by the unit, and valid.
    let (ok, conffiles) = run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", admin.display()))
        .args(["-W", "-f=${Conffiles}", "kepler-rs"]));
    assert!(ok, "{conffiles}");
    for file in [
        "/etc/kepler-rs/config.yaml",
        "/etc/kepler-collector/config.yaml",
        "/etc/default/kepler-rs",
    ] {
        assert!(
            conffiles.contains(file),
            "{file} is not a conffile:\n{conffiles}"
        );
    }
    let defaults = fs::read_to_string(r.join("etc/default/kepler-rs")).unwrap();
    assert!(
        defaults
            .lines()
            .any(|l| l == "KEPLER_CONFIG_ARGS=--config.file=/etc/kepler-rs/config.yaml"),
        "{defaults}"
    );
    // doctor loads the configuration first: 2 would mean it is invalid.
    let status = Command::new(r.join("usr/bin/kepler-rs"))
        .arg(format!(
            "--config.file={}",
            r.join("etc/kepler-rs/config.yaml").display()
        ))
        .arg("doctor")
        .output()
        .unwrap()
        .status;
    assert_ne!(status.code(), Some(2), "the default config.yaml is invalid");

    // Purge: nothing of the package stays (only dpkg's own database and the copied units).
    let (ok, out) = run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .arg("--purge")
        .arg("kepler-rs"));
    assert!(ok, "dpkg --purge:\n{out}");
    let left: Vec<PathBuf> = files(r)
        .into_iter()
        .filter(|p| !p.starts_with("var/lib/dpkg") && !p.starts_with("lib/systemd/system"))
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    let ours: Vec<PathBuf> = files(&units)
        .into_iter()
        .filter(|p| p.to_string_lossy().starts_with("kepler-"))
        .collect();
    assert!(ours.is_empty(), "units left after purge: {ours:?}");
}
