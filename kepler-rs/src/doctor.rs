//! `kepler-rs doctor`: what this host offers and what the exporter will use.
//!
//! Each check reports OK, WARN or MISSING with a one-line detail and, when something is missing,
//! what to do. The checks read the same configured host paths as the exporter (`host.sysfs`,
//! `host.procfs`), so `doctor` in a DaemonSet pod sees what the exporter sees. The report says
//! whether the exporter can run with real measurements (a readable RAPL meter); the binary turns
//! that into its exit code. NVIDIA GPUs (NVML) are reported too, but never change the verdict.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::cgroup_root;
use crate::config::{Config, IdlePolicy};
use crate::power::estimator::EstimatorModel;
use crate::power::gpu::NvmlGpus;
use crate::power::rapl::{self, DiscoverError, RaplMeter};
use crate::power::PowerMeter;
use crate::workload::cgroup_cpu::CgroupLayout;
use crate::workload::ebpf::EbpfProgram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Missing,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Missing => "MISSING",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub advice: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Whether the exporter would measure energy (RAPL) rather than simulate or estimate it.
    pub real_measurements: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{:<8} {:<14} {}", c.status, c.name, c.detail)?;
            if !c.advice.is_empty() {
                writeln!(f, "{:<8} {:<14} -> {}", "", "", c.advice)?;
            }
        }
        if self.real_measurements {
            write!(
                f,
                "verdict: kepler-rs can run with real energy measurements"
            )
        } else {
            write!(
                f,
                "verdict: no real energy measurements on this host (see MISSING above)"
            )
        }
    }
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    advice: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        advice: advice.into(),
    }
}

/// Runs every check against the configured host paths.
pub fn diagnose(config: &Config, env: impl Fn(&str) -> Option<String>) -> Report {
    let (rapl_check, real_measurements) = rapl_check(config);
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let mut checks = vec![
        rapl_check,
        power_source_check(config, real_measurements),
        btf_check(&config.sysfs),
    ];
    checks.extend(capability_checks(status.as_deref()));
    checks.extend([
        ebpf_load_check(config),
        perf_check(&config.sysfs),
        cgroup_check(&config.sysfs),
        runtime_check(&config.sysfs, &config.procfs),
        kubernetes_check(&env),
        idle_policy_check(config),
    ]);
    checks.extend(gpu_checks(config));
    Report {
        checks,
        real_measurements,
    }
}

/// NVML: found or not, the driver's version, and each GPU with its name, UUID and whether the
/// driver keeps a total-energy counter for it.
fn gpu_checks(config: &Config) -> Vec<Check> {
    if !config.gpu_enabled {
        return vec![check(
            "nvml",
            Status::Ok,
            "GPU accounting is off (gpu.enabled=false)",
            "",
        )];
    }
    let library = config.nvml_library.as_deref();
    match NvmlGpus::open(library) {
        Ok(gpus) => {
            let mut checks = vec![check(
                "nvml",
                Status::Ok,
                format!(
                    "found: driver {}, {} GPU(s)",
                    gpus.driver_version(),
                    gpus.devices().len()
                ),
                "",
            )];
            for d in gpus.devices() {
                let (status, how, advice) = if d.has_energy_counter {
                    (Status::Ok, "total-energy counter", "")
                } else {
                    (
                        Status::Warn,
                        "no total-energy counter: power samples integrated per interval",
                        "energy between samples is interpolated; a shorter monitor.interval follows bursts closer",
                    )
                };
                checks.push(check(
                    "gpu",
                    status,
                    format!("{}: {} {} ({how})", d.index, d.name, d.uuid),
                    advice,
                ));
                checks.extend(mig_checks(d));
            }
            checks
        }
        Err(e) => {
            let (status, advice) = if library.is_some() {
                (
                    Status::Warn,
                    "check gpu.nvmlLibrary: it names a library that does not load",
                )
            } else {
                (Status::Ok, "")
            };
            vec![check(
                "nvml",
                status,
                format!("not found, no GPU energy ({e})"),
                advice,
            )]
        }
    }
}

/// A GPU's MIG mode and instances, one line each, under the GPU's line: nothing for a GPU
/// without MIG or with MIG off.
fn mig_checks(d: &crate::power::gpu::GpuDevice) -> Vec<Check> {
    let Some(mode) = d.mig_mode else {
        return Vec::new();
    };
    match (mode.current, mode.pending) {
        (false, false) => Vec::new(),
        (false, true) => vec![check(
            "gpu",
            Status::Ok,
            format!(
                "{}: MIG mode pending (on after the GPU's next reset): measured as a whole GPU until then",
                d.index
            ),
            "",
        )],
        (true, _) if d.mig.is_empty() => vec![check(
            "gpu",
            Status::Warn,
            format!("{}: MIG mode on but no MIG instance found: measured as a whole GPU", d.index),
            "create GPU and compute instances (nvidia-smi mig -cgi ... -C), or the GPU runs no work",
        )],
        (true, _) => {
            let weights = crate::monitor::gpu::mig_weights(&d.mig);
            let sum: u64 = weights.iter().sum();
            d.mig
                .iter()
                .zip(weights)
                .map(|(m, w)| {
                    check(
                        "gpu",
                        Status::Ok,
                        format!(
                            "{}:{}:{}: MIG instance of GPU {}: {} {} ({} SMs, {} slices; {w}/{sum} of the GPU's energy)",
                            d.index,
                            m.gpu_instance,
                            m.compute_instance,
                            d.index,
                            m.name,
                            m.uuid,
                            m.multiprocessors,
                            m.gpu_instance_slices,
                        ),
                        "",
                    )
                })
                .collect()
        }
    }
}

fn rapl_check(config: &Config) -> (Check, bool) {
    match RaplMeter::discover(&config.sysfs, rapl::SOURCE) {
        Ok(meter) => {
            let zones: Vec<String> = meter.zones().iter().map(|z| z.id.to_string()).collect();
            let detail = format!("{} zone(s) readable: {}", zones.len(), zones.join(", "));
            (check("rapl", Status::Ok, detail, ""), true)
        }
        Err(e @ DiscoverError::PermissionDenied { .. }) => (
            check(
                "rapl",
                Status::Missing,
                e.to_string(),
                "run the exporter as root, or grant it CAP_DAC_READ_SEARCH (see the capability lines)",
            ),
            false,
        ),
        Err(e) => (
            check(
                "rapl",
                Status::Missing,
                e.to_string(),
                "on VMs and kind nodes use --fake-rapl for tests, or rely on the estimator",
            ),
            false,
        ),
    }
}

fn power_source_check(config: &Config, rapl_ok: bool) -> Check {
    if config.fake_rapl.is_some() {
        return check(
            "power source",
            Status::Warn,
            "fake-rapl (--fake-rapl is set): simulated energy",
            "",
        );
    }
    if rapl_ok {
        return check(
            "power source",
            Status::Ok,
            "rapl-sysfs: measured energy",
            "",
        );
    }
    if !config.estimator.enabled {
        return check(
            "power source",
            Status::Missing,
            "none: no RAPL and estimator.enabled=false, so the exporter will refuse to start",
            "enable the estimator or use --fake-rapl",
        );
    }
    let model = EstimatorModel::for_host(&config.procfs, config.estimator.watts);
    check(
        "power source",
        Status::Warn,
        format!(
            "estimator: {} W idle to {} W max per socket x {} ({})",
            model.idle.0, model.max.0, model.sockets, model.origin
        ),
        "series will carry source=\"estimator\"; set estimator.idleWatts/maxWatts if you know the machine",
    )
}

/// The kernel's BTF is not needed (the program reads no kernel struct, so nothing is relocated,
/// and the loader does not parse it; ADR 0004); reported for information only.
fn btf_check(sysfs: &Path) -> Check {
    let btf = sysfs.join("kernel/btf/vmlinux");
    let found = if btf.is_file() {
        "present"
    } else {
        "not found"
    };
    check(
        "ebpf btf",
        Status::Ok,
        format!(
            "{} {found}; not required (the BPF program reads no kernel struct)",
            btf.display()
        ),
        "",
    )
}

/// A capability the exporter uses: its bit in `CapEff`, its name, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub bit: u32,
    pub name: &'static str,
    /// What the exporter does with it.
    pub used_for: &'static str,
    /// Whether CAP_SYS_ADMIN stands in for it (kernels older than 5.8 have no CAP_BPF and no
    /// CAP_PERFMON; there CAP_SYS_ADMIN is what bpf(2) and perf_event_open(2) check).
    pub sys_admin_covers: bool,
}

/// CAP_SYS_ADMIN's bit in the capability sets.
const CAP_SYS_ADMIN: u32 = 21;

/// Everything the exporter needs, and nothing else: the systemd unit and the DaemonSet grant
/// exactly these (deploy/README.md, "Privileges").
pub const CAPABILITIES: [Capability; 3] = [
    Capability {
        bit: 39,
        name: "CAP_BPF",
        used_for: "loading the eBPF CPU-time program and creating its maps",
        sys_admin_covers: true,
    },
    Capability {
        bit: 38,
        name: "CAP_PERFMON",
        used_for: "loading it as a tracing program (scheduler raw tracepoints) and opening \
                   its hardware counters (perf_event_open)",
        sys_admin_covers: true,
    },
    Capability {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        used_for: "reading the root-only RAPL energy_uj files as a non-root user, and \
                   resolving eBPF cgroup ids to paths (open_by_handle_at)",
        sys_admin_covers: false,
    },
];

/// The effective capability set of a `/proc/<pid>/status` text (`CapEff:`, hexadecimal).
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// One line per capability the exporter uses: held, covered by CAP_SYS_ADMIN, or missing with
/// what it is needed for. `status` is this process's `/proc/self/status` (capabilities belong
/// to the process, not to the host tree that `host.procfs` names).
fn capability_checks(status: Option<&str>) -> Vec<Check> {
    let Some(caps) = status.and_then(effective_capabilities) else {
        return vec![check(
            "capabilities",
            Status::Warn,
            "cannot read CapEff from /proc/self/status",
            "",
        )];
    };
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    CAPABILITIES
        .iter()
        .map(|c| {
            if has(c.bit) {
                check(c.name, Status::Ok, format!("held: {}", c.used_for), "")
            } else if c.sys_admin_covers && has(CAP_SYS_ADMIN) {
                check(
                    c.name,
                    Status::Ok,
                    format!("not held, CAP_SYS_ADMIN covers it: {}", c.used_for),
                    "",
                )
            } else {
                check(
                    c.name,
                    Status::Missing,
                    format!("not held; the exporter needs it for {}", c.used_for),
                    format!(
                        "grant {} (systemd: AmbientCapabilities=; a pod: securityContext.capabilities.add: {}), or run privileged on kernels older than 5.8",
                        c.name,
                        c.name.trim_start_matches("CAP_")
                    ),
                )
            }
        })
        .collect()
}

/// Loads and attaches the real program (then drops it), as the exporter would, with the
/// hardware counters the PMU allows, and says which it does not.
fn ebpf_load_check(config: &Config) -> Check {
    if !config.ebpf_enabled {
        return check(
            "ebpf load",
            Status::Warn,
            "not tried: ebpf.enabled=false (procfs will be used)",
            "",
        );
    }
    match EbpfProgram::load() {
        Ok(program) => {
            let unavailable: Vec<String> = program
                .counter_status()
                .filter_map(|(c, r)| r.err().map(|why| format!("{}: {why}", c.as_str())))
                .collect();
            let pmu = if unavailable.is_empty() {
                "hardware counters (cycles, instructions, cache misses) collected".to_string()
            } else {
                format!(
                    "hardware counters unavailable, their series will be absent ({})",
                    unavailable.join("; ")
                )
            };
            check(
                "ebpf load",
                Status::Ok,
                format!("sched_switch program loaded and attached; {pmu}"),
                "",
            )
        }
        Err(e) => check(
            "ebpf load",
            Status::Missing,
            format!("cannot load the eBPF program: {e}"),
            "CPU time will come from procfs (exact for containers via cgroups, misses short-lived processes outside them)",
        ),
    }
}

fn perf_check(sysfs: &Path) -> Check {
    let devices = sysfs.join("bus/event_source/devices");
    let pmu = ["cpu", "cpu_core", "armv8_pmuv3_0"]
        .iter()
        .map(|d| devices.join(d))
        .find(|p| p.join("events").is_dir() || p.join("format").is_dir());
    match pmu {
        Some(p) => check(
            "perf counters",
            Status::Ok,
            format!("hardware PMU at {}", p.display()),
            "",
        ),
        None => check(
            "perf counters",
            Status::Missing,
            format!("no hardware PMU under {} (usual in VMs)", devices.display()),
            "cycles/instructions/cache-miss series will be absent, not zero",
        ),
    }
}

fn cgroup_check(sysfs: &Path) -> Check {
    let root = cgroup_root(sysfs);
    let layout = CgroupLayout::detect(&root);
    if layout.is_empty() {
        return check(
            "cgroups",
            Status::Missing,
            format!("no cgroup hierarchy with CPU accounting under {}", root.display()),
            "mount the host's /sys (read-only is enough); per-container CPU falls back to process sums",
        );
    }
    let version = match (layout.v2_root(), layout.cpuacct_root()) {
        (Some(v2), Some(_)) if v2 != root => "hybrid (v1 controllers + v2)",
        (Some(_), _) => "v2 (unified)",
        (None, _) => "v1",
    };
    check("cgroups", Status::Ok, format!("{version}: {layout}"), "")
}

/// Container runtimes: their sockets (seen through pid 1's root when the host PID namespace is
/// shared, else this mount namespace) and the cgroup shapes they create.
fn runtime_check(sysfs: &Path, procfs: &Path) -> Check {
    const SOCKETS: &[(&str, &str)] = &[
        ("containerd", "run/containerd/containerd.sock"),
        ("docker", "run/docker.sock"),
        ("cri-o", "run/crio/crio.sock"),
        ("podman", "run/podman/podman.sock"),
        ("k3s", "run/k3s/containerd/containerd.sock"),
    ];
    const CGROUPS: &[(&str, &str)] = &[
        ("kubernetes (systemd driver)", "kubepods.slice"),
        ("kubernetes (cgroupfs driver)", "kubepods"),
        ("kind node", "kubelet.slice"),
        ("docker (cgroupfs)", "docker"),
        ("podman/libvirt", "machine.slice"),
    ];
    let roots: Vec<PathBuf> = vec![procfs.join("1/root"), PathBuf::from("/")];
    let mut found: Vec<String> = SOCKETS
        .iter()
        .filter(|(_, rel)| roots.iter().any(|r| r.join(rel).exists()))
        .map(|(name, _)| format!("{name} socket"))
        .collect();
    let layout = CgroupLayout::detect(&cgroup_root(sysfs));
    let cgroup_dirs: Vec<&Path> = [layout.v2_root(), layout.cpuacct_root()]
        .into_iter()
        .flatten()
        .collect();
    found.extend(
        CGROUPS
            .iter()
            .filter(|(_, dir)| cgroup_dirs.iter().any(|root| root.join(dir).is_dir()))
            .map(|(name, dir)| format!("{name} cgroups at /{dir}")),
    );
    if found.is_empty() {
        check(
            "runtimes",
            Status::Warn,
            "no container runtime socket or container cgroups found",
            "containers will be counted once they run; until then everything is system_processes",
        )
    } else {
        check("runtimes", Status::Ok, found.join(", "), "")
    }
}

fn idle_policy_check(config: &Config) -> Check {
    match (config.idle_policy, &config.kube) {
        (IdlePolicy::CpuShare, _) => check(
            "idle policy",
            Status::Ok,
            "cpu-share: idle energy by CPU time over attribution.idleWindow",
            "",
        ),
        (IdlePolicy::Even, _) => check(
            "idle policy",
            Status::Ok,
            "even: idle energy equally per container",
            "",
        ),
        (IdlePolicy::Requests, Some(_)) => check(
            "idle policy",
            Status::Ok,
            "requests: idle energy by the pods' CPU requests, read from pod metadata",
            "",
        ),
        (IdlePolicy::Requests, None) => check(
            "idle policy",
            Status::Warn,
            "requests without pod metadata: no request is known, so idle energy is split by cpu-share",
            "enable pod metadata (--kube.enable) or choose attribution.idlePolicy cpu-share",
        ),
    }
}

fn kubernetes_check(env: &impl Fn(&str) -> Option<String>) -> Check {
    let (Some(host), port) = (
        env("KUBERNETES_SERVICE_HOST"),
        env("KUBERNETES_SERVICE_PORT"),
    ) else {
        return check(
            "kubernetes",
            Status::Warn,
            "not in a pod (KUBERNETES_SERVICE_HOST unset)",
            "pod names need the kubelet or API server; bare-metal hosts need nothing",
        );
    };
    let port = port.unwrap_or_else(|| "443".to_string());
    let target = format!("{host}:{port}");
    let reachable = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    match reachable {
        Some(true) => check(
            "kubernetes",
            Status::Ok,
            format!("API server {target} reachable"),
            "",
        ),
        _ => check(
            "kubernetes",
            Status::Missing,
            format!("API server {target} not reachable"),
            "check the pod's network policy and service account",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{layers, Config};

    fn config(sysfs: &Path, procfs: &Path) -> Config {
        let cli = layers::parse_args([
            "kepler-rs".to_string(),
            format!("--host.sysfs={}", sysfs.display()),
            format!("--host.procfs={}", procfs.display()),
        ])
        .unwrap();
        Config::load(&cli, |_| None).unwrap()
    }

    #[test]
    fn nvml_absent_or_off_is_reported_without_changing_the_verdict() {
        let dir = fixture_sysfs();
        let mut c = config(dir.path(), dir.path());
        c.nvml_library = Some(PathBuf::from("/nonexistent/libnvidia-ml.so.1"));
        let checks = gpu_checks(&c);
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].name, checks[0].status), ("nvml", Status::Warn));
        assert!(checks[0].detail.starts_with("not found"), "{:?}", checks[0]);
        c.gpu_enabled = false;
        let checks = gpu_checks(&c);
        assert_eq!((checks[0].name, checks[0].status), ("nvml", Status::Ok));
        assert!(checks[0].detail.contains("off"), "{:?}", checks[0]);
    }

    fn fixture_sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let powercap = dir.path().join("class/powercap");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/powercap/intel-2socket-server");
        for zone in std::fs::read_dir(fixture).unwrap() {
            let zone = zone.unwrap();
            std::fs::create_dir_all(powercap.join(zone.file_name())).unwrap();
            for file in std::fs::read_dir(zone.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(
                    file.path(),
                    powercap.join(zone.file_name()).join(file.file_name()),
                )
                .unwrap();
            }
        }
        let cg = dir.path().join("fs/cgroup");
        std::fs::create_dir_all(cg.join("kubepods.slice")).unwrap();
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::create_dir_all(dir.path().join("kernel/btf")).unwrap();
        std::fs::write(dir.path().join("kernel/btf/vmlinux"), b"BTF").unwrap();
        dir
    }

    #[test]
    fn requests_idle_policy_without_pod_metadata_warns() {
        let sys = fixture_sysfs();
        let proc_dir = tempfile::tempdir().unwrap();
        let mut c = config(sys.path(), proc_dir.path());
        assert_eq!(
            find(&diagnose(&c, |_| None), "idle policy").status,
            Status::Ok
        );
        c.idle_policy = IdlePolicy::Requests;
        let r = diagnose(&c, |_| None);
        let idle = find(&r, "idle policy");
        assert_eq!(idle.status, Status::Warn, "{r}");
        assert!(idle.advice.contains("--kube.enable"), "{r}");
        let cli = layers::parse_args([
            "kepler-rs".to_string(),
            format!("--host.sysfs={}", sys.path().display()),
            format!("--host.procfs={}", proc_dir.path().display()),
            "--attribution.idle-policy=requests".to_string(),
            "--kube.enable".to_string(),
            "--kube.node-name=worker-1".to_string(),
        ])
        .unwrap();
        let with_pods = Config::load(&cli, |_| None).unwrap();
        assert_eq!(
            find(&diagnose(&with_pods, |_| None), "idle policy").status,
            Status::Ok
        );
    }

    /// A `/proc/self/status` with this effective set.
    fn status(cap_eff: u64) -> String {
        format!("Name:\tkepler-rs\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n")
    }

    const BPF: u64 = 1 << 39;
    const PERFMON: u64 = 1 << 38;
    const DAC_READ_SEARCH: u64 = 1 << 2;
    const SYS_ADMIN: u64 = 1 << 21;

    #[test]
    fn the_three_capabilities_are_all_it_needs() {
        let checks = capability_checks(Some(&status(BPF | PERFMON | DAC_READ_SEARCH)));
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"]);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
        assert_eq!(
            effective_capabilities("CapEff:\t000001fffeffffff\n"),
            Some(0x1fffeffffff)
        );
    }

    #[test]
    fn each_missing_capability_is_named_with_what_it_is_for() {
        for (i, cap) in CAPABILITIES.iter().enumerate() {
            let held = CAPABILITIES
                .iter()
                .filter(|c| c.bit != cap.bit)
                .fold(0, |acc, c| acc | 1u64 << c.bit);
            let checks = capability_checks(Some(&status(held)));
            let missing: Vec<&Check> = checks
                .iter()
                .filter(|c| c.status == Status::Missing)
                .collect();
            assert_eq!(missing.len(), 1, "{checks:?}");
            assert_eq!(missing[0].name, cap.name);
            assert_eq!(checks[i].name, cap.name);
            assert!(missing[0].detail.contains(cap.used_for), "{:?}", missing[0]);
            assert!(
                missing[0]
                    .advice
                    .contains(cap.name.trim_start_matches("CAP_")),
                "{:?}",
                missing[0]
            );
        }
        let report = Report {
            checks: capability_checks(Some(&status(0))),
            real_measurements: false,
        }
        .to_string();
        for cap in CAPABILITIES {
            assert!(
                report.contains(&format!("MISSING  {} ", cap.name)),
                "{report}"
            );
        }
    }

    #[test]
    fn cap_sys_admin_stands_in_for_bpf_and_perfmon_only() {
        let checks = capability_checks(Some(&status(SYS_ADMIN)));
        let status_of = |name: &str| checks.iter().find(|c| c.name == name).unwrap().status;
        assert_eq!(status_of("CAP_BPF"), Status::Ok);
        assert_eq!(status_of("CAP_PERFMON"), Status::Ok);
        assert_eq!(status_of("CAP_DAC_READ_SEARCH"), Status::Missing);
        let unreadable = capability_checks(None);
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].status, Status::Warn);
    }

    fn find<'a>(r: &'a Report, name: &str) -> &'a Check {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn server_with_rapl_is_ready() {
        let sys = fixture_sysfs();
        let proc_dir = tempfile::tempdir().unwrap();
        let r = diagnose(&config(sys.path(), proc_dir.path()), |_| None);
        assert!(r.real_measurements);
        assert_eq!(find(&r, "rapl").status, Status::Ok);
        assert!(
            find(&r, "rapl").detail.contains("package-0, package-1"),
            "{r}"
        );
        assert_eq!(
            find(&r, "power source").detail,
            "rapl-sysfs: measured energy"
        );
        assert_eq!(find(&r, "ebpf btf").status, Status::Ok);
        assert_eq!(find(&r, "cgroups").status, Status::Ok);
        assert!(
            find(&r, "runtimes").detail.contains("kubepods.slice"),
            "{r}"
        );
        assert_eq!(find(&r, "perf counters").status, Status::Missing);
        assert!(r.to_string().ends_with("real energy measurements"));
    }

    #[test]
    fn vm_without_anything_says_what_to_do() {
        let sys = tempfile::tempdir().unwrap();
        let proc_dir = tempfile::tempdir().unwrap();
        let r = diagnose(&config(sys.path(), proc_dir.path()), |k| {
            (k == "KUBERNETES_SERVICE_HOST")
                .then(|| "127.0.0.1".to_string())
                .or_else(|| (k == "KUBERNETES_SERVICE_PORT").then(|| "1".to_string()))
        });
        assert!(!r.real_measurements);
        let rapl = find(&r, "rapl");
        assert_eq!(rapl.status, Status::Missing);
        assert!(rapl.advice.contains("--fake-rapl"));
        assert!(
            find(&r, "power source").detail.starts_with("estimator:"),
            "{r}"
        );
        let btf = find(&r, "ebpf btf");
        assert_eq!(btf.status, Status::Ok, "kernel BTF is not required");
        assert!(btf.detail.contains("not found"), "{r}");
        assert_eq!(find(&r, "cgroups").status, Status::Missing);
        assert_eq!(find(&r, "kubernetes").status, Status::Missing, "{r}");
        assert!(r.to_string().contains("-> "), "advice is printed");
    }
}
