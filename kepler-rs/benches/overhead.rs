#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exporter overhead benchmark (not a test): runs the real `kepler-rs` binary on fake RAPL
//! against 100, 1,000 and 10,000 sleeping processes spread over 10, 100 and 1,000
//! kubepods-shaped cgroups, and reports its CPU (millicores, from its own /proc/<pid>/stat over
//! the measurement window), peak RSS (VmHWM), and the `/metrics` scrape time (median of 20
//! GETs on loopback, which includes rendering from the snapshot).
//!
//! Needs root (it creates cgroups under the v2 mount). Run:
//!   cargo bench -p kepler-rs --bench overhead            (all scenarios, 30 s each)
//!   cargo bench -p kepler-rs --bench overhead -- 1000 100 (one scenario)
//! Extra exporter flags can be given with KEPLER_BENCH_ARGS (e.g. "--ebpf.enabled=false"), a
//! profiler to run it under with KEPLER_BENCH_WRAPPER. KEPLER_BENCH_GPU=<n> adds a GPU (the
//! fake NVML, built with `cc`) whose running compute processes are the first n sleepers (at
//! most 64); KEPLER_BENCH_VM=1 an idle QEMU guest in a libvirt-shaped cgroup.

mod common;

use std::time::{Duration, Instant};

use common::{
    fake_nvml, free_port, idle_vm, scrape, sleepers_in_containers, spawn_exporter, usage, Cleanup,
};

const MEASURE: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(7);

fn scenario(processes: usize, containers: usize) -> String {
    let mut guard = Cleanup::default();
    let base = common::v2_root().join(format!("kubepods-bench-{}.slice", std::process::id()));
    sleepers_in_containers(&mut guard, &base, 0, processes, containers);
    let gpu_processes: usize = std::env::var("KEPLER_BENCH_GPU")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let gpu_dir = tempfile::tempdir().unwrap();
    let gpu = (gpu_processes > 0).then(|| {
        let pids: Vec<u32> = guard.children.iter().map(|c| c.id()).collect();
        // At most 64: the fake NVML's limit of processes per GPU.
        let used = gpu_processes.min(pids.len()).min(64);
        let gpu = fake_nvml::ScriptedGpu::start(gpu_dir.path(), 300, &pids[..used]);
        // The exporter inherits it.
        std::env::set_var("FAKE_NVML_STATE", gpu.state());
        let library = fake_nvml::library().expect("cc (the fake NVML is built with it)");
        (gpu, format!("--gpu.nvml-library={}", library.display()))
    });
    let disk = tempfile::tempdir().unwrap();
    if std::env::var("KEPLER_BENCH_VM").is_ok_and(|v| v == "1") {
        idle_vm(&mut guard, disk.path());
    }
    let port = free_port();
    let mut flags = vec!["--monitor.interval".to_string(), "3s".to_string()];
    flags.extend(gpu.as_ref().map(|(_, flag)| flag.clone()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let exporter = spawn_exporter(port, &flags);
    let pid = exporter.id();
    guard.children.push(exporter);
    std::thread::sleep(WARMUP);
    let (t0, _, _) = usage(pid);
    let start = Instant::now();
    std::thread::sleep(MEASURE);
    let (t1, _, hwm) = usage(pid);
    let secs = start.elapsed().as_secs_f64();
    let millicores = (t1 - t0) as f64 / procfs::ticks_per_second() as f64 / secs * 1000.0;
    let mut times: Vec<f64> = (0..20).map(|_| scrape(port).0).collect();
    times.sort_by(f64::total_cmp);
    // What was measured besides the CPU: GPUs and VMs on the page (one idle series each).
    let body = common::page(port);
    let served = |family: &str| {
        body.lines()
            .filter(|l| l.starts_with(family) && l.contains("mode=\"idle\""))
            .count()
    };
    format!(
        "| {processes} | {containers} | {millicores:.1} | {:.1} | {:.2} | {} | {} |",
        hwm as f64 / 1024.0,
        times[times.len() / 2],
        served("kepler_node_gpu_joules_total{"),
        served("kepler_vm_package_joules_total{"),
    )
}

fn main() {
    if !common::should_run("overhead") {
        return;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let scenarios: Vec<(usize, usize)> = match args.as_slice() {
        [p, c, ..] => vec![(*p, *c)],
        _ => vec![(100, 10), (1_000, 100), (10_000, 1_000)],
    };
    println!("| processes | containers | exporter CPU (millicores) | peak RSS (MiB) | /metrics scrape (ms, median) | GPUs served | VMs served |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (p, c) in scenarios {
        println!("{}", scenario(p, c));
    }
}
