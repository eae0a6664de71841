#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Supply chain (docs/supply-chain.md): the vendored aya's origin and exit condition, and the
//! SBOMs that scripts/sbom.sh writes for both binaries.
//!
//! vendor/aya is crates.io's aya 0.14.0 with one patch, used through `[patch.crates-io]`. The
//! version in its Cargo.toml, in KEPLER-PATCH.md and in the workspace's comments must agree;
//! the recorded patch (vendor/aya/KEPLER.patch) must name only files that exist and be applied
//! (its result is what they contain); Cargo.lock must take aya from the path. Exit condition:
//! aya 0.15.0 is the first release with the upstream fix (aya-rs/aya#1644), so once the
//! workspace's aya requirement admits 0.15 or later this test fails until vendor/aya and the
//! `[patch.crates-io]` entry are removed (and this part of the test with them).
//!
//! The SBOM test runs scripts/sbom.sh (cargo-cyclonedx, installed at a pinned version by
//! scripts/setup.sh) into a temporary directory and requires every normal dependency of each
//! binary's package, as `cargo metadata` lists them, among the SBOM's components, no test-only
//! crate, hashes for crates.io crates and the vendored aya as a path. A missing
//! cargo-cyclonedx skips with a message, or fails under CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kepler_test_support::require::require_tool;

/// The vendored release and the first release that has the upstream fix.
const VENDORED: &str = "0.14.0";
const FIXED_IN: (u64, u64) = (0, 15);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of the TOML table `[name]` (up to the next table header).
fn table<'a>(toml: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    toml.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect()
}

/// The string value of `key = "..."` or of `key = { ..., field = "..." }` in `lines`.
fn value<'a>(lines: &[&'a str], key: &str, field: Option<&str>) -> Option<&'a str> {
    let line = lines.iter().find(|l| {
        l.split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !l.trim_start().starts_with('#'))
    })?;
    let rest = line.split_once('=')?.1;
    let rest = match field {
        None => rest,
        Some(f) => rest
            .split(',')
            .map(|p| p.trim().trim_start_matches('{').trim())
            .find_map(|p| p.strip_prefix(f)?.trim_start().strip_prefix('='))?,
    };
    rest.trim().trim_end_matches('}').trim().split('"').nth(1)
}

/// (major, minor) of the lowest version a Cargo requirement such as `0.14`, `^0.14.1` or
/// `=0.15.0` admits.
fn lowest(req: &str) -> (u64, u64) {
    let bare = req.trim_start_matches(['^', '=', '~', '>', ' ']);
    let mut parts = bare.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The comment lines just above `line` in `text`.
fn comment_above(text: &str, line: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == line)
        .unwrap_or_else(|| panic!("no line {line}"));
    lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One file of a unified diff: its path (after `b/`) and its hunks' post-images.
struct PatchedFile {
    path: String,
    removed: usize,
    added: usize,
    post_images: Vec<Vec<String>>,
}

fn parse_patch(patch: &str) -> Vec<PatchedFile> {
    let mut files: Vec<PatchedFile> = Vec::new();
    for line in patch.lines() {
        if let Some(path) = line.strip_prefix("+++ b/") {
            files.push(PatchedFile {
                path: path.trim().to_string(),
                removed: 0,
                added: 0,
                post_images: Vec::new(),
            });
        } else if line.starts_with("--- ") {
            continue;
        } else if line.starts_with("@@") {
            files.last_mut().unwrap().post_images.push(Vec::new());
        } else if let Some(file) = files.last_mut() {
            let hunk = file.post_images.last_mut().unwrap();
            if let Some(added) = line.strip_prefix('+') {
                file.added += 1;
                hunk.push(added.to_string());
            } else if line.starts_with('-') {
                file.removed += 1;
            } else {
                hunk.push(line.strip_prefix(' ').unwrap_or(line).to_string());
            }
        }
    }
    files
}

/// The first hunk of `file` whose result (context and added lines, in order) is not in `text`.
fn unapplied(file: &PatchedFile, text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    file.post_images
        .iter()
        .find(|hunk| {
            !lines
                .windows(hunk.len().max(1))
                .any(|w| w.iter().zip(hunk.iter()).all(|(a, b)| a == b))
        })
        .map(|hunk| hunk.join("\n"))
}

#[test]
fn a_patch_is_applied_only_where_its_result_is_in_the_file() {
    let patch = "--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1,3 +1,3 @@\n fn a() {\n-    old();\n+    new();\n }\n";
    let files = parse_patch(patch);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "src/x.rs");
    assert_eq!((files[0].removed, files[0].added), (1, 1));
    let patched = "// head\nfn a() {\n    new();\n}\n";
    assert_eq!(unapplied(&files[0], patched), None);
    let original = "// head\nfn a() {\n    old();\n}\n";
    assert_eq!(
        unapplied(&files[0], original).as_deref(),
        Some("fn a() {\n    new();\n}")
    );
}

#[test]
fn vendored_aya_is_the_recorded_release_and_patch_until_aya_has_the_fix() {
    let workspace = read("Cargo.toml");
    let deps = table(&workspace, "workspace.dependencies");
    let req = value(&deps, "aya", Some("version")).expect("aya in [workspace.dependencies]");
    // The exit condition: a release with the upstream fix makes the vendored copy pointless.
    assert!(
        lowest(req) < FIXED_IN,
        "the workspace requires aya {req}: aya {}.{} and later contain the upstream fix \
         (aya-rs/aya#1644, the kernel's BTF parsed lazily), so remove vendor/aya, the \
         [patch.crates-io] entry in Cargo.toml and this test's aya part",
        FIXED_IN.0,
        FIXED_IN.1
    );
    assert_eq!(
        lowest(req),
        lowest(VENDORED),
        "the requirement {req} must select the vendored {VENDORED}, or the patch goes unused"
    );
    let patch_table = table(&workspace, "patch.crates-io");
    assert_eq!(
        value(&patch_table, "aya", Some("path")),
        Some("vendor/aya"),
        "{patch_table:?}"
    );

    // One version everywhere it is named.
    let vendored = read("vendor/aya/Cargo.toml");
    let package = table(&vendored, "package");
    assert_eq!(value(&package, "name", None), Some("aya"));
    assert_eq!(value(&package, "version", None), Some(VENDORED));
    let why = comment_above(&workspace, "[patch.crates-io]");
    assert!(why.contains(&format!("aya {VENDORED}")), "{why}");
    assert!(
        why.contains("aya-rs/aya#1172") && why.contains("#1644"),
        "{why}"
    );
    let exclude = comment_above(&workspace, "exclude = [\"vendor\"]");
    assert!(
        exclude.contains(&format!("aya {VENDORED} with one patch")),
        "{exclude}"
    );
    let doc = read("vendor/aya/KEPLER-PATCH.md");
    assert!(
        doc.lines()
            .next()
            .unwrap_or_default()
            .contains(&format!("aya {VENDORED}")),
        "KEPLER-PATCH.md's title"
    );
    assert!(
        doc.contains(&format!(
            "of [aya](https://github.com/aya-rs/aya) {VENDORED}"
        )),
        "KEPLER-PATCH.md names the release"
    );
    assert!(
        doc.contains("KEPLER.patch"),
        "KEPLER-PATCH.md names the patch"
    );
    assert!(
        doc.contains(&format!(
            "aya {}.{}.0 is the first release",
            FIXED_IN.0, FIXED_IN.1
        )),
        "KEPLER-PATCH.md states the exit condition"
    );

    // The patch is recorded, names files that exist, and is what they contain.
    let patch = read("vendor/aya/KEPLER.patch");
    let files = parse_patch(&patch);
    assert!(!files.is_empty(), "KEPLER.patch names no file");
    for file in &files {
        let path = repo().join("vendor/aya").join(&file.path);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("KEPLER.patch names {}: {e}", path.display()));
        assert!(
            file.added + file.removed > 0,
            "{}: an empty patch",
            file.path
        );
        assert!(
            doc.contains(&format!("`{}`", file.path)),
            "KEPLER-PATCH.md does not name {}",
            file.path
        );
        if let Some(hunk) = unapplied(file, &text) {
            panic!(
                "{}: this part of KEPLER.patch is not applied:\n{hunk}",
                file.path
            );
        }
    }

    // Cargo.lock takes aya from the path (a registry aya would have a source line).
    let lock = read("Cargo.lock");
    let entry: Vec<&str> = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"aya\"\n"))
        .expect("aya in Cargo.lock")
        .lines()
        .collect();
    assert_eq!(value(&entry, "version", None), Some(VENDORED));
    assert_eq!(
        value(&entry, "source", None),
        None,
        "Cargo.lock takes aya from a registry: the patch is not used"
    );
}

#[test]
fn lowest_version_of_a_requirement() {
    assert_eq!(lowest("0.14"), (0, 14));
    assert_eq!(lowest("^0.14.1"), (0, 14));
    assert_eq!(lowest("=0.15.0"), (0, 15));
    assert_eq!(lowest(">=1.2"), (1, 2));
    assert!(lowest("0.16") >= FIXED_IN);
    let toml = "[a]\nx = { version = \"0.14\", default-features = false }\n[b]\ny = \"1\"\n";
    assert_eq!(value(&table(toml, "a"), "x", Some("version")), Some("0.14"));
    assert_eq!(value(&table(toml, "b"), "y", None), Some("1"));
    assert_eq!(value(&table(toml, "a"), "y", None), None);
}

/// The normal (not dev, not build) dependencies of workspace package `name`.
fn direct_dependencies(metadata: &serde_json::Value, name: &str) -> Vec<String> {
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"));
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sbom_script_lists_each_binary_s_direct_dependencies() {
    if require_tool("cargo-cyclonedx").is_none() {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo().join("scripts/sbom.sh"))
        .arg(out_dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/sbom.sh failed:\n{log}");
    let metadata = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(metadata.status.success());
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for (package, binary) in [
        ("kepler-rs", "kepler-rs"),
        ("kepler-collector", "kepler-collector"),
    ] {
        let path = out_dir.path().join(format!("{binary}.cdx.json"));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("scripts/sbom.sh wrote no {}: {e}\n{log}", path.display()));
        let sbom: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(sbom["bomFormat"], "CycloneDX", "{binary}");
        let described = &sbom["metadata"]["component"];
        assert_eq!(described["name"], package, "{binary}: {described}");
        let components: Vec<&str> = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let direct = direct_dependencies(&metadata, package);
        assert!(!direct.is_empty(), "{package} has dependencies");
        for dep in &direct {
            // Cargo's names: `kepler-prom-text`; a renamed dependency keeps its package name.
            assert!(
                components.iter().any(|c| c == dep),
                "{binary}'s SBOM lacks its dependency {dep}"
            );
        }
        // Crates only the tests use are not in a binary's SBOM.
        for test_only in ["proptest", "kepler-test-support"] {
            assert!(
                !components.contains(&test_only),
                "{binary}'s SBOM lists {test_only}"
            );
        }
        // A crates.io crate carries the SHA-256 of its crate file.
        let tokio = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "tokio")
            .expect("tokio");
        assert_eq!(tokio["hashes"][0]["alg"], "SHA-256", "{tokio}");
        // The patched aya is in the exporter's SBOM as what it is: the vendored path.
        if package == "kepler-rs" {
            let aya = sbom["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "aya")
                .expect("aya in the exporter's SBOM");
            assert_eq!(aya["version"], VENDORED, "{aya}");
            assert!(
                aya["purl"].as_str().unwrap_or("").ends_with("vendor/aya"),
                "{aya}"
            );
        }
    }
}
