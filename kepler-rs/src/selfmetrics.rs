//! The exporter's own health counters: runtime errors by component and reason.
//!
//! Repeated errors from the host (a vanished `/proc/<pid>`, a half-written sysfs file) are
//! counted here and rendered as `kepler_exporter_errors_total{component,reason}`; the log line
//! for them is rate limited by [`SelfMetrics::record`], which says when to log. OTLP export
//! outcomes are counted by [`SelfMetrics::record_export`]
//! (`kepler_exporter_otlp_exports_total{pipeline,result}`). The kernel's own run time and run
//! count of each attached eBPF program, where it counts them (`kernel.bpf_stats_enabled=1`),
//! are kept by [`SelfMetrics::set_program_stats`]
//! (`kepler_exporter_ebpf_program_run_seconds_total{program}`, `..._runs_total`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared error counters; cheap to clone behind an `Arc`.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    errors: BTreeMap<(&'static str, &'static str), u64>,
    last_logged: BTreeMap<(&'static str, &'static str), Instant>,
    exports: BTreeMap<(&'static str, &'static str), u64>,
    programs: BTreeMap<&'static str, (Duration, u64)>,
}

/// How often one (component, reason) pair may log.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

impl SelfMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one error and returns whether it should be logged now (the first time, then at
    /// most once per [`LOG_EVERY`] for the same component and reason).
    pub fn record(&self, component: &'static str, reason: &'static str) -> bool {
        self.record_n(component, reason, 1)
    }

    /// Counts `n` errors of one kind at once.
    pub fn record_n(&self, component: &'static str, reason: &'static str, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        *inner.errors.entry((component, reason)).or_insert(0) += n;
        let now = Instant::now();
        match inner.last_logged.get(&(component, reason)) {
            Some(t) if now.duration_since(*t) < LOG_EVERY => false,
            _ => {
                inner.last_logged.insert((component, reason), now);
                true
            }
        }
    }

    /// Counts `n` OTLP export outcomes of one pipeline (`push`, `relay`): `sent`, `failed`,
    /// `dropped`.
    pub fn record_export(&self, pipeline: &'static str, result: &'static str, n: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner.exports.entry((pipeline, result)).or_insert(0) += n;
        }
    }

    /// Export counters, sorted by pipeline then result.
    pub fn exports(&self) -> Vec<(&'static str, &'static str, u64)> {
        match self.inner.lock() {
            Ok(inner) => inner
                .exports
                .iter()
                .map(|((p, r), n)| (*p, *r, *n))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Sets the kernel's run time and run count of one attached eBPF program (cumulative since
    /// the program was loaded).
    pub fn set_program_stats(&self, program: &'static str, run_time: Duration, runs: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.programs.insert(program, (run_time, runs));
        }
    }

    /// eBPF program statistics, sorted by program name.
    pub fn program_stats(&self) -> Vec<(&'static str, Duration, u64)> {
        match self.inner.lock() {
            Ok(inner) => inner
                .programs
                .iter()
                .map(|(p, (t, n))| (*p, *t, *n))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Error counters, sorted by component then reason.
    pub fn errors(&self) -> Vec<(&'static str, &'static str, u64)> {
        match self.inner.lock() {
            Ok(inner) => inner
                .errors
                .iter()
                .map(|((c, r), n)| (*c, *r, *n))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Records an error and logs it with `tracing::warn!` when the rate limit allows.
#[macro_export]
macro_rules! report_error {
    ($metrics:expr, $component:expr, $reason:expr, $($arg:tt)+) => {
        if $metrics.record($component, $reason) {
            tracing::warn!(component = $component, reason = $reason, $($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rate_limits() {
        let m = SelfMetrics::new();
        assert!(m.record("rapl", "garbage"));
        assert!(!m.record("rapl", "garbage"));
        assert!(m.record("procfs", "vanished"));
        assert!(!m.record_n("rapl", "garbage", 0));
        assert_eq!(
            m.errors(),
            vec![("procfs", "vanished", 1), ("rapl", "garbage", 2)]
        );
    }
}
