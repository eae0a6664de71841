//! Node GPU energy: turns each interval's NVML readings into cumulative energy per GPU, split
//! into idle and active like the RAPL zones.
//!
//! A GPU with the driver's total-energy counter contributes the counter's delta (millijoules,
//! exactly); one without it contributes its power samples integrated over the interval (the
//! mean of the sample before and the sample now, times the interval). Idle and active come from
//! the same [`IdleEstimator`] the RAPL zones use, fed with the GPU's own utilisation. A GPU that
//! cannot be read keeps its totals; its next good reading continues the counter.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::attribution::idle::IdleEstimator;
use crate::power::counter::{Counter, Step};
use crate::power::gpu::{GpuMeasure, NvmlGpus};
use crate::power::units::{Microjoules, Watts};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::{ModeSplit, NodeGpu};

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
        Self { gpus, states }
    }

    /// Reads every GPU at the end of an interval of `elapsed` (zero: the baseline) and adds
    /// its energy. Returns each GPU's energy of this interval (µJ), by index.
    pub fn step(&mut self, elapsed: Duration, metrics: &SelfMetrics) -> BTreeMap<u32, Microjoules> {
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
        }
        deltas
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
