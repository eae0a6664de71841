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
//! profiler to run it under with KEPLER_BENCH_WRAPPER.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, scrape, sleepers_in_containers, spawn_exporter, usage, Cleanup};

const MEASURE: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(7);

fn scenario(processes: usize, containers: usize) -> String {
    let mut guard = Cleanup::default();
    let base = common::v2_root().join(format!("kubepods-bench-{}.slice", std::process::id()));
    sleepers_in_containers(&mut guard, &base, 0, processes, containers);
    let port = free_port();
    let exporter = spawn_exporter(port, &["--monitor.interval", "3s"]);
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
    format!(
        "| {processes} | {containers} | {millicores:.1} | {:.1} | {:.2} |",
        hwm as f64 / 1024.0,
        times[times.len() / 2]
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
    println!("| processes | containers | exporter CPU (millicores) | peak RSS (MiB) | /metrics scrape (ms, median) |");
    println!("|---:|---:|---:|---:|---:|");
    for (p, c) in scenarios {
        println!("{}", scenario(p, c));
    }
}
