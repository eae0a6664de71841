//! Workloads: which processes and containers ran, and for how long.
//!
//! A [`CpuTimeSource`] measures CPU time per process and per container since its previous sample.
//! The procfs/cgroup source ([`procfs`]) works everywhere; the eBPF source plugs into the same
//! trait. [`cgroup`] maps a process's cgroup to a container id, pod UID and runtime; [`kube`]
//! maps container ids to pod names from the kubelet; [`vm`] finds the QEMU/KVM guests among the
//! processes. Nothing here knows about energy.

pub mod cgroup;
pub mod cgroup_cpu;
pub mod ebpf;
pub mod kube;
pub mod procfs;
#[cfg(test)]
pub mod testing;
pub mod vm;

use std::collections::BTreeMap;
use std::fmt;

use crate::power::units::CpuNanos;

/// The container runtime that created a container, as far as the cgroup path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Where CPU time and energy are accounted: a container, or one of Kepler's pseudo containers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKey {
    /// A container, by its 64-hex id.
    Container(String),
    /// User-space processes outside any container (`system_processes`).
    System,
    /// Kernel threads and the root cgroup (`kernel_processes`).
    Kernel,
}

impl WorkloadKey {
    pub const SYSTEM_PROCESSES: &'static str = "system_processes";
    pub const KERNEL_PROCESSES: &'static str = "kernel_processes";

    /// The classic `container_id` label value.
    pub fn container_id(&self) -> &str {
        match self {
            WorkloadKey::Container(id) => id,
            WorkloadKey::System => Self::SYSTEM_PROCESSES,
            WorkloadKey::Kernel => Self::KERNEL_PROCESSES,
        }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.container_id())
    }
}

/// What the cgroup path says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// 64 lowercase hex characters.
    pub id: String,
    /// Pod UID with dashes (`6b2d2c5e-5f0a-...`), when the container belongs to a pod.
    pub pod_uid: Option<String>,
    pub runtime: Runtime,
}

/// A per-task counter Kepler exports per process and container: the PMU's hardware counters
/// ([`Self::ALL`]) and the kernel events the eBPF programs count ([`Self::KERNEL_EVENTS`]:
/// softirqs of the NET_TX, NET_RX and BLOCK vectors, page cache hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HardwareCounter {
    Cycles,
    Instructions,
    CacheMisses,
    NetTxIrq,
    NetRxIrq,
    BlockIrq,
    PageCacheHit,
}

impl HardwareCounter {
    /// Every PMU counter, in the order of [`HardwareCounts`] and of the BPF program's bits.
    pub const ALL: [Self; 3] = [Self::Cycles, Self::Instructions, Self::CacheMisses];

    /// The kernel events, in the order of [`HardwareCounts`] after the PMU counters and of the
    /// BPF event maps' values (`kepler_ebpf::EventCounts`).
    pub const KERNEL_EVENTS: [Self; 4] = [
        Self::NetTxIrq,
        Self::NetRxIrq,
        Self::BlockIrq,
        Self::PageCacheHit,
    ];

    /// Position in [`HardwareCounts`]: [`Self::ALL`], then [`Self::KERNEL_EVENTS`].
    pub fn index(self) -> usize {
        match self {
            Self::Cycles => 0,
            Self::Instructions => 1,
            Self::CacheMisses => 2,
            Self::NetTxIrq => 3,
            Self::NetRxIrq => 4,
            Self::BlockIrq => 5,
            Self::PageCacheHit => 6,
        }
    }

    /// For logs and `doctor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cycles => "cycles",
            Self::Instructions => "instructions",
            Self::CacheMisses => "cache misses",
            Self::NetTxIrq => "NET_TX softirqs",
            Self::NetRxIrq => "NET_RX softirqs",
            Self::BlockIrq => "BLOCK softirqs",
            Self::PageCacheHit => "page cache hits",
        }
    }
}

/// Counts (in an interval, or cumulative), indexed by [`HardwareCounter::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardwareCounts(pub [u64; 7]);

impl HardwareCounts {
    /// The PMU counters (in [`HardwareCounter::ALL`] order) and the kernel events (in
    /// [`HardwareCounter::KERNEL_EVENTS`] order).
    pub fn new(pmu: [u64; 3], events: [u64; 4]) -> Self {
        let [a, b, c] = pmu;
        let [d, e, f, g] = events;
        Self([a, b, c, d, e, f, g])
    }

    pub fn get(&self, counter: HardwareCounter) -> u64 {
        self.0[counter.index()]
    }
}

impl std::ops::AddAssign for HardwareCounts {
    fn add_assign(&mut self, rhs: Self) {
        for (a, b) in self.0.iter_mut().zip(rhs.0) {
            *a = a.saturating_add(b);
        }
    }
}

/// Which hardware counters a source collects; the series of the others are absent (not zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardwareCounterSet(u8);

impl HardwareCounterSet {
    pub const NONE: Self = Self(0);

    /// This set plus `counter`.
    pub fn with(self, counter: HardwareCounter) -> Self {
        Self(self.0 | 1 << counter.index())
    }

    pub fn contains(self, counter: HardwareCounter) -> bool {
        self.0 & 1 << counter.index() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// CPU time one container (or pseudo container) used in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadUsage {
    /// `None` for the pseudo containers.
    pub identity: Option<ContainerIdentity>,
    pub cpu: CpuNanos,
    /// Hardware counters over the same time (zero unless the source collects them).
    pub counters: HardwareCounts,
}

/// CPU time one process used in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessUsage {
    pub pid: u32,
    pub comm: String,
    pub workload: WorkloadKey,
    pub cpu: CpuNanos,
    /// Hardware counters over the same time (zero unless the source collects them).
    pub counters: HardwareCounts,
}

/// Everything a CPU-time source measured since its previous sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadSample {
    /// Every workload alive now (with zero CPU if it did not run), including pseudo containers.
    pub workloads: BTreeMap<WorkloadKey, WorkloadUsage>,
    /// Every process alive now that the source could read.
    pub processes: Vec<ProcessUsage>,
}

/// A source of per-process and per-container CPU time.
pub trait CpuTimeSource: Send + fmt::Debug {
    /// `procfs` or `ebpf`, for logs, `/healthz` and the self-metric.
    fn name(&self) -> &'static str;
    /// Whether the CPU time is exact on-CPU time from the scheduler (fills `bpf_cpu_time`).
    fn is_scheduler_exact(&self) -> bool {
        false
    }
    /// The hardware counters this source fills in [`WorkloadUsage::counters`] and
    /// [`ProcessUsage::counters`]; the series of the others are absent, not zero.
    fn hardware_counters(&self) -> HardwareCounterSet {
        HardwareCounterSet::NONE
    }
    /// CPU time used since the previous call (the first call reports what it sees as a baseline
    /// with zero CPU).
    fn sample(&mut self) -> WorkloadSample;
}
