//! The cumulative energy ledger: adds each interval's attribution to running totals, tracks
//! workload lifecycles, and keeps terminated workloads visible for a bounded window.
//!
//! Totals only ever grow, so every counter the exporter publishes is monotonic. A workload that
//! disappears is marked terminated and stays with its final totals for `retention`, and at most
//! `max_terminated` of them are kept (oldest leave first), so memory stays bounded under churn.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::attribution::ZoneEnergy;
use crate::power::units::CpuNanos;
use crate::power::ZoneKind;
use crate::snapshot::{EnergyByKind, ModeSplit, State};
use crate::workload::kube::PodNames;
use crate::workload::{ContainerIdentity, HardwareCounts, WorkloadKey};

/// Folds per-zone energy into per-kind totals and adds Kepler's `other`
/// (platform − package − dram, per mode, never negative) for the interval.
pub fn add_interval(totals: &mut EnergyByKind, interval: &ZoneEnergy) {
    let mut by_kind: BTreeMap<ZoneKind, ModeSplit> = BTreeMap::new();
    for (zone, split) in interval {
        *by_kind.entry(zone.kind).or_default() += *split;
    }
    if let Some(platform) = by_kind.get(&ZoneKind::Psys) {
        let mut components = ModeSplit::default();
        for kind in [ZoneKind::Package, ZoneKind::Dram] {
            if let Some(s) = by_kind.get(&kind) {
                components += *s;
            }
        }
        totals.other += ModeSplit {
            dynamic: platform.dynamic.saturating_sub(components.dynamic),
            idle: platform.idle.saturating_sub(components.idle),
        };
    }
    for (kind, split) in by_kind {
        *totals.zones.entry(kind).or_default() += split;
    }
}

/// Running totals of one tracked thing (a workload or a process).
#[derive(Debug, Clone)]
pub struct Entry<M> {
    pub meta: M,
    pub energy: EnergyByKind,
    pub cpu_time: CpuNanos,
    pub counters: HardwareCounts,
    /// Energy of the last interval, for the watts gauges.
    pub last_interval: EnergyByKind,
    pub state: State,
}

/// What the ledger keeps about a workload besides its energy.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadMeta {
    pub identity: Option<ContainerIdentity>,
    /// Pod metadata once resolved; kept after the pod leaves the kubelet's list, so a
    /// terminated container keeps its names for the retention window.
    pub names: Option<PodNames>,
}

/// What the ledger keeps about a process besides its energy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    pub comm: String,
    pub workload: WorkloadKey,
}

/// Entries by key with the lifecycle rules applied.
#[derive(Debug)]
pub struct Ledger<K: Ord + Clone, M> {
    entries: BTreeMap<K, Entry<M>>,
    retention: Duration,
    max_terminated: usize,
}

impl<K: Ord + Clone, M: Clone> Ledger<K, M> {
    pub fn new(retention: Duration, max_terminated: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            retention,
            max_terminated,
        }
    }

    /// Records that `key` is alive now, with this interval's energy, CPU time and counters.
    pub fn update(
        &mut self,
        key: &K,
        meta: M,
        interval: Option<&ZoneEnergy>,
        cpu: CpuNanos,
        counters: HardwareCounts,
    ) {
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            meta: meta.clone(),
            energy: EnergyByKind::default(),
            cpu_time: CpuNanos::ZERO,
            counters: HardwareCounts::default(),
            last_interval: EnergyByKind::default(),
            state: State::Running,
        });
        entry.meta = meta;
        entry.state = State::Running;
        entry.cpu_time += cpu;
        entry.counters += counters;
        let mut this_interval = EnergyByKind::default();
        if let Some(interval) = interval {
            add_interval(&mut this_interval, interval);
        }
        entry.energy += &this_interval;
        entry.last_interval = this_interval;
    }

    /// Marks every running entry not in `alive` as terminated at `now`, then drops terminated
    /// entries older than the retention window and the oldest beyond `max_terminated`.
    pub fn sweep(&mut self, alive: impl Fn(&K) -> bool, now: SystemTime) {
        for (key, entry) in self.entries.iter_mut() {
            if entry.state == State::Running && !alive(key) {
                entry.state = State::Terminated(now);
                entry.last_interval = EnergyByKind::default();
            }
        }
        let retention = self.retention;
        self.entries.retain(|_, e| match e.state {
            State::Running => true,
            State::Terminated(at) => now.duration_since(at).map_or(true, |age| age <= retention),
        });
        let mut terminated: Vec<(SystemTime, K)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e.state {
                State::Terminated(at) => Some((at, k.clone())),
                State::Running => None,
            })
            .collect();
        if terminated.len() > self.max_terminated {
            terminated.sort_by_key(|t| t.0);
            let excess = terminated.len() - self.max_terminated;
            for (_, key) in terminated.into_iter().take(excess) {
                self.entries.remove(&key);
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&Entry<M>> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Entry<M>)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::units::Microjoules;
    use crate::power::ZoneId;

    fn zone(kind: ZoneKind, dynamic: u64, idle: u64) -> (ZoneId, ModeSplit) {
        (
            ZoneId { kind, socket: 0 },
            ModeSplit {
                dynamic: Microjoules(dynamic),
                idle: Microjoules(idle),
            },
        )
    }

    #[test]
    fn other_is_platform_minus_components_never_negative() {
        let mut totals = EnergyByKind::default();
        let interval: ZoneEnergy = [
            zone(ZoneKind::Package, 50, 20),
            zone(ZoneKind::Dram, 5, 5),
            zone(ZoneKind::Psys, 80, 10),
        ]
        .into();
        add_interval(&mut totals, &interval);
        assert_eq!(
            totals.other,
            ModeSplit {
                dynamic: Microjoules(25),
                idle: Microjoules(0)
            }
        );
        assert_eq!(totals.total().total(), Microjoules(50 + 20 + 5 + 5 + 25));
        let without_psys: ZoneEnergy = [zone(ZoneKind::Package, 1, 1)].into();
        add_interval(&mut totals, &without_psys);
        assert_eq!(totals.other.dynamic, Microjoules(25));
    }

    #[test]
    fn terminated_entries_expire_and_are_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut l: Ledger<u32, ()> = Ledger::new(Duration::from_secs(60), 2);
        let e: ZoneEnergy = [zone(ZoneKind::Package, 10, 0)].into();
        for k in 0..4 {
            l.update(&k, (), Some(&e), CpuNanos(1), HardwareCounts::default());
        }
        l.sweep(|k| *k == 0, t0);
        // Three terminated, at most two kept.
        assert_eq!(l.len(), 3);
        let later = t0 + Duration::from_secs(30);
        l.update(&9, (), None, CpuNanos(0), HardwareCounts::default());
        l.sweep(|k| *k == 0 || *k == 9, later);
        assert_eq!(l.len(), 4);
        l.sweep(|k| *k == 0 || *k == 9, t0 + Duration::from_secs(61));
        assert_eq!(l.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 9]);
    }

    #[test]
    fn a_returning_workload_runs_again_with_its_totals() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut l: Ledger<u32, ()> = Ledger::new(Duration::from_secs(60), 10);
        let e: ZoneEnergy = [zone(ZoneKind::Package, 10, 0)].into();
        l.update(&1, (), Some(&e), CpuNanos(1), HardwareCounts::default());
        l.sweep(|_| false, t0);
        l.update(&1, (), Some(&e), CpuNanos(1), HardwareCounts::default());
        let (_, entry) = l.iter().next().unwrap();
        assert_eq!(entry.state, State::Running);
        assert_eq!(entry.energy.total().total(), Microjoules(20));
    }
}
