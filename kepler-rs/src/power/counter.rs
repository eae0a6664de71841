//! The one place that turns successive readings of a hardware or kernel counter into deltas.
//!
//! RAPL `energy_uj` wraps at `max_energy_range_uj`; cgroup and process CPU counters never wrap but
//! restart when the thing they count is replaced. [`Counter`] handles the first reading, a normal
//! step, a wrap through a known maximum (no energy lost; Kepler dropped such an interval as noise,
//! github.com/sustainable-computing-io/kepler/issues/575), and a step backwards without a known
//! maximum (treated as a reset: nothing is invented).
//! No other code subtracts raw counter values.

use thiserror::Error;

/// What a new reading meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// First reading: no delta yet.
    First,
    /// The counter advanced by this much without wrapping.
    Advanced(u64),
    /// The counter passed its maximum and restarted at zero; the delta includes both parts.
    Wrapped(u64),
    /// The counter went backwards and no maximum is known (counter replaced or reset):
    /// the delta is unknown, so zero is reported and the new value becomes the baseline.
    Reset,
}

impl Step {
    /// The amount counted since the previous reading (zero for `First` and `Reset`).
    pub fn delta(self) -> u64 {
        match self {
            Step::Advanced(d) | Step::Wrapped(d) => d,
            Step::First | Step::Reset => 0,
        }
    }
}

/// A reading that cannot be right.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CounterError {
    #[error("counter value {value} exceeds its maximum range {max}")]
    AboveMaximum { value: u64, max: u64 },
}

/// Tracks one monotonically increasing counter that may wrap at `max`.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    max: Option<u64>,
    last: Option<u64>,
}

impl Counter {
    /// A counter that wraps after `max` (powercap's `max_energy_range_uj`).
    pub fn wrapping_at(max: u64) -> Self {
        Self {
            max: (max > 0).then_some(max),
            last: None,
        }
    }

    /// A counter with no known maximum (CPU time): a step backwards is a reset.
    pub fn unbounded() -> Self {
        Self::default()
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Records a new raw reading and says what it meant. An impossible reading (above the
    /// maximum) is rejected and leaves the baseline unchanged, so nothing is lost or invented.
    pub fn observe(&mut self, value: u64) -> Result<Step, CounterError> {
        if let Some(max) = self.max {
            if value > max {
                return Err(CounterError::AboveMaximum { value, max });
            }
        }
        let step = match self.last {
            None => Step::First,
            Some(prev) if value >= prev => Step::Advanced(value - prev),
            Some(prev) => match self.max {
                // The counter runs 0..=max and then restarts at 0: the step from max to 0 is
                // one unit. (On hardware the true modulus is max + one RAPL energy unit, so a
                // wrap is exact to within one unit, about 61 µJ.)
                Some(max) => Step::Wrapped((max - prev) + 1 + value),
                None => Step::Reset,
            },
        };
        self.last = Some(value);
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_then_advance() {
        let mut c = Counter::wrapping_at(1000);
        assert_eq!(c.observe(10), Ok(Step::First));
        assert_eq!(c.observe(25), Ok(Step::Advanced(15)));
        assert_eq!(c.observe(25), Ok(Step::Advanced(0)));
    }

    #[test]
    fn wrap_keeps_energy() {
        let mut c = Counter::wrapping_at(1000);
        c.observe(990).ok();
        assert_eq!(
            c.observe(5),
            Ok(Step::Wrapped(16)),
            "990..=1000 is 10, 1000->0 is 1, 0..5 is 5"
        );
        assert_eq!(c.observe(7), Ok(Step::Advanced(2)));
    }

    #[test]
    fn backwards_without_max_is_reset() {
        let mut c = Counter::unbounded();
        c.observe(500).ok();
        assert_eq!(c.observe(100), Ok(Step::Reset));
        assert_eq!(c.observe(130), Ok(Step::Advanced(30)));
    }

    #[test]
    fn above_max_is_rejected_and_baseline_kept() {
        let mut c = Counter::wrapping_at(100);
        c.observe(40).ok();
        assert_eq!(
            c.observe(101),
            Err(CounterError::AboveMaximum {
                value: 101,
                max: 100
            })
        );
        assert_eq!(c.observe(60), Ok(Step::Advanced(20)));
    }

    proptest! {
        /// Feeding the counter the wrapped readings of a true cumulative energy series gives back
        /// exactly the true total, as long as less than one full range passes between readings.
        #[test]
        fn wraps_lose_nothing(max in 1u64..1_000_000_000_000, start_frac in 0.0f64..1.0,
                              steps in proptest::collection::vec(0.0f64..1.0, 1..200)) {
            let mut c = Counter::wrapping_at(max);
            let mut truth: u128 = (start_frac * max as f64) as u128;
            c.observe((truth % (max as u128 + 1)) as u64).ok();
            let mut measured: u128 = 0;
            let mut expected: u128 = 0;
            for f in steps {
                let inc = (f * max as f64) as u128; // strictly less than one range
                truth += inc;
                expected += inc;
                let raw = (truth % (max as u128 + 1)) as u64;
                let step = c.observe(raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
                measured += step.delta() as u128;
            }
            prop_assert_eq!(measured, expected);
        }

        /// Any sequence of readings yields deltas that never exceed one range, never panics.
        #[test]
        fn arbitrary_readings_are_bounded(max in 1u64..u64::MAX, values in proptest::collection::vec(any::<u64>(), 1..100)) {
            let mut c = Counter::wrapping_at(max);
            for v in values {
                match c.observe(v) {
                    Ok(step) => prop_assert!(step.delta() <= max),
                    Err(CounterError::AboveMaximum { value, .. }) => prop_assert!(value > max),
                }
            }
        }

        #[test]
        fn unbounded_deltas_sum_to_increase(values in proptest::collection::vec(0u64..1u64<<40, 1..100)) {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let mut c = Counter::unbounded();
            let total: u64 = sorted.iter().map(|v| c.observe(*v).map(Step::delta).unwrap_or(0)).sum();
            prop_assert_eq!(total, sorted[sorted.len() - 1] - sorted[0]);
        }
    }
}
