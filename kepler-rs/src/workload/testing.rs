//! Test support shared by the attribution and monitor unit tests: made-up workload samples and a
//! scripted CPU-time source (the trait boundary; the real sources have their own tests).

use std::collections::VecDeque;

use super::{CpuTimeSource, ProcessUsage, WorkloadKey, WorkloadSample, WorkloadUsage};
use crate::power::units::CpuNanos;

/// A container key made of one repeated byte: `container(1)` = `0101...01`.
pub fn container(n: u8) -> WorkloadKey {
    WorkloadKey::Container(format!("{n:02x}").repeat(32))
}

/// A sample with the two pseudo containers (idle) and the given workloads' CPU nanoseconds.
pub fn sample(cpu: &[(WorkloadKey, u64)]) -> WorkloadSample {
    let mut s = WorkloadSample::default();
    for key in [WorkloadKey::System, WorkloadKey::Kernel] {
        s.workloads.insert(
            key,
            WorkloadUsage {
                identity: None,
                cpu: CpuNanos::ZERO,
                counters: Default::default(),
            },
        );
    }
    for (key, ns) in cpu {
        s.workloads.insert(
            key.clone(),
            WorkloadUsage {
                identity: None,
                cpu: CpuNanos(*ns),
                counters: Default::default(),
            },
        );
    }
    s
}

/// Like [`sample`], plus one process per workload that used all of its CPU.
pub fn sample_with_processes(cpu: &[(WorkloadKey, u64)]) -> WorkloadSample {
    let mut s = sample(cpu);
    for (i, (key, ns)) in cpu.iter().enumerate() {
        s.processes.push(ProcessUsage {
            pid: 100 + i as u32,
            comm: "busy".into(),
            workload: key.clone(),
            cpu: CpuNanos(*ns),
            counters: Default::default(),
        });
    }
    s
}

/// A CPU-time source that replays prepared samples (then empty ones).
#[derive(Debug, Default)]
pub struct Scripted(pub VecDeque<WorkloadSample>);

impl CpuTimeSource for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn sample(&mut self) -> WorkloadSample {
        self.0.pop_front().unwrap_or_default()
    }
}
