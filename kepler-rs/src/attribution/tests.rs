//! Attribution invariants: conservation, proportionality, idle policies, process sums.

use super::*;
use crate::power::units::CpuNanos;
use crate::power::ZoneKind;
use crate::workload::testing::{container, sample};
use crate::workload::ProcessUsage;
use proptest::prelude::*;

const PKG0: ZoneId = ZoneId {
    kind: ZoneKind::Package,
    socket: 0,
};
const DRAM0: ZoneId = ZoneId {
    kind: ZoneKind::Dram,
    socket: 0,
};
const SECOND: Duration = Duration::from_secs(1);

/// A fresh attributor: a 1-minute idle window, a 1-hour half-life for the idle estimator.
fn attributor(policy: IdlePolicy) -> Attributor {
    Attributor::new(policy, Duration::from_secs(60), Duration::from_secs(3600))
}

/// An attributor whose idle estimator has learnt P = 10 W + 40 W * u on PKG0 and DRAM0.
fn warmed_up(policy: IdlePolicy) -> Attributor {
    let mut at = attributor(policy);
    let s = sample(&[(container(9), 1_000_000)]);
    for i in 0..20 {
        let u = (i % 10) as f64 / 10.0;
        let e = Watts(10.0 + 40.0 * u).for_duration(SECOND);
        at.attribute(&[(PKG0, e), (DRAM0, e)], SECOND, u, &s, false);
    }
    at
}

fn total_of(a: &Attribution, zone: ZoneId) -> u64 {
    a.workloads
        .values()
        .filter_map(|z| z.get(&zone))
        .map(|s| s.total().0)
        .sum()
}

#[test]
fn dynamic_follows_cpu_ratio() {
    let mut at = warmed_up(IdlePolicy::CpuShare);
    let s = sample(&[(container(1), 3_000_000_000), (container(2), 1_000_000_000)]);
    let a = at.attribute(&[(PKG0, Microjoules(40_000_000))], SECOND, 0.5, &s, false);
    let d1 = a.workloads[&container(1)][&PKG0].dynamic.0 as f64;
    let d2 = a.workloads[&container(2)][&PKG0].dynamic.0 as f64;
    assert!((d1 / d2 - 3.0).abs() < 1e-9, "{d1} {d2}");
    assert_eq!(total_of(&a, PKG0), 40_000_000);
}

#[test]
fn first_interval_is_all_idle_then_regression_separates() {
    let mut at = attributor(IdlePolicy::CpuShare);
    let s = sample(&[(container(1), 1_000_000_000)]);
    // First observation: the minimum power is all we know, so everything is idle.
    let a = at.attribute(&[(PKG0, Microjoules(30_000_000))], SECOND, 0.5, &s, false);
    assert_eq!(a.node[&PKG0].dynamic, Microjoules::ZERO);
    // Feed a linear model P = 10 + 40u with varied utilisation: idle converges to 10 W.
    let mut last = Attribution::default();
    for i in 0..30 {
        let u = (i % 10) as f64 / 10.0;
        let e = Watts(10.0 + 40.0 * u).for_duration(SECOND);
        last = at.attribute(&[(PKG0, e)], SECOND, u, &s, false);
    }
    assert!(
        (last.idle_power[&PKG0].0 - 10.0).abs() < 1e-6,
        "{:?}",
        last.idle_power
    );
    assert_eq!(last.node[&PKG0].idle, Microjoules(10_000_000));
}

#[test]
fn no_cpu_anywhere_goes_to_kernel() {
    let mut at = attributor(IdlePolicy::CpuShare);
    let s = sample(&[(container(1), 0)]);
    let a = at.attribute(&[(PKG0, Microjoules(5_000_000))], SECOND, 0.0, &s, false);
    assert_eq!(
        a.workloads[&WorkloadKey::Kernel][&PKG0].total(),
        Microjoules(5_000_000)
    );
}

#[test]
fn even_idle_policy_splits_per_container() {
    let mut at = attributor(IdlePolicy::Even);
    let s = sample(&[(container(1), 9_000_000_000), (container(2), 0)]);
    let a = at.attribute(&[(PKG0, Microjoules(4_000_000))], SECOND, 0.1, &s, false);
    // Only one observation: all idle, split over 4 workloads (2 containers + 2 pseudo).
    for key in [
        container(1),
        container(2),
        WorkloadKey::System,
        WorkloadKey::Kernel,
    ] {
        assert_eq!(
            a.workloads[&key][&PKG0].idle,
            Microjoules(1_000_000),
            "{key}"
        );
    }
}

#[test]
fn cpu_share_idle_remembers_the_window() {
    let mut at = attributor(IdlePolicy::CpuShare);
    at.attribute(
        &[(PKG0, Microjoules(1_000_000))],
        SECOND,
        0.5,
        &sample(&[(container(1), 1_000_000_000), (container(2), 0)]),
        false,
    );
    // Container 1 is quiet now but ran recently: it still carries most of the idle share.
    let a = at.attribute(
        &[(PKG0, Microjoules(1_000_000))],
        SECOND,
        0.0,
        &sample(&[(container(1), 0), (container(2), 10_000_000)]),
        false,
    );
    let i1 = a.workloads[&container(1)][&PKG0].idle.0;
    let i2 = a.workloads[&container(2)][&PKG0].idle.0;
    assert!(i1 > 90 * i2, "{i1} {i2}");
}

#[test]
fn processes_sum_to_their_container() {
    let mut at = warmed_up(IdlePolicy::CpuShare);
    let mut s = sample(&[(container(1), 4_000_000_000)]);
    for (pid, cpu) in [(10, 3_000_000_000u64), (11, 1_000_000_000), (12, 0)] {
        s.processes.push(ProcessUsage {
            pid,
            comm: "w".into(),
            workload: container(1),
            cpu: CpuNanos(cpu),
            counters: Default::default(),
        });
    }
    s.processes.push(ProcessUsage {
        pid: 1,
        comm: "init".into(),
        workload: WorkloadKey::System,
        cpu: CpuNanos::ZERO,
        counters: Default::default(),
    });
    let a = at.attribute(
        &[(PKG0, Microjoules(30_777_777)), (DRAM0, Microjoules(333))],
        SECOND,
        0.3,
        &s,
        true,
    );
    for zone in [PKG0, DRAM0] {
        let container_total = a.workloads[&container(1)][&zone];
        let mut sum = ModeSplit::default();
        for i in 0..3 {
            sum += a.processes[i][&zone];
        }
        assert_eq!(sum, container_total);
        let system = a.workloads[&WorkloadKey::System][&zone];
        assert_eq!(
            a.processes[3][&zone], system,
            "a lone process takes all of its workload"
        );
    }
    let p10 = a.processes[0][&PKG0].dynamic.0 as f64;
    let p11 = a.processes[1][&PKG0].dynamic.0 as f64;
    assert!((p10 / p11 - 3.0).abs() < 1e-6);
}

proptest! {
    /// Conservation: for every zone and interval, the workloads (pseudo ones included) add up to
    /// the node delta exactly, and idle + dynamic = delta, whatever the inputs.
    #[test]
    fn conservation(
        intervals in proptest::collection::vec(
            (proptest::collection::vec(0u64..100_000_000, 1..4),
             proptest::collection::vec(0u64..5_000_000_000, 0..12),
             0.0f64..=1.0, 1u64..10_000),
            1..20),
        even in any::<bool>(),
    ) {
        let policy = if even { IdlePolicy::Even } else { IdlePolicy::CpuShare };
        let mut at = attributor(policy);
        for (zone_deltas, cpus, util, ms) in intervals {
            let zones: Vec<(ZoneId, Microjoules)> = zone_deltas.iter().enumerate()
                .map(|(i, d)| (ZoneId { kind: ZoneKind::Package, socket: i as u32 }, Microjoules(*d)))
                .collect();
            let cpu: Vec<(WorkloadKey, u64)> = cpus.iter().enumerate().map(|(i, c)| (container(i as u8), *c)).collect();
            let a = at.attribute(&zones, Duration::from_millis(ms), util, &sample(&cpu), false);
            for (zone, delta) in &zones {
                prop_assert_eq!(a.node[zone].total(), *delta);
                prop_assert_eq!(total_of(&a, *zone), delta.0);
            }
        }
    }
}

#[test]
fn requests_idle_policy_splits_by_request_and_gives_the_unrequested_rest_to_the_node() {
    let mut at = attributor(IdlePolicy::Requests);
    // A 2-CPU node: container 1 requests 250m, container 2 750m, container 3 nothing; 1000m of
    // the node nobody requested.
    at.set_cpu_requests(CpuRequests {
        millicores: [(container(1), 250), (container(2), 750)].into(),
        capacity_millicores: 2000,
    });
    let s = sample(&[
        (container(1), 0),
        (container(2), 9_000_000_000),
        (container(3), 1_000_000_000),
    ]);
    // One observation: all of it idle.
    let a = at.attribute(&[(PKG0, Microjoules(8_000_000))], SECOND, 0.1, &s, false);
    let idle = |key: &WorkloadKey| a.workloads[key][&PKG0].idle.0;
    assert_eq!(idle(&container(1)), 1_000_000);
    assert_eq!(idle(&container(2)), 3_000_000);
    assert_eq!(idle(&container(3)), 0);
    assert_eq!(idle(&WorkloadKey::System), 4_000_000);
    assert_eq!(idle(&WorkloadKey::Kernel), 0);
    assert_eq!(total_of(&a, PKG0), 8_000_000);
}

#[test]
fn requests_idle_policy_without_any_request_is_cpu_share() {
    let s = sample(&[(container(1), 3_000_000_000), (container(2), 1_000_000_000)]);
    let run = |policy| {
        let mut at = attributor(policy);
        at.set_cpu_requests(CpuRequests {
            millicores: BTreeMap::new(),
            capacity_millicores: 2000,
        });
        at.attribute(&[(PKG0, Microjoules(8_000_000))], SECOND, 0.1, &s, false)
    };
    assert_eq!(run(IdlePolicy::Requests), run(IdlePolicy::CpuShare));
}
