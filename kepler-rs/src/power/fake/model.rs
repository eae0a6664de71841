//! The fake node's power model: per zone kind and socket `P = idle + dynamic * u` with `u` the
//! host's CPU utilisation ([`FakeRaplModel::power_at`]), and its validation, which reports
//! every problem at once ([`ModelError`]).

use std::time::Duration;

use thiserror::Error;

use crate::power::units::{Microjoules, Watts};
use crate::power::ZoneKind;

/// Most sockets a fake model may have (keeps the tree small).
pub const MAX_SOCKETS: u32 = 256;

/// One zone kind of the model; instantiated once per socket (psys: once per node).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeZoneModel {
    pub kind: ZoneKind,
    /// Power at zero utilisation.
    pub idle: Watts,
    /// Extra power at full utilisation.
    pub dynamic: Watts,
}

/// The fake node: `P(zone) = idle + dynamic * u` for every zone on every socket.
///
/// Readers must sample more often than `max_energy_range / P` or a whole wrap goes unseen,
/// exactly as with real RAPL.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRaplModel {
    pub sockets: u32,
    pub zones: Vec<FakeZoneModel>,
    /// The counter runs `0..=max_energy_range` and then restarts at 0.
    pub max_energy_range: Microjoules,
    /// How often the background thread advances the counters.
    pub tick: Duration,
}

impl Default for FakeRaplModel {
    /// One socket; package 10 W + 40 W·u, core 2 W + 30 W·u, dram 2 W + 3 W·u; a 1 kJ range (so
    /// wraps happen within minutes); a 100 ms tick.
    fn default() -> Self {
        let zone = |kind, idle, dynamic| FakeZoneModel {
            kind,
            idle: Watts(idle),
            dynamic: Watts(dynamic),
        };
        FakeRaplModel {
            sockets: 1,
            zones: vec![
                zone(ZoneKind::Package, 10.0, 40.0),
                zone(ZoneKind::Core, 2.0, 30.0),
                zone(ZoneKind::Dram, 2.0, 3.0),
            ],
            max_energy_range: Microjoules(1_000_000_000),
            tick: Duration::from_millis(100),
        }
    }
}

/// Every problem found in a model, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid fake RAPL model: {}", problems.join("; "))]
pub struct ModelError {
    pub problems: Vec<String>,
}

impl FakeRaplModel {
    /// The ground-truth power of `zone` at CPU utilisation `utilisation` (clamped to 0..=1;
    /// NaN counts as 0).
    pub fn power_at(&self, zone: &FakeZoneModel, utilisation: f64) -> Watts {
        let u = if utilisation.is_finite() {
            utilisation.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Watts(zone.idle.0 + zone.dynamic.0 * u)
    }

    /// Checks the model and reports every problem at once.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        if self.sockets == 0 || self.sockets > MAX_SOCKETS {
            problems.push(format!(
                "sockets: must be 1..={MAX_SOCKETS}, got {}",
                self.sockets
            ));
        }
        if self.zones.is_empty() {
            problems.push("zones: must not be empty".to_string());
        }
        for (i, z) in self.zones.iter().enumerate() {
            for (field, w) in [("idle", z.idle), ("dynamic", z.dynamic)] {
                if !(w.0.is_finite() && w.0 >= 0.0) {
                    problems.push(format!(
                        "zones[{i}] ({}).{field}: must be finite and >= 0 W, got {}",
                        z.kind, w.0
                    ));
                }
            }
            if self.zones[..i].iter().any(|o| o.kind == z.kind) {
                problems.push(format!("zones[{i}] ({}): duplicate zone kind", z.kind));
            }
        }
        let find = |kind| self.zones.iter().find(|z| z.kind == kind);
        let package = find(ZoneKind::Package);
        for z in &self.zones {
            if matches!(z.kind, ZoneKind::Core | ZoneKind::Uncore | ZoneKind::Dram)
                && package.is_none()
            {
                problems.push(format!(
                    "zones: {} is a sub-zone of package, but there is no package zone",
                    z.kind
                ));
            }
        }
        if let Some(pkg) = package {
            // Core and uncore are parts of the package: their sum may not exceed it, at idle or
            // at full load (the model is linear, so that covers every utilisation).
            let parts: Vec<_> = [ZoneKind::Core, ZoneKind::Uncore]
                .into_iter()
                .filter_map(find)
                .collect();
            for u in [0.0, 1.0] {
                let sum: f64 = parts.iter().map(|z| self.power_at(z, u).0).sum();
                let limit = self.power_at(pkg, u).0;
                if sum > limit {
                    problems.push(format!(
                        "zones: core + uncore ({sum} W) above package ({limit} W) at utilisation {u}"
                    ));
                }
            }
        }
        if self.max_energy_range.0 == 0 {
            problems.push("max_energy_range: must be > 0 uJ".to_string());
        }
        if self.tick.is_zero() {
            problems.push("tick: must be > 0".to_string());
        }
        if self.max_energy_range.0 > 0 && !self.tick.is_zero() {
            for z in &self.zones {
                let per_tick = self.power_at(z, 1.0).for_duration(self.tick);
                if per_tick >= self.max_energy_range {
                    problems.push(format!(
                        "max_energy_range: {} uJ is used up within one tick by {} ({} uJ)",
                        self.max_energy_range.0, z.kind, per_tick.0
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError { problems })
        }
    }
}
