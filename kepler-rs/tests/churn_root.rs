#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Memory stays flat under churn (root, real cgroups): containers (kubepods-shaped v2 cgroups,
//! each with a short-lived process) are created and destroyed continuously while the real
//! exporter measures every 200 ms. After a warm-up, its resident memory
//! must not keep growing, and the terminated-workload window must keep the series count bounded.
//!
//! CI runs a shortened churn (KEPLER_CHURN_SECS, default 30 s); the one-hour run is
//! `KEPLER_CHURN_SECS=3600 cargo test -p kepler-rs --release --test churn_root -- --nocapture`.

mod common;

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::CreatedDirs;

const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");
const MAX_TERMINATED: usize = 50;

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn page(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Samples of `metric` on `page`.
fn series(page: &str, metric: &str) -> usize {
    page.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .count()
}

/// Distinct `container_id`s of the modern container family in `state` (`running`,
/// `terminated`) on `page`: the exporter's own view of its containers.
fn containers_in_state(page: &str, state: &str) -> usize {
    let wanted = format!("state=\"{state}\"");
    page.lines()
        .filter(|l| l.starts_with("kepler_container_cpu_joules_total{") && l.contains(&wanted))
        .filter_map(|l| l.split("container_id=\"").nth(1)?.split('"').next())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Kills the exporter however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Container {
    dir: PathBuf,
    child: Child,
    started: Instant,
}

/// Kills the container's process and removes its cgroup, retrying while the kernel still counts
/// the exiting process as a member (a removal right after the kill can fail with EBUSY, which
/// left the pod's cgroup behind).
fn end_container(mut c: Container) {
    let _ = c.child.kill();
    let _ = c.child.wait();
    for _ in 0..100 {
        if fs::remove_dir(&c.dir).is_ok() || !c.dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("could not remove {}", c.dir.display());
}

#[test]
fn memory_stays_flat_while_containers_churn() {
    if !common::require_root("creating cgroups") {
        return;
    }
    let Some(v2) = common::require_v2_root() else {
        return;
    };
    let secs: u64 = std::env::var("KEPLER_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut dirs = CreatedDirs::default();
    let (_, pod_uid) = common::unique_ids();
    let pod = dirs.create_path(
        &v2,
        &[
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
        ],
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exporter = Command::new(BIN)
        .args([
            "--fake-rapl",
            "--log.level",
            "error",
            "--metrics.processes",
            "--monitor.interval",
            "200ms",
            // Both schemas: the modern container family tells running from terminated.
            "--metrics.schema",
            "both",
        ])
        .args([
            "--monitor.terminated-retention",
            "2s",
            "--monitor.max-terminated",
        ])
        .arg(MAX_TERMINATED.to_string())
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .args(
            std::env::var("KEPLER_CHURN_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = exporter.id();
    let exporter = Killed(exporter);
    let up = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "exporter did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut live: VecDeque<Container> = VecDeque::new();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut max_series = 0;
    let mut max_terminated = 0;
    // Classic series beyond what the exporter's own view of live and terminated containers
    // (two pseudo ones included) explains, at the worst sample.
    let mut max_unexplained = 0isize;
    let start = Instant::now();
    let mut created = 0u64;
    let mut next_sample = start;
    while start.elapsed() < Duration::from_secs(secs) {
        let (id, _) = common::unique_ids();
        let dir = pod.join(format!("cri-containerd-{id}.scope"));
        fs::create_dir(&dir).unwrap();
        let child = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.3",
            ])
            .spawn()
            .unwrap();
        fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        live.push_back(Container {
            dir,
            child,
            started: Instant::now(),
        });
        created += 1;
        while live
            .front()
            .is_some_and(|c| c.started.elapsed() > Duration::from_millis(800))
        {
            end_container(live.pop_front().unwrap());
        }
        if Instant::now() >= next_sample {
            samples.push((start.elapsed(), rss_kib(pid)));
            let page = page(port);
            let classic = series(&page, "kepler_container_joules_total");
            let running = containers_in_state(&page, "running");
            let terminated = containers_in_state(&page, "terminated");
            max_series = max_series.max(classic);
            max_terminated = max_terminated.max(terminated);
            let explained = 2 * (running + terminated + 2);
            max_unexplained = max_unexplained.max(classic as isize - explained as isize);
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in live.drain(..) {
        end_container(c);
    }
    drop(exporter);

    // Warm-up: the first third (terminated window fills, allocator settles).
    let third = Duration::from_secs(secs / 3);
    let after_warmup: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= third && *t < third * 2)
        .map(|s| s.1)
        .collect();
    let end: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= third * 2)
        .map(|s| s.1)
        .collect();
    let (warm, last) = (median(after_warmup), median(end));
    let trace: Vec<String> = samples
        .iter()
        .step_by(5)
        .map(|(t, kib)| format!("{}s:{kib}", t.as_secs()))
        .collect();
    println!("churn RSS KiB over time: {}", trace.join(" "));
    println!(
        "churn: {created} containers in {secs} s; RSS {} KiB after warm-up, {} KiB at the end; at most {max_series} container series, {max_terminated} terminated containers",
        warm, last
    );
    assert!(
        created > secs * 5,
        "the churn loop ran too slowly to prove anything: {created}"
    );
    assert!(
        last <= warm + 2048,
        "RSS grew from {warm} KiB to {last} KiB under churn"
    );
    // At most MAX_TERMINATED terminated containers are kept, however fast they come and go;
    // every classic series (two modes each) belongs to a container the exporter sees running
    // or keeps as terminated, or to the two pseudo ones. How many it sees running depends on
    // how quickly it notices removed cgroups, which a loaded machine slows down.
    assert!(
        max_terminated <= MAX_TERMINATED,
        "terminated containers not bounded: {max_terminated}"
    );
    assert!(
        max_unexplained <= 0,
        "{max_unexplained} classic container series more than running and kept containers explain (at most {max_series})"
    );
    assert!(max_terminated > 0, "no container was seen terminated");
}
