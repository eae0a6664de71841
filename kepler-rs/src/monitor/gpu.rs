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
//!
//! A GPU in MIG mode with MIG instances is still measured whole (an instance has no meter),
//! and each interval's energy, active and idle alike, is divided among its instances by their
//! streaming multiprocessors (SMs), as classic Kepler weighs MIG instances: each instance's
//! share of the SMs of all the GPU's instances (their slice counts where NVML gives no SM
//! count, equal shares where it gives neither), with the same exact integer split, so the
//! instances add up to the GPU each interval. Each instance is then a GPU device of its own:
//! its energy is shared equally among its running compute processes (NVML has no per-process
//! samples on MIG), and the GPU itself is not listed beside its instances.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::attribution::idle::IdleEstimator;
use crate::attribution::split::split_exact;
use crate::power::counter::{Counter, Step};
use crate::power::gpu::{GpuMeasure, GpuProcessUse, MigInstance, NvmlGpus};
use crate::power::units::{Microjoules, Watts};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::{GpuId, GpuShare, MigId, ModeSplit, NodeGpu};
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
    /// Its MIG instances' weights (see [`mig_weights`]) and totals, by MIG device index; empty
    /// for a GPU measured as one device.
    instances: Vec<InstanceState>,
}

/// One MIG instance's share of its GPU.
#[derive(Debug)]
struct InstanceState {
    index: u32,
    id: GpuId,
    weight: u64,
    energy: ModeSplit,
    watts: Watts,
    idle_watts: Watts,
}

/// Each MIG instance's weight in its GPU's energy: its SMs where NVML gives every instance an
/// SM count, else its compute instance's slices, else its GPU instance's slices, else 1 each.
pub fn mig_weights(instances: &[MigInstance]) -> Vec<u64> {
    type Pick = fn(&MigInstance) -> u32;
    let picks: [Pick; 3] = [
        |m| m.multiprocessors,
        |m| m.compute_instance_slices,
        |m| m.gpu_instance_slices,
    ];
    picks
        .iter()
        .find(|pick| instances.iter().all(|m| pick(m) > 0))
        .map_or_else(
            || vec![1; instances.len()],
            |pick| instances.iter().map(|m| u64::from(pick(m))).collect(),
        )
}

/// Every GPU's cumulative energy since the exporter started.
#[derive(Debug)]
pub struct GpuLedger {
    gpus: NvmlGpus,
    states: BTreeMap<u32, GpuState>,
    /// Each workload's share of each GPU device.
    workloads: BTreeMap<WorkloadKey, BTreeMap<GpuId, GpuShare>>,
    /// Each process's share of each GPU device, by pid.
    processes: BTreeMap<u32, BTreeMap<GpuId, GpuShare>>,
}

impl GpuLedger {
    pub fn new(gpus: NvmlGpus, idle_half_life: Duration) -> Self {
        let states = gpus
            .devices()
            .iter()
            .map(|d| {
                let instances = d
                    .mig
                    .iter()
                    .zip(mig_weights(&d.mig))
                    .map(|(m, weight)| InstanceState {
                        index: m.index,
                        id: GpuId {
                            index: d.index,
                            mig: Some(MigId {
                                gpu_instance: m.gpu_instance,
                                compute_instance: m.compute_instance,
                            }),
                        },
                        weight,
                        energy: ModeSplit::default(),
                        watts: Watts(0.0),
                        idle_watts: Watts(0.0),
                    })
                    .collect();
                (
                    d.index,
                    GpuState {
                        counter: Counter::unbounded(),
                        last_power_mw: None,
                        estimator: IdleEstimator::new(idle_half_life),
                        energy: ModeSplit::default(),
                        watts: Watts(0.0),
                        idle_watts: Watts(0.0),
                        instances,
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
                    for i in &mut state.instances {
                        i.watts = Watts(0.0);
                    }
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
            if state.instances.is_empty() {
                share_into(
                    &mut self.workloads,
                    &mut self.processes,
                    GpuId::whole(reading.index),
                    split,
                    &reading.processes,
                    &workload_of,
                );
                continue;
            }
            let parts = split_instances(split, &state.instances);
            let total = delta.0.max(1) as f64;
            for (instance, part) in state.instances.iter_mut().zip(parts) {
                instance.energy += part;
                instance.watts = part.total().over(elapsed);
                instance.idle_watts = Watts(idle_power.0 * part.total().0 as f64 / total);
                let uses = reading
                    .instances
                    .iter()
                    .find(|r| r.index == instance.index)
                    .map_or(&[][..], |r| r.processes.as_slice());
                share_into(
                    &mut self.workloads,
                    &mut self.processes,
                    instance.id,
                    part,
                    uses,
                    &workload_of,
                );
            }
        }
        deltas
    }

    /// Each workload's share of each GPU device.
    pub fn workload_shares(&self) -> &BTreeMap<WorkloadKey, BTreeMap<GpuId, GpuShare>> {
        &self.workloads
    }

    /// Each process's share of each GPU device, by pid.
    pub fn process_shares(&self) -> &BTreeMap<u32, BTreeMap<GpuId, GpuShare>> {
        &self.processes
    }

    /// Forgets the shares of workloads and processes no longer listed (called once the
    /// ledgers have swept them).
    pub fn retain(&mut self, workload: impl Fn(&WorkloadKey) -> bool, pid: impl Fn(u32) -> bool) {
        self.workloads.retain(|k, _| workload(k));
        self.processes.retain(|p, _| pid(*p));
    }

    /// Every GPU device found at start-up with its totals, for the snapshot: each GPU, or in
    /// its place its MIG instances.
    pub fn node_gpus(&self) -> Vec<NodeGpu> {
        let mut out = Vec::new();
        for d in self.gpus.devices() {
            let state = self.states.get(&d.index);
            let instances = state.map_or(&[][..], |s| s.instances.as_slice());
            if instances.is_empty() {
                out.push(NodeGpu {
                    index: d.index,
                    mig: None,
                    uuid: d.uuid.clone(),
                    name: d.name.clone(),
                    energy: state.map(|s| s.energy).unwrap_or_default(),
                    watts: state.map_or(Watts(0.0), |s| s.watts),
                    idle_watts: state.map_or(Watts(0.0), |s| s.idle_watts),
                });
                continue;
            }
            for (m, i) in d.mig.iter().zip(instances) {
                out.push(NodeGpu {
                    index: d.index,
                    mig: i.id.mig,
                    uuid: m.uuid.clone(),
                    name: if m.name.is_empty() {
                        d.name.clone()
                    } else {
                        m.name.clone()
                    },
                    energy: i.energy,
                    watts: i.watts,
                    idle_watts: i.idle_watts,
                });
            }
        }
        out
    }
}

/// Divides a GPU's interval energy among its MIG instances by their weights, mode by mode,
/// exactly: the parts add up to `split`.
fn split_instances(split: ModeSplit, instances: &[InstanceState]) -> Vec<ModeSplit> {
    let weights: Vec<u64> = instances.iter().map(|i| i.weight).collect();
    match (
        split_exact(split.dynamic.0, &weights),
        split_exact(split.idle.0, &weights),
    ) {
        (Some(d), Some(i)) => d
            .into_iter()
            .zip(i)
            .map(|(d, i)| ModeSplit::new(Microjoules(d), Microjoules(i)))
            .collect(),
        // Weights are never all 0 (mig_weights falls back to 1 each).
        _ => vec![ModeSplit::default(); instances.len()],
    }
}

/// Shares one GPU's interval energy `split` among the processes in `uses` (and their
/// workloads, by `workload_of`), exactly; all of it to `system_processes` when no process used
/// the GPU.
fn share_into(
    workloads: &mut BTreeMap<WorkloadKey, BTreeMap<GpuId, GpuShare>>,
    processes: &mut BTreeMap<u32, BTreeMap<GpuId, GpuShare>>,
    gpu: GpuId,
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
            let gpu = GpuId::whole(0);
            share_into(&mut workloads, &mut processes, gpu, split, &uses, &workload_of);
            let mut sum = ModeSplit::default();
            for shares in workloads.values() {
                let share: &GpuShare = &shares[&gpu];
                prop_assert_eq!(share.energy, share.interval);
                sum += share.energy;
            }
            prop_assert_eq!(sum, split);
            let mut by_process = ModeSplit::default();
            for shares in processes.values() {
                by_process += shares[&gpu].energy;
            }
            if !uses.is_empty() {
                prop_assert_eq!(by_process, split);
            }
        }
    }

    fn instance(index: u32, sms: u32, ci_slices: u32, gi_slices: u32) -> MigInstance {
        MigInstance {
            index,
            gpu_instance: index + 1,
            compute_instance: 0,
            uuid: format!("MIG-{index}"),
            name: String::new(),
            multiprocessors: sms,
            gpu_instance_slices: gi_slices,
            compute_instance_slices: ci_slices,
        }
    }

    #[test]
    fn mig_instances_weigh_by_sms_else_slices_else_equally() {
        // H100-like 4g (64 SMs) and 3g (60 SMs): SMs, not slices.
        let both = [instance(0, 64, 4, 4), instance(1, 60, 3, 3)];
        assert_eq!(mig_weights(&both), [64, 60]);
        // One SM count missing: compute instance slices for all.
        let no_sm = [instance(0, 64, 4, 4), instance(1, 0, 3, 3)];
        assert_eq!(mig_weights(&no_sm), [4, 3]);
        let gi_only = [instance(0, 0, 0, 4), instance(1, 0, 0, 2)];
        assert_eq!(mig_weights(&gi_only), [4, 2]);
        let nothing = [instance(0, 0, 0, 0), instance(1, 0, 0, 0)];
        assert_eq!(mig_weights(&nothing), [1, 1]);
    }

    proptest! {
        /// Whatever the weights, the MIG instances' parts of an interval add up to the GPU's
        /// energy, mode by mode.
        #[test]
        fn mig_instances_add_up_to_the_gpu(
            dynamic in 0u64..10_000_000_000,
            idle in 0u64..10_000_000_000,
            weights in proptest::collection::vec(1u64..200, 1..8),
        ) {
            let instances: Vec<InstanceState> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| InstanceState {
                    index: i as u32,
                    id: GpuId::whole(0),
                    weight: *w,
                    energy: ModeSplit::default(),
                    watts: Watts(0.0),
                    idle_watts: Watts(0.0),
                })
                .collect();
            let split = ModeSplit::new(Microjoules(dynamic), Microjoules(idle));
            let parts = split_instances(split, &instances);
            prop_assert_eq!(parts.len(), instances.len());
            let mut sum = ModeSplit::default();
            for p in &parts {
                sum += *p;
            }
            prop_assert_eq!(sum, split);
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
