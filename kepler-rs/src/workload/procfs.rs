//! The procfs/cgroup CPU-time source: works on every Linux host, no privileges beyond reading
//! `/proc` and the cgroup filesystem.
//!
//! Each [`ProcfsSource::sample`] lists the processes under the procfs root. A process seen for the
//! first time is read through its directory handle (so a reused pid cannot hand us another
//! process's files): `stat` (start time, `comm`, `PF_KTHREAD`) and `cgroup`, classified with
//! [`super::cgroup::resolve`]; if it has one thread, its `schedstat` (nanoseconds on CPU) is then
//! **kept open** and re-read with one `pread` per sample, about 1 µs instead of the ~11 µs that
//! opening, reading and closing `stat` costs on our VM (docs/adr/0007). Only a process whose CPU
//! time moved has its `stat` read again: an idle process cannot have exec'd, and a changed `comm`
//! (an `exec` after the runtime moved it into a container) reclassifies it; a changed start time,
//! or `ESRCH` from the kept file, means the pid now names another process. Where `schedstat` does
//! not exist (kernels without `CONFIG_SCHED_INFO`, fixture trees) or the kept-file budget (half the
//! open-file limit, which is raised to its hard maximum) is spent, `stat`'s utime + stime are read
//! every sample instead. So they are for a process with more than one thread:
//! `/proc/<pid>/schedstat` counts only its main thread (a QEMU guest's vCPU threads or a JVM's
//! workers would be missed), while `stat` sums the whole thread group. A process gains threads
//! only by one of its threads running `clone`, so a single-threaded process that becomes
//! multi-threaded moved its `schedstat` first; its `stat` is then read, and it switches to `stat`
//! from that sample on. A container's CPU time comes from its cgroup's own counter
//! ([`CgroupLayout::usage`]), which also covers processes that exited during the interval; when
//! that cannot be read it falls back to the sum of its live processes. `system_processes` and
//! `kernel_processes` are sums of their processes. State of dead processes and containers is
//! dropped every sample, so memory stays bounded. The files of one process are read in `files`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use ::procfs::process::Process;

use super::cgroup::{self, CgroupRef, Classification};
use super::cgroup_cpu::{CgroupError, CgroupLayout};
use super::{
    ContainerIdentity, CpuTimeSource, ProcessUsage, WorkloadKey, WorkloadSample, WorkloadUsage,
};
use crate::host::USER_HZ;
use crate::power::counter::{Counter, Step};
use crate::power::units::CpuNanos;
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use files::{
    io_skip, is_kernel_thread, list_pids, parse_stat, read_relative, read_schedstat, Skip, StatLine,
};

mod files;

pub(crate) use files::read_identity;

/// The self-metric component name.
const COMPONENT: &str = "procfs";

/// Open files kept for other uses (sockets, cgroup files, the snapshot writer): the kept
/// `schedstat` files never take the last of these.
const RESERVED_FDS: u64 = 512;
/// At most this many `schedstat` files are kept open, whatever the limit.
const MAX_KEPT_FILES: usize = 65_536;

/// What the source remembers about a live process (keyed by pid; `starttime` tells a reused pid
/// apart).
#[derive(Debug)]
struct Tracked {
    starttime: u64,
    /// CPU time in nanoseconds: `schedstat`'s first field, or utime + stime converted.
    counter: Counter,
    comm: String,
    workload: WorkloadKey,
    container: Option<(ContainerIdentity, Option<CgroupRef>)>,
    /// `/proc/<pid>/schedstat`, opened once through the process's directory handle; `None`
    /// where it does not exist or the budget is spent (then `stat` is read every sample).
    schedstat: Option<File>,
}

/// Reads per-process CPU time from a procfs tree and per-container CPU time from cgroups.
#[derive(Debug)]
pub struct ProcfsSource {
    procfs: PathBuf,
    layout: CgroupLayout,
    metrics: Arc<SelfMetrics>,
    processes: HashMap<u32, Tracked>,
    containers: HashMap<String, Counter>,
    /// How many `schedstat` files may be kept open.
    max_kept_files: usize,
    /// How many are open now.
    kept_files: usize,
}

impl ProcfsSource {
    /// `procfs` is `/proc` (or `/host/proc`), `cgroup_root` is `/sys/fs/cgroup` (or
    /// `/host/sys/fs/cgroup`).
    pub fn new(procfs: PathBuf, cgroup_root: PathBuf, metrics: Arc<SelfMetrics>) -> Self {
        let layout = CgroupLayout::detect(&cgroup_root);
        if layout.is_empty() {
            tracing::warn!(
                cgroup_root = %cgroup_root.display(),
                "no cgroup CPU accounting found; container CPU time is the sum of its processes"
            );
        } else {
            tracing::info!(procfs = %procfs.display(), cgroups = %layout, "procfs CPU-time source");
        }
        Self {
            procfs,
            layout,
            metrics,
            processes: HashMap::new(),
            containers: HashMap::new(),
            max_kept_files: kept_file_budget(),
            kept_files: 0,
        }
    }

    /// The cgroup hierarchies found at construction.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// Classifies a process seen for the first time (or after its `comm` changed).
    fn classify(&self, proc: &Process, pid: u32, stat: &StatLine) -> Result<Tracked, Skip> {
        let (workload, container) = if is_kernel_thread(pid, stat) {
            (WorkloadKey::Kernel, None)
        } else {
            let content = read_relative(proc, "cgroup")?;
            let r = cgroup::resolve(&content);
            match r.class {
                Classification::Container(identity) => (
                    WorkloadKey::Container(identity.id.clone()),
                    Some((identity, r.cgroup)),
                ),
                // Only kernel threads are `kernel_processes`; a user process in the root
                // cgroup is a system process.
                Classification::Kernel | Classification::System => (WorkloadKey::System, None),
            }
        };
        Ok(Tracked {
            starttime: stat.starttime,
            counter: Counter::unbounded(),
            comm: stat.comm.clone(),
            workload,
            container,
            schedstat: None,
        })
    }

    /// Reads one listed process; `Skip` says why it is left out of this sample.
    fn observe(
        &mut self,
        pid: u32,
        previous: &mut HashMap<u32, Tracked>,
    ) -> Result<(Tracked, CpuNanos), Skip> {
        let Some(mut tracked) = previous.remove(&pid) else {
            return self.first_sight(pid, None);
        };
        let total = match tracked.schedstat.as_ref().map(read_schedstat) {
            Some(Ok(ns)) if tracked.counter.last() == Some(ns) => {
                // Did not run, so it cannot have exec'd: nothing else to read.
                return Ok((tracked, CpuNanos::ZERO));
            }
            Some(Ok(ns)) => Some(ns),
            // The process this file belonged to is gone; the pid is someone else's.
            Some(Err(Skip::Vanished)) => return self.first_sight(pid, None),
            Some(Err(other)) => return Err(other),
            None => None,
        };
        let stat = self.read_stat(pid)?;
        if stat.starttime != tracked.starttime {
            return self.first_sight(pid, None);
        }
        if stat.comm != tracked.comm {
            // exec'd: classify again (it may have been moved into a container first), same
            // process, same counter.
            return self.first_sight(pid, Some(tracked));
        }
        let total = total.unwrap_or_else(|| self.stat_nanos(&stat));
        let delta = tracked.counter.observe(total).map_or(0, Step::delta);
        if tracked.schedstat.is_some() && stat.num_threads > 1 {
            // It started threads, which the main thread's `schedstat` does not count: from
            // now on `stat` (this interval keeps the main thread's time).
            tracked.schedstat = None;
            tracked.counter = Counter::unbounded();
            tracked.counter.observe(self.stat_nanos(&stat)).ok();
        }
        Ok((tracked, CpuNanos(delta)))
    }

    /// A process not seen before, or one whose `comm` changed: classified through its
    /// directory handle. With `previous` of the same process (same start time), its counter
    /// carries over; otherwise the pid was reused and the old state is dropped.
    fn first_sight(
        &mut self,
        pid: u32,
        previous: Option<Tracked>,
    ) -> Result<(Tracked, CpuNanos), Skip> {
        let proc = Process::new_with_root(self.procfs.join(pid.to_string()))
            .map_err(|e| Skip::from(&e))?;
        let text = read_relative(&proc, "stat")?;
        let stat = parse_stat(&text)
            .filter(|s| s.pid == pid)
            .ok_or(Skip::Garbage("garbage_stat"))?;
        let mut fresh = self.classify(&proc, pid, &stat)?;
        let mut delta = 0;
        match previous.filter(|p| p.starttime == stat.starttime) {
            // The same process after an exec: same counter, same kept file (so the counter
            // keeps its unit).
            Some(prev) => {
                fresh.counter = prev.counter;
                fresh.schedstat = prev.schedstat;
                let total = match &fresh.schedstat {
                    Some(file) => read_schedstat(file)?,
                    None => self.stat_nanos(&stat),
                };
                delta = fresh.counter.observe(total).map_or(0, Step::delta);
            }
            None => {
                // Only for one thread: `schedstat` counts the main thread alone.
                if stat.num_threads <= 1 && self.kept_files < self.max_kept_files {
                    // Absent (no CONFIG_SCHED_INFO, a fixture tree): `stat` is read instead.
                    if let Ok(file) = proc.open_relative("schedstat") {
                        self.kept_files += 1;
                        fresh.schedstat = Some(file);
                    }
                }
                let total = match &fresh.schedstat {
                    Some(file) => read_schedstat(file)?,
                    None => self.stat_nanos(&stat),
                };
                fresh.counter.observe(total).ok(); // the baseline
            }
        }
        Ok((fresh, CpuNanos(delta)))
    }

    /// `/proc/<pid>/stat` by path, for a process already known: the start time it carries
    /// tells whether the pid still names the same process.
    fn read_stat(&self, pid: u32) -> Result<StatLine, Skip> {
        let path = self.procfs.join(pid.to_string()).join("stat");
        let text = std::fs::read(&path).map_err(|e| io_skip("stat", &e))?;
        parse_stat(&String::from_utf8_lossy(&text))
            .filter(|s| s.pid == pid)
            .ok_or(Skip::Garbage("garbage_stat"))
    }

    fn stat_nanos(&self, stat: &StatLine) -> u64 {
        CpuNanos::from_ticks(stat.utime.saturating_add(stat.stime), USER_HZ).0
    }

    fn report_skip(&self, pid: u32, skip: Skip, vanished: &mut u64) {
        match skip {
            Skip::Vanished => *vanished += 1,
            Skip::Garbage(reason) => {
                report_error!(self.metrics, COMPONENT, reason, pid, procfs = %self.procfs.display(), "skipping process with malformed /proc data");
            }
            Skip::Unreadable(file, error) => {
                report_error!(self.metrics, COMPONENT, "unreadable", pid, file, error = %error, "skipping process whose /proc file cannot be read");
            }
        }
    }
}

/// Per-container accumulation within one sample.
#[derive(Debug)]
struct ContainerAcc {
    identity: ContainerIdentity,
    cgroup: Option<CgroupRef>,
    process_sum: CpuNanos,
}

impl CpuTimeSource for ProcfsSource {
    fn name(&self) -> &'static str {
        "procfs"
    }

    fn sample(&mut self) -> WorkloadSample {
        let mut sample = WorkloadSample::default();
        let mut system = CpuNanos::ZERO;
        let mut kernel = CpuNanos::ZERO;
        let mut containers: BTreeMap<String, ContainerAcc> = BTreeMap::new();
        let mut previous = std::mem::take(&mut self.processes);
        let mut live = HashMap::with_capacity(previous.len());
        let mut vanished = 0u64;

        match list_pids(&self.procfs) {
            Err(e) => {
                report_error!(self.metrics, COMPONENT, "list", procfs = %self.procfs.display(), error = %e, "cannot list processes");
                // Keep the baselines: a failed listing is not every process exiting.
                live = previous;
                previous = HashMap::new();
            }
            Ok(pids) => {
                for pid in pids {
                    let (tracked, cpu) = match self.observe(pid, &mut previous) {
                        Ok(ok) => ok,
                        Err(skip) => {
                            self.report_skip(pid, skip, &mut vanished);
                            continue;
                        }
                    };
                    match (&tracked.workload, &tracked.container) {
                        (WorkloadKey::Container(cid), Some((identity, cg))) => {
                            let acc =
                                containers
                                    .entry(cid.clone())
                                    .or_insert_with(|| ContainerAcc {
                                        identity: identity.clone(),
                                        cgroup: cg.clone(),
                                        process_sum: CpuNanos::ZERO,
                                    });
                            acc.process_sum += cpu;
                        }
                        (WorkloadKey::Kernel, _) => kernel += cpu,
                        _ => system += cpu,
                    }
                    sample.processes.push(ProcessUsage {
                        pid,
                        comm: tracked.comm.clone(),
                        workload: tracked.workload.clone(),
                        cpu,
                        counters: Default::default(),
                    });
                    live.insert(pid, tracked);
                }
            }
        }
        drop(previous); // processes not seen again are dead: forget them (closes their files)
        self.kept_files = live.values().filter(|t| t.schedstat.is_some()).count();
        self.processes = live;
        if vanished > 0 {
            self.metrics.record_n(COMPONENT, "vanished", vanished);
            tracing::debug!(vanished, "processes exited while being read");
        }

        let mut counters = HashMap::with_capacity(containers.len());
        for (id, acc) in containers {
            let cpu = match (&acc.cgroup, self.layout.is_empty()) {
                (Some(cg), false) => match self.layout.usage(cg) {
                    Ok(usage) => {
                        let mut counter = self.containers.remove(&id).unwrap_or_default();
                        let delta = counter.observe(usage.0).map_or(0, Step::delta);
                        counters.insert(id.clone(), counter);
                        CpuNanos(delta)
                    }
                    Err(CgroupError::Gone { .. }) => {
                        // Ended since its processes were listed: normal churn, only counted.
                        self.metrics.record_n(COMPONENT, "vanished", 1);
                        acc.process_sum
                    }
                    Err(e) => {
                        report_error!(self.metrics, COMPONENT, "cgroup_cpu", container = %id, error = %e, "cannot read container cgroup CPU time; using the sum of its processes");
                        acc.process_sum
                    }
                },
                _ => acc.process_sum,
            };
            sample.workloads.insert(
                WorkloadKey::Container(id),
                WorkloadUsage {
                    identity: Some(acc.identity),
                    cpu,
                    counters: Default::default(),
                },
            );
        }
        self.containers = counters; // dead containers are forgotten
        for (key, cpu) in [(WorkloadKey::System, system), (WorkloadKey::Kernel, kernel)] {
            sample.workloads.insert(
                key,
                WorkloadUsage {
                    identity: None,
                    cpu,
                    counters: Default::default(),
                },
            );
        }
        sample.processes.sort_by_key(|p| p.pid);
        sample
    }
}

/// How many `schedstat` files this process may keep open: the open-file limit is first raised
/// to its hard maximum (as Go's runtime does at start), then half of what is left after
/// [`RESERVED_FDS`] is the budget, at most [`MAX_KEPT_FILES`]. Beyond it processes are read
/// through `stat` each sample, which costs more CPU but no descriptor.
/// The CPU time `pid` has used since it started: utime + stime of `<procfs>/<pid>/stat`, as
/// modern Kepler serves it in `kepler_process_cpu_seconds_total`. `None` when the process is
/// gone or the file does not parse.
pub fn cpu_time_since_start(procfs: &std::path::Path, pid: u32) -> Option<CpuNanos> {
    let text = std::fs::read(procfs.join(pid.to_string()).join("stat")).ok()?;
    let stat = parse_stat(&String::from_utf8_lossy(&text)).filter(|s| s.pid == pid)?;
    Some(CpuNanos::from_ticks(
        stat.utime.saturating_add(stat.stime),
        USER_HZ,
    ))
}

fn kept_file_budget() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => {
                tracing::debug!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    let soft = limit.current.unwrap_or(u64::MAX);
    let budget = soft.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(budget).map_or(MAX_KEPT_FILES, |b| b.min(MAX_KEPT_FILES))
}

#[cfg(test)]
mod tests;
