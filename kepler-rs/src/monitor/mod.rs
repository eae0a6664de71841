//! The monitor: measures on its own interval and publishes immutable snapshots.
//!
//! Each [`Monitor::step`] reads the power meter's zone counters (through [`Counter`], so wraps
//! lose nothing), the node's CPU utilisation and the CPU-time source, attributes the interval's
//! energy, adds it to the [`ledger`], and returns a fresh [`Snapshot`]. Virtual machines are
//! the sums of their processes' shares (found by [`VmResolver`]), so they come out of the same
//! attribution as containers and processes. The clock is an argument,
//! so tests drive intervals without sleeping. [`run`] calls `step` on a dedicated thread and
//! publishes each snapshot; views only ever read the latest one.

pub mod gpu;
pub mod ledger;
pub mod node_share;
pub mod trim;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::attribution::ZoneEnergy;
use crate::attribution::{Attributor, CpuRequests};
use crate::config::IdlePolicy;
use crate::host::{self, CpuTimes};
use crate::power::counter::{Counter, Step};
use crate::power::units::CpuNanos;
use crate::power::units::{Microjoules, Watts};
use crate::power::{PowerMeter, ZoneId};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::{
    ModeSplit, NodeInfo, NodeZone, ProcessEnergy, Snapshot, VmEnergy, WorkloadEnergy,
};
use crate::workload::kube::SharedPods;
use crate::workload::vm::{VmIdentity, VmResolver};
use crate::workload::HardwareCounts;
use crate::workload::{CpuTimeSource, WorkloadKey, WorkloadSample, WorkloadUsage};

use ledger::{add_interval, Ledger, ProcessKey, WorkloadMeta};

/// Monitor settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub procfs: PathBuf,
    pub terminated_retention: Duration,
    pub max_terminated: usize,
    pub process_metrics: bool,
    pub idle_policy: IdlePolicy,
    pub idle_window: Duration,
    pub idle_half_life: Duration,
}

#[derive(Debug)]
pub struct Monitor {
    meter: Box<dyn PowerMeter>,
    cpu: Box<dyn CpuTimeSource>,
    options: MonitorOptions,
    metrics: Arc<SelfMetrics>,
    info: NodeInfo,
    counters: BTreeMap<ZoneId, Counter>,
    attributor: Attributor,
    last_cpu_times: Option<CpuTimes>,
    last_time: Option<SystemTime>,
    node_zones: BTreeMap<ZoneId, ModeSplit>,
    node: crate::snapshot::EnergyByKind,
    idle_power: BTreeMap<ZoneId, Watts>,
    last_zone_power: BTreeMap<ZoneId, Watts>,
    workloads: Ledger<WorkloadKey, WorkloadMeta>,
    processes: Ledger<ProcessKey, ProcessMeta>,
    vms: Ledger<String, VmIdentity>,
    vm_resolver: VmResolver,
    sequence: u64,
    last_interval: Duration,
    last_utilisation: f64,
    pods: Option<SharedPods>,
    node_share: Option<node_share::NodeShare>,
    gpus: Option<gpu::GpuLedger>,
}

impl Monitor {
    pub fn new(
        meter: Box<dyn PowerMeter>,
        cpu: Box<dyn CpuTimeSource>,
        options: MonitorOptions,
        info: NodeInfo,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        let counters = meter
            .zones()
            .iter()
            .map(|z| (z.id, Counter::wrapping_at(z.max_energy.0)))
            .collect();
        Self {
            attributor: Attributor::new(
                options.idle_policy,
                options.idle_window,
                options.idle_half_life,
            ),
            workloads: Ledger::new(options.terminated_retention, options.max_terminated),
            processes: Ledger::new(options.terminated_retention, options.max_terminated),
            vms: Ledger::new(options.terminated_retention, options.max_terminated),
            vm_resolver: VmResolver::new(options.procfs.clone()),
            meter,
            cpu,
            options,
            metrics,
            info,
            counters,
            last_cpu_times: None,
            last_time: None,
            node_zones: BTreeMap::new(),
            node: Default::default(),
            idle_power: BTreeMap::new(),
            last_zone_power: BTreeMap::new(),
            sequence: 0,
            last_interval: Duration::ZERO,
            last_utilisation: 0.0,
            pods: None,
            node_share: None,
            gpus: None,
        }
    }

    /// Measures these NVIDIA GPUs' energy too (node level; see [`gpu`]).
    pub fn with_gpus(mut self, gpus: crate::power::gpu::NvmlGpus) -> Self {
        self.gpus = Some(gpu::GpuLedger::new(gpus, self.options.idle_half_life));
        self
    }

    /// Takes only this node's share of the host's energy each interval (`monitor.nodeShare`).
    pub fn with_node_share(mut self, share: node_share::NodeShare) -> Self {
        self.node_share = Some(share);
        self
    }

    /// Fills container series' pod names from this shared index (kept current by a poller).
    pub fn with_pods(mut self, pods: SharedPods) -> Self {
        self.pods = Some(pods);
        self
    }

    /// The snapshot to serve before the first measurement.
    pub fn initial_snapshot(&self) -> Snapshot {
        let mut s = Snapshot::empty(self.info.clone(), self.meter.source(), self.cpu.name());
        s.cpu_time_exact = self.cpu.is_scheduler_exact();
        s.hardware_counters = self.cpu.hardware_counters();
        s
    }

    /// Measures one interval ending at `now` and returns the new snapshot.
    pub fn step(&mut self, now: SystemTime) -> Snapshot {
        let mut zone_deltas = self.read_zones();
        let utilisation = self.read_utilisation();
        if let Some(share) = &self.node_share {
            let share = share.share();
            for (_, delta) in zone_deltas.iter_mut() {
                *delta = node_share::scale(*delta, share);
            }
        }
        let sample = self.cpu.sample();
        let elapsed = self
            .last_time
            .and_then(|last| now.duration_since(last).ok())
            .unwrap_or(Duration::ZERO);
        let first = self.last_time.is_none();
        self.last_time = Some(now);
        if let Some(gpus) = &mut self.gpus {
            let gpu_elapsed = if first { Duration::ZERO } else { elapsed };
            gpus.step(gpu_elapsed, &sample, &self.metrics);
        }
        // Each live workload's metadata, looked up once per interval (aligned with
        // `sample.workloads`).
        let metas: Vec<WorkloadMeta> = sample
            .workloads
            .iter()
            .map(|(key, usage)| self.meta(key, usage))
            .collect();
        // The guest of each process (aligned with `sample.processes`).
        let guests = self.vm_resolver.resolve(&sample.processes, &self.metrics);
        let any_guest = guests.iter().any(Option::is_some);

        if !first && !elapsed.is_zero() {
            if self.options.idle_policy == IdlePolicy::Requests {
                let requests = self.cpu_requests(&sample, &metas);
                self.attributor.set_cpu_requests(requests);
            }
            let attribution = self.attributor.attribute(
                &zone_deltas,
                elapsed,
                utilisation,
                &sample,
                self.options.process_metrics || any_guest,
            );
            for (zone, split) in &attribution.node {
                *self.node_zones.entry(*zone).or_default() += *split;
            }
            add_interval(&mut self.node, &attribution.node);
            self.idle_power = attribution.idle_power.clone();
            self.last_zone_power = zone_deltas
                .iter()
                .map(|(z, d)| (*z, d.over(elapsed)))
                .collect();
            for ((key, usage), meta) in sample.workloads.iter().zip(metas) {
                self.workloads.update(
                    key,
                    meta,
                    attribution.workloads.get(key),
                    usage.cpu,
                    usage.counters,
                );
            }
            if self.options.process_metrics {
                for ((process, energy), vm) in sample
                    .processes
                    .iter()
                    .zip(&attribution.processes)
                    .zip(&guests)
                {
                    let key = ProcessKey {
                        pid: process.pid,
                        comm: process.comm.clone(),
                        workload: process.workload.clone(),
                    };
                    // The CPU time it had used before we first counted it: read once.
                    let before = match self.processes.get(&key) {
                        Some(known) => known.meta.cpu_before.0,
                        None => crate::workload::procfs::cpu_time_since_start(
                            &self.options.procfs,
                            process.pid,
                        )
                        .unwrap_or(CpuNanos::ZERO)
                        .0
                        .saturating_sub(process.cpu.0),
                    };
                    let meta = ProcessMeta {
                        vm: vm.clone(),
                        cpu_before: CpuNanos(before),
                    };
                    self.processes
                        .update(&key, meta, Some(energy), process.cpu, process.counters);
                }
            }
            for (id, guest) in guests_of(&sample, &guests, &attribution.processes) {
                self.vms.update(
                    &id,
                    guest.identity,
                    Some(&guest.energy),
                    guest.cpu,
                    guest.counters,
                );
            }
            self.sequence += 1;
            self.last_interval = elapsed;
            self.last_utilisation = utilisation;
        } else {
            for ((key, usage), meta) in sample.workloads.iter().zip(metas) {
                self.workloads
                    .update(key, meta, None, usage.cpu, usage.counters);
            }
            // Listed from the baseline on, with nothing counted yet (as processes).
            for (id, guest) in guests_of(&sample, &guests, &[]) {
                self.vms.update(
                    &id,
                    guest.identity,
                    None,
                    CpuNanos::ZERO,
                    HardwareCounts::default(),
                );
            }
        }
        let live_guests: std::collections::BTreeSet<&str> =
            guests.iter().flatten().map(|vm| vm.id.as_str()).collect();
        self.vms.sweep(|id| live_guests.contains(id.as_str()), now);
        self.workloads
            .sweep(|k| sample.workloads.contains_key(k), now);
        if self.options.process_metrics {
            let alive: std::collections::BTreeSet<(u32, &str)> = sample
                .processes
                .iter()
                .map(|p| (p.pid, p.comm.as_str()))
                .collect();
            self.processes
                .sweep(|k| alive.contains(&(k.pid, k.comm.as_str())), now);
        }
        if let Some(gpus) = &mut self.gpus {
            let workloads = &self.workloads;
            let pids: std::collections::BTreeSet<u32> = if self.options.process_metrics {
                self.processes.iter().map(|(k, _)| k.pid).collect()
            } else {
                std::collections::BTreeSet::new()
            };
            gpus.retain(|k| workloads.get(k).is_some(), |pid| pids.contains(&pid));
        }
        self.snapshot(now)
    }

    /// The `requests` idle policy's input: each live container's CPU request from its pod's
    /// spec (`metas` aligned with `sample.workloads`), and the node's online CPUs from the
    /// latest `/proc/stat` reading (none before one succeeded).
    fn cpu_requests(&self, sample: &WorkloadSample, metas: &[WorkloadMeta]) -> CpuRequests {
        let millicores = sample
            .workloads
            .keys()
            .zip(metas)
            .filter_map(|(key, meta)| {
                let request = meta.names.as_ref()?.cpu_request_millicores?;
                Some((key.clone(), request))
            })
            .collect();
        let cpus = self.last_cpu_times.map_or(0, |t| t.cpus);
        CpuRequests {
            millicores,
            capacity_millicores: u64::from(cpus) * 1000,
        }
    }

    /// A live workload's metadata: pod names looked up afresh every interval (a container seen
    /// before its pod resolves as soon as the pod is listed), else the names it had.
    fn meta(&self, key: &WorkloadKey, usage: &WorkloadUsage) -> WorkloadMeta {
        let fresh = match (&self.pods, &usage.identity) {
            (Some(pods), Some(identity)) => pods.load().lookup(identity),
            _ => None,
        };
        let names = fresh.or_else(|| self.workloads.get(key).and_then(|e| e.meta.names.clone()));
        WorkloadMeta {
            identity: usage.identity.clone(),
            names,
        }
    }

    /// Reads every zone and returns the wrap-corrected delta of those that advanced.
    fn read_zones(&mut self) -> Vec<(ZoneId, Microjoules)> {
        let mut deltas = Vec::new();
        for reading in self.meter.read() {
            let raw = match reading.energy {
                Ok(raw) => raw,
                Err(e) => {
                    report_error!(self.metrics, "power", e.reason(), zone = %reading.id, "cannot read zone: {e}");
                    continue;
                }
            };
            let Some(counter) = self.counters.get_mut(&reading.id) else {
                continue;
            };
            match counter.observe(raw.0) {
                Ok(Step::First) => {}
                Ok(Step::Reset) => {
                    report_error!(self.metrics, "power", "counter_backwards", zone = %reading.id,
                        "energy counter went backwards with no known maximum; interval skipped");
                }
                Ok(step @ (Step::Advanced(_) | Step::Wrapped(_))) => {
                    if matches!(step, Step::Wrapped(_)) {
                        tracing::debug!(zone = %reading.id, delta_uj = step.delta(), "energy counter wrapped");
                    }
                    deltas.push((reading.id, Microjoules(step.delta())));
                }
                Err(e) => {
                    report_error!(self.metrics, "power", "above_max_range", zone = %reading.id, "rejected reading: {e}");
                }
            }
        }
        deltas
    }

    fn read_utilisation(&mut self) -> f64 {
        match host::read_cpu_times(&self.options.procfs) {
            Ok(now) => {
                if let Some(share) = &mut self.node_share {
                    if let Err(e) = share.update(&now) {
                        report_error!(
                            self.metrics,
                            "monitor",
                            "node_share",
                            "cannot read this node's CPU time for monitor.nodeShare: {e}"
                        );
                    }
                }
                let u = self
                    .last_cpu_times
                    .as_ref()
                    .map_or(0.0, |before| now.utilisation_since(before));
                self.last_cpu_times = Some(now);
                u
            }
            Err(e) => {
                report_error!(
                    self.metrics,
                    "host",
                    "proc_stat",
                    "cannot read CPU statistics: {e}"
                );
                0.0
            }
        }
    }

    fn snapshot(&self, now: SystemTime) -> Snapshot {
        let elapsed = self.last_interval;
        let node_zones = self
            .meter
            .zones()
            .iter()
            .map(|z| {
                let zone = NodeZone {
                    path: z.path.display().to_string(),
                    energy: self.node_zones.get(&z.id).copied().unwrap_or_default(),
                    watts: self.last_zone_power.get(&z.id).copied().unwrap_or_default(),
                    idle_watts: self.idle_power.get(&z.id).copied().unwrap_or_default(),
                };
                (z.id, zone)
            })
            .collect();
        let workloads = self
            .workloads
            .iter()
            .map(|(key, e)| {
                let names = e.meta.names.clone().unwrap_or_default();
                WorkloadEnergy {
                    key: key.clone(),
                    identity: e.meta.identity.clone(),
                    pod_name: names.pod_name,
                    container_name: names.container_name,
                    namespace: names.namespace,
                    energy: e.energy.clone(),
                    interval: e.last_interval.clone(),
                    cpu_time: e.cpu_time,
                    counters: e.counters,
                    state: e.state,
                }
            })
            .collect();
        let processes = self
            .processes
            .iter()
            .map(|(key, e)| ProcessEnergy {
                pid: key.pid,
                comm: key.comm.clone(),
                workload: key.workload.clone(),
                vm: e.meta.vm.clone(),
                cpu_time_since_start: CpuNanos(e.meta.cpu_before.0.saturating_add(e.cpu_time.0)),
                energy: e.energy.clone(),
                interval: e.last_interval.clone(),
                cpu_time: e.cpu_time,
                counters: e.counters,
                state: e.state,
            })
            .collect();
        let vms = self
            .vms
            .iter()
            .map(|(_, e)| VmEnergy {
                identity: e.meta.clone(),
                energy: e.energy.clone(),
                interval: e.last_interval.clone(),
                cpu_time: e.cpu_time,
                counters: e.counters,
                state: e.state,
            })
            .collect();
        Snapshot {
            taken_at: now,
            interval: elapsed,
            sequence: self.sequence,
            power_source: self.meter.source(),
            cpu_time_source: self.cpu.name(),
            cpu_time_exact: self.cpu.is_scheduler_exact(),
            hardware_counters: self.cpu.hardware_counters(),
            info: self.info.clone(),
            node_zones,
            node: self.node.clone(),
            node_cpu_usage_ratio: self.last_utilisation,
            workloads,
            processes,
            vms,
            gpus: self
                .gpus
                .as_ref()
                .map(gpu::GpuLedger::node_gpus)
                .unwrap_or_default(),
            gpu_workloads: self
                .gpus
                .as_ref()
                .map(|g| g.workload_shares().clone())
                .unwrap_or_default(),
            gpu_processes: self
                .gpus
                .as_ref()
                .map(|g| g.process_shares().clone())
                .unwrap_or_default(),
        }
    }
}

/// What the process ledger keeps about a process besides its energy.
#[derive(Debug, Clone, PartialEq)]
struct ProcessMeta {
    /// The guest it runs, if any.
    vm: Option<Arc<VmIdentity>>,
    /// CPU time it had used when first counted (utime + stime of `/proc/<pid>/stat` less the
    /// first interval's), so that adding the time counted since gives its CPU time since start.
    cpu_before: CpuNanos,
}

/// One guest's share of an interval: the sum over its processes.
struct GuestInterval {
    identity: VmIdentity,
    energy: ZoneEnergy,
    cpu: CpuNanos,
    counters: HardwareCounts,
}

/// Sums each guest's processes (`guests` and `energies` aligned with `sample.processes`;
/// `energies` empty when no energy was attributed), by `vm_id`.
fn guests_of(
    sample: &WorkloadSample,
    guests: &[Option<Arc<VmIdentity>>],
    energies: &[ZoneEnergy],
) -> BTreeMap<String, GuestInterval> {
    let mut out: BTreeMap<String, GuestInterval> = BTreeMap::new();
    for (i, (process, vm)) in sample.processes.iter().zip(guests).enumerate() {
        let Some(vm) = vm else {
            continue;
        };
        let guest = out.entry(vm.id.clone()).or_insert_with(|| GuestInterval {
            identity: VmIdentity::clone(vm),
            energy: ZoneEnergy::new(),
            cpu: CpuNanos::ZERO,
            counters: HardwareCounts::default(),
        });
        if let Some(energy) = energies.get(i) {
            for (zone, split) in energy {
                *guest.energy.entry(*zone).or_default() += *split;
            }
        }
        guest.cpu += process.cpu;
        guest.counters += process.counters;
    }
    out
}

/// Runs the monitor on the calling thread until `stop` receives a message or is closed,
/// publishing a snapshot every `interval`. Measurement never waits for a scrape.
pub fn run(
    mut monitor: Monitor,
    interval: Duration,
    publish: Arc<ArcSwap<Snapshot>>,
    stop: Receiver<()>,
) {
    let mut next = Instant::now();
    let mut trimmer = trim::Trimmer::new(next);
    loop {
        let started = Instant::now();
        let snapshot = monitor.step(SystemTime::now());
        tracing::debug!(
            sequence = snapshot.sequence,
            workloads = snapshot.workloads.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot published"
        );
        let size = snapshot.workloads.len() + snapshot.processes.len();
        // Publishing drops the previous snapshot (unless a scrape still holds it).
        publish.store(Arc::new(snapshot));
        let published = Instant::now();
        if trimmer.due(size, published) {
            trim::release_free_memory();
            tracing::debug!(
                took_ms = published.elapsed().as_secs_f64() * 1e3,
                "free memory given back"
            );
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (suspended or overloaded): skip missed ticks rather than burst.
            next = now + interval;
        }
        match stop.recv_timeout(next.saturating_duration_since(now)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests;
