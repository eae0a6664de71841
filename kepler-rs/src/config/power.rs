//! The settings of the energy sources besides real RAPL: the fallback estimator
//! (`estimator.*`) and fake RAPL (`fakeRapl.*`).

use std::path::PathBuf;
use std::time::Duration;

use super::parser::Parser;
use crate::power::fake::{FakeRaplModel, FakeZoneModel};
use crate::power::units::{Microjoules, Watts};
use crate::power::ZoneKind;

/// The fallback power estimator (see `power::estimator`).
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorConfig {
    pub enabled: bool,
    /// (idle, max) per socket when configured; otherwise chosen from the CPU model.
    pub watts: Option<(Watts, Watts)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeRaplConfig {
    pub dir: Option<PathBuf>,
    pub model: FakeRaplModel,
}

/// The `estimator.*` settings.
pub(super) fn estimator_config(p: &mut Parser<'_>) -> EstimatorConfig {
    let enabled = p.bool("estimator.enabled");
    let idle_raw = p.raw("estimator.idleWatts").trim().is_empty();
    let max_raw = p.raw("estimator.maxWatts").trim().is_empty();
    let watts = match (idle_raw, max_raw) {
        (true, true) => None,
        (false, false) => {
            let (idle, max) = (
                p.watts("estimator.idleWatts"),
                p.watts("estimator.maxWatts"),
            );
            if max.0 < idle.0 {
                p.fail(
                    "estimator.maxWatts",
                    format!(
                        "must be at least estimator.idleWatts ({}), got {}",
                        idle.0, max.0
                    ),
                );
            }
            Some((idle, max))
        }
        (true, false) => {
            p.fail(
                "estimator.idleWatts",
                "must be set together with estimator.maxWatts".to_string(),
            );
            None
        }
        (false, true) => {
            p.fail(
                "estimator.maxWatts",
                "must be set together with estimator.idleWatts".to_string(),
            );
            None
        }
    };
    EstimatorConfig { enabled, watts }
}

/// The `fakeRapl.*` settings.
pub(super) fn fake_rapl_config(p: &mut Parser<'_>) -> FakeRaplConfig {
    let dir = p.optional_path("fakeRapl.dir");
    let sockets = p.parse::<u32>("fakeRapl.sockets", "a whole number");
    if sockets == 0 {
        p.fail("fakeRapl.sockets", "must be > 0, got 0".to_string());
    }
    let zone = |p: &mut Parser<'_>, kind, idle, dynamic| FakeZoneModel {
        kind,
        idle: p.watts(idle),
        dynamic: p.watts(dynamic),
    };
    let zones = vec![
        zone(
            p,
            ZoneKind::Package,
            "fakeRapl.packageIdleWatts",
            "fakeRapl.packageDynamicWatts",
        ),
        zone(
            p,
            ZoneKind::Core,
            "fakeRapl.coreIdleWatts",
            "fakeRapl.coreDynamicWatts",
        ),
        zone(
            p,
            ZoneKind::Dram,
            "fakeRapl.dramIdleWatts",
            "fakeRapl.dramDynamicWatts",
        ),
    ];
    let max_range = p.parse::<u64>("fakeRapl.maxEnergyRangeUj", "a whole number of microjoules");
    if max_range == 0 {
        p.fail(
            "fakeRapl.maxEnergyRangeUj",
            "must be > 0, got 0".to_string(),
        );
    }
    let tick = p.duration("fakeRapl.tick", Duration::from_millis(1));
    FakeRaplConfig {
        dir,
        model: FakeRaplModel {
            sockets,
            zones,
            max_energy_range: Microjoules(max_range),
            tick,
        },
    }
}
