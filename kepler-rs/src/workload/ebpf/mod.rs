//! The eBPF CPU-time source: exact on-CPU time per process from `sched_switch`, including
//! processes that lived for a few milliseconds, at a cost per sample that grows with the
//! processes that ran, not with all processes on the node.
//!
//! [`loader::EbpfProgram`] loads and attaches the program built in the `kepler-ebpf` crate and
//! drains its per-interval maps; [`cgroup_ids::CgroupIds`] turns the kernel's cgroup ids into
//! containers. [`EbpfSource::new`] refuses (with the reason as an [`EbpfError`]) where the
//! numbers could not be right: no eBPF support built in, no privilege, no cgroup v2 hierarchy
//! (the ids name v2 cgroups), or a procfs that does not show the host's pids (the kernel reports
//! host tgids). The exporter then falls back to procfs with one log line.
//!
//! Liveness without walking `/proc`: containers are seeded once from `/proc` at start and then
//! learnt when they run; each sample checks that their cgroup directories still exist.
//! Processes leave when the kernel reports their exit; as a safety net, one that has not run
//! for [`PROCESS_RECHECK_TICKS`] samples is checked in `/proc` once per that many samples.
//!
//! Hardware counters (cycles, instructions, cache misses) come with the CPU time, per (process,
//! cgroup), for the counters whose perf events the PMU allowed at load ([`loader`]); the others
//! are not in [`CpuTimeSource::hardware_counters`], so their series are absent.
//!
//! Kernel events (softirqs of the NET_TX, NET_RX and BLOCK vectors, page cache hits) come per
//! (process, cgroup) from their own hooks and maps, drained with the CPU time; a hook this kernel
//! does not offer is logged once at start and counted (`hook_unavailable`), and its events are not
//! in [`CpuTimeSource::hardware_counters`]. Events of a process that did not run in the interval
//! count for its workload, and for the process only where idle processes are listed.

pub mod cgroup_ids;
pub mod loader;
pub mod perf;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cgroup_ids::{CgroupClass, CgroupIds, Unresolved};
pub use loader::{CounterEvents, EbpfError, EbpfProgram, HookStatus, ProgramStats};
pub use perf::PerfEventSpec;

use super::cgroup::{self, CgroupRef, Classification};
use super::cgroup_cpu::CgroupLayout;
use super::{
    ContainerIdentity, CpuTimeSource, HardwareCounterSet, HardwareCounts, ProcessUsage,
    WorkloadKey, WorkloadSample, WorkloadUsage,
};
use crate::power::units::CpuNanos;
use crate::report_error;
use crate::selfmetrics::SelfMetrics;

/// The self-metric component name.
const COMPONENT: &str = "ebpf";
/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`).
const INIT_PID_NS: &str = "pid:[4026531836]";
/// The id of the cgroup v2 root (the kernfs root's inode is always 1), where every kernel
/// thread runs: only processes there are checked for `PF_KTHREAD`.
const ROOT_CGROUP_ID: u64 = 1;
/// A process that has not run for this many samples is checked in `/proc` (once per as many).
pub const PROCESS_RECHECK_TICKS: u64 = 20;

#[derive(Debug)]
struct KnownContainer {
    identity: ContainerIdentity,
    dir: CgroupRef,
}

#[derive(Debug)]
struct KnownProcess {
    comm: String,
    workload: WorkloadKey,
    last_ran: u64,
}

/// Per-process accumulation within one sample.
#[derive(Debug)]
struct ProcAcc {
    comm: String,
    workload: WorkloadKey,
    cpu: CpuNanos,
    counters: HardwareCounts,
    /// CPU of the (process, cgroup) pair that decided `workload`.
    best: CpuNanos,
}

/// Per-process and per-container CPU time from the kernel's scheduler.
#[derive(Debug)]
pub struct EbpfSource {
    program: EbpfProgram,
    cgroups: CgroupIds,
    procfs: PathBuf,
    metrics: Arc<SelfMetrics>,
    containers: HashMap<String, KnownContainer>,
    processes: HashMap<u32, KnownProcess>,
    /// Exited in the previous sample: their last time slice may still arrive.
    recently_exited: HashSet<u32>,
    /// Whether samples list live processes that did not run (only process metrics need them).
    list_idle: bool,
    /// The hardware counters collected (those the PMU allowed at load).
    hardware_counters: HardwareCounterSet,
    tick: u64,
}

impl EbpfSource {
    /// Loads and attaches the program; `procfs` is `/proc` (or `/host/proc`), `cgroup_root` is
    /// `/sys/fs/cgroup` (or `/host/sys/fs/cgroup`).
    pub fn new(
        procfs: PathBuf,
        cgroup_root: &Path,
        metrics: Arc<SelfMetrics>,
    ) -> Result<Self, EbpfError> {
        Self::with_counter_events(procfs, cgroup_root, metrics, &CounterEvents::HARDWARE)
    }

    /// As [`Self::new`], reading the counters from the given perf events instead of the PMU's
    /// (tests use a software event on machines without a PMU).
    pub fn with_counter_events(
        procfs: PathBuf,
        cgroup_root: &Path,
        metrics: Arc<SelfMetrics>,
        events: &CounterEvents,
    ) -> Result<Self, EbpfError> {
        Self::with_map_capacity(
            procfs,
            cgroup_root,
            metrics,
            events,
            kepler_ebpf::CPU_MAP_ENTRIES,
        )
    }

    /// As [`Self::with_counter_events`], with room for `cpu_map_entries` (process, cgroup) pairs
    /// per interval (tests fill a small map).
    pub fn with_map_capacity(
        procfs: PathBuf,
        cgroup_root: &Path,
        metrics: Arc<SelfMetrics>,
        events: &CounterEvents,
        cpu_map_entries: u32,
    ) -> Result<Self, EbpfError> {
        if kepler_ebpf::cpu_object().is_none() {
            return Err(EbpfError::NotBuiltIn);
        }
        let layout = CgroupLayout::detect(cgroup_root);
        let v2 = layout.v2_root().ok_or_else(|| {
            EbpfError::Unsupported(format!(
                "no cgroup v2 hierarchy under {} (the kernel's cgroup ids name v2 cgroups)",
                cgroup_root.display()
            ))
        })?;
        check_host_pid_namespace(&procfs)?;
        let cgroups = CgroupIds::new(v2, procfs.clone()).map_err(|e| {
            EbpfError::Unsupported(format!("cannot open cgroup v2 mount {}: {e}", v2.display()))
        })?;
        let containers = seed_containers(&procfs)?;
        let program = EbpfProgram::load_with_capacity(events, cpu_map_entries)?;
        let hardware_counters = program.counters();
        let source = Self {
            program,
            cgroups,
            procfs,
            metrics,
            containers,
            processes: HashMap::new(),
            recently_exited: HashSet::new(),
            list_idle: true,
            hardware_counters,
            tick: 0,
        };
        let unavailable: Vec<String> = source
            .program
            .counter_status()
            .filter_map(|(c, r)| r.err().map(|why| format!("{}: {why}", c.as_str())))
            .collect();
        if unavailable.is_empty() {
            tracing::info!(
                "hardware counters (cycles, instructions, cache misses) collected per process"
            );
        } else {
            tracing::info!(reason = %unavailable.join("; "), "hardware counters not available here: their series are absent");
        }
        for hook in source.program.hook_status() {
            if let Err(why) = &hook.attached {
                source.metrics.record(COMPONENT, "hook_unavailable");
                tracing::warn!(program = hook.program, hook = %hook.target, reason = %why, "kernel event hook not attached: its events are absent");
            }
        }
        tracing::info!(v2 = %source.cgroups.v2_root().display(), containers = source.containers.len(), "eBPF CPU-time source: sched_switch attached");
        Ok(source)
    }

    /// Whether samples list every known live process (default) or only those that ran in the
    /// interval. Only per-process metrics need idle processes; without them a sample costs
    /// nothing per idle process.
    pub fn list_idle_processes(mut self, list: bool) -> Self {
        self.list_idle = list;
        self
    }

    /// Per counter: collected, or why not.
    pub fn counter_status(
        &self,
    ) -> impl Iterator<Item = (super::HardwareCounter, Result<(), &str>)> {
        self.program.counter_status()
    }

    /// Whether the build of the program with hardware counters is loaded (else the time-only
    /// one, where no counter is available).
    pub fn reads_counters(&self) -> bool {
        self.program.reads_counters()
    }

    /// Per kernel event hook: attached, or why not.
    pub fn hook_status(&self) -> &[loader::HookStatus] {
        self.program.hook_status()
    }

    /// Kernel statistics of the attached programs.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.program.stats()
    }

    /// Whether a process that ran in the root cgroup is a kernel thread: known from an earlier
    /// sample, else `PF_KTHREAD` in its `/proc/<tgid>/stat` (one read per new process there).
    /// One that exited before the drain can no longer tell and counts as a system process.
    fn is_kernel_thread(&self, tgid: u32) -> bool {
        match self.processes.get(&tgid) {
            Some(p) => p.workload == WorkloadKey::Kernel,
            None => super::procfs::read_identity(&self.procfs, tgid).is_some_and(|(_, k)| k),
        }
    }

    /// The workload of one drained (process, cgroup) pair.
    fn workload_of(&mut self, key: &kepler_ebpf::CpuKey) -> WorkloadKey {
        if key.cgroup_id == ROOT_CGROUP_ID && self.is_kernel_thread(key.tgid) {
            return WorkloadKey::Kernel;
        }
        match self.cgroups.resolve(key.cgroup_id, key.tgid) {
            Ok(CgroupClass::Container { identity, dir }) => {
                let id = identity.id.clone();
                if !self.containers.contains_key(&id) {
                    self.containers.insert(
                        id.clone(),
                        KnownContainer {
                            identity: identity.clone(),
                            dir: dir.clone(),
                        },
                    );
                }
                WorkloadKey::Container(id)
            }
            Ok(CgroupClass::Other) => WorkloadKey::System,
            Err(Unresolved::Gone) => {
                // The cgroup was removed before this sample (a container that ended): normal.
                tracing::debug!(
                    cgroup_id = key.cgroup_id,
                    tgid = key.tgid,
                    "CPU time of a removed cgroup counted as system_processes"
                );
                WorkloadKey::System
            }
            Err(Unresolved::Mismatch) => {
                report_error!(
                    self.metrics,
                    COMPONENT,
                    "unresolved_cgroup",
                    cgroup_id = key.cgroup_id,
                    tgid = key.tgid,
                    "cannot tell which cgroup a process ran in; counting it as system_processes"
                );
                WorkloadKey::System
            }
        }
    }
}

impl CpuTimeSource for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn is_scheduler_exact(&self) -> bool {
        true
    }

    fn hardware_counters(&self) -> HardwareCounterSet {
        self.hardware_counters
    }

    fn sample(&mut self) -> WorkloadSample {
        let drained = self.program.drain();
        for e in &drained.errors {
            report_error!(self.metrics, COMPONENT, "map", error = %e, "BPF map operation failed");
        }
        for (cpu, e) in &drained.flush_errors {
            report_error!(self.metrics, COMPONENT, "flush", cpu, error = %e, "cannot flush a CPU's pending time (it comes with a later sample)");
        }
        // What the programs cost, where the kernel counts it (kernel.bpf_stats_enabled=1): the
        // counts stay zero otherwise, and the series absent.
        for p in self.program.stats() {
            if p.run_count > 0 {
                self.metrics
                    .set_program_stats(p.name, p.run_time, p.run_count);
            }
        }
        // Time that found the CPU map full (more (process, cgroup) pairs ran in the interval
        // than it holds): counted, and kept on the node as system time.
        let overflow = drained.overflow;
        if self.metrics.record_n(COMPONENT, "map_full", overflow.count) {
            tracing::warn!(
                component = COMPONENT,
                reason = "map_full",
                updates = overflow.count,
                cpu_ms = overflow.cpu_ns / 1_000_000,
                entries = drained.cpu.len(),
                "BPF CPU map full in one interval; the time that found no room is counted as system_processes"
            );
        }
        // The first sample is the baseline: it learns processes and containers, with zero CPU.
        let baseline = self.tick == 0;
        self.tick += 1;
        self.cgroups.tick();
        let tick = self.tick;

        let mut ran: HashMap<u32, ProcAcc> = HashMap::with_capacity(drained.cpu.len());
        let mut by_workload: BTreeMap<WorkloadKey, (CpuNanos, HardwareCounts)> = BTreeMap::new();
        if !baseline && overflow.cpu_ns > 0 {
            by_workload.entry(WorkloadKey::System).or_default().0 += CpuNanos(overflow.cpu_ns);
        }
        if self
            .metrics
            .record_n(COMPONENT, "events_map_full", drained.events_overflow)
        {
            tracing::warn!(
                component = COMPONENT,
                reason = "events_map_full",
                events = drained.events_overflow,
                "BPF event map full in one interval; the events that found no room are not counted"
            );
        }
        for (key, value) in &drained.cpu {
            let workload = self.workload_of(key);
            let (cpu, counters) = if baseline {
                (CpuNanos::ZERO, HardwareCounts::default())
            } else {
                (
                    CpuNanos(value.cpu_ns),
                    HardwareCounts::new(value.counters, [0; 4]),
                )
            };
            let total = by_workload.entry(workload.clone()).or_default();
            total.0 += cpu;
            total.1 += counters;
            let acc = ran.entry(key.tgid).or_insert_with(|| ProcAcc {
                comm: value.comm(),
                workload: workload.clone(),
                cpu: CpuNanos::ZERO,
                counters: HardwareCounts::default(),
                best: CpuNanos::ZERO,
            });
            acc.cpu += cpu;
            acc.counters += counters;
            if cpu > acc.best || acc.best == CpuNanos::ZERO {
                acc.best = cpu;
                acc.workload = workload;
                acc.comm = value.comm();
            }
        }

        // Kernel events: to the pair's workload, and to the process if it ran (else, where idle
        // processes are listed, with its idle entry).
        let mut idle_events: HashMap<u32, HardwareCounts> = HashMap::new();
        for (key, value) in &drained.events {
            if baseline {
                break;
            }
            let counts = HardwareCounts::new([0; 3], value.count);
            let workload = self.workload_of(key);
            by_workload.entry(workload).or_default().1 += counts;
            match ran.get_mut(&key.tgid) {
                Some(acc) => acc.counters += counts,
                None => *idle_events.entry(key.tgid).or_default() += counts,
            }
        }

        // Processes: forget the exited, learn the ones that ran.
        let exited: HashSet<u32> = drained.exits.iter().copied().collect();
        for tgid in &exited {
            self.processes.remove(tgid);
        }
        for (tgid, acc) in ran.iter_mut() {
            if exited.contains(tgid) || self.recently_exited.contains(tgid) {
                continue;
            }
            match self.processes.get_mut(tgid) {
                Some(known) => {
                    known.workload = acc.workload.clone();
                    known.last_ran = tick;
                    // The kernel reports the name of whichever thread ran; keep the process's.
                    acc.comm.clone_from(&known.comm);
                }
                None => {
                    if let Some(comm) = read_comm(&self.procfs, *tgid) {
                        acc.comm = comm;
                    }
                    self.processes.insert(
                        *tgid,
                        KnownProcess {
                            comm: acc.comm.clone(),
                            workload: acc.workload.clone(),
                            last_ran: tick,
                        },
                    );
                }
            }
        }
        self.recently_exited = exited;
        if tick % PROCESS_RECHECK_TICKS == 0 {
            let procfs = &self.procfs;
            self.processes.retain(|tgid, p| {
                tick - p.last_ran < PROCESS_RECHECK_TICKS || procfs.join(tgid.to_string()).exists()
            });
        }

        // Containers: forget those whose cgroup is gone (unless they ran in this interval).
        let gone: Vec<String> = self
            .containers
            .iter()
            .filter(|(id, c)| {
                !by_workload.contains_key(&WorkloadKey::Container((*id).clone()))
                    && !self.cgroups.exists(&c.dir)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.containers.remove(&id);
            self.cgroups.forget_container(&id);
        }

        let mut sample = WorkloadSample::default();
        for key in [WorkloadKey::System, WorkloadKey::Kernel] {
            let (cpu, counters) = by_workload.get(&key).copied().unwrap_or_default();
            sample.workloads.insert(
                key,
                WorkloadUsage {
                    identity: None,
                    cpu,
                    counters,
                },
            );
        }
        for (id, c) in &self.containers {
            let key = WorkloadKey::Container(id.clone());
            let (cpu, counters) = by_workload.get(&key).copied().unwrap_or_default();
            sample.workloads.insert(
                key,
                WorkloadUsage {
                    identity: Some(c.identity.clone()),
                    cpu,
                    counters,
                },
            );
        }
        for (tgid, p) in self.processes.iter().filter(|_| self.list_idle) {
            if !ran.contains_key(tgid) {
                sample.processes.push(ProcessUsage {
                    pid: *tgid,
                    comm: p.comm.clone(),
                    workload: p.workload.clone(),
                    cpu: CpuNanos::ZERO,
                    counters: idle_events.remove(tgid).unwrap_or_default(),
                });
            }
        }
        for (tgid, acc) in ran {
            // A process whose container is already gone is reported in its last known one
            // only if that one is still listed; otherwise as a system process.
            let workload = match &acc.workload {
                k @ WorkloadKey::Container(_) if !sample.workloads.contains_key(k) => {
                    WorkloadKey::System
                }
                k => k.clone(),
            };
            sample.processes.push(ProcessUsage {
                pid: tgid,
                comm: acc.comm,
                workload,
                cpu: acc.cpu,
                counters: acc.counters,
            });
        }
        // Time of containers that vanished within the interval stays on the node as system time.
        for (key, (cpu, counters)) in &by_workload {
            if let WorkloadKey::Container(_) = key {
                if !sample.workloads.contains_key(key) {
                    if let Some(system) = sample.workloads.get_mut(&WorkloadKey::System) {
                        system.cpu += *cpu;
                        system.counters += *counters;
                    }
                }
            }
        }
        sample.processes.sort_by_key(|p| p.pid);
        sample
    }
}

/// The containers that exist now (from each process's `/proc/<pid>/cgroup`, once at start), so
/// idle ones are reported before they run. Refuses a host whose containers live only in cgroup
/// v1 hierarchies (e.g. the kubelet's cgroupfs driver on a hybrid host): the kernel's cgroup ids
/// name v2 cgroups, so their CPU time could not be told apart from the host's.
fn seed_containers(procfs: &Path) -> Result<HashMap<String, KnownContainer>, EbpfError> {
    let mut containers = HashMap::new();
    let Ok(dir) = std::fs::read_dir(procfs) else {
        return Ok(containers);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(content) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        let r = cgroup::resolve(&content);
        if let (Classification::Container(identity), Some(dir)) = (r.class, r.cgroup) {
            if dir.hierarchy != cgroup::Hierarchy::V2 {
                return Err(EbpfError::Unsupported(format!(
                    "container {} of process {} is in a cgroup v1 hierarchy only ({}): the kernel's cgroup ids name v2 cgroups",
                    identity.id,
                    name.to_string_lossy(),
                    dir.path
                )));
            }
            containers
                .entry(identity.id.clone())
                .or_insert(KnownContainer { identity, dir });
        }
    }
    Ok(containers)
}

/// The process name (`comm` of the thread-group leader), if the process is still alive.
fn read_comm(procfs: &Path, tgid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(procfs.join(tgid.to_string()).join("comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

/// The kernel reports host tgids; they only match `/proc` when `procfs` shows the initial pid
/// namespace (`hostPID: true` in a pod). We are in the initial namespace if our own `ns/pid` is
/// it, and `procfs` shows that namespace if it lists us with a single `NSpid` (no nesting
/// between its namespace and ours).
fn check_host_pid_namespace(procfs: &Path) -> Result<(), EbpfError> {
    let unsupported = |what: String| {
        Err(EbpfError::Unsupported(format!(
            "{what}: the kernel's process ids would not match {} (run in the host's pid namespace, hostPID)",
            procfs.display()
        )))
    };
    let link = procfs.join("self/ns/pid");
    match std::fs::read_link(&link) {
        Ok(ns) if ns.as_os_str() == INIT_PID_NS => {}
        Ok(ns) => return unsupported(format!("pid namespace {} is not the host's", ns.display())),
        Err(e) => return unsupported(format!("cannot read {}: {e}", link.display())),
    }
    let status = procfs.join("self/status");
    let nspid = std::fs::read_to_string(&status).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|v| v.split_whitespace().count())
    });
    match nspid {
        Some(1) => Ok(()),
        Some(n) => unsupported(format!(
            "{} shows {n} nested pid namespaces",
            status.display()
        )),
        None => unsupported(format!("no NSpid line in {}", status.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn procfs(processes: &[(u32, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, cgroup) in processes {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("cgroup"), cgroup).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        dir
    }

    #[test]
    fn seeds_v2_containers_once() {
        let scope = format!("/kubepods.slice/kubepods-besteffort.slice/cri-containerd-{ID}.scope");
        let dir = procfs(&[
            (1, "0::/init.scope\n".into()),
            (10, format!("0::{scope}\n")),
            (11, format!("0::{scope}/sub\n")),
            (12, "0::/\n".into()),
        ]);
        let seeded = seed_containers(dir.path()).unwrap();
        assert_eq!(seeded.len(), 1);
        assert_eq!(seeded[ID].dir.path, scope);
        assert_eq!(seeded[ID].dir.hierarchy, cgroup::Hierarchy::V2);
        assert!(seed_containers(Path::new("/nonexistent"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refuses_containers_that_only_cgroup_v1_knows() {
        // The kubelet's cgroupfs driver on a hybrid host: the container is in v1 hierarchies,
        // its v2 cgroup is the root.
        let v1 = format!("/kubepods/besteffort/pod6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b/{ID}");
        let dir = procfs(&[(20, format!("4:cpu,cpuacct:{v1}\n2:memory:{v1}\n0::/\n"))]);
        let err = seed_containers(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cgroup v1"), "{err}");
    }
}
