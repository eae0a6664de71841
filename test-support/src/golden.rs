//! Golden files: rendered output compared with a committed file, rewritten on request.

use std::path::Path;

/// Compares `actual` with the file at `path`, or rewrites the file when `UPDATE_GOLDEN=1`. On a
/// difference, the panic shows the first differing line with two lines of context each side.
pub fn check(path: &Path, actual: &str) {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if let Some(report) = difference(&expected, actual) {
        panic!(
            "{} differs {report}(- golden, + rendered; rerun with UPDATE_GOLDEN=1 if the change is intended)",
            path.display()
        );
    }
}

/// Where `actual` first differs from `expected`, with context; `None` when they are equal.
fn difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let exp: Vec<&str> = expected.split('\n').collect();
    let act: Vec<&str> = actual.split('\n').collect();
    let first = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    let mut report = format!(
        "at line {} (expected {} lines, got {}):\n",
        first + 1,
        exp.len(),
        act.len()
    );
    for i in first.saturating_sub(2)..first + 3 {
        let marker = if i == first { ">" } else { " " };
        if let Some(line) = exp.get(i) {
            report.push_str(&format!("{marker} {:>5} - {line}\n", i + 1));
        }
        if let Some(line) = act.get(i) {
            report.push_str(&format!("{marker} {:>5} + {line}\n", i + 1));
        }
    }
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_points_at_the_first_differing_line() {
        assert_eq!(difference("a\nb\n", "a\nb\n"), None);
        let report = difference("a\nb\nc\n", "a\nB\nc\n").unwrap();
        assert!(
            report.starts_with("at line 2 (expected 4 lines, got 4)"),
            "{report}"
        );
        assert!(report.contains(">     2 - b\n>     2 + B\n"), "{report}");
        let report = difference("a\n", "a\nextra\n").unwrap();
        assert!(
            report.starts_with("at line 2 (expected 2 lines, got 3)"),
            "{report}"
        );
    }
}
