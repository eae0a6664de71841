//! The Python that the interop tests drive: the workspace's venv (`.venv`, made by
//! scripts/setup.sh from tests/requirements.txt), else `python3` on `PATH`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A Python that can run `import_check` (e.g. `import grpc`), or `None` after
/// [`crate::require::tool_missing`] names `what` (fails under CI).
pub fn python_with(import_check: &str, what: &str) -> Option<PathBuf> {
    let venv = crate::workspace_root().join(".venv/bin/python");
    for python in [venv, PathBuf::from("python3")] {
        let ok = Command::new(&python)
            .args(["-c", import_check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    crate::require::tool_missing(&format!(
        "no Python with {what} (scripts/setup.sh makes the venv)"
    ));
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_python_for_the_standard_library_and_none_for_a_missing_module() {
        assert!(python_with("import json", "json").is_some());
        if !crate::require::tools_required() {
            assert!(python_with("import no_such_module_kepler", "nothing").is_none());
        }
    }
}
