//! Power meters: where node energy comes from.
//!
//! One trait, [`PowerMeter`], with one implementation per source: the RAPL powercap reader
//! ([`rapl`]), which also reads the fake-RAPL tree ([`fake`]) so that the test mode runs the
//! production reader. The meter reports raw zone counters; [`counter`] turns them into deltas.
//! NVIDIA GPUs are read through NVML ([`gpu`]), beside the CPU meter.
//! Nothing here knows about workloads.

pub mod counter;
pub mod estimator;
pub mod fake;
pub mod gpu;
pub mod rapl;
pub mod units;

use std::fmt;
use std::path::PathBuf;

use units::Microjoules;

/// The kind of a RAPL zone, from its `name` file (`package-0` -> `Package`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneKind {
    Package,
    Core,
    Uncore,
    Dram,
    /// Whole platform (`psys`), Kepler's `platform`.
    Psys,
}

impl ZoneKind {
    /// The zone name without its socket suffix, as Kepler's modern `zone` label has it.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::Package => "package",
            ZoneKind::Core => "core",
            ZoneKind::Uncore => "uncore",
            ZoneKind::Dram => "dram",
            ZoneKind::Psys => "psys",
        }
    }

    /// Parses a powercap zone `name` (`package-1`, `dram`, `psys`, ...). Unknown names
    /// (e.g. `mmio` sub-zones of other vendors) give `None`.
    pub fn from_zone_name(name: &str) -> Option<(ZoneKind, Option<u32>)> {
        let name = name.trim();
        if let Some(rest) = name.strip_prefix("package-") {
            return rest
                .parse()
                .ok()
                .map(|socket| (ZoneKind::Package, Some(socket)));
        }
        let kind = match name {
            "core" => ZoneKind::Core,
            "uncore" => ZoneKind::Uncore,
            "dram" => ZoneKind::Dram,
            "psys" => ZoneKind::Psys,
            _ => return None,
        };
        Some((kind, None))
    }
}

impl fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one energy zone on this node: its kind and the socket (package) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId {
    pub kind: ZoneKind,
    pub socket: u32,
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind, self.socket)
    }
}

/// A zone as discovered at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub id: ZoneId,
    /// The directory the zone was read from (shown in the modern `path` label).
    pub path: PathBuf,
    /// `max_energy_range_uj`: the counter wraps after this value.
    pub max_energy: Microjoules,
}

/// One raw counter reading of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneReading {
    pub id: ZoneId,
    pub energy: Result<Microjoules, ReadError>,
}

/// Why a zone could not be read this time. The zone stays known; its next good reading
/// continues the counter (a wrap in between is still accounted through the maximum).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: permission denied; energy_uj is readable by root only since CVE-2020-8694: run as root, or grant read access (e.g. a udev rule or `chmod o+r`) to the powercap energy_uj files")]
    PermissionDenied { path: PathBuf },
    #[error("{path}: zone vanished")]
    Vanished { path: PathBuf },
    #[error("{path}: unparsable value {content:?}")]
    Garbage { path: PathBuf, content: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

impl ReadError {
    /// A short, stable reason for self-metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::PermissionDenied { .. } => "permission_denied",
            ReadError::Vanished { .. } => "vanished",
            ReadError::Garbage { .. } => "garbage",
            ReadError::Io { .. } => "io",
        }
    }
}

/// A source of node energy counters.
pub trait PowerMeter: Send + fmt::Debug {
    /// The value of the classic `source` label (`rapl-sysfs`, `fake-rapl`, ...).
    fn source(&self) -> &'static str;
    /// The zones found at start-up, in a stable order.
    fn zones(&self) -> &[Zone];
    /// Reads every zone's raw counter now.
    fn read(&mut self) -> Vec<ZoneReading>;
}
