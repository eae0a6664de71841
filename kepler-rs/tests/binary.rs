#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The real `kepler-rs` binary on this machine: fake RAPL over the host's real CPU load, the real
//! procfs/cgroup source, served over a real socket, checked with the real `promtool`; plus the
//! start-up failures a user can hit (invalid configuration, no RAPL).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::{Exporter, BIN};
use kepler_test_support::net::free_port;

fn start(extra: &[&str]) -> Exporter {
    Exporter::start(extra)
}

/// Like [`start`], with a prepared command (e.g. a wrapper that drops privileges).
fn start_with(command: Command, extra: &[&str]) -> Exporter {
    Exporter::launch(command, "500ms", extra, Stdio::inherit())
}

/// A minimal HTTP/1.0 GET: (headers, body).
fn get(port: u16, path: &str, headers: &[&str]) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.to_string(), body.to_string()))
}

/// The value of the first sample whose line starts with `prefix`.
fn value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn version_names_the_release_revision_and_compiler() {
    kepler_test_support::version::assert_version(std::path::Path::new(BIN), "kepler-rs");
}

#[test]
fn serves_kepler_metrics_on_fake_rapl() {
    let exporter = start(&["--kube.node-name", "test-node"]);
    std::thread::sleep(Duration::from_millis(1600));
    let (head, first) = get(exporter.port, "/metrics", &[]).unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    common::assert_promtool_accepts("binary output", &first);
    for needle in [
        "kepler_container_joules_total{container_id=\"system_processes\"",
        "kepler_container_joules_total{container_id=\"kernel_processes\"",
        "kepler_node_package_joules_total{package=\"0\",instance=\"test-node\",mode=\"idle\",source=\"fake-rapl\"}",
        "kepler_node_info{",
        "kepler_exporter_build_info{",
    ] {
        assert!(first.contains(needle), "missing {needle} in\n{first}");
    }
    assert!(
        !first.contains("kepler_process_"),
        "process metrics are opt-in"
    );

    // Many scrapes do not trigger measurements: the sequence advances with time only.
    let seq0 = value(&first, "kepler_exporter_snapshot_sequence").unwrap();
    let started = Instant::now();
    for _ in 0..50 {
        get(exporter.port, "/metrics", &[]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    let (_, second) = get(exporter.port, "/metrics", &[]).unwrap();
    let seq1 = value(&second, "kepler_exporter_snapshot_sequence").unwrap();
    let intervals = started.elapsed().as_secs_f64() / 0.5;
    assert!(seq1 > seq0, "monitor must keep measuring");
    assert!(
        seq1 - seq0 <= intervals + 2.0,
        "51 scrapes caused extra measurements: {seq0} -> {seq1}"
    );

    // Counters never go backwards, and containers add up to the node.
    let (node0, node1) = (
        sum(&first, "kepler_node_package_joules_total"),
        sum(&second, "kepler_node_package_joules_total"),
    );
    assert!(
        node1 > node0,
        "node package energy must grow: {node0} -> {node1}"
    );
    let containers = sum(&second, "kepler_container_package_joules_total");
    assert!(
        (containers - node1).abs() <= 1e-4 * node1.max(1.0),
        "containers {containers} J vs node {node1} J"
    );
}

#[test]
fn process_metrics_and_openmetrics_on_request() {
    let exporter = start(&["--metrics.processes"]);
    std::thread::sleep(Duration::from_millis(1200));
    let (_, text) = get(exporter.port, "/metrics", &[]).unwrap();
    assert!(
        text.contains("kepler_process_joules_total{pid=\""),
        "process metrics enabled"
    );
    common::assert_promtool_accepts("binary output with processes", &text);
    let (head, om) = get(
        exporter.port,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    )
    .unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(om.trim_end().ends_with("# EOF"));
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_2() {
    let out = Command::new(BIN)
        .args([
            "--monitor.interval",
            "0s",
            "--web.listen-address",
            "nowhere",
            "--fake-rapl",
            "--fake-rapl.sockets",
            "0",
        ])
        .env("KEPLER_LOG_LEVEL", "chatty")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for path in [
        "monitor.interval: must be > 0, got 0s",
        "web.listenAddress:",
        "fakeRapl.sockets:",
        "log.level:",
    ] {
        assert!(stderr.contains(path), "missing {path:?} in {stderr}");
    }
}

#[test]
fn no_rapl_without_estimator_says_what_to_do() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--estimator.enabled=false",
            "--host.sysfs",
        ])
        .arg(empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--fake-rapl"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn no_rapl_falls_back_to_the_labelled_estimator() {
    let empty = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "--monitor.interval",
            "300ms",
            "--log.level",
            "warn",
            "--web.listen-address",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--host.sysfs")
        .arg(empty.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok((_, text)) = get(port, "/metrics", &[]) {
            if value(&text, "kepler_exporter_snapshot_sequence").unwrap_or(0.0) >= 2.0 {
                body = text;
                break;
            }
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        body.contains("kepler_node_package_joules_total{package=\"0\""),
        "no estimated node energy:\n{body}"
    );
    assert!(
        body.lines()
            .filter(|l| l.starts_with("kepler_") && l.contains("_joules_total{"))
            // The two sums carry Kepler's empty source.
            .filter(|l| !l.starts_with("kepler_container_joules_total{"))
            .filter(|l| !l.starts_with("kepler_process_joules_total{"))
            .all(|l| l.contains("source=\"estimator\"")),
        "every energy series must say source=\"estimator\""
    );
    // As Kepler: no idle series where the energy is estimated, but for the two sums.
    assert!(
        body.lines()
            .filter(|l| l.contains("mode=\"idle\""))
            .all(|l| l.starts_with("kepler_container_joules_total{")
                || l.starts_with("kepler_process_joules_total{")),
        "idle series with the estimator:\n{body}"
    );
    assert!(
        body.contains("components_power_source=\"estimator\""),
        "{body}"
    );
    let fallback_lines = stderr
        .lines()
        .filter(|l| l.contains("estimating power from CPU utilisation"))
        .count();
    assert_eq!(
        fallback_lines, 1,
        "exactly one start-up line explains the fallback:\n{stderr}"
    );
    common::assert_promtool_accepts("estimator output", &body);
}

#[test]
fn doctor_exit_code_says_whether_real_measurements_are_possible() {
    let server = tempfile::tempdir().unwrap();
    common::copy_powercap_fixture("intel-2socket-server", server.path());
    let out = Command::new(BIN)
        .args(["doctor", "--host.sysfs"])
        .arg(server.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("OK       rapl"), "{stdout}");
    assert!(stdout.contains("package-0, package-1"), "{stdout}");
    if common::require_root("the doctor's eBPF load check") {
        assert!(
            stdout.contains("OK       ebpf load      sched_switch program loaded"),
            "{stdout}"
        );
    }

    let vm = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--host.sysfs")
        .arg(vm.path())
        .arg("doctor")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MISSING  rapl"), "{stdout}");
    assert!(stdout.contains("estimator:"), "{stdout}");
    assert!(
        stdout.contains("verdict: no real energy measurements"),
        "{stdout}"
    );
}

/// Waits for a few measurements, then checks what a user relies on whatever the CPU-time
/// source: `/healthz` is exactly `ok` and `?verbose=1` names the source, the self-metric agrees,
/// `*_bpf_cpu_time_ms_total` exists only with exact scheduler time, containers add up to the
/// node, and promtool accepts the output.
fn check_cpu_source(exporter: &Exporter, want: &str) {
    let mut text = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let (_, body) = get(exporter.port, "/metrics", &[]).unwrap();
        if value(&body, "kepler_exporter_snapshot_sequence").unwrap_or(0.0) >= 3.0 {
            text = body;
            break;
        }
    }
    assert!(!text.is_empty(), "no third measurement");
    let (_, health) = get(exporter.port, "/healthz", &[]).unwrap();
    assert_eq!(health, "ok");
    let (_, verbose) = get(exporter.port, "/healthz?verbose=1", &[]).unwrap();
    assert!(
        verbose.starts_with("ok\n") && verbose.contains(&format!("\ncpu_time_source {want}\n")),
        "{verbose}"
    );
    assert_eq!(
        value(
            &text,
            &format!("kepler_exporter_cpu_time_source{{source=\"{want}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    let bpf = text.contains("kepler_container_bpf_cpu_time_ms_total{");
    assert_eq!(
        bpf,
        want == "ebpf",
        "bpf_cpu_time series with source {want}"
    );
    if bpf {
        assert!(
            sum(&text, "kepler_container_bpf_cpu_time_ms_total") > 0.0,
            "some CPU time measured"
        );
    }
    let node = sum(&text, "kepler_node_package_joules_total");
    let containers = sum(&text, "kepler_container_package_joules_total");
    assert!(node > 0.0);
    assert!(
        (containers - node).abs() <= 1e-4 * node.max(1.0),
        "containers {containers} J vs node {node} J"
    );
    common::assert_promtool_accepts(&format!("binary output with {want}"), &text);
}

#[test]
fn cpu_time_source_falls_back_to_procfs_when_ebpf_is_disabled_or_unavailable() {
    let disabled = start(&["--ebpf.enabled=false"]);
    check_cpu_source(&disabled, "procfs");
    drop(disabled);
    // No cgroup v2 hierarchy under host.sysfs: the eBPF source refuses (the kernel's cgroup ids
    // could not be resolved) and the exporter measures with procfs. Fake RAPL needs no sysfs.
    let empty = tempfile::tempdir().unwrap();
    let unavailable = start(&["--host.sysfs", empty.path().to_str().unwrap()]);
    check_cpu_source(&unavailable, "procfs");
}

#[test]
fn cpu_time_source_is_ebpf_by_default_as_root() {
    if !common::require_ebpf("the eBPF CPU-time source") {
        return;
    }
    let exporter = start(&[]);
    check_cpu_source(&exporter, "ebpf");
}

#[test]
fn cpu_time_source_falls_back_to_procfs_when_the_program_cannot_load() {
    if !common::require_ebpf("dropping the capabilities eBPF needs") {
        return;
    }
    if kepler_test_support::require::require_tool("setpriv").is_none() {
        return;
    }
    // Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN: bpf(2) refuses to load the program.
    let mut command = Command::new("setpriv");
    command.args([
        "--bounding-set=-bpf,-perfmon,-sys_admin",
        "--inh-caps=-bpf,-perfmon,-sys_admin",
        BIN,
    ]);
    let exporter = start_with(command, &[]);
    check_cpu_source(&exporter, "procfs");
}
