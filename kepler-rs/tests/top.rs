#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `kepler-rs top` against a real exporter on fake RAPL: `--once` prints a table with the
//! exporter's power, and the interactive view is driven through a real terminal (tmux:
//! send-keys to type, capture-pane to read the screen).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::{Exporter, BIN};

fn exporter() -> (Exporter, String) {
    exporter_measuring_every("300ms", Duration::from_millis(1500))
}

/// The exporter on fake RAPL, measuring every `interval`, after `settle` to start up.
fn exporter_measuring_every(interval: &str, settle: Duration) -> (Exporter, String) {
    let exporter = Exporter::launch(Command::new(BIN), interval, &[], Stdio::inherit());
    let url = exporter.metrics_url();
    std::thread::sleep(settle);
    (exporter, url)
}

#[test]
fn once_prints_a_table_of_container_power() {
    let (_exporter, url) = exporter();
    assert_total_in_model_range(&url);
}

/// An exporter that measures every 4 s, read by `top --once --interval 1s`: the second scrape
/// still shows the first one's snapshot, so top waits for the next one instead of printing 0 W.
#[test]
fn once_waits_for_a_new_snapshot_when_the_exporter_measures_less_often() {
    let (_exporter, url) = exporter_measuring_every("4s", Duration::from_millis(4500));
    assert_total_in_model_range(&url);
}

/// Runs `top --once --interval 1s` and checks the total power it prints.
fn assert_total_in_model_range(url: &str) {
    let out = Command::new(BIN)
        .args(["top", "--once", "--interval", "1s", "--url", url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("POWER(W)") && stdout.contains("system_processes"),
        "{stdout}"
    );
    let total: f64 = stdout
        .split("total ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Fake RAPL defaults: package 10..50 W + dram 2..5 W per socket. The power is the energy
    // between two snapshots over their timestamps; on a loaded host the energy read and the
    // snapshot's timestamp can be tens of milliseconds apart, a few percent of a 1 s interval
    // either way, so the range has 10 % of slack on both ends.
    assert!(
        (10.8..=60.5).contains(&total),
        "total {total} W outside the fake model's range:\n{stdout}"
    );
}

/// With a GPU (the fake NVML, 120 W, this test as its compute process), `--once` shows GPU
/// power: the rows' GPU column adds up to the GPU's power.
#[test]
fn once_shows_gpu_power() {
    let Some(nvml) = common::fake_nvml::library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gpu = common::fake_nvml::ScriptedGpu::start(dir.path(), 120, &[std::process::id()]);
    let mut command = Command::new(BIN);
    command.env("FAKE_NVML_STATE", gpu.state());
    let library = format!("--gpu.nvml-library={}", nvml.display());
    let _exporter = Exporter::launch(command, "300ms", &[&library], Stdio::inherit());
    std::thread::sleep(Duration::from_millis(1500));
    let url = _exporter.metrics_url();
    let out = Command::new(BIN)
        .args(["top", "--once", "--interval", "2s", "--url", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("GPU(W)"), "{stdout}");
    let gpu_total: f64 = stdout
        .split("gpu ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // 120 W, from a counter moved in 6 J steps, read over snapshot times that can be tens of
    // milliseconds off on a loaded host.
    assert!(
        (108.0..=132.0).contains(&gpu_total),
        "GPU total {gpu_total} W, not the GPU's 120 W:\n{stdout}"
    );
}

#[test]
fn once_fails_clearly_when_nothing_listens() {
    let out = Command::new(BIN)
        .args([
            "top",
            "--once",
            "--interval",
            "10ms",
            "--url",
            "http://127.0.0.1:1/metrics",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot scrape http://127.0.0.1:1/metrics")
    );
}

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.0])
    }
    /// The screen once it shows every needle (a capture can land mid-redraw), or at the deadline.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if needles.iter().all(|n| screen.contains(n)) || Instant::now() > deadline {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn interactive_view_in_a_real_terminal() {
    if kepler_test_support::require::require_tool("tmux").is_none() {
        return;
    }
    let (_exporter, url) = exporter();
    let tmux = Tmux(format!("kepler-top-{}", std::process::id()));
    let command = format!("{BIN} top --interval 400ms --url {url}");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        &tmux.0,
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);

    let screen = tmux.wait_for(&["system_processes", "kernel_processes", "sort: power"]);
    assert!(
        screen.contains("group: container") && screen.contains("sort: power"),
        "{screen}"
    );
    assert!(screen.contains("kernel_processes"), "{screen}");

    tmux.run(&["send-keys", "-t", &tmux.0, "n"]);
    let screen = tmux.wait_for(&["sort: name", "kernel_processes", "system_processes"]);
    assert!(screen.contains("sort: name"), "{screen}");
    // Sorted by name: namespace "kernel" comes before "system".
    let kernel = screen.find("kernel_processes").unwrap();
    let system = screen.find("system_processes").unwrap();
    assert!(kernel < system, "{screen}");

    tmux.run(&["send-keys", "-t", &tmux.0, "g"]);
    let screen = tmux.wait_for(&["group: pod", "system_processes"]);
    assert!(screen.contains("group: pod"), "{screen}");

    tmux.run(&["send-keys", "-t", &tmux.0, "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "q must quit the view");
}
