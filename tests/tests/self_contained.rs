#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The repository is the whole project: no tracked file points outside the clone (a folder
//! beside it that a user's clone does not have), and code and docs speak of the product, not of
//! how its work was planned. Reads every file git tracks (the vendored aya copy aside).

use std::path::Path;
use std::process::Command;

use kepler_test_support::workspace_root;

/// The tracked files, relative to the workspace root.
fn tracked_files(root: &Path) -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|f| !f.is_empty() && !f.starts_with("vendor/"))
        .map(str::to_string)
        .collect()
}

/// Each line of a tracked text file that matches `finds`, as `path:line: text`.
fn lines_matching(finds: impl Fn(&str) -> bool) -> Vec<String> {
    let root = workspace_root();
    let mut hits = Vec::new();
    for file in tracked_files(&root) {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue; // binary (the committed BPF objects) or removed in the work tree
        };
        for (n, line) in text.lines().enumerate() {
            if finds(line) {
                hits.push(format!("{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    hits
}

/// `issue` followed by a number, with or without `#`, in any case.
fn names_an_issue_number(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.match_indices("issue ").any(|(at, word)| {
        let rest = lower[at + word.len()..].trim_start_matches('#');
        rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

#[test]
fn no_file_refers_to_a_folder_outside_the_clone() {
    let outside = ["..", "/shared"].concat();
    let hits = lines_matching(|line| line.contains(&outside));
    assert!(
        hits.is_empty(),
        "files that point outside the repository:\n{}",
        hits.join("\n")
    );
}

#[test]
fn code_and_docs_use_product_words() {
    let planning = ["the ", "seed"].concat();
    let hits = lines_matching(|line| {
        line.to_ascii_lowercase().contains(&planning) || names_an_issue_number(line)
    });
    assert!(
        hits.is_empty(),
        "words a user never saw (say what the feature or deployment is instead):\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_issue_matcher_finds_numbers_only() {
    // Built at run time, so this file does not trip the check it tests.
    let word = "issue";
    assert!(names_an_issue_number(&format!("as {word} 7 asked")));
    assert!(names_an_issue_number(&format!(
        "{}{} #12: done",
        "I",
        &word[1..]
    )));
    assert!(!names_an_issue_number(&format!(
        "an {word} with the kernel"
    )));
    assert!(!names_an_issue_number(&format!("{word} tracker")));
}
