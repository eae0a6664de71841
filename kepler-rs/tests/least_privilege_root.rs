#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The exporter with exactly the three capabilities the deployments grant, CAP_BPF, CAP_PERFMON
//! and CAP_DAC_READ_SEARCH, as its only permitted, effective, inheritable, ambient and bounding
//! capabilities, with no_new_privs (`setpriv`, util-linux), as each deployment runs it: as user
//! `nobody` (the systemd unit: a transient user with ambient capabilities), and as uid 0 with
//! every other capability dropped (the DaemonSet's default). On a RAPL-shaped powercap tree
//! whose `energy_uj` files are root's and mode 0400, with the real cgroup v2 hierarchy under it,
//! it must load the eBPF CPU-time source (`cpu_time_source ebpf`, as `/healthz?verbose=1` and
//! the self-metric say), read the energy the test adds (`source="rapl-sysfs"`), and see a busy
//! process in a test container cgroup by its cgroup (eBPF cgroup ids resolved with
//! `open_by_handle_at`). Then `kepler-rs doctor` as nobody with each capability dropped in turn
//! names that one, and only that one, with what it is for.
//!
//! Needs root (to hand out capabilities and create cgroups), the BPF object, cgroup v2 and
//! setpriv: a failure under CI, a skip elsewhere (kepler_test_support::require).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::BIN;
use common::{BusyProcess, ChildGuard, TestContainer};
use kepler_test_support::net::free_port;
use kepler_test_support::require::require_tool;

/// The capabilities as setpriv names them.
const CAPS: [&str; 3] = ["bpf", "perfmon", "dac_read_search"];

/// Who the exporter runs as: the systemd unit's way (a non-root user with ambient
/// capabilities) or the DaemonSet's (uid 0 with every other capability dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Nobody,
    RootWithoutPowers,
}

/// `setpriv` running `BIN` as `who` with exactly `caps` (setpriv's names) in every set, and
/// no_new_privs (NoNewPrivileges=yes, allowPrivilegeEscalation: false).
fn with_caps(setpriv: &Path, who: Identity, caps: &[&str]) -> Command {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut command = Command::new(setpriv);
    if who == Identity::Nobody {
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    }
    command
        .arg("--no-new-privs")
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(format!("--bounding-set=-all{list}"))
        .arg(BIN);
    command
}

/// A sysfs for `--host.sysfs`: the intel-2socket-server powercap tree with root-only (0400)
/// `energy_uj` files in world-readable directories, and `fs/cgroup` as the real cgroup mount.
fn host_sysfs() -> tempfile::TempDir {
    let sys = tempfile::tempdir().unwrap();
    common::copy_powercap_fixture("intel-2socket-server", sys.path());
    for dir in [
        sys.path().to_path_buf(),
        sys.path().join("class"),
        sys.path().join("class/powercap"),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for zone in fs::read_dir(sys.path().join("class/powercap")).unwrap() {
        let zone = zone.unwrap().path();
        fs::set_permissions(&zone, fs::Permissions::from_mode(0o755)).unwrap();
        for file in fs::read_dir(&zone).unwrap() {
            let file = file.unwrap().path();
            let mode = if file.ends_with("energy_uj") {
                0o400
            } else {
                0o444
            };
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    fs::create_dir(sys.path().join("fs")).unwrap();
    fs::set_permissions(sys.path().join("fs"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(common::CGROUP_ROOT, sys.path().join("fs/cgroup")).unwrap();
    sys
}

/// Adds `joules` to every zone's `energy_uj` (as root: the files stay 0400 root).
fn add_energy(sys: &Path, joules: u64) {
    for zone in fs::read_dir(sys.join("class/powercap")).unwrap() {
        let file = zone.unwrap().path().join("energy_uj");
        let now: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        fs::write(&file, format!("{}\n", now + joules * 1_000_000)).unwrap();
    }
}

/// The body of a `200` answer to `GET path`.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `CapEff` of a running process.
fn effective_caps(pid: u32) -> (String, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let caps = kepler_rs::doctor::effective_capabilities(&status).unwrap();
    (uid, caps)
}

/// Runs the exporter as `who` with the three capabilities on `sys` and checks what it measures.
fn exporter_measures_as(setpriv: &Path, who: Identity, sys: &Path, container: &TestContainer) {
    let port = free_port();
    let mut command = with_caps(setpriv, who, &CAPS);
    command
        .arg(format!("--host.sysfs={}", sys.display()))
        .args(["--monitor.interval", "500ms", "--log.level", "warn"])
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .stdout(Stdio::null());
    let mut exporter = ChildGuard(command.spawn().unwrap());

    // Who it runs as, with exactly the three capabilities.
    std::thread::sleep(Duration::from_millis(200));
    let (uid, caps) = effective_caps(exporter.0.id());
    let want_uid = if who == Identity::Nobody {
        "65534"
    } else {
        "0"
    };
    assert_eq!(uid, want_uid, "{who:?}: effective uid of the exporter");
    let want = kepler_rs::doctor::CAPABILITIES
        .iter()
        .fold(0u64, |acc, c| acc | 1 << c.bit);
    assert_eq!(caps, want, "{who:?}: CapEff {caps:x}, want {want:x}");

    // Energy arrives while it measures; CPU time of the container accumulates.
    let deadline = Instant::now() + Duration::from_secs(60);
    let container_label = format!("container_id=\"{}\"", container.id);
    let (verbose, metrics) = loop {
        if let Some(status) = exporter.0.try_wait().unwrap() {
            panic!("the exporter exited: {status}");
        }
        add_energy(sys, 5);
        let verbose = get(port, "/healthz?verbose=1").unwrap_or_default();
        let metrics = get(port, "/metrics").unwrap_or_default();
        let joules = sum(
            &metrics,
            "kepler_node_package_joules_total",
            &["source=\"rapl-sysfs\""],
        );
        let cpu_ms = sum(
            &metrics,
            "kepler_container_bpf_cpu_time_ms_total",
            &[&container_label],
        );
        if joules > 0.0 && cpu_ms > 100.0 {
            println!("{who:?}: {joules} J from rapl-sysfs, container CPU {cpu_ms} ms (eBPF)");
            break (verbose, metrics);
        }
        assert!(
            Instant::now() < deadline,
            "no RAPL energy or container CPU time in 60 s (joules {joules}, cpu {cpu_ms} ms)\n\
             healthz: {verbose}\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("source") || l.contains(&container.id))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(verbose.contains("\ncpu_time_source ebpf\n"), "{verbose}");
    assert!(
        metrics.contains("kepler_exporter_cpu_time_source{source=\"ebpf\"} 1"),
        "{verbose}"
    );
    assert!(
        sum(
            &metrics,
            "kepler_container_joules_total",
            &[&container_label]
        ) > 0.0,
        "the container gets energy"
    );
}

#[test]
fn exporter_runs_with_three_capabilities_and_doctor_names_a_missing_one() {
    if !common::require_ebpf("running the exporter with only its capabilities") {
        return;
    }
    let Some(setpriv) = require_tool("setpriv") else {
        return;
    };
    let Some(container) = TestContainer::create() else {
        return;
    };
    let busy = BusyProcess::spawn();
    busy.join(&container.dir);
    let sys = host_sysfs();

    exporter_measures_as(&setpriv, Identity::Nobody, sys.path(), &container);
    exporter_measures_as(
        &setpriv,
        Identity::RootWithoutPowers,
        sys.path(),
        &container,
    );

    // doctor with each capability dropped names exactly that one, with what it is for.
    for dropped in kepler_rs::doctor::CAPABILITIES {
        let name = dropped.name.trim_start_matches("CAP_").to_lowercase();
        let kept: Vec<&str> = CAPS.iter().copied().filter(|c| *c != name).collect();
        assert_eq!(kept.len(), 2, "{name}");
        let out = with_caps(&setpriv, Identity::Nobody, &kept)
            .arg(format!("--host.sysfs={}", sys.path().display()))
            .arg("doctor")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("MISSING  CAP_"))
            .collect();
        assert_eq!(missing.len(), 1, "without {}:\n{report}", dropped.name);
        assert!(
            missing[0].starts_with(&format!("MISSING  {} ", dropped.name))
                && missing[0].contains(dropped.used_for),
            "without {}:\n{report}",
            dropped.name
        );
        for held in kepler_rs::doctor::CAPABILITIES
            .iter()
            .filter(|c| c.name != dropped.name)
        {
            assert!(
                report.contains(&format!("OK       {} ", held.name)),
                "with {}:\n{report}",
                held.name
            );
        }
        if dropped.name == "CAP_DAC_READ_SEARCH" {
            // The root-only energy files are what it could not read.
            assert!(report.contains("MISSING  rapl"), "{report}");
            assert_eq!(out.status.code(), Some(1), "{report}");
        } else {
            assert!(report.contains("MISSING  ebpf load"), "{report}");
            assert_eq!(out.status.code(), Some(0), "RAPL is still read:\n{report}");
        }
    }
}
