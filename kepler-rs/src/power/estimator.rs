//! A power meter for machines with no meter: energy estimated from CPU utilisation.
//!
//! Model, per socket: `P = P_idle + (P_max − P_idle) · u`, where `u` is the host's CPU
//! utilisation from `/proc/stat` since the previous reading, and the interval length is derived
//! from the same `/proc/stat` counters (total jiffies / logical CPUs / tick rate), so the
//! estimate needs no clock of its own. `P_idle` and `P_max` come from configuration, else from a
//! small table keyed by CPU model (TDP from the vendor's specification as `P_max`; idle taken as
//! 30 % of TDP, a rule of thumb), else from per-logical-CPU coefficients for unknown or virtual
//! machines (0.74 W idle and 3.5 W at full load per vCPU, the average AWS coefficients published
//! by the Cloud Carbon Footprint project). Every series from this meter carries
//! `source="estimator"`: it is an estimate, not a measurement.

use std::path::{Path, PathBuf};

use super::units::{Microjoules, Watts};
use super::{PowerMeter, ReadError, Zone, ZoneId, ZoneKind, ZoneReading};
use crate::host::{self, CpuTimes};

/// The `source` label of estimated energy.
pub const SOURCE: &str = "estimator";

/// Per-vCPU coefficients for unknown CPUs (Cloud Carbon Footprint, AWS average).
const VCPU_IDLE_WATTS: f64 = 0.74;
const VCPU_MAX_WATTS: f64 = 3.5;

/// Known CPU models: a substring of `/proc/cpuinfo`'s model name and the TDP per socket in
/// watts, from the vendor's specification.
const CPU_TDP: &[(&str, f64)] = &[
    ("EPYC 9654", 360.0),
    ("EPYC 7763", 280.0),
    ("EPYC 7R13", 280.0),
    ("EPYC 7B13", 280.0),
    ("Xeon(R) Platinum 8488C", 350.0),
    ("Xeon(R) Platinum 8380", 270.0),
    ("Xeon(R) Platinum 8375C", 300.0),
    ("Xeon(R) Platinum 8259CL", 210.0),
    ("Xeon(R) Gold 6248", 150.0),
    ("Xeon(R) Gold 6148", 150.0),
    ("Xeon(R) CPU E5-2686 v4", 145.0),
];

/// Idle power as a fraction of TDP for table entries.
const IDLE_FRACTION_OF_TDP: f64 = 0.3;

/// The model's parameters and where they came from (shown in the start-up line).
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorModel {
    pub sockets: u32,
    /// Per socket.
    pub idle: Watts,
    /// Per socket, at 100 % utilisation.
    pub max: Watts,
    pub origin: String,
}

impl EstimatorModel {
    /// Chooses the parameters for this host: `configured` (idle, max per socket) when given,
    /// else the CPU table, else the per-vCPU coefficients.
    pub fn for_host(procfs: &Path, configured: Option<(Watts, Watts)>) -> Self {
        let topology = host::cpu_topology(procfs);
        let model_name = host::cpu_model(procfs).unwrap_or_default();
        if let Some((idle, max)) = configured {
            return Self {
                sockets: topology.sockets,
                idle,
                max,
                origin: "configuration".to_string(),
            };
        }
        if let Some((key, tdp)) = CPU_TDP.iter().find(|(key, _)| model_name.contains(key)) {
            return Self {
                sockets: topology.sockets,
                idle: Watts(tdp * IDLE_FRACTION_OF_TDP),
                max: Watts(*tdp),
                origin: format!("built-in table: {key}, TDP {tdp} W per socket"),
            };
        }
        let vcpus = f64::from(topology.logical);
        Self {
            sockets: 1,
            idle: Watts(VCPU_IDLE_WATTS * vcpus),
            max: Watts(VCPU_MAX_WATTS * vcpus),
            origin: format!(
                "generic coefficients for {} logical CPUs ({VCPU_IDLE_WATTS} W idle, {VCPU_MAX_WATTS} W max each; CPU model {:?} not in the table)",
                topology.logical,
                if model_name.is_empty() { "unknown" } else { model_name.as_str() }
            ),
        }
    }

    /// Power of one socket at utilisation `u` (clamped to 0..=1).
    pub fn power_at(&self, utilisation: f64) -> Watts {
        let u = if utilisation.is_finite() {
            utilisation.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Watts(self.idle.0 + (self.max.0 - self.idle.0).max(0.0) * u)
    }
}

/// Estimated `package-N` counters, advanced on every read.
#[derive(Debug)]
pub struct EstimatorMeter {
    model: EstimatorModel,
    procfs: PathBuf,
    zones: Vec<Zone>,
    totals: Vec<Microjoules>,
    last: Option<CpuTimes>,
    /// Logical CPUs × ticks per second: jiffies of `/proc/stat`'s total per second of wall time.
    jiffies_per_second: f64,
}

impl EstimatorMeter {
    pub fn new(model: EstimatorModel, procfs: PathBuf) -> Self {
        let logical = host::cpu_topology(&procfs).logical;
        let zones = (0..model.sockets)
            .map(|socket| Zone {
                id: ZoneId {
                    kind: ZoneKind::Package,
                    socket,
                },
                path: procfs.join("stat"),
                max_energy: Microjoules(u64::MAX),
            })
            .collect::<Vec<_>>();
        Self {
            totals: vec![Microjoules::ZERO; zones.len()],
            jiffies_per_second: f64::from(logical) * host::USER_HZ as f64,
            model,
            procfs,
            zones,
            last: None,
        }
    }

    pub fn model(&self) -> &EstimatorModel {
        &self.model
    }
}

impl PowerMeter for EstimatorMeter {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn zones(&self) -> &[Zone] {
        &self.zones
    }

    fn read(&mut self) -> Vec<ZoneReading> {
        let now = match host::read_cpu_times(&self.procfs) {
            Ok(now) => now,
            Err(e) => {
                let err = ReadError::Io {
                    path: self.procfs.join("stat"),
                    message: e.to_string(),
                };
                return self
                    .zones
                    .iter()
                    .map(|z| ZoneReading {
                        id: z.id,
                        energy: Err(err.clone()),
                    })
                    .collect();
            }
        };
        if let Some(before) = self.last {
            let seconds = now.total.saturating_sub(before.total) as f64 / self.jiffies_per_second;
            let power = self.model.power_at(now.utilisation_since(&before));
            let energy = power.for_duration(std::time::Duration::from_secs_f64(seconds.max(0.0)));
            for total in &mut self.totals {
                *total += energy;
            }
        }
        self.last = Some(now);
        self.zones
            .iter()
            .zip(&self.totals)
            .map(|(z, total)| ZoneReading {
                id: z.id,
                energy: Ok(*total),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn host(cpuinfo: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cpuinfo"), cpuinfo).unwrap();
        set_stat(dir.path(), 0, 0);
        dir
    }

    fn set_stat(procfs: &Path, busy: u64, idle: u64) {
        fs::write(
            procfs.join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        )
        .unwrap();
    }

    const EPYC_TWO_SOCKETS: &str = "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 1\n";

    #[test]
    fn model_from_table_configuration_and_generic() {
        let known = host(EPYC_TWO_SOCKETS);
        let m = EstimatorModel::for_host(known.path(), None);
        assert_eq!((m.sockets, m.max), (2, Watts(280.0)));
        assert!((m.idle.0 - 84.0).abs() < 1e-9);
        assert!(m.origin.contains("EPYC 7763"), "{}", m.origin);

        let configured = EstimatorModel::for_host(known.path(), Some((Watts(50.0), Watts(200.0))));
        assert_eq!(
            (configured.idle, configured.max, configured.origin.as_str()),
            (Watts(50.0), Watts(200.0), "configuration")
        );

        let vm = host("processor : 0\nmodel name : QEMU Virtual CPU\nprocessor : 1\nmodel name : QEMU Virtual CPU\n");
        let g = EstimatorModel::for_host(vm.path(), None);
        assert_eq!(g.sockets, 1);
        assert!(
            (g.idle.0 - 1.48).abs() < 1e-9 && (g.max.0 - 7.0).abs() < 1e-9,
            "{g:?}"
        );
        assert!(g.origin.contains("QEMU Virtual CPU"), "{}", g.origin);
    }

    #[test]
    fn energy_follows_the_model_over_proc_stat_time() {
        let dir = host(EPYC_TWO_SOCKETS);
        let model = EstimatorModel::for_host(dir.path(), Some((Watts(20.0), Watts(120.0))));
        let mut meter = EstimatorMeter::new(model, dir.path().to_path_buf());
        assert_eq!(meter.zones().len(), 2);
        assert_eq!(meter.source(), "estimator");
        let first = meter.read();
        assert!(first.iter().all(|r| r.energy == Ok(Microjoules::ZERO)));
        // Two CPUs for 3 s at the tick rate, 25 % busy.
        let tps = host::USER_HZ;
        let total = 2 * 3 * tps;
        set_stat(dir.path(), total / 4, total - total / 4);
        let second = meter.read();
        // 20 + 100 * 0.25 = 45 W per socket for 3 s = 135 J.
        for r in second {
            assert_eq!(r.energy, Ok(Microjoules(135_000_000)), "{:?}", r.id);
        }
    }

    #[test]
    fn unreadable_stat_is_an_error_reading_not_a_panic() {
        let dir = host(EPYC_TWO_SOCKETS);
        let mut meter = EstimatorMeter::new(
            EstimatorModel::for_host(dir.path(), None),
            dir.path().to_path_buf(),
        );
        fs::write(dir.path().join("stat"), "garbage").unwrap();
        assert!(meter.read().iter().all(|r| r.energy.is_err()));
    }

    #[test]
    fn power_is_clamped() {
        let m = EstimatorModel {
            sockets: 1,
            idle: Watts(10.0),
            max: Watts(30.0),
            origin: String::new(),
        };
        assert_eq!(m.power_at(2.0), Watts(30.0));
        assert_eq!(m.power_at(f64::NAN), Watts(10.0));
        assert_eq!(m.power_at(0.5), Watts(20.0));
    }
}
