//! Node GPU energy: turns each interval's NVML readings into cumulative energy per GPU, split
//! into idle and active like the RAPL zones.
//!
//! A GPU with the driver's total-energy counter contributes the counter's delta (millijoules,
//! exactly); one without it contributes its power samples integrated over the interval (the
//! mean of the sample before and the sample now, times the interval). Idle and active come from
//! the same [`IdleEstimator`] the RAPL zones use, fed with the GPU's own utilisation. A GPU that
//! cannot be read keeps its totals; its next good reading continues the counter.
//!
//! Each GPU's energy of an interval (active and idle alike) is then shared among the processes
//! that used it, by the sums of their compute utilisation samples (equally where NVML only
//! lists them as running), exactly: the shares add up to the GPU's energy. A process goes to
//! its workload as the CPU-time source knows it (`system_processes` when it does not); energy
//! of a GPU no process used goes to `system_processes`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::attribution::idle::IdleEstimator;
use crate::attribution::split::split_exact;
use crate::power::counter::{Counter, Step};
use crate::power::gpu::{GpuMeasure, GpuProcessUse, NvmlGpus};
use crate::power::units::{Microjoules, Watts};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::{GpuShare, ModeSplit, NodeGpu};
use crate::workload::{WorkloadKey, WorkloadSample};

/// One GPU's running state.
#[derive(Debug)]
struct GpuState {
    counter: Counter,
    /// The last power sample (milliwatts), for GPUs without an energy counter.
    last_power_mw: Option<u32>,
    estimator: IdleEstimator,
    energy: ModeSplit,
    watts: Watts,
    idle_watts: Watts,
}

/// Every GPU's cumulative energy since the exporter started.
#[derive(Debug)]
pub struct GpuLedger {
    gpus: NvmlGpus,
    states: BTreeMap<u32, GpuState>,
    /// Each workload's share of each GPU, by GPU index.
    workloads: BTreeMap<WorkloadKey, BTreeMap<u32, GpuShare>>,
    /// Each process's share of each GPU, by pid.
    processes: BTreeMap<u32, BTreeMap<u32, GpuShare>>,
}

impl GpuLedger {
    pub fn new(gpus: NvmlGpus, idle_half_life: Duration) -> Self {
        let states = gpus
            .devices()
            .iter()
            .map(|d| {
                (
                    d.index,
                    GpuState {
                        counter: Counter::unbounded(),
                        last_power_mw: None,
                        estimator: IdleEstimator::new(idle_half_life),
                        energy: ModeSplit::default(),
                        watts: Watts(0.0),
                        idle_watts: Watts(0.0),
                    },
                )
            })
            .collect();
        Self {
            gpus,
            states,
            workloads: BTreeMap::new(),
            processes: BTreeMap::new(),
        }
    }

    /// Reads every GPU at the end of an interval of `elapsed` (zero: the baseline), adds its
    /// energy and shares it among the processes of `sample` that used it. Returns each GPU's
    /// energy of this interval (µJ), by index.
    pub fn step(
        &mut self,
        elapsed: Duration,
        sample: &WorkloadSample,
        metrics: &SelfMetrics,
    ) -> BTreeMap<u32, Microjoules> {
        for shares in self
            .workloads
            .values_mut()
            .chain(self.processes.values_mut())
        {
            for share in shares.values_mut() {
                share.interval = ModeSplit::default();
            }
        }
        let workload_of: BTreeMap<u32, &WorkloadKey> = sample
            .processes
            .iter()
            .map(|p| (p.pid, &p.workload))
            .collect();
        let mut deltas = BTreeMap::new();
        for reading in self.gpus.read() {
            let Some(state) = self.states.get_mut(&reading.index) else {
                continue;
            };
            let measure = match reading.measure {
                Ok(m) => m,
                Err(e) => {
                    report_error!(
                        metrics,
                        "gpu",
                        e.reason,
                        gpu = reading.index,
                        "cannot read GPU: {e}"
                    );
                    state.last_power_mw = None;
                    state.watts = Watts(0.0);
                    continue;
                }
            };
            let delta = match measure {
                GpuMeasure::EnergyMillijoules(mj) => match state.counter.observe(mj) {
                    Ok(Step::First) => None,
                    Ok(Step::Reset) => {
                        report_error!(metrics, "gpu", "counter_backwards", gpu = reading.index,
                            "GPU energy counter went backwards (driver reloaded?); interval skipped");
                        None
                    }
                    Ok(step) => Some(Microjoules(step.delta().saturating_mul(1000))),
                    Err(e) => {
                        report_error!(
                            metrics,
                            "gpu",
                            "counter",
                            gpu = reading.index,
                            "rejected GPU reading: {e}"
                        );
                        None
                    }
                },
                GpuMeasure::PowerMilliwatts(mw) => {
                    let before = state.last_power_mw.replace(mw);
                    before.map(|before| integrate(before, mw, elapsed))
                }
            };
            let Some(delta) = delta.filter(|_| !elapsed.is_zero()) else {
                continue;
            };
            let utilisation = reading.utilisation.unwrap_or(0.0);
            let (split, idle_power) = state.estimator.split_interval(delta, elapsed, utilisation);
            state.energy += split;
            state.watts = delta.over(elapsed);
            state.idle_watts = idle_power;
            deltas.insert(reading.index, delta);
            self.share(reading.index, split, &reading.processes, &workload_of);
        }
        deltas
    }

    /// Shares one GPU's interval energy `split` among the processes in `uses` (and their
    /// workloads).
    fn share(
        &mut self,
        gpu: u32,
        split: ModeSplit,
        uses: &[GpuProcessUse],
        workload_of: &BTreeMap<u32, &WorkloadKey>,
    ) {
        share_into(
            &mut self.workloads,
            &mut self.processes,
            gpu,
            split,
            uses,
            workload_of,
        );
    }

    /// Each workload's share of each GPU.
    pub fn workload_shares(&self) -> &BTreeMap<WorkloadKey, BTreeMap<u32, GpuShare>> {
        &self.workloads
    }

    /// Each process's share of each GPU, by pid.
    pub fn process_shares(&self) -> &BTreeMap<u32, BTreeMap<u32, GpuShare>> {
        &self.processes
    }

    /// Forgets the shares of workloads and processes no longer listed (called once the
    /// ledgers have swept them).
    pub fn retain(&mut self, workload: impl Fn(&WorkloadKey) -> bool, pid: impl Fn(u32) -> bool) {
        self.workloads.retain(|k, _| workload(k));
        self.processes.retain(|p, _| pid(*p));
    }

    /// Every GPU found at start-up with its totals, for the snapshot.
    pub fn node_gpus(&self) -> Vec<NodeGpu> {
        self.gpus
            .devices()
            .iter()
            .map(|d| {
                let state = self.states.get(&d.index);
                NodeGpu {
                    index: d.index,
                    uuid: d.uuid.clone(),
                    name: d.name.clone(),
                    energy: state.map(|s| s.energy).unwrap_or_default(),
                    watts: state.map_or(Watts(0.0), |s| s.watts),
                    idle_watts: state.map_or(Watts(0.0), |s| s.idle_watts),
                }
            })
            .collect()
    }
}

/// Shares one GPU's interval energy `split` among the processes in `uses` (and their
/// workloads, by `workload_of`), exactly; all of it to `system_processes` when no process used
/// the GPU.
fn share_into(
    workloads: &mut BTreeMap<WorkloadKey, BTreeMap<u32, GpuShare>>,
    processes: &mut BTreeMap<u32, BTreeMap<u32, GpuShare>>,
    gpu: u32,
    split: ModeSplit,
    uses: &[GpuProcessUse],
    workload_of: &BTreeMap<u32, &WorkloadKey>,
) {
    let by_compute: Vec<u64> = uses.iter().map(|u| u.compute).collect();
    let weights = if by_compute.iter().any(|w| *w > 0) {
        by_compute
    } else {
        vec![1; uses.len()]
    };
    let (Some(dynamic), Some(idle)) = (
        split_exact(split.dynamic.0, &weights),
        split_exact(split.idle.0, &weights),
    ) else {
        let share = workloads
            .entry(WorkloadKey::System)
            .or_default()
            .entry(gpu)
            .or_default();
        share.energy += split;
        share.interval += split;
        return;
    };
    for ((u, d), i) in uses.iter().zip(dynamic).zip(idle) {
        let part = ModeSplit::new(Microjoules(d), Microjoules(i));
        let key = workload_of
            .get(&u.pid)
            .map_or(WorkloadKey::System, |k| (*k).clone());
        for share in [
            workloads.entry(key).or_default().entry(gpu).or_default(),
            processes.entry(u.pid).or_default().entry(gpu).or_default(),
        ] {
            share.energy += part;
            share.interval += part;
            share.compute_util += u.compute;
            share.memory_util += u.memory;
        }
    }
}

/// Energy of a power draw that went from `before_mw` to `now_mw` over `elapsed`, in µJ: the
/// mean of the two samples times the interval (mW·ns / 10⁶ = µJ).
fn integrate(before_mw: u32, now_mw: u32, elapsed: Duration) -> Microjoules {
    let sum_mw = u128::from(before_mw) + u128::from(now_mw);
    let uj = sum_mw * elapsed.as_nanos() / 2_000_000;
    Microjoules(u64::try_from(uj).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        /// Whatever the samples, the shares of one interval add up to the GPU's energy, mode
        /// by mode, and each process's workload gets exactly that process's share.
        #[test]
        fn shares_add_up_to_the_gpu(
            dynamic in 0u64..10_000_000_000,
            idle in 0u64..10_000_000_000,
            compute in proptest::collection::vec(0u64..500, 0..6),
        ) {
            let uses: Vec<GpuProcessUse> = compute
                .iter()
                .enumerate()
                .map(|(i, c)| GpuProcessUse { pid: 100 + i as u32, compute: *c, memory: 0 })
                .collect();
            let container = WorkloadKey::Container("c".into());
            // Even pids in the container, odd ones unknown to the CPU side.
            let workload_of: BTreeMap<u32, &WorkloadKey> = uses
                .iter()
                .filter(|u| u.pid % 2 == 0)
                .map(|u| (u.pid, &container))
                .collect();
            let (mut workloads, mut processes) = (BTreeMap::new(), BTreeMap::new());
            let split = ModeSplit::new(Microjoules(dynamic), Microjoules(idle));
            share_into(&mut workloads, &mut processes, 0, split, &uses, &workload_of);
            let mut sum = ModeSplit::default();
            for shares in workloads.values() {
                let share: &GpuShare = &shares[&0];
                prop_assert_eq!(share.energy, share.interval);
                sum += share.energy;
            }
            prop_assert_eq!(sum, split);
            let mut by_process = ModeSplit::default();
            for shares in processes.values() {
                by_process += shares[&0].energy;
            }
            if !uses.is_empty() {
                prop_assert_eq!(by_process, split);
            }
        }
    }

    #[test]
    fn integrates_the_mean_of_two_samples() {
        // 100 W then 300 W over 3 s: 200 W mean, 600 J.
        assert_eq!(
            integrate(100_000, 300_000, Duration::from_secs(3)),
            Microjoules(600_000_000)
        );
        assert_eq!(integrate(0, 0, Duration::from_secs(3)), Microjoules(0));
    }
}
