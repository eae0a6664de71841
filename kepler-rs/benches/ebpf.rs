#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! eBPF CPU accounting benchmark (not a test; needs root). Two tables for docs/benchmarks.md:
//!
//! 1. Cost per context switch of the attached programs, from the kernel's own BPF statistics
//!    (`BPF_ENABLE_STATS`, i.e. `kernel.bpf_stats_enabled=1` while the bench runs):
//!    `run_time_ns / run_cnt`, under three workloads that switch a lot: two threads of one
//!    process ping-ponging (the same pair is charged again and again), two processes
//!    ping-ponging on CPU 0 (the pair changes at every switch, between two), and a ring of three
//!    processes on CPU 0 (the pair changes at every switch and is never one of the last two).
//! 2. CPU time of one refresh (`CpuTimeSource::sample`) of the eBPF and the procfs source, with
//!    100, 1,000 and 10,000 idle processes in a kubepods-shaped container cgroup: the calling
//!    thread's on-CPU nanoseconds (`CLOCK_THREAD_CPUTIME_ID`, user + kernel), median of 7.
//!
//! Run: `cargo bench -p kepler-rs --bench ebpf` (or `-- 100 1000` for some sizes only).
//!
//! Real mixes instead of ping-pong: `KEPLER_BENCH_MIX=$'sleep 60\nmake -j2'` prints, instead of
//! the two tables, the exporter's program's cost per run over every switch on the node while
//! each command (one per line) runs, drained every second as at `--monitor.interval 1s`.
//!
//! Comparing program variants: `KEPLER_BENCH_BPF_VARIANTS=a.o,b.o` (objects built from edited
//! copies of `ebpf/src/cpu.bpf.c` with the build's clang command) adds a row per variant (its
//! `kepler_sched_switch`). Rows are measured in alternating rounds, each program alone on the
//! tracepoint: a program attached after another one would find the task's data in cache and
//! read 5-70 ns cheaper than it costs alone, and alternating spreads the changes of load on a
//! shared machine over all rows.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aya::programs::RawTracePoint;
use aya::sys::{enable_stats, Stats};
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::workload::ebpf::{CounterEvents, EbpfSource, PerfEventSpec};
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_rs::workload::CpuTimeSource;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const SAMPLES: usize = 7;

/// This thread's on-CPU time in nanoseconds (user + kernel), exact to now.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec into the valid, exclusively borrowed `ts`.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn context_switches() -> u64 {
    let s = fs::read_to_string("/proc/stat").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// N idle processes (`sleep`) started inside `cgroup`, killed on drop.
struct Idle {
    shell: Child,
    cgroup: PathBuf,
}

impl Idle {
    fn spawn(cgroup: &Path, n: usize) -> Self {
        let script = format!(
            "echo $$ > '{}/cgroup.procs'; i=0; while [ $i -lt {n} ]; do sleep 3600 & i=$((i+1)); done; echo started; wait",
            cgroup.display()
        );
        let mut shell = Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for "started" so that every process exists before measuring.
        let mut out = shell.stdout.take().unwrap();
        let mut buf = [0u8; 8];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        Self {
            shell,
            cgroup: cgroup.to_path_buf(),
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let _ = fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = self.shell.kill();
        let _ = self.shell.wait();
        for _ in 0..200 {
            let procs = fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A kubepods-shaped container cgroup, removed on drop.
struct Cgroup(Vec<PathBuf>);

impl Cgroup {
    fn create(tag: &str) -> Self {
        let id = format!("{:0>64}", format!("{:x}{}", std::process::id(), tag));
        let mut dir = common::v2_root();
        let mut made = Vec::new();
        for seg in [
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            "kubepods-besteffort-pod0000bench_0000_4000_8000_000000000001.slice".to_string(),
            format!("cri-containerd-{id}.scope"),
        ] {
            dir.push(seg);
            if fs::create_dir(&dir).is_ok() {
                made.push(dir.clone());
            }
        }
        Self(made)
    }
    fn dir(&self) -> &Path {
        self.0.last().unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median CPU nanoseconds of one `sample()`, samples 300 ms apart.
fn refresh_cost(source: &mut dyn CpuTimeSource) -> (u64, usize) {
    source.sample();
    let mut costs = Vec::new();
    let mut processes = 0;
    for _ in 0..SAMPLES {
        std::thread::sleep(Duration::from_millis(300));
        let before = thread_cpu_ns();
        let s = source.sample();
        costs.push(thread_cpu_ns() - before);
        processes = s.processes.len();
    }
    (median(costs), processes)
}

/// The stats floor: an empty program on the same tracepoint, loaded from the same object.
fn calibration() -> aya::Ebpf {
    let object = kepler_ebpf::cpu_object().expect("BPF object built in");
    let mut bpf = aya::EbpfLoader::new().btf(None).load(object).unwrap();
    let p: &mut RawTracePoint = bpf
        .program_mut(kepler_ebpf::CALIBRATION_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    p.load().unwrap();
    p.attach("sched_switch").unwrap();
    bpf
}

fn noop_stats(bpf: &aya::Ebpf) -> (Duration, u64) {
    let info = bpf
        .program(kepler_ebpf::CALIBRATION_PROGRAM)
        .unwrap()
        .info()
        .unwrap();
    (info.run_time(), info.run_count())
}

/// What one round attaches to `sched_switch` (besides the empty calibration program).
enum Candidate {
    /// The program as the exporter loads it (`EbpfSource::new`): on a machine without hardware
    /// counters, the time-only build.
    Exporter,
    /// The build with counters, three software CPU-clock events in the PMU's place (so that it
    /// runs on machines without one): what the counter reads cost per switch.
    Counted,
    /// An object from `KEPLER_BENCH_BPF_VARIANTS`: its `kepler_sched_switch` program only.
    Variant(String),
}

/// A candidate, attached until dropped.
enum Attached {
    Source(Box<EbpfSource>),
    Object(aya::Ebpf),
}

impl Candidate {
    fn label(&self) -> String {
        match self {
            Self::Exporter => "kepler_sched_switch as the exporter loads it".into(),
            Self::Counted => {
                "kepler_sched_switch, 3 counters on (software CPU-clock events)".into()
            }
            Self::Variant(path) => format!(
                "variant {}",
                Path::new(path).file_name().unwrap().to_string_lossy()
            ),
        }
    }

    fn attach(&self, metrics: &Arc<SelfMetrics>) -> Attached {
        let root = Path::new(CGROUP_ROOT);
        match self {
            Self::Exporter => Attached::Source(Box::new(
                EbpfSource::new("/proc".into(), root, metrics.clone()).expect("eBPF source"),
            )),
            Self::Counted => Attached::Source(Box::new(
                EbpfSource::with_counter_events(
                    "/proc".into(),
                    root,
                    metrics.clone(),
                    &CounterEvents([PerfEventSpec::SOFTWARE_CPU_CLOCK; 3]),
                )
                .expect("eBPF source with software counters"),
            )),
            Self::Variant(path) => {
                let bytes = fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
                let mut bpf = aya::EbpfLoader::new().btf(None).load(&bytes).unwrap();
                let p: &mut RawTracePoint = bpf
                    .program_mut(kepler_ebpf::SCHED_SWITCH_PROGRAM)
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                p.attach("sched_switch").unwrap();
                Attached::Object(bpf)
            }
        }
    }
}

impl Attached {
    /// (run time, run count) of each attached program, `kepler_sched_switch` first.
    fn stats(&self) -> Vec<(&'static str, Duration, u64)> {
        match self {
            Self::Source(s) => {
                let mut v: Vec<_> = s
                    .program_stats()
                    .into_iter()
                    .map(|p| (p.name, p.run_time, p.run_count))
                    .collect();
                v.sort_by_key(|(name, _, _)| *name != kepler_ebpf::SCHED_SWITCH_PROGRAM);
                v
            }
            Self::Object(bpf) => {
                let info = bpf
                    .program(kepler_ebpf::SCHED_SWITCH_PROGRAM)
                    .unwrap()
                    .info()
                    .unwrap();
                vec![(
                    kepler_ebpf::SCHED_SWITCH_PROGRAM,
                    info.run_time(),
                    info.run_count(),
                )]
            }
        }
    }
}

/// Two threads passing a message back and forth `n` times: every message is a wake-up and a
/// context switch.
fn ping_pong(n: u32) {
    let (to_b, from_a) = mpsc::channel::<u32>();
    let (to_a, from_b) = mpsc::channel::<u32>();
    let b = std::thread::spawn(move || {
        while let Ok(x) = from_a.recv() {
            if to_a.send(x).is_err() {
                break;
            }
        }
    });
    for i in 0..n {
        to_b.send(i).unwrap();
        from_b.recv().unwrap();
    }
    drop(to_b);
    b.join().unwrap();
}

/// Per program: summed run time and runs over its rounds, and each round's ns per run.
#[derive(Default)]
struct Tally {
    time: Duration,
    runs: u64,
    rounds: Vec<f64>,
}

impl Tally {
    fn add(&mut self, time: Duration, runs: u64) {
        self.time += time;
        self.runs += runs;
        self.rounds
            .push(time.as_nanos() as f64 / runs.max(1) as f64);
    }
    fn ns(&self) -> f64 {
        self.time.as_nanos() as f64 / self.runs.max(1) as f64
    }
    fn spread(&self) -> String {
        let min = self.rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.rounds.iter().copied().fold(0.0, f64::max);
        format!("{min:.1}-{max:.1}")
    }
}

/// Rounds in which each candidate is attached alone (with the empty calibration program after
/// it), candidates alternating, so that each runs first in the tracepoint's chain (it takes the
/// cache misses of the task's data; a program attached after another one reads it warm) and
/// all see the same changes of load on a shared machine.
const ROUNDS: usize = 6;
const ROUND_TRIPS: u32 = 40_000;

/// This thread's CPU affinity.
fn affinity() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data (all zeros is the empty set); sched_getaffinity(2) writes
    // at most `size_of::<cpu_set_t>()` bytes into the exclusively borrowed `set`.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(rc, 0, "sched_getaffinity");
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity(2) reads one valid cpu_set_t.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(rc, 0, "sched_setaffinity");
}

/// `--echo` mode of this binary: copies stdin to stdout byte by byte until EOF.
fn echo() {
    use std::io::{Read, Write};
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut b = [0u8; 1];
    while input.read_exact(&mut b).is_ok() {
        if output.write_all(&b).and_then(|()| output.flush()).is_err() {
            break;
        }
    }
}

/// This thread and a child process (this binary in `--echo` mode) passing a byte back and
/// forth `n` times, both pinned to CPU 0: every switch there goes from one process to the
/// other, so the pair charged changes at every switch, between two pairs.
fn ping_pong_processes(n: u32) {
    ring_of_processes(n, 1);
}

/// This thread and two child processes passing a byte round a ring `n` times, all pinned to
/// CPU 0: the pair charged changes at every switch, and it is never one of the two charged
/// just before (the worst case for the per-CPU pending pairs, which save the map update only
/// when one of a CPU's last two pairs runs again).
fn ring_of_three_processes(n: u32) {
    ring_of_processes(n, 2);
}

/// This thread and `children` processes (this binary in `--echo` mode, each reading what the
/// one before wrote) passing a byte round the ring `n` times, all pinned to CPU 0.
fn ring_of_processes(n: u32, children: usize) {
    use std::io::{Read, Write};
    let all = affinity();
    // SAFETY: CPU_ZERO/CPU_SET only write bits of the local, exclusively owned set.
    #[allow(unsafe_code)]
    let cpu0 = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(0, &mut set);
        set
    };
    set_affinity(&cpu0);
    let mut ring: Vec<Child> = Vec::new();
    for _ in 0..children {
        let stdin = match ring.last_mut() {
            Some(before) => std::process::Stdio::from(before.stdout.take().unwrap()),
            None => std::process::Stdio::piped(),
        };
        let child = Command::new(std::env::current_exe().unwrap())
            .arg("--echo")
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        ring.push(child);
    }
    let mut to = ring[0].stdin.take().unwrap();
    let mut from = ring.last_mut().unwrap().stdout.take().unwrap();
    let mut b = [0u8; 1];
    for _ in 0..n {
        to.write_all(&[1]).unwrap();
        from.read_exact(&mut b).unwrap();
    }
    drop(to);
    for mut child in ring {
        child.wait().unwrap();
    }
    set_affinity(&all);
}

/// One workload's tallies: the program and the empty program in the same rounds.
type Pair = (Tally, Tally);

/// Per candidate and workload.
#[derive(Default)]
struct Tallies {
    threads: Pair,
    processes: Pair,
    ring: Pair,
}

fn per_switch_table(metrics: &Arc<SelfMetrics>) {
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    let mut candidates = vec![Candidate::Exporter, Candidate::Counted];
    let list = std::env::var("KEPLER_BENCH_BPF_VARIANTS").unwrap_or_default();
    candidates.extend(
        list.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| Candidate::Variant(p.to_string())),
    );
    let mut tallies: Vec<Tallies> = candidates.iter().map(|_| Default::default()).collect();
    let mut others: std::collections::BTreeMap<&'static str, Tally> = Default::default();
    let ctxt0 = context_switches();
    for _ in 0..ROUNDS {
        for (c, t) in candidates.iter().zip(tallies.iter_mut()) {
            let attached = c.attach(metrics);
            let noop = calibration();
            let exporter = matches!(c, Candidate::Exporter);
            let mut measure = |(program, floor): &mut Pair, run: fn(u32)| {
                let before = attached.stats();
                let noop_before = noop_stats(&noop);
                run(ROUND_TRIPS);
                let after = attached.stats();
                let noop_after = noop_stats(&noop);
                floor.add(noop_after.0 - noop_before.0, noop_after.1 - noop_before.1);
                for (i, (a, b)) in after.iter().zip(&before).enumerate() {
                    if i == 0 {
                        program.add(a.1 - b.1, a.2 - b.2);
                    } else if exporter {
                        others.entry(a.0).or_default().add(a.1 - b.1, a.2 - b.2);
                    }
                }
            };
            measure(&mut t.threads, ping_pong);
            measure(&mut t.processes, ping_pong_processes);
            measure(&mut t.ring, ring_of_three_processes);
        }
    }
    let ctxt = context_switches() - ctxt0;
    println!(
        "\n{ROUNDS} rounds of {ROUND_TRIPS} round trips per row and workload, rows alternating, each program alone on sched_switch (plus the empty one). Threads: two threads of this process (same pair charged again and again); 2 processes: this process and a child, both on CPU 0 (the pair changes at every switch, between two pairs); 3 processes: a ring of this process and two children on CPU 0 (the pair changes at every switch and is never one of the last two). ns per run (rounds min-max) / floor / net of the floor.\n"
    );
    println!("| program | runs (threads) | threads: ns per run | floor | net | runs (2 processes) | 2 processes on one CPU: ns per run | floor | net | runs (3 processes) | 3 processes on one CPU: ns per run | floor | net |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (c, t) in candidates.iter().zip(&tallies) {
        let cell = |(p, f): &Pair| {
            format!(
                "{} | {:.1} ({}) | {:.1} | {:.1}",
                p.runs,
                p.ns(),
                p.spread(),
                f.ns(),
                p.ns() - f.ns()
            )
        };
        println!(
            "| {} | {} | {} | {} |",
            c.label(),
            cell(&t.threads),
            cell(&t.processes),
            cell(&t.ring)
        );
    }
    for (name, t) in &others {
        println!(
            "| {name} (exporter's rounds, all workloads) | {} | {:.1} ({}) | | | | | | | | | | |",
            t.runs,
            t.ns(),
            t.spread()
        );
    }
    println!("(context switches on the node meanwhile, from /proc/stat ctxt: {ctxt})");
}

/// The program as the exporter loads it, drained every second as the exporter's monitor does
/// at `--monitor.interval 1s`, while each shell command (one per line) runs: its cost per run
/// over every switch on the node meanwhile (the command's and everything else's), with the
/// empty program's floor in the same time.
fn mix_table(metrics: &Arc<SelfMetrics>, commands: &str) {
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    println!("\n| command (whole node meanwhile) | seconds | switches | per second | ns per run | floor | net | program's CPU share |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for command in commands.lines().map(str::trim).filter(|c| !c.is_empty()) {
        let mut source = EbpfSource::new("/proc".into(), Path::new(CGROUP_ROOT), metrics.clone())
            .expect("eBPF source");
        let noop = calibration();
        let switch = |s: &EbpfSource| {
            s.program_stats()
                .into_iter()
                .find(|p| p.name == kepler_ebpf::SCHED_SWITCH_PROGRAM)
                .map(|p| (p.run_time, p.run_count))
                .unwrap()
        };
        source.sample();
        let (before, noop_before) = (switch(&source), noop_stats(&noop));
        let start = std::time::Instant::now();
        let mut child = Command::new("sh")
            .args(["-c", command])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut drained = start;
        while child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(50));
            if drained.elapsed() >= Duration::from_secs(1) {
                source.sample();
                drained = std::time::Instant::now();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let (after, noop_after) = (switch(&source), noop_stats(&noop));
        let runs = after.1 - before.1;
        let ns = (after.0 - before.0).as_nanos() as f64 / runs.max(1) as f64;
        let floor = (noop_after.0 - noop_before.0).as_nanos() as f64
            / (noop_after.1 - noop_before.1).max(1) as f64;
        println!(
            "| `{command}` | {seconds:.0} | {runs} | {:.0} | {ns:.1} | {floor:.1} | {:.1} | {:.4} % |",
            runs as f64 / seconds,
            ns - floor,
            // Of one CPU: the program's run time per second of the command.
            runs as f64 * ns / seconds / 1e9 * 100.0
        );
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--echo") {
        echo();
        return;
    }
    if !common::should_run("ebpf") {
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let metrics = Arc::new(SelfMetrics::new());
    if let Ok(commands) = std::env::var("KEPLER_BENCH_MIX") {
        mix_table(&metrics, &commands);
        return;
    }
    per_switch_table(&metrics);
    let lean = EbpfSource::new("/proc".into(), Path::new(CGROUP_ROOT), metrics.clone())
        .expect("eBPF source");
    // As the exporter runs it by default (no per-process metrics), and with them.
    let mut lean = lean.list_idle_processes(false);
    let mut full = EbpfSource::new("/proc".into(), Path::new(CGROUP_ROOT), metrics.clone())
        .expect("eBPF source");
    let mut procfs = ProcfsSource::new("/proc".into(), CGROUP_ROOT.into(), metrics.clone());

    println!(
        "\n| idle processes | procfs refresh CPU | eBPF refresh CPU | eBPF / procfs | eBPF with --metrics.processes | processes listed (procfs / eBPF / eBPF with processes) |\n|---:|---:|---:|---:|---:|---:|"
    );
    for n in sizes {
        let cgroup = Cgroup::create(&n.to_string());
        let idle = Idle::spawn(cgroup.dir(), n);
        let (p, pn) = refresh_cost(&mut procfs);
        let (e, en) = refresh_cost(&mut lean);
        let (f, fun) = refresh_cost(&mut full);
        println!(
            "| {n} | {:.2} ms | {:.3} ms | {:.3} | {:.3} ms | {pn} / {en} / {fun} |",
            p as f64 / 1e6,
            e as f64 / 1e6,
            e as f64 / p as f64,
            f as f64 / 1e6,
        );
        drop(idle);
        drop(cgroup);
    }
    println!("\nerrors: {:?}", metrics.errors());
}
