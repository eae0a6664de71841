//! Gives memory freed after a burst back to the operating system.
//!
//! A burst (thousands of processes in hundreds of containers for a while) grows the exporter's
//! heap; when it ends, the memory is free but glibc's allocator keeps most of it in its arenas
//! (measured with massif: live heap back to ~1 MB, resident memory still 14-20 MB higher and
//! growing with the next burst; docs/benchmarks.md, "Memory after a burst"). `malloc_trim(0)`
//! returns the free pages of every arena. It walks the free lists (0.03-0.7 ms here, up to
//! 9 ms during a 5,000-process burst), so it runs only after a refresh whose snapshot shrank by
//! more than a quarter from its high-water mark since the last trim, and otherwise once every
//! [`Trimmer::PERIOD`] for what scrapes freed. Other allocators, and builds for other C
//! libraries, skip the call.

use std::time::{Duration, Instant};

/// Decides after which refreshes to give free memory back.
#[derive(Debug)]
pub struct Trimmer {
    high_water: usize,
    last: Instant,
}

impl Trimmer {
    /// The longest time between two trims.
    pub const PERIOD: Duration = Duration::from_secs(60);

    pub fn new(now: Instant) -> Self {
        Self {
            high_water: 0,
            last: now,
        }
    }

    /// Whether to trim after a refresh that published a snapshot of `size` entries (workloads
    /// plus processes) at `now`; if so, the high-water mark restarts from `size`.
    pub fn due(&mut self, size: usize, now: Instant) -> bool {
        self.high_water = self.high_water.max(size);
        let shrank = size.saturating_mul(4) < self.high_water.saturating_mul(3);
        if shrank || now.saturating_duration_since(self.last) >= Self::PERIOD {
            self.high_water = size;
            self.last = now;
            true
        } else {
            false
        }
    }
}

/// Returns free heap pages to the operating system (glibc's `malloc_trim(0)`); a no-op where
/// the C library has no such call.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists; it takes the
    // arena locks itself and has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_the_snapshot_shrinks_by_a_quarter_and_once_a_period() {
        let t0 = Instant::now();
        let mut trimmer = Trimmer::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Growing and steady: nothing to give back.
        assert!(!trimmer.due(100, at(1)));
        assert!(!trimmer.due(5_000, at(2)));
        assert!(!trimmer.due(4_000, at(3)));
        // The burst ends: 3,700 is less than 3/4 of the 5,000 high-water mark.
        assert!(trimmer.due(3_700, at(4)));
        // The mark restarted from 3,700: 2,800 is not below 2,775.
        assert!(!trimmer.due(2_800, at(5)));
        assert!(trimmer.due(100, at(6)));
        // Steady afterwards: once per period.
        assert!(!trimmer.due(100, at(30)));
        assert!(trimmer.due(100, at(66)));
        assert!(!trimmer.due(100, at(67)));
    }

    #[test]
    fn releasing_free_memory_is_safe_to_call_any_time() {
        let big: Vec<u8> = vec![1; 8 << 20];
        drop(big);
        release_free_memory();
        release_free_memory();
    }
}
