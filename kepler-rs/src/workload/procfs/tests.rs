use super::files::PF_KTHREAD;
use super::*;
use std::fs;
use std::path::Path;

const CID: &str = "9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c";
const POD: &str = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b2d2c5e_5f0a_4d3b_9c1e_8a7f6e5d4c3b.slice";

/// A fake host: `proc/` and a pure-v2 `cgroup/` tree.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let h = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(h.proc()).unwrap();
        h.write("cgroup/cgroup.controllers", "cpu io memory\n");
        h
    }
    fn proc(&self) -> PathBuf {
        self.dir.path().join("proc")
    }
    fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    #[allow(clippy::too_many_arguments)]
    fn process(
        &self,
        pid: u32,
        comm: &str,
        ppid: u32,
        flags: u64,
        ticks: (u64, u64),
        start: u64,
        cgroup: &str,
    ) {
        let (utime, stime) = ticks;
        self.write(
                &format!("proc/{pid}/stat"),
                &format!(
                    "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 {flags} 2339 0 12 0 {utime} {stime} 0 0 20 0 1 0 {start} \
                     12345678 345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                ),
            );
        self.write(&format!("proc/{pid}/cgroup"), cgroup);
    }
    fn schedstat(&self, pid: u32, ns: u64) {
        self.write(&format!("proc/{pid}/schedstat"), &format!("{ns} 1234 56\n"));
    }
    fn kill(&self, pid: u32) {
        fs::remove_dir_all(self.proc().join(pid.to_string())).unwrap();
    }
    fn container_usage(&self, usec: u64) {
        self.write(
            &format!("cgroup/{POD}/cri-containerd-{CID}.scope/cpu.stat"),
            &format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
        );
    }
    fn source(&self, metrics: &Arc<SelfMetrics>) -> ProcfsSource {
        ProcfsSource::new(self.proc(), self.dir.path().join("cgroup"), metrics.clone())
    }
}

fn ticks(n: u64) -> CpuNanos {
    CpuNanos::from_ticks(n, USER_HZ)
}

fn cpu(s: &WorkloadSample, key: &WorkloadKey) -> CpuNanos {
    s.workloads[key].cpu
}

fn proc_cpu(s: &WorkloadSample, pid: u32) -> Option<CpuNanos> {
    s.processes.iter().find(|p| p.pid == pid).map(|p| p.cpu)
}

fn container_cgroup() -> String {
    format!("0::/{POD}/cri-containerd-{CID}.scope\n")
}

/// init, kthreadd, a kworker, two container processes (one with an awkward comm), a user
/// process in the root cgroup, and one with a garbage stat.
fn populate(h: &Host) {
    h.process(1, "systemd", 0, 0x400100, (100, 50), 1, "0::/init.scope\n");
    h.process(2, "kthreadd", 0, PF_KTHREAD | 0x40, (0, 3), 1, "0::/\n");
    h.process(
        10,
        "kworker/0:1-events",
        2,
        PF_KTHREAD | 0x8040,
        (0, 7),
        5,
        "0::/\n",
    );
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1000, 10),
        500,
        &container_cgroup(),
    );
    h.process(
        101,
        "sleep",
        100,
        0x400000,
        (1, 1),
        600,
        &format!("0::/{POD}/cri-containerd-{CID}.scope/sub\n"),
    );
    h.process(200, "rootcg", 1, 0x400000, (20, 0), 700, "0::/\n");
    h.write("proc/300/stat", "300 (broken");
    h.write("proc/300/cgroup", "0::/\n");
    h.container_usage(5_000_000);
}

#[test]
fn parse_stat_handles_awkward_comms() {
    let s = parse_stat("42 (a) b) (c)) R 7 1 1 0 -1 4194560 1 2 3 4 11 12 0 0 20 0 1 0 99 0 0")
        .unwrap();
    assert_eq!((s.pid, s.comm.as_str(), s.ppid), (42, "a) b) (c)", 7));
    assert_eq!(
        (s.flags, s.utime, s.stime, s.starttime),
        (4194560, 11, 12, 99)
    );
    for bad in [
        "",
        "(",
        ")(",
        "1 (x)",
        "(x) R 1",
        "x (y) R 1 2 3 4 5 6 7 8 9 10 11 12 0 0 20 0 1 0 99",
        ") 1 (",
        "1 (x) R a b",
    ] {
        assert_eq!(parse_stat(bad), None, "{bad:?}");
    }
}

#[test]
fn deltas_across_two_samples() {
    let h = Host::new();
    populate(&h);
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    assert_eq!(src.name(), "procfs");
    let s1 = src.sample();
    let key = WorkloadKey::Container(CID.into());
    assert_eq!(s1.workloads.len(), 3, "{:?}", s1.workloads.keys());
    assert!(s1.workloads.values().all(|w| w.cpu == CpuNanos::ZERO));
    assert!(s1.processes.iter().all(|p| p.cpu == CpuNanos::ZERO));
    let pids: Vec<u32> = s1.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [1, 2, 10, 100, 101, 200]);
    let weird = &s1.processes[3];
    assert_eq!(
        (weird.comm.as_str(), &weird.workload),
        ("my (weird) proc", &key)
    );
    let ident = s1.workloads[&key].identity.clone().unwrap();
    assert_eq!(
        ident.pod_uid.as_deref(),
        Some("6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b")
    );
    assert_eq!(
        s1.processes[5].workload,
        WorkloadKey::System,
        "root cgroup user process"
    );
    assert_eq!(s1.processes[2].workload, WorkloadKey::Kernel);
    assert_eq!(m.errors(), vec![("procfs", "garbage_stat", 1)]);

    h.process(1, "systemd", 0, 0x400100, (110, 60), 1, "0::/init.scope\n");
    h.process(
        10,
        "kworker/0:1-events",
        2,
        PF_KTHREAD | 0x8040,
        (0, 9),
        5,
        "0::/\n",
    );
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1300, 10),
        500,
        &container_cgroup(),
    );
    h.process(200, "rootcg", 1, 0x400000, (25, 0), 700, "0::/\n");
    h.container_usage(8_500_000); // +3.5 s: more than the live processes (an exited child)
    let s2 = src.sample();
    assert_eq!(proc_cpu(&s2, 1), Some(ticks(20)));
    assert_eq!(proc_cpu(&s2, 10), Some(ticks(2)));
    assert_eq!(proc_cpu(&s2, 100), Some(ticks(300)));
    assert_eq!(proc_cpu(&s2, 101), Some(CpuNanos::ZERO));
    assert_eq!(cpu(&s2, &WorkloadKey::System), ticks(20) + ticks(5));
    assert_eq!(cpu(&s2, &WorkloadKey::Kernel), ticks(2));
    assert_eq!(
        cpu(&s2, &key),
        CpuNanos(3_500_000_000),
        "container time is the cgroup's"
    );
    assert_eq!(m.errors(), vec![("procfs", "garbage_stat", 2)]);
}

#[test]
fn pid_reuse_is_a_new_process() {
    let h = Host::new();
    populate(&h);
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.sample();
    h.kill(101);
    h.kill(100);
    // pid 100 comes back as another process, outside the container, with less CPU.
    h.process(
        100,
        "bash",
        1,
        0x400000,
        (5, 0),
        9000,
        "0::/user.slice/user-1000.slice/session-3.scope\n",
    );
    let s2 = src.sample();
    let p = s2.processes.iter().find(|p| p.pid == 100).unwrap();
    assert_eq!(
        (p.comm.as_str(), &p.workload, p.cpu),
        ("bash", &WorkloadKey::System, CpuNanos::ZERO)
    );
    assert!(
        !s2.workloads
            .contains_key(&WorkloadKey::Container(CID.into())),
        "no live process left"
    );
    assert_eq!(s2.workloads.len(), 2);
    assert_eq!(src.containers.len(), 0, "dead container forgotten");
    assert_eq!(src.processes.len(), 5, "dead processes forgotten");
    h.process(
        100,
        "bash",
        1,
        0x400000,
        (8, 0),
        9000,
        "0::/user.slice/user-1000.slice/session-3.scope\n",
    );
    assert_eq!(proc_cpu(&src.sample(), 100), Some(ticks(3)));
}

#[test]
fn exec_after_move_reclassifies() {
    let h = Host::new();
    h.process(
        50,
        "runc:[2:INIT]",
        1,
        0x400000,
        (1, 0),
        42,
        "0::/system.slice/containerd.service\n",
    );
    h.container_usage(1_000);
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    assert_eq!(src.sample().processes[0].workload, WorkloadKey::System);
    h.process(50, "nginx", 1, 0x400000, (4, 0), 42, &container_cgroup());
    let s = src.sample();
    assert_eq!(s.processes[0].workload, WorkloadKey::Container(CID.into()));
    assert_eq!(s.processes[0].cpu, ticks(3), "same process: counter kept");
}

#[test]
fn unreadable_cgroup_falls_back_to_process_sum() {
    let h = Host::new();
    populate(&h);
    fs::remove_file(
        h.dir
            .path()
            .join(format!("cgroup/{POD}/cri-containerd-{CID}.scope/cpu.stat")),
    )
    .unwrap();
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.sample();
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1040, 10),
        500,
        &container_cgroup(),
    );
    h.process(
        101,
        "sleep",
        100,
        0x400000,
        (3, 1),
        600,
        &container_cgroup(),
    );
    let s = src.sample();
    assert_eq!(
        cpu(&s, &WorkloadKey::Container(CID.into())),
        ticks(40) + ticks(2)
    );
    assert!(
        m.errors().contains(&("procfs", "cgroup_cpu", 2)),
        "{:?}",
        m.errors()
    );
    // Without any cgroup filesystem the fallback is silent.
    let m2 = Arc::new(SelfMetrics::new());
    let mut bare = ProcfsSource::new(h.proc(), h.dir.path().join("none"), m2.clone());
    bare.sample();
    assert!(!m2.errors().iter().any(|e| e.1 == "cgroup_cpu"));
}

#[test]
fn a_container_removed_while_listed_is_churn_not_an_error() {
    let h = Host::new();
    populate(&h);
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.sample();
    fs::remove_dir_all(
        h.dir
            .path()
            .join(format!("cgroup/{POD}/cri-containerd-{CID}.scope")),
    )
    .unwrap();
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1040, 10),
        500,
        &container_cgroup(),
    );
    let s = src.sample();
    assert_eq!(cpu(&s, &WorkloadKey::Container(CID.into())), ticks(40));
    let errors = m.errors();
    assert!(errors.contains(&("procfs", "vanished", 1)), "{errors:?}");
    assert!(!errors.iter().any(|e| e.1 == "cgroup_cpu"), "{errors:?}");
}

#[test]
fn vanished_and_unreadable_processes_are_skipped() {
    let h = Host::new();
    populate(&h);
    fs::create_dir_all(h.proc().join("400")).unwrap(); // exited: no stat any more
    h.process(401, "nocg", 1, 0, (1, 1), 3, "");
    fs::remove_file(h.proc().join("401/cgroup")).unwrap();
    fs::create_dir_all(h.proc().join("402/stat")).unwrap(); // EISDIR: a real anomaly
    fs::create_dir_all(h.proc().join("self")).unwrap(); // not a pid
    let m = Arc::new(SelfMetrics::new());
    let s = h.source(&m).sample();
    assert_eq!(s.processes.len(), 6);
    let errors = m.errors();
    assert!(errors.contains(&("procfs", "vanished", 2)), "{errors:?}");
    assert!(errors.contains(&("procfs", "unreadable", 1)), "{errors:?}");
}

#[test]
fn schedstat_is_kept_open_and_idle_processes_cost_one_read() {
    let h = Host::new();
    populate(&h);
    for pid in [1, 2, 10, 100, 101, 200] {
        h.schedstat(pid, 1_000_000);
    }
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.sample();
    assert_eq!(src.kept_files, 6);
    // pid 101 stays idle: its stat may be garbage now, it is not read again.
    h.write("proc/101/stat", "garbage");
    // pid 100 ran 2.5 ms (schedstat is in ns; stat's ticks are not used any more).
    h.schedstat(100, 3_500_000);
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (9999, 0),
        500,
        &container_cgroup(),
    );
    let s = src.sample();
    assert_eq!(proc_cpu(&s, 100), Some(CpuNanos(2_500_000)));
    assert_eq!(proc_cpu(&s, 101), Some(CpuNanos::ZERO));
    assert_eq!(
        m.errors(),
        vec![("procfs", "garbage_stat", 2)],
        "only pid 300's"
    );
    // It exec'd into another program: reclassified, same counter and file.
    h.schedstat(100, 4_000_000);
    h.process(
        100,
        "nginx",
        1,
        0x400000,
        (9999, 0),
        500,
        "0::/system.slice/x.service\n",
    );
    let s = src.sample();
    let p = s.processes.iter().find(|p| p.pid == 100).unwrap();
    assert_eq!(
        (p.comm.as_str(), &p.workload, p.cpu),
        ("nginx", &WorkloadKey::System, CpuNanos(500_000))
    );
    assert_eq!(src.kept_files, 6);
    // Its pid now names another process (new start time): a new baseline, no delta.
    h.schedstat(100, 7_000_000);
    h.process(100, "bash", 1, 0x400000, (1, 0), 9000, "0::/\n");
    let s = src.sample();
    let p = s.processes.iter().find(|p| p.pid == 100).unwrap();
    assert_eq!((p.comm.as_str(), p.cpu), ("bash", CpuNanos::ZERO));
    h.schedstat(100, 7_000_100);
    assert_eq!(proc_cpu(&src.sample(), 100), Some(CpuNanos(100)));
    h.kill(100);
    src.sample();
    assert_eq!(src.kept_files, 5, "a dead process's file is closed");
}

#[test]
fn beyond_the_kept_file_budget_stat_is_read() {
    let h = Host::new();
    populate(&h);
    for pid in [1, 100] {
        h.schedstat(pid, 1_000);
    }
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.max_kept_files = 1;
    src.sample();
    assert_eq!(src.kept_files, 1);
    h.schedstat(1, 2_000);
    h.schedstat(100, 2_000);
    h.process(1, "systemd", 0, 0x400100, (110, 50), 1, "0::/init.scope\n");
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1003, 10),
        500,
        &container_cgroup(),
    );
    let s = src.sample();
    // pid 1 came first in the listing or not: one of them is on each path.
    let cpus = (proc_cpu(&s, 1).unwrap(), proc_cpu(&s, 100).unwrap());
    assert!(
        cpus == (CpuNanos(1_000), ticks(3)) || cpus == (ticks(10), CpuNanos(1_000)),
        "{cpus:?}"
    );
}

#[test]
fn a_kept_schedstat_of_a_dead_process_reads_as_vanished() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let file = File::open(format!("/proc/{}/schedstat", child.id())).unwrap();
    assert!(read_schedstat(&file).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(read_schedstat(&file), Err(Skip::Vanished)));
}

#[test]
fn missing_procfs_still_reports_pseudo_containers() {
    let m = Arc::new(SelfMetrics::new());
    let mut src = ProcfsSource::new(
        Path::new("/nonexistent/proc").into(),
        Path::new("/nonexistent").into(),
        m.clone(),
    );
    let s = src.sample();
    assert_eq!(s.workloads.len(), 2);
    assert!(s.processes.is_empty());
    assert_eq!(m.errors(), vec![("procfs", "list", 1)]);
}

#[test]
fn threads_beyond_the_main_one_are_counted_from_stat() {
    let h = Host::new();
    populate(&h);
    let threads = |pid: u32, n: u64| {
        let path = h.proc().join(format!("{pid}/stat"));
        let stat = fs::read_to_string(&path).unwrap();
        fs::write(
            path,
            stat.replacen(" 20 0 1 0 ", &format!(" 20 0 {n} 0 "), 1),
        )
        .unwrap();
    };
    // pid 100 has four threads from the start; pid 200 one.
    threads(100, 4);
    h.schedstat(100, 1_000_000);
    h.schedstat(200, 1_000_000);
    let m = Arc::new(SelfMetrics::new());
    let mut src = h.source(&m);
    src.sample();
    // pid 100's main thread barely ran, its other threads ran 30 ticks: stat counts them.
    h.schedstat(100, 1_000_001);
    h.process(
        100,
        "my (weird) proc",
        1,
        0x400000,
        (1000 + 30, 10),
        500,
        &container_cgroup(),
    );
    threads(100, 4);
    let s = src.sample();
    assert_eq!(proc_cpu(&s, 100), Some(ticks(30)));
    // pid 200 (one thread, schedstat) starts threads: this interval is its main thread's time,
    // the next ones are the whole group's from stat.
    h.schedstat(200, 3_000_000);
    h.process(200, "rootcg", 1, 0x400000, (100, 0), 700, "0::/\n");
    threads(200, 8);
    let s = src.sample();
    assert_eq!(proc_cpu(&s, 200), Some(CpuNanos(2_000_000)));
    h.schedstat(200, 3_000_001);
    h.process(200, "rootcg", 1, 0x400000, (150, 0), 700, "0::/\n");
    threads(200, 8);
    let s = src.sample();
    assert_eq!(proc_cpu(&s, 200), Some(ticks(50)));
    assert!(
        m.errors()
            .iter()
            .all(|(_, reason, _)| *reason == "garbage_stat"),
        "only pid 300's: {:?}",
        m.errors()
    );
}
