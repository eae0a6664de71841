#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Root test on this kernel: a busy process moved into a kubepods-shaped cgroup v2 is seen by
//! [`ProcfsSource`] as a containerd container of the right pod, with the cgroup's own CPU time.
//!
//! Skips (with a line saying so) when not root or when no cgroup v2 hierarchy is mounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kepler_rs::power::units::CpuNanos;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_rs::workload::{CpuTimeSource, Runtime, WorkloadKey};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Kills the child and removes the cgroups this test created, bottom-up, whatever happens.
struct Cleanup {
    child: Option<Child>,
    /// Created directories, top-down.
    created: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.created.iter().rev() {
            // A dying task can keep a cgroup busy for a moment.
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
}

fn v2_root() -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|p| p.join("cgroup.controllers").is_file())
}

fn usage_usec(cgroup: &Path) -> u64 {
    let stat = fs::read_to_string(cgroup.join("cpu.stat")).unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn busy_process_in_kubepods_cgroup_is_a_container() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        println!("skipped: needs root to create cgroups (euid {euid})");
        return;
    }
    let Some(v2) = v2_root() else {
        println!("skipped: no cgroup v2 hierarchy at {CGROUP_ROOT} or {CGROUP_ROOT}/unified");
        return;
    };

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let pid = std::process::id();
    let id = format!("{nanos:032x}{pid:016x}{:016x}", 0x6b65_706c_6572_7273u64);
    assert_eq!(id.len(), 64);
    let uid = format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        pid,
        (nanos >> 32) as u16,
        nanos as u64 & 0xffff_ffff_ffff
    );
    let segments = [
        "kubepods.slice".to_string(),
        "kubepods-besteffort.slice".to_string(),
        format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
        format!("cri-containerd-{id}.scope"),
    ];

    let mut guard = Cleanup {
        child: None,
        created: Vec::new(),
    };
    let mut dir = v2.clone();
    for seg in &segments {
        dir.push(seg);
        match fs::create_dir(&dir) {
            Ok(()) => guard.created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {}: {e}", dir.display()),
        }
    }
    let container_dir = dir;

    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let child_pid = child.id();
    guard.child = Some(child);
    fs::write(container_dir.join("cgroup.procs"), child_pid.to_string()).unwrap();

    let metrics = Arc::new(SelfMetrics::new());
    let mut source = ProcfsSource::new("/proc".into(), CGROUP_ROOT.into(), metrics.clone());
    let key = WorkloadKey::Container(id.clone());

    let first = source.sample();
    let before = usage_usec(&container_dir);
    assert_eq!(
        first.workloads.get(&key).map(|w| w.cpu),
        Some(CpuNanos::ZERO),
        "first sample sees the container with zero CPU"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let second = source.sample();
    let after = usage_usec(&container_dir);

    let w = second
        .workloads
        .get(&key)
        .unwrap_or_else(|| panic!("container {id} missing: {:?}", second.workloads.keys()));
    let identity = w.identity.clone().unwrap();
    assert_eq!(identity.runtime, Runtime::Containerd);
    assert_eq!(identity.pod_uid.as_deref(), Some(uid.as_str()));
    let proc = second
        .processes
        .iter()
        .find(|p| p.pid == child_pid)
        .unwrap();
    assert_eq!(proc.workload, key);

    let measured = w.cpu.as_secs_f64();
    let truth = CpuNanos::from_micros(after - before).as_secs_f64();
    println!(
        "container cpu {measured:.3}s, cgroup cpu.stat delta {truth:.3}s, process {:.3}s",
        proc.cpu.as_secs_f64()
    );
    assert!(measured > 0.5, "busy loop used only {measured}s");
    assert!(
        (measured - truth).abs() <= 0.1 * truth,
        "source {measured}s vs cgroup {truth}s"
    );
    assert!(
        !metrics.errors().iter().any(|e| e.1 == "cgroup_cpu"),
        "{:?}",
        metrics.errors()
    );
}
