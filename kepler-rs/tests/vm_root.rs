#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Root test with a real guest ([`common::qemu`]): `qemu-system-x86_64` under TCG, spinning in
//! a one-instruction boot sector, started inside a libvirt-shaped cgroup
//! (`machine.slice/machine-qemu\x2d<N>\x2dtestvm.scope/libvirt/emulator`) under the cgroup v2
//! mount, with `-name guest=testvm` and `-uuid`. The exporter binary on fake RAPL (whose energy
//! follows this host's real CPU load), once with its default CPU-time source (eBPF where it
//! loads) and once with procfs, must serve the guest in `kepler_vm_*` (classic and
//! modern) with its `vm_id`, `vm_name` and `hypervisor`, credit it energy, mark its process
//! `type="vm"`, and keep energy conserved: containers add up to the node, the VM equals its
//! processes and lies inside `system_processes` + `kernel_processes`. The guest is killed
//! whatever happens (a guard), and then shows as terminated.
//!
//! Skips with a message when not root, without cgroup v2 or without QEMU (fails instead under
//! CI=true; scripts/setup.sh installs `qemu-system-x86`).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::qemu::{cpu_ticks, QemuGuest};
use kepler_test_support::require::require_tool;
use kepler_test_support::text::parse_text;

type Page = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn scrape(port: u16) -> Option<Page> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    Some(parse_text(body))
}

/// The sum of the samples of `name` whose labels include all of `with`.
fn sum(page: &Page, name: &str, with: &[(&str, &str)]) -> f64 {
    page.iter()
        .filter(|((n, labels), _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn count(page: &Page, name: &str, with: &[(&str, &str)]) -> usize {
    page.keys()
        .filter(|(n, labels)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .count()
}

fn scrape_until(port: u16, what: &str, done: impl Fn(&Page) -> bool) -> Page {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(page) = scrape(port) {
            if done(&page) {
                return page;
            }
            last = Some(page);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let vm_lines: Vec<String> = last
        .iter()
        .flat_map(|p| p.iter())
        .filter(|((n, _), _)| n.starts_with("kepler_vm_"))
        .map(|k| format!("{k:?}"))
        .collect();
    panic!("{what} within 60 s; VM series were: {vm_lines:#?}");
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// What one exporter on this host must serve about the running guest, and conservation on one
/// page.
fn check_guest(port: u16, uuid: &str, pid_text: &str) {
    let guest_labels = [
        ("vm_id", uuid),
        ("vm_name", "testvm"),
        ("hypervisor", "kvm"),
        ("state", "running"),
        ("zone", "package"),
    ];
    let page = scrape_until(port, "the guest got no dynamic energy", |p| {
        sum(
            p,
            "kepler_vm_package_joules_total",
            &[("vm_id", uuid), ("mode", "dynamic")],
        ) > 0.0
            && sum(p, "kepler_vm_cpu_joules_total", &guest_labels) > 0.0
            && count(
                p,
                "kepler_process_cpu_joules_total",
                &[("pid", pid_text), ("zone", "package")],
            ) == 1
    });

    // Modern: the guest with upstream's labels, its process typed vm.
    assert!(sum(&page, "kepler_vm_cpu_watts", &guest_labels) >= 0.0);
    assert_eq!(count(&page, "kepler_vm_cpu_watts", &guest_labels), 1);
    let modern_process = [
        ("pid", pid_text),
        ("type", "vm"),
        ("vm_id", uuid),
        ("container_id", ""),
        ("zone", "package"),
    ];
    assert_eq!(
        count(&page, "kepler_process_cpu_joules_total", &modern_process),
        1,
        "qemu's modern process series"
    );
    // Classic: vm_id on the process series; the VM is exactly its processes.
    let classic_process = [("pid", pid_text), ("vm_id", uuid)];
    assert_eq!(
        count(
            &page,
            "kepler_process_package_joules_total",
            &classic_process
        ),
        2,
        "qemu's classic process series (dynamic and idle)"
    );
    let vm_package = sum(&page, "kepler_vm_package_joules_total", &[("vm_id", uuid)]);
    let vm_processes = sum(
        &page,
        "kepler_process_package_joules_total",
        &[("vm_id", uuid)],
    );
    assert!(
        close(vm_package, vm_processes),
        "VM {vm_package} J, its processes {vm_processes} J"
    );
    let vm_modern = sum(
        &page,
        "kepler_vm_cpu_joules_total",
        &[("vm_id", uuid), ("zone", "package")],
    );
    // The modern families carry the active (dynamic) share only, as Kepler's.
    let vm_dynamic = sum(
        &page,
        "kepler_vm_package_joules_total",
        &[("vm_id", uuid), ("mode", "dynamic")],
    );
    assert!(
        close(vm_dynamic, vm_modern),
        "classic dynamic {vm_dynamic} J, modern {vm_modern} J"
    );

    // Conservation on one snapshot: containers (pseudo ones included) add up to the node, and
    // the VM is inside the processes outside containers.
    let node = sum(&page, "kepler_node_package_joules_total", &[]);
    let containers = sum(&page, "kepler_container_package_joules_total", &[]);
    assert!(
        close(node, containers),
        "node {node} J, containers {containers} J"
    );
    let outside = sum(
        &page,
        "kepler_container_package_joules_total",
        &[("container_id", "system_processes")],
    ) + sum(
        &page,
        "kepler_container_package_joules_total",
        &[("container_id", "kernel_processes")],
    );
    assert!(
        vm_package <= outside + 1e-6,
        "VM {vm_package} J exceeds system + kernel processes {outside} J"
    );
    println!(
        "node package {node:.3} J, VM {vm_package:.3} J ({:.1} %)",
        100.0 * vm_package / node
    );

    let source: Vec<&str> = page
        .keys()
        .filter(|(n, _)| n == "kepler_exporter_cpu_time_source")
        .filter_map(|(_, l)| l.get("source").map(String::as_str))
        .collect();

    // The guest's CPU time is the whole QEMU process's (its vCPU threads included), as the
    // kernel counts it: over 3 s, within the snapshots' lag.
    let served = |page: &Page| {
        sum(
            page,
            "kepler_process_cpu_seconds_total",
            &[("pid", pid_text)],
        )
    };
    let qemu_pid: u32 = pid_text.parse().unwrap();
    let (served_before, ticks_before) = (served(&page), cpu_ticks(qemu_pid));
    std::thread::sleep(Duration::from_secs(3));
    let later = scrape(port).unwrap();
    let served_delta = served(&later) - served_before;
    let kernel_delta = (cpu_ticks(qemu_pid) - ticks_before) as f64 / 100.0;
    println!(
        "CPU time from {source:?}: qemu {served_delta:.2} s served, {kernel_delta:.2} s by the kernel"
    );
    assert!(
        served_delta >= 0.5 * kernel_delta && served_delta <= 1.5 * kernel_delta + 0.5,
        "{source:?}: qemu's CPU time {served_delta} s served, {kernel_delta} s by the kernel"
    );
}

#[test]
fn a_qemu_guest_is_a_vm_with_its_energy_and_energy_is_conserved() {
    if !common::require_root("creating cgroups and running a guest in one") {
        return;
    }
    let Some(v2) = common::require_v2_root() else {
        return;
    };
    let Some(qemu) = require_tool("qemu-system-x86_64") else {
        return;
    };

    let mut guest = QemuGuest::start(&v2, &qemu, "testvm");
    let (uuid, qemu_pid) = (guest.uuid.clone(), guest.pid);

    // Once with the default CPU-time source (eBPF where it loads) and once with procfs.
    let pid_text = qemu_pid.to_string();
    let mut exporter = None;
    for extra in [&[][..], &["--ebpf.enabled=false"][..]] {
        drop(exporter.take());
        let mut flags = vec![
            "--metrics.schema",
            "both",
            "--metrics.processes",
            "--monitor.max-terminated",
            "100000",
        ];
        flags.extend_from_slice(extra);
        let started = Exporter::start(&flags);
        check_guest(started.port, &uuid, &pid_text);
        exporter = Some(started);
    }
    let exporter = exporter.unwrap();

    // The guest gone: killed, it stays visible as terminated.
    guest.kill();
    let terminated = [
        ("vm_id", uuid.as_str()),
        ("state", "terminated"),
        ("zone", "package"),
    ];
    scrape_until(exporter.port, "the guest never became terminated", |p| {
        count(p, "kepler_vm_cpu_joules_total", &terminated) == 1
    });
    drop(exporter);
    drop(guest);
}
