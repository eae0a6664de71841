//! The immutable result of one measurement: what every view (Prometheus, OTLP, `top`) reads.
//!
//! The monitor builds a new [`Snapshot`] each interval and publishes it; a scrape only renders
//! the latest one, so the number of scrapers never changes what is measured. All energy values
//! are cumulative since the exporter started and never go backwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::host::CpuInfo;
use crate::power::units::{CpuNanos, Microjoules, Watts};
use crate::power::{ZoneId, ZoneKind};
use crate::workload::vm::VmIdentity;
use crate::workload::{ContainerIdentity, HardwareCounterSet, HardwareCounts, WorkloadKey};

/// Energy split into Kepler's two modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeSplit {
    pub dynamic: Microjoules,
    pub idle: Microjoules,
}

impl ModeSplit {
    pub fn new(dynamic: Microjoules, idle: Microjoules) -> Self {
        Self { dynamic, idle }
    }

    pub fn total(&self) -> Microjoules {
        self.dynamic + self.idle
    }
}

impl std::ops::AddAssign for ModeSplit {
    fn add_assign(&mut self, rhs: Self) {
        self.dynamic += rhs.dynamic;
        self.idle += rhs.idle;
    }
}

/// Cumulative energy per zone kind (summed over sockets) plus Kepler's derived `other`
/// (platform minus package and dram, accumulated per interval, never negative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnergyByKind {
    pub zones: BTreeMap<ZoneKind, ModeSplit>,
    pub other: ModeSplit,
}

impl std::ops::AddAssign<&EnergyByKind> for EnergyByKind {
    fn add_assign(&mut self, rhs: &EnergyByKind) {
        for (kind, split) in &rhs.zones {
            *self.zones.entry(*kind).or_default() += *split;
        }
        self.other += rhs.other;
    }
}

impl EnergyByKind {
    /// Kepler's `*_joules_total`: package + dram + other (core and uncore are inside package).
    pub fn total(&self) -> ModeSplit {
        let mut sum = self.other;
        for kind in [ZoneKind::Package, ZoneKind::Dram] {
            if let Some(split) = self.zones.get(&kind) {
                sum += *split;
            }
        }
        sum
    }
}

/// One node zone (one socket's package, dram, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeZone {
    pub path: String,
    /// Cumulative energy, wrap-corrected: monotonic, unlike the raw RAPL counter.
    pub energy: ModeSplit,
    /// Average power over the last interval.
    pub watts: Watts,
    /// Idle power the estimator currently believes in.
    pub idle_watts: Watts,
}

/// One MIG instance of a GPU: NVML's GPU instance and compute instance ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MigId {
    pub gpu_instance: u32,
    pub compute_instance: u32,
}

/// Which GPU device of the node: a whole GPU (NVML's index) or one MIG instance of it. Shown
/// as the index (`0`) or `<index>:<gpu instance>:<compute instance>` (`0:1:0`), the `gpu`,
/// `package` and `gpu_id` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuId {
    pub index: u32,
    pub mig: Option<MigId>,
}

impl GpuId {
    /// A whole GPU.
    pub fn whole(index: u32) -> Self {
        Self { index, mig: None }
    }
}

impl std::fmt::Display for GpuId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mig {
            None => write!(f, "{}", self.index),
            Some(m) => write!(
                f,
                "{}:{}:{}",
                self.index, m.gpu_instance, m.compute_instance
            ),
        }
    }
}

/// One NVIDIA GPU device of the node (found through NVML at start-up): a whole GPU, or one MIG
/// instance of a GPU in MIG mode (whose parent is then not listed itself).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGpu {
    /// NVML's device index (of the parent GPU, for a MIG instance).
    pub index: u32,
    /// The MIG instance, for a MIG device.
    pub mig: Option<MigId>,
    pub uuid: String,
    pub name: String,
    /// Cumulative energy since the exporter started, split into active (`dynamic`) and idle.
    pub energy: ModeSplit,
    /// Average power over the last interval.
    pub watts: Watts,
    /// Idle power the estimator currently believes in.
    pub idle_watts: Watts,
}

impl NodeGpu {
    /// The device's id (its labels).
    pub fn id(&self) -> GpuId {
        GpuId {
            index: self.index,
            mig: self.mig,
        }
    }
}

/// What one workload or process took of one GPU: its share of the GPU's energy (by its
/// utilisation samples) and the sums of those samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuShare {
    /// Cumulative, split into active (`dynamic`) and idle like the GPU's own.
    pub energy: ModeSplit,
    /// The last interval's share only: divided by the snapshot's `interval` it gives watts.
    pub interval: ModeSplit,
    /// Sum of its compute (SM) utilisation samples, percent.
    pub compute_util: u64,
    /// Sum of its memory utilisation samples, percent.
    pub memory_util: u64,
}

/// A lifecycle state, Kepler's modern `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Gone since this time; kept visible for the terminated-workload window.
    Terminated(SystemTime),
}

/// A container or pseudo container.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadEnergy {
    pub key: WorkloadKey,
    pub identity: Option<ContainerIdentity>,
    /// Names from the orchestrator when known (empty when not).
    pub pod_name: String,
    pub container_name: String,
    pub namespace: String,
    pub energy: EnergyByKind,
    /// Energy of the last interval only (zero once terminated): divided by the snapshot's
    /// `interval` it gives the power gauges.
    pub interval: EnergyByKind,
    pub cpu_time: CpuNanos,
    /// Cumulative hardware counters (meaningful for [`Snapshot::hardware_counters`] only).
    pub counters: HardwareCounts,
    pub state: State,
}

impl WorkloadEnergy {
    /// A running workload with `energy` and `cpu_time` so far and no names yet (a pseudo
    /// container, or a container before its pod metadata arrives).
    pub fn running(key: WorkloadKey, energy: EnergyByKind, cpu_time: CpuNanos) -> Self {
        Self {
            key,
            identity: None,
            pod_name: String::new(),
            container_name: String::new(),
            namespace: String::new(),
            energy,
            interval: EnergyByKind::default(),
            cpu_time,
            counters: HardwareCounts::default(),
            state: State::Running,
        }
    }
}

/// A process (only when process metrics are enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessEnergy {
    pub pid: u32,
    pub comm: String,
    pub workload: WorkloadKey,
    /// The guest this process runs (a QEMU process outside containers), if any.
    pub vm: Option<Arc<VmIdentity>>,
    pub energy: EnergyByKind,
    /// Energy of the last interval only (zero once terminated).
    pub interval: EnergyByKind,
    pub cpu_time: CpuNanos,
    /// CPU time since the process started (utime + stime of `/proc/<pid>/stat` when first
    /// counted, plus `cpu_time`), for modern Kepler's `kepler_process_cpu_seconds_total`.
    pub cpu_time_since_start: CpuNanos,
    /// Cumulative hardware counters (meaningful for [`Snapshot::hardware_counters`] only).
    pub counters: HardwareCounts,
    pub state: State,
}

/// A virtual machine: the sum of its processes (the QEMU process and any helper in its scope).
#[derive(Debug, Clone, PartialEq)]
pub struct VmEnergy {
    pub identity: VmIdentity,
    pub energy: EnergyByKind,
    /// Energy of the last interval only (zero once terminated).
    pub interval: EnergyByKind,
    pub cpu_time: CpuNanos,
    /// Cumulative hardware counters (meaningful for [`Snapshot::hardware_counters`] only).
    pub counters: HardwareCounts,
    pub state: State,
}

/// Static facts about the node, for the info metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_name: String,
    pub cpu_architecture: String,
    /// `source` of the component (package/core/dram) counters.
    pub components_power_source: String,
    /// `source` of the platform counter, or `none`.
    pub platform_power_source: String,
    /// One entry per logical CPU, for the modern `kepler_node_cpu_info`.
    pub cpus: Vec<CpuInfo>,
}

/// One published measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    /// Length of the interval the latest deltas cover.
    pub interval: Duration,
    /// Number of completed intervals since start-up (0: only a baseline was read).
    pub sequence: u64,
    /// The classic `source` label: where the energy numbers come from.
    pub power_source: &'static str,
    /// The CPU-time source in use (`procfs`, `ebpf`).
    pub cpu_time_source: &'static str,
    /// Whether the CPU time is exact scheduler time (fills `*_bpf_cpu_time_ms_total`).
    pub cpu_time_exact: bool,
    /// The hardware counters measured (fill `*_cpu_cycles_total` etc.; the others are absent).
    pub hardware_counters: HardwareCounterSet,
    pub info: NodeInfo,
    pub node_zones: BTreeMap<ZoneId, NodeZone>,
    /// Node energy by kind, summed over sockets (with `other`).
    pub node: EnergyByKind,
    /// Node CPU utilisation over the last interval, 0..=1.
    pub node_cpu_usage_ratio: f64,
    pub workloads: Vec<WorkloadEnergy>,
    pub processes: Vec<ProcessEnergy>,
    /// Virtual machines, whatever `--metrics.processes` says. Their processes are outside
    /// containers, so their energy is part of `system_processes` (or `kernel_processes`).
    pub vms: Vec<VmEnergy>,
    /// NVIDIA GPU devices by id (empty without NVML or with `gpu.enabled` false): whole GPUs,
    /// and the MIG instances of GPUs in MIG mode in their parent's place.
    pub gpus: Vec<NodeGpu>,
    /// Each workload's share of each GPU device, for the workloads listed in `workloads`. Per
    /// device they add up to its energy while no workload has expired.
    pub gpu_workloads: BTreeMap<WorkloadKey, BTreeMap<GpuId, GpuShare>>,
    /// Each process's share of each GPU device, by pid (with `--metrics.processes`).
    pub gpu_processes: BTreeMap<u32, BTreeMap<GpuId, GpuShare>>,
}

impl Snapshot {
    /// The sum over all workloads (pseudo containers and terminated ones included) of one zone
    /// kind. While no workload has expired, attribution makes this equal `node.zones[kind]`.
    pub fn workloads_total(&self, kind: ZoneKind) -> ModeSplit {
        let mut sum = ModeSplit::default();
        for w in &self.workloads {
            if let Some(split) = w.energy.zones.get(&kind) {
                sum += *split;
            }
        }
        sum
    }

    /// The sum over all VMs (terminated ones included) of one zone kind. VMs are processes
    /// outside containers, so this never exceeds what `system_processes` and
    /// `kernel_processes` hold.
    pub fn vms_total(&self, kind: ZoneKind) -> ModeSplit {
        let mut sum = ModeSplit::default();
        for vm in &self.vms {
            if let Some(split) = vm.energy.zones.get(&kind) {
                sum += *split;
            }
        }
        sum
    }

    /// A snapshot with no measurement yet (served before the first interval completes).
    pub fn empty(
        info: NodeInfo,
        power_source: &'static str,
        cpu_time_source: &'static str,
    ) -> Self {
        Self {
            taken_at: SystemTime::UNIX_EPOCH,
            interval: Duration::ZERO,
            sequence: 0,
            power_source,
            cpu_time_source,
            cpu_time_exact: false,
            hardware_counters: HardwareCounterSet::NONE,
            info,
            node_zones: BTreeMap::new(),
            node: EnergyByKind::default(),
            node_cpu_usage_ratio: 0.0,
            workloads: Vec::new(),
            processes: Vec::new(),
            vms: Vec::new(),
            gpus: Vec::new(),
            gpu_workloads: BTreeMap::new(),
            gpu_processes: BTreeMap::new(),
        }
    }
}

/// Small snapshots the unit tests of the views share.
#[cfg(test)]
pub(crate) mod examples {
    use super::*;

    /// A split of `dynamic` and `idle` microjoules.
    pub(crate) fn split(dynamic: u64, idle: u64) -> ModeSplit {
        ModeSplit::new(Microjoules(dynamic), Microjoules(idle))
    }

    /// Node `n1` (RAPL components, `platform` as its platform source) with one zone of each
    /// of `kinds` on socket 0 (3 J dynamic, 1.5 J idle; 1 W, 0.5 W idle; all read from the same
    /// path) and system processes
    /// with 2 J dynamic and 0.5 J idle of package energy over 1.5 ms of CPU time.
    pub(crate) fn node_with_system_processes(kinds: &[ZoneKind], platform: &str) -> Snapshot {
        let mut s = Snapshot::empty(
            NodeInfo {
                node_name: "n1".into(),
                cpu_architecture: "x86_64".into(),
                components_power_source: "rapl-sysfs".into(),
                platform_power_source: platform.into(),
                cpus: Vec::new(),
            },
            "rapl-sysfs",
            "procfs",
        );
        for &kind in kinds {
            s.node_zones.insert(
                ZoneId { kind, socket: 0 },
                NodeZone {
                    path: "/sys/class/powercap/intel-rapl:0".into(),
                    energy: split(3_000_000, 1_500_000),
                    watts: Watts(1.0),
                    idle_watts: Watts(0.5),
                },
            );
        }
        let mut energy = EnergyByKind::default();
        energy
            .zones
            .insert(ZoneKind::Package, split(2_000_000, 500_000));
        s.workloads.push(WorkloadEnergy::running(
            WorkloadKey::System,
            energy,
            CpuNanos(1_500_000),
        ));
        s
    }
}
