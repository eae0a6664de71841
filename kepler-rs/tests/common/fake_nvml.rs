//! The fake NVML of `testdata/fake-nvml/fake_nvml.c`, built once per test binary with the
//! system `cc`: a `libnvidia-ml.so.1` the exporter loads through `gpu.nvmlLibrary`, answering
//! from the state file named by `$FAKE_NVML_STATE` (the C file documents its lines).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kepler_test_support::require::require_tool;

const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/fake-nvml/fake_nvml.c"
);

/// The built library (None where `cc` is missing: the test is skipped, or fails under CI).
pub fn library() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cc = require_tool("cc")?;
            let dir = tempfile::tempdir().unwrap();
            let lib = dir.path().join("libnvidia-ml.so.1");
            let status = Command::new(cc)
                .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
                .arg(&lib)
                .arg(SOURCE)
                .status()
                .unwrap();
            assert!(status.success(), "cc could not build the fake NVML");
            Some((dir, lib))
        })
        .as_ref()
        .map(|(_, lib)| lib.as_path())
}
