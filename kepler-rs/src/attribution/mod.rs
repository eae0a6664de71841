//! Energy attribution: splits each zone's energy of one interval among workloads.
//!
//! Per interval and zone: idle energy = min(ΔE, P_idle·Δt) with `P_idle` from the zone's
//! [`idle::IdleEstimator`]; dynamic = ΔE − idle. Dynamic energy is split by each workload's CPU
//! time in the interval; idle energy by the configured [`IdlePolicy`]. Energy no workload can be
//! charged for (no CPU time measured at all) goes to `kernel_processes`. Splits are exact in
//! integer microjoules ([`split::split_exact`]), so the workloads of a zone always add up to the
//! node's delta. Processes then share their container's energy by their own CPU time, so a
//! container equals the sum of its processes. See docs/attribution.md.

pub mod idle;
pub mod split;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::IdlePolicy;
use crate::power::units::{Microjoules, Watts};
use crate::power::ZoneId;
use crate::snapshot::ModeSplit;
use crate::workload::{WorkloadKey, WorkloadSample};

use idle::IdleEstimator;
use split::split_exact;

/// Energy per zone.
pub type ZoneEnergy = BTreeMap<ZoneId, ModeSplit>;

/// The result of one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// The node's delta per zone, split into idle and dynamic.
    pub node: ZoneEnergy,
    /// The idle power each zone's estimator believes in now.
    pub idle_power: BTreeMap<ZoneId, Watts>,
    pub workloads: BTreeMap<WorkloadKey, ZoneEnergy>,
    /// Aligned with `sample.processes`; empty unless processes were asked for.
    pub processes: Vec<ZoneEnergy>,
}

/// What the `requests` idle policy splits by: each container's CPU request and the node's CPU
/// capacity, in millicores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuRequests {
    /// Containers with a known request (others have none: best-effort, or no pod metadata).
    pub millicores: BTreeMap<WorkloadKey, u64>,
    /// The node's CPUs x 1000.
    pub capacity_millicores: u64,
}

/// Keeps the state attribution needs across intervals: idle estimators and idle weights.
#[derive(Debug)]
pub struct Attributor {
    policy: IdlePolicy,
    idle_window: Duration,
    half_life: Duration,
    estimators: BTreeMap<ZoneId, IdleEstimator>,
    /// CPU nanoseconds per workload, exponentially faded over `idle_window`.
    windowed_cpu: BTreeMap<WorkloadKey, f64>,
    /// For the `requests` policy; set before each interval.
    requests: CpuRequests,
}

impl Attributor {
    pub fn new(policy: IdlePolicy, idle_window: Duration, half_life: Duration) -> Self {
        Self {
            policy,
            idle_window,
            half_life,
            estimators: BTreeMap::new(),
            windowed_cpu: BTreeMap::new(),
            requests: CpuRequests::default(),
        }
    }

    /// The CPU requests the next interval's idle split uses under the `requests` policy.
    pub fn set_cpu_requests(&mut self, requests: CpuRequests) {
        self.requests = requests;
    }

    /// Attributes one interval. `zones` holds the wrap-corrected delta of every zone that could
    /// be read; `utilisation` is the node's CPU utilisation (0..=1) over the same interval.
    pub fn attribute(
        &mut self,
        zones: &[(ZoneId, Microjoules)],
        elapsed: Duration,
        utilisation: f64,
        sample: &WorkloadSample,
        with_processes: bool,
    ) -> Attribution {
        let keys: Vec<WorkloadKey> = sample.workloads.keys().cloned().collect();
        let cpu_weights: Vec<u64> = sample.workloads.values().map(|w| w.cpu.0).collect();
        let idle_weights = self.idle_weights(sample, elapsed);
        let kernel = WorkloadKey::Kernel;

        let mut out = Attribution::default();
        for (zone, delta) in zones {
            let estimator = self
                .estimators
                .entry(*zone)
                .or_insert_with(|| IdleEstimator::new(self.half_life));
            let (node_split, idle_power) = estimator.split_interval(*delta, elapsed, utilisation);
            let ModeSplit { dynamic, idle } = node_split;
            out.node.insert(*zone, node_split);
            out.idle_power.insert(*zone, idle_power);

            let mut charge = |parts: Option<Vec<u64>>,
                              amount: Microjoules,
                              set: fn(&mut ModeSplit, Microjoules)| {
                match parts {
                    Some(parts) => {
                        for (key, part) in keys.iter().zip(parts) {
                            let split = out
                                .workloads
                                .entry(key.clone())
                                .or_default()
                                .entry(*zone)
                                .or_default();
                            set(split, Microjoules(part));
                        }
                    }
                    None => {
                        let split = out
                            .workloads
                            .entry(kernel.clone())
                            .or_default()
                            .entry(*zone)
                            .or_default();
                        set(split, amount);
                    }
                }
            };
            charge(split_exact(dynamic.0, &cpu_weights), dynamic, |s, v| {
                s.dynamic += v
            });
            charge(split_exact(idle.0, &idle_weights), idle, |s, v| s.idle += v);
        }
        if with_processes {
            out.processes = split_among_processes(&out.workloads, sample);
        }
        out
    }

    /// Weights for the idle split, per the policy, aligned with `sample.workloads`.
    fn idle_weights(&mut self, sample: &WorkloadSample, elapsed: Duration) -> Vec<u64> {
        match self.policy {
            IdlePolicy::Even => vec![1; sample.workloads.len()],
            IdlePolicy::CpuShare => self.cpu_share_weights(sample, elapsed),
            IdlePolicy::Requests => {
                // Kept current even while requests decide, so a fallback starts from a full
                // window.
                let by_cpu = self.cpu_share_weights(sample, elapsed);
                let requested = |key: &WorkloadKey| self.requests.millicores.get(key).copied();
                if !sample.workloads.keys().any(|k| requested(k).is_some()) {
                    return by_cpu;
                }
                let total: u64 = sample.workloads.keys().filter_map(requested).sum();
                let unrequested = self.requests.capacity_millicores.saturating_sub(total);
                sample
                    .workloads
                    .keys()
                    .map(|key| match key {
                        WorkloadKey::System => unrequested,
                        _ => requested(key).unwrap_or(0),
                    })
                    .collect()
            }
        }
    }

    /// Each workload's CPU time over the idle window (faded exponentially), as weights.
    fn cpu_share_weights(&mut self, sample: &WorkloadSample, elapsed: Duration) -> Vec<u64> {
        let fade = (-elapsed.as_secs_f64() / self.idle_window.as_secs_f64().max(1e-9)).exp();
        let mut faded = BTreeMap::new();
        for (key, usage) in &sample.workloads {
            let before = self.windowed_cpu.get(key).copied().unwrap_or(0.0);
            faded.insert(key.clone(), before * fade + usage.cpu.0 as f64);
        }
        // Workloads that are gone leave the window with their state.
        self.windowed_cpu = faded;
        self.windowed_cpu
            .values()
            .map(|w| w.round() as u64)
            .collect()
    }
}

/// Splits every workload's energy among its live processes by their CPU time in the interval
/// (evenly when none of them ran), so each container equals the sum of its processes.
fn split_among_processes(
    workloads: &BTreeMap<WorkloadKey, ZoneEnergy>,
    sample: &WorkloadSample,
) -> Vec<ZoneEnergy> {
    let mut result = vec![ZoneEnergy::new(); sample.processes.len()];
    let mut members: BTreeMap<&WorkloadKey, Vec<usize>> = BTreeMap::new();
    for (i, p) in sample.processes.iter().enumerate() {
        members.entry(&p.workload).or_default().push(i);
    }
    for (key, indices) in members {
        let Some(zones) = workloads.get(key) else {
            continue;
        };
        let mut weights: Vec<u64> = indices.iter().map(|i| sample.processes[*i].cpu.0).collect();
        if weights.iter().all(|w| *w == 0) {
            weights = vec![1; indices.len()];
        }
        for (zone, split) in zones {
            let dynamic = split_exact(split.dynamic.0, &weights).unwrap_or_default();
            let idle = split_exact(split.idle.0, &weights).unwrap_or_default();
            for (n, i) in indices.iter().enumerate() {
                let entry = result[*i].entry(*zone).or_default();
                entry.dynamic += Microjoules(dynamic.get(n).copied().unwrap_or(0));
                entry.idle += Microjoules(idle.get(n).copied().unwrap_or(0));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests;
