//! What the root benchmarks that run the real exporter share: kubepods-shaped cgroups and
//! sleeping processes that are removed however the benchmark ends, the exporter's CPU ticks and
//! memory from /proc, and a `/metrics` scrape over loopback.
#![allow(dead_code, unused_imports)] // each benchmark binary uses a different part

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");

/// Processes killed and cgroups removed (deepest first) on drop.
#[derive(Default)]
pub struct Cleanup {
    pub children: Vec<Child>,
    pub dirs: Vec<PathBuf>,
}

impl Cleanup {
    /// Kills and reaps the processes, then removes the cgroups, retrying while the kernel still
    /// counts an exiting process as a member.
    pub fn clear(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        self.children.clear();
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.dirs.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The cgroup v2 mount; a benchmark cannot run without one.
pub fn v2_root() -> PathBuf {
    kepler_test_support::cgroup::v2_root().expect("no cgroup v2 mount")
}

pub fn mkdir(dirs: &mut Vec<PathBuf>, p: &Path) {
    if fs::create_dir(p).is_ok() {
        dirs.push(p.to_path_buf());
    }
}

/// `processes` `sleep 3600` spread over `containers` kubepods-shaped container cgroups under
/// `base` (a slice made for this run), all registered in `guard`.
pub fn sleepers_in_containers(
    guard: &mut Cleanup,
    base: &Path,
    tag: usize,
    processes: usize,
    containers: usize,
) {
    mkdir(&mut guard.dirs, base);
    let mut scopes = Vec::new();
    for c in 0..containers {
        let pod = base.join(format!(
            "kubepods-besteffort-pod{tag:08x}_0000_4000_8000_{c:012x}.slice"
        ));
        mkdir(&mut guard.dirs, &pod);
        let scope = pod.join(format!("cri-containerd-{:056x}{:08x}.scope", c + 1, tag));
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
}

/// Starts the exporter on fake RAPL listening on `port`, with `flags`, then the flags in
/// KEPLER_BENCH_ARGS (e.g. "--ebpf.enabled=false"). KEPLER_BENCH_WRAPPER runs it under another
/// program (e.g. "valgrind --tool=massif --massif-out-file=/tmp/x.massif") to see what it does.
pub fn spawn_exporter(port: u16, flags: &[&str]) -> Child {
    let wrapper = std::env::var("KEPLER_BENCH_WRAPPER").unwrap_or_default();
    let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let extra = std::env::var("KEPLER_BENCH_ARGS").unwrap_or_default();
    command
        .args(["--fake-rapl", "--log.level", "warn", "--web.listen-address"])
        .arg(format!("127.0.0.1:{port}"))
        .args(flags)
        .args(extra.split_whitespace())
        .spawn()
        .unwrap()
}

pub use kepler_test_support::net::free_port;

/// (utime + stime) ticks, VmRSS kB and VmHWM kB of a process.
pub fn usage(pid: u32) -> (u64, u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (ticks, kb("VmRSS:"), kb("VmHWM:"))
}

/// One `GET /metrics` over loopback: milliseconds until the whole body arrived, and its size.
pub fn scrape(port: u16) -> (f64, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"));
    (t.elapsed().as_secs_f64() * 1e3, body.len())
}

/// The body of one `GET /metrics` over loopback.
pub fn page(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Waits until the exporter on `port` accepts connections.
pub fn wait_listening(port: u16) {
    let up = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "exporter did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the benchmark should run: under `cargo bench` (not `cargo test --all-targets`) and
/// as root; says why not otherwise.
pub fn should_run(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name} benchmark: not run (use `cargo bench -p kepler-rs --bench {name}`)");
        return false;
    }
    kepler_test_support::require::require_root(&format!(
        "the {name} benchmark (it creates cgroups)"
    ))
}

/// The integration tests' fake NVML (the library and a scripted GPU), for the overhead
/// benchmark's `KEPLER_BENCH_GPU`.
#[path = "../../tests/common/fake_nvml.rs"]
pub mod fake_nvml;

/// An idle virtual machine for the overhead benchmark (`KEPLER_BENCH_VM=1`):
/// `qemu-system-x86_64` under TCG halting in a three-instruction boot sector (`sti; hlt; jmp`),
/// started in a libvirt-shaped scope (`machine.slice/machine-qemu\x2d<N>\x2dbenchvm.scope`)
/// registered in `guard`, so the exporter classifies and measures a guest the whole run.
pub fn idle_vm(guard: &mut Cleanup, dir: &Path) {
    let mut sector = [0u8; 512];
    sector[..4].copy_from_slice(&[0xFB, 0xF4, 0xEB, 0xFD]);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    let disk = dir.join("idle.img");
    fs::write(&disk, sector).unwrap();
    let slice = v2_root().join("machine.slice");
    mkdir(&mut guard.dirs, &slice);
    let scope = slice.join(format!(
        "machine-qemu\\x2d{}\\x2dbenchvm.scope",
        std::process::id()
    ));
    mkdir(&mut guard.dirs, &scope);
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec qemu-system-x86_64 -accel tcg -nographic -no-reboot \
             -nodefaults -display none -m 16 -monitor none -serial none -name guest=benchvm \
             -drive file='{}',format=raw,if=floppy",
            scope.join("cgroup.procs").display(),
            disk.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    guard.children.push(child);
}
