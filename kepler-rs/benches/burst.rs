#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Memory after a burst (benchmark, not a test): does the exporter give back what a burst of
//! processes and containers made it use? Runs the real `kepler-rs` on fake RAPL with per-process
//! series and a 1 s interval, scraped every second as Prometheus would, and puts two bursts of
//! `sleep` processes in kubepods-shaped containers on the host (default 5,000 processes in 500
//! containers, 12 s each, 40 s apart). Prints the resident memory (VmRSS) every 2 s and a table:
//! before, peak (VmHWM) and 40 s after each burst, and the largest `/metrics` body.
//!
//! Needs root (it creates cgroups under the v2 mount). Run:
//!   cargo bench -p kepler-rs --bench burst                 (5,000 processes in 500 containers)
//!   cargo bench -p kepler-rs --bench burst -- 2000 200     (another size)
//! Extra exporter flags: KEPLER_BENCH_ARGS (e.g. "--ebpf.enabled=false"); the exporter's
//! environment is passed on (e.g. MALLOC_ARENA_MAX=1 to compare allocator settings);
//! KEPLER_BENCH_WRAPPER runs it under a profiler (e.g. "valgrind --tool=massif").

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    free_port, scrape, sleepers_in_containers, spawn_exporter, usage, wait_listening, Cleanup,
};

const BEFORE: Duration = Duration::from_secs(15);
const HOLD: Duration = Duration::from_secs(12);
const AFTER: Duration = Duration::from_secs(40);

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    if !common::should_run("burst") {
        return;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (processes, containers) = match args.as_slice() {
        [p, c, ..] => (*p, *c),
        _ => (5_000, 500),
    };
    let port = free_port();
    let mut exporter_guard = Cleanup::default();
    let exporter = spawn_exporter(
        port,
        &[
            "--metrics.processes",
            "--monitor.interval",
            "1s",
            "--monitor.terminated-retention",
            "2s",
        ],
    );
    let pid = exporter.id();
    exporter_guard.children.push(exporter);
    wait_listening(port);

    // Prometheus: one scrape a second for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let largest_body = Arc::new(AtomicUsize::new(0));
    let scraper = {
        let (stop, largest_body) = (stop.clone(), largest_body.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_, bytes) = scrape(port);
                largest_body.fetch_max(bytes, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let start = Instant::now();
    let mut timeline = Vec::new();
    let sample_until = |until: Duration, timeline: &mut Vec<String>| {
        while start.elapsed() < until {
            let (_, rss, _) = usage(pid);
            timeline.push(format!("{}s:{:.1}", start.elapsed().as_secs(), mib(rss)));
            std::thread::sleep(Duration::from_secs(2));
        }
        usage(pid)
    };
    let mut rows = Vec::new();
    let mut at = Duration::ZERO;
    for burst in 1..=2 {
        at += if burst == 1 { BEFORE } else { AFTER };
        let (_, before, _) = sample_until(at, &mut timeline);
        let mut guard = Cleanup::default();
        let base = common::v2_root().join(format!(
            "kubepods-burst-{}-{burst}.slice",
            std::process::id()
        ));
        sleepers_in_containers(&mut guard, &base, burst, processes, containers);
        at = start.elapsed() + HOLD;
        sample_until(at, &mut timeline);
        guard.clear();
        at = start.elapsed() + AFTER;
        let (_, after, peak) = sample_until(at, &mut timeline);
        rows.push(format!(
            "| {burst} | {:.1} | {:.1} | {:.1} |",
            mib(before),
            mib(peak),
            mib(after)
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    // A clean stop, so a profiler named in KEPLER_BENCH_WRAPPER writes its report.
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    for child in &mut exporter_guard.children {
        let _ = child.wait();
    }
    println!("RSS MiB over time: {}", timeline.join(" "));
    println!(
        "{processes} processes in {containers} containers per burst; largest /metrics body {:.1} MiB",
        mib(largest_body.load(Ordering::Relaxed) as u64 / 1024)
    );
    println!("| burst | RSS before (MiB) | peak RSS so far (MiB) | RSS 40 s after (MiB) |");
    println!("|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
