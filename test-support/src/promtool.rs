//! `promtool check metrics` on rendered exposition text: Prometheus's own parser and linter.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text`: exit code and everything it printed. `None` when
/// promtool is missing and this run does not require it (see [`crate::require::require_tool`]).
pub fn check(text: &str) -> Option<(i32, String)> {
    let promtool = crate::require::require_tool("promtool")?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write to promtool: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for promtool: {e}"));
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), printed))
}

/// Asserts that promtool parses `text` and finds nothing but lint findings that `accepted_lint`
/// accepts (promtool exits 3 for lint-only findings, 1 for a parse error). `name` labels the
/// panic. Returns without asserting when promtool is missing and not required.
pub fn assert_accepts(name: &str, text: &str, accepted_lint: impl Fn(&str) -> bool) {
    let Some((code, printed)) = check(text) else {
        return;
    };
    let findings: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    let clean = code == 0 && findings.is_empty();
    let accepted = code == 3 && findings.iter().all(|l| accepted_lint(l));
    assert!(
        clean || accepted,
        "promtool check metrics on {name}: exit {code}\n{printed}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_is_refused_and_a_lint_accepted_only_when_allowed() {
        let good =
            "# HELP up_seconds_total Up.\n# TYPE up_seconds_total counter\nup_seconds_total 1\n";
        assert_accepts("good", good, |_| false);
        let lint =
            "# HELP kepler_x_ms_total X.\n# TYPE kepler_x_ms_total counter\nkepler_x_ms_total 1\n";
        assert_accepts("abbreviated unit", lint, |l| {
            l.contains("abbreviated units")
        });
        let refused = std::panic::catch_unwind(|| assert_accepts("lint", lint, |_| false));
        if crate::require::which("promtool").is_some() {
            assert!(refused.is_err(), "an unaccepted lint must fail");
            let broken = std::panic::catch_unwind(|| assert_accepts("broken", "x{ 1\n", |_| true));
            assert!(broken.is_err(), "a parse error must fail");
        }
    }
}
