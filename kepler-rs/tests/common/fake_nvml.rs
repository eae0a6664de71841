//! The fake NVML of `testdata/fake-nvml/fake_nvml.c`, built once per test binary with the
//! system `cc`: a `libnvidia-ml.so.1` the exporter loads through `gpu.nvmlLibrary`, answering
//! from the state file named by `$FAKE_NVML_STATE` (the C file documents its lines).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// One GPU of the fake NVML for an exporter binary: drawing `watts` at 60 % utilisation, with
/// `pids` as its running compute processes; a thread moves its energy counter on every 50 ms
/// until dropped. Point the exporter's `FAKE_NVML_STATE` at [`ScriptedGpu::state`].
pub struct ScriptedGpu {
    state: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedGpu {
    pub fn start(dir: &Path, watts: u64, pids: &[u32]) -> Self {
        let state = dir.join("fake-nvml-state");
        let running: String = pids
            .iter()
            .map(|pid| format!("running 0 {pid}\n"))
            .collect();
        let write = {
            let state = state.clone();
            move |energy_mj: u64| {
                let aside = state.with_extension("new");
                fs::write(
                    &aside,
                    format!(
                        "driver 550.54.15\n\
                         gpu GPU-7d3c1a52-9e4b-4f60-8a21-5c6b7d8e9f01 NVIDIA_H100_80GB_HBM3 {energy_mj} {} 60 0\n{running}",
                        watts * 1000
                    ),
                )
                .unwrap();
                fs::rename(aside, &state).unwrap();
            }
        };
        write(1_000_000);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut energy_mj = 1_000_000;
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                energy_mj += watts * 50;
                write(energy_mj);
            }
        });
        Self {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The state file the fake NVML answers from.
    pub fn state(&self) -> &Path {
        &self.state
    }
}

impl Drop for ScriptedGpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
