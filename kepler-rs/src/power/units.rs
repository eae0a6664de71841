//! Typed physical units used across the exporter.
//!
//! Energy travels as integer [`Microjoules`] (what RAPL counts), so attribution can split it
//! exactly; it only becomes floating-point [`Joules`] or [`Watts`] at the presentation edge.
//! CPU time travels as integer [`CpuNanos`].

use std::ops::{Add, AddAssign};
use std::time::Duration;

/// Energy in microjoules, the unit of `energy_uj` in powercap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microjoules(pub u64);

impl Microjoules {
    pub const ZERO: Self = Self(0);

    pub fn as_joules(self) -> Joules {
        Joules(self.0 as f64 / 1e6)
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// Average power over `elapsed`; zero for an empty interval.
    pub fn over(self, elapsed: Duration) -> Watts {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            Watts(self.as_joules().0 / secs)
        } else {
            Watts(0.0)
        }
    }
}

impl Add for Microjoules {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Microjoules {
    fn add_assign(&mut self, rhs: Self) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl std::iter::Sum for Microjoules {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

/// Energy in joules, for presentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Joules(pub f64);

/// Power in watts.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Watts(pub f64);

impl Watts {
    /// Energy used at this power over `elapsed`, rounded to whole microjoules, never negative.
    pub fn for_duration(self, elapsed: Duration) -> Microjoules {
        let uj = self.0 * elapsed.as_secs_f64() * 1e6;
        if uj.is_finite() && uj > 0.0 {
            Microjoules(uj.round() as u64)
        } else {
            Microjoules::ZERO
        }
    }
}

/// CPU time in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuNanos(pub u64);

impl CpuNanos {
    pub const ZERO: Self = Self(0);

    pub fn from_micros(us: u64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    /// Converts clock ticks (`/proc/<pid>/stat` utime/stime) given the tick rate.
    pub fn from_ticks(ticks: u64, ticks_per_second: u64) -> Self {
        let tps = ticks_per_second.max(1) as u128;
        Self((ticks as u128 * 1_000_000_000 / tps).min(u64::MAX as u128) as u64)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Add for CpuNanos {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for CpuNanos {
    fn add_assign(&mut self, rhs: Self) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl std::iter::Sum for CpuNanos {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Microjoules(2_500_000).as_joules(), Joules(2.5));
        assert_eq!(
            Microjoules(3_000_000).over(Duration::from_secs(3)),
            Watts(1.0)
        );
        assert_eq!(Microjoules(5).over(Duration::ZERO), Watts(0.0));
        assert_eq!(
            Watts(10.0).for_duration(Duration::from_millis(1500)),
            Microjoules(15_000_000)
        );
        assert_eq!(
            Watts(f64::NAN).for_duration(Duration::from_secs(1)),
            Microjoules::ZERO
        );
        assert_eq!(
            Watts(-3.0).for_duration(Duration::from_secs(1)),
            Microjoules::ZERO
        );
        assert_eq!(CpuNanos::from_ticks(250, 100), CpuNanos(2_500_000_000));
        assert_eq!(CpuNanos::from_ticks(1, 0), CpuNanos(1_000_000_000));
        assert_eq!(CpuNanos::from_micros(7), CpuNanos(7_000));
    }
}
