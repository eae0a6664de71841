//! Idle-power estimation per zone.
//!
//! A zone's power is modelled as `P = P_idle + k * u`, where `u` is the node's CPU utilisation
//! (from `/proc/stat`) over the same interval. Each interval adds one observation `(u, P)` to a
//! weighted least-squares fit whose older observations fade with a configurable half-life; the
//! intercept is the idle power. Until utilisation has varied enough to fit a line (or when the
//! fit is implausible), the estimate falls back to the lowest power seen, as Kepler does.
//! The estimate is always clamped to `[0, lowest power seen]`, so idle energy never exceeds the
//! measured energy of a quiet interval.

use std::time::Duration;

use crate::power::units::{Microjoules, Watts};
use crate::snapshot::ModeSplit;

/// Utilisation must have at least this standard deviation (5 percentage points) before the
/// regression is trusted.
const MIN_UTILISATION_STDDEV: f64 = 0.05;

#[derive(Debug, Clone)]
pub struct IdleEstimator {
    half_life: Duration,
    sum_w: f64,
    sum_u: f64,
    sum_p: f64,
    sum_uu: f64,
    sum_up: f64,
    min_power: Option<f64>,
}

/// How the current estimate was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No observation yet.
    None,
    /// Lowest interval power seen so far.
    MinimumPower,
    /// Intercept of the power-vs-utilisation fit.
    Regression,
}

impl IdleEstimator {
    pub fn new(half_life: Duration) -> Self {
        Self {
            half_life,
            sum_w: 0.0,
            sum_u: 0.0,
            sum_p: 0.0,
            sum_uu: 0.0,
            sum_up: 0.0,
            min_power: None,
        }
    }

    /// Adds one interval: average power `power` at utilisation `utilisation` over `elapsed`.
    /// Non-finite or out-of-range input is ignored.
    pub fn observe(&mut self, utilisation: f64, power: Watts, elapsed: Duration) {
        let (u, p) = (utilisation, power.0);
        if !u.is_finite()
            || !p.is_finite()
            || !(0.0..=1.0).contains(&u)
            || p < 0.0
            || elapsed.is_zero()
        {
            return;
        }
        let decay = 0.5f64.powf(elapsed.as_secs_f64() / self.half_life.as_secs_f64().max(1e-9));
        for s in [
            &mut self.sum_w,
            &mut self.sum_u,
            &mut self.sum_p,
            &mut self.sum_uu,
            &mut self.sum_up,
        ] {
            *s *= decay;
        }
        // Weight by duration so unequal intervals count fairly.
        let w = elapsed.as_secs_f64();
        self.sum_w += w;
        self.sum_u += w * u;
        self.sum_p += w * p;
        self.sum_uu += w * u * u;
        self.sum_up += w * u * p;
        self.min_power = Some(self.min_power.map_or(p, |m| m.min(p)));
    }

    /// Observes one interval of a meter (`delta` over `elapsed` at `utilisation`) and splits
    /// `delta`: idle is the updated estimate over `elapsed`, capped at `delta`; dynamic (active)
    /// is the rest. Returns the split and the idle power it used. RAPL zones and GPUs both go
    /// through here.
    pub fn split_interval(
        &mut self,
        delta: Microjoules,
        elapsed: Duration,
        utilisation: f64,
    ) -> (ModeSplit, Watts) {
        self.observe(utilisation, delta.over(elapsed), elapsed);
        let (idle_power, _) = self.estimate();
        let idle = Microjoules(delta.0.min(idle_power.for_duration(elapsed).0));
        let dynamic = Microjoules(delta.0 - idle.0);
        (ModeSplit { dynamic, idle }, idle_power)
    }

    /// The current idle-power estimate and how it was obtained.
    pub fn estimate(&self) -> (Watts, Method) {
        let Some(min_power) = self.min_power else {
            return (Watts(0.0), Method::None);
        };
        if self.sum_w > 0.0 {
            let mean_u = self.sum_u / self.sum_w;
            let mean_p = self.sum_p / self.sum_w;
            let var_u = self.sum_uu / self.sum_w - mean_u * mean_u;
            if var_u >= MIN_UTILISATION_STDDEV * MIN_UTILISATION_STDDEV {
                let cov = self.sum_up / self.sum_w - mean_u * mean_p;
                let slope = cov / var_u;
                let intercept = mean_p - slope * mean_u;
                if slope.is_finite() && intercept.is_finite() && slope >= 0.0 {
                    return (Watts(intercept.clamp(0.0, min_power)), Method::Regression);
                }
            }
        }
        (Watts(min_power), Method::MinimumPower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT: Duration = Duration::from_secs(3);

    #[test]
    fn no_data_means_zero() {
        assert_eq!(
            IdleEstimator::new(Duration::from_secs(3600)).estimate(),
            (Watts(0.0), Method::None)
        );
    }

    #[test]
    fn falls_back_to_minimum_without_variation() {
        let mut e = IdleEstimator::new(Duration::from_secs(3600));
        for p in [30.0, 25.0, 28.0] {
            e.observe(0.3, Watts(p), DT);
        }
        assert_eq!(e.estimate(), (Watts(25.0), Method::MinimumPower));
    }

    #[test]
    fn regression_recovers_linear_model() {
        let mut e = IdleEstimator::new(Duration::from_secs(3600));
        for i in 0..40 {
            let u = 0.1 + 0.02 * (i % 20) as f64;
            e.observe(u, Watts(12.0 + 40.0 * u), DT);
        }
        let (w, m) = e.estimate();
        assert_eq!(m, Method::Regression);
        assert!((w.0 - 12.0).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn regression_with_noise_within_five_percent() {
        let mut e = IdleEstimator::new(Duration::from_secs(3600));
        let mut seed = 12345u64;
        for i in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 2.0; // [-1, 1) W
            let u = 0.05 + 0.9 * ((i * 7) % 10) as f64 / 10.0;
            e.observe(u, Watts(10.0 + 40.0 * u + noise), DT);
        }
        let (w, _) = e.estimate();
        assert!((w.0 - 10.0).abs() < 0.5, "{w:?}");
    }

    #[test]
    fn clamped_to_lowest_power_and_ignores_garbage() {
        let mut e = IdleEstimator::new(Duration::from_secs(3600));
        e.observe(f64::NAN, Watts(1.0), DT);
        e.observe(0.5, Watts(f64::INFINITY), DT);
        e.observe(1.5, Watts(1.0), DT);
        assert_eq!(e.estimate().1, Method::None);
        // A negative slope (power falls with load) is implausible: fall back.
        e.observe(0.1, Watts(50.0), DT);
        e.observe(0.9, Watts(20.0), DT);
        assert_eq!(e.estimate(), (Watts(20.0), Method::MinimumPower));
    }

    #[test]
    fn old_observations_fade() {
        let mut e = IdleEstimator::new(Duration::from_secs(60));
        for i in 0..100 {
            let u = (i % 10) as f64 / 10.0;
            e.observe(u, Watts(30.0 + 10.0 * u), DT);
        }
        for i in 0..400 {
            let u = (i % 10) as f64 / 10.0;
            e.observe(u, Watts(10.0 + 10.0 * u), DT);
        }
        let (w, m) = e.estimate();
        assert_eq!(m, Method::Regression);
        assert!((w.0 - 10.0).abs() < 0.1, "{w:?}");
    }
}
