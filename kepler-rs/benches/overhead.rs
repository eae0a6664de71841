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
//! Extra exporter flags can be given with KEPLER_BENCH_ARGS (e.g. "--ebpf.enabled=false").

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");
const MEASURE: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(7);

struct Cleanup {
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn v2_root() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").is_file())
        .expect("no cgroup v2 mount")
}

fn mkdir(dirs: &mut Vec<PathBuf>, p: &Path) {
    if fs::create_dir(p).is_ok() {
        dirs.push(p.to_path_buf());
    }
}

/// (utime + stime) ticks and VmHWM kB of a process.
fn usage(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks, hwm)
}

fn scrape_ms(port: u16) -> f64 {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"));
    t.elapsed().as_secs_f64() * 1e3
}

fn scenario(processes: usize, containers: usize) -> String {
    let root = v2_root();
    let mut guard = Cleanup {
        children: Vec::new(),
        dirs: Vec::new(),
    };
    let base = root.join(format!("kubepods-bench-{}.slice", std::process::id()));
    mkdir(&mut guard.dirs, &base);
    let mut scopes = Vec::new();
    for c in 0..containers {
        let pod = base.join(format!(
            "kubepods-besteffort-pod{:08x}_0000_4000_8000_{:012x}.slice",
            c, c
        ));
        mkdir(&mut guard.dirs, &pod);
        let scope = pod.join(format!("cri-containerd-{:064x}.scope", c + 1));
        mkdir(&mut guard.dirs, &scope);
        scopes.push(scope);
    }
    for p in 0..processes {
        let child = Command::new("sleep")
            .arg("3600")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        fs::write(
            scopes[p % containers].join("cgroup.procs"),
            child.id().to_string(),
        )
        .unwrap();
        guard.children.push(child);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = std::env::var("KEPLER_BENCH_ARGS").unwrap_or_default();
    let exporter = Command::new(BIN)
        .args([
            "--fake-rapl",
            "--log.level",
            "warn",
            "--monitor.interval",
            "3s",
            "--web.listen-address",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra.split_whitespace())
        .spawn()
        .unwrap();
    let pid = exporter.id();
    guard.children.push(exporter);
    std::thread::sleep(WARMUP);
    let (t0, _) = usage(pid);
    let start = Instant::now();
    std::thread::sleep(MEASURE);
    let (t1, hwm) = usage(pid);
    let secs = start.elapsed().as_secs_f64();
    let millicores = (t1 - t0) as f64 / procfs::ticks_per_second() as f64 / secs * 1000.0;
    let mut times: Vec<f64> = (0..20).map(|_| scrape_ms(port)).collect();
    times.sort_by(f64::total_cmp);
    format!(
        "| {processes} | {containers} | {millicores:.1} | {:.1} | {:.2} |",
        hwm as f64 / 1024.0,
        times[times.len() / 2]
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("overhead benchmark: not run (use `cargo bench -p kepler-rs --bench overhead`)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the overhead benchmark creates cgroups and needs root");
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
