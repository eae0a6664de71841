//! The production RAPL reader: discovers the Intel powercap zones under `<sysfs>/class/powercap`
//! once at start-up and reads their raw `energy_uj` counters on demand.
//!
//! It owns zone discovery (which directories are RAPL zones, which socket each belongs to,
//! de-duplication of the MMIO interface against MSR `intel-rapl:` zones) and the mapping of every
//! way a sysfs read can fail onto [`ReadError`]. It does not compute deltas: that is
//! [`super::counter`]'s job. The same reader reads the fake-RAPL tree built by [`super::fake`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::units::Microjoules;
use super::{PowerMeter, ReadError, Zone, ZoneId, ZoneKind, ZoneReading};

/// The `source` label of a meter reading real hardware.
pub const SOURCE: &str = "rapl-sysfs";

/// Why no RAPL meter could be set up. Absent hardware is a normal outcome on VMs.
#[derive(Debug, Error)]
pub enum DiscoverError {
    #[error("{path}: not found: RAPL is absent on this machine (usual on VMs, cloud instances and kind nodes); use --fake-rapl to run with a simulated meter")]
    NoPowercap { path: PathBuf },
    #[error("{path}: no RAPL zones (intel-rapl:*) found: RAPL is absent or unsupported here; use --fake-rapl to run with a simulated meter")]
    NoZones { path: PathBuf },
    #[error("{path}: permission denied; energy_uj is readable by root only since CVE-2020-8694: run as root, or grant read access (e.g. a udev rule or `chmod o+r`) to the powercap energy_uj files")]
    PermissionDenied { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads RAPL zones through the powercap sysfs interface. The zone list is fixed at discovery;
/// a zone whose file disappears reads as [`ReadError::Vanished`] until it comes back.
#[derive(Debug)]
pub struct RaplMeter {
    source: &'static str,
    zones: Vec<Zone>,
}

/// The two powercap control types that expose RAPL; MSR zones win over MMIO duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Interface {
    Msr,
    Mmio,
}

impl Interface {
    fn prefix(self) -> &'static str {
        match self {
            Interface::Msr => "intel-rapl:",
            Interface::Mmio => "intel-rapl-mmio:",
        }
    }
}

/// A zone directory name split into its interface and indices: `intel-rapl:1:0` -> (Msr, [1, 0]).
fn parse_dir_name(name: &str) -> Option<(Interface, Vec<u32>)> {
    let (iface, rest) = [Interface::Msr, Interface::Mmio]
        .into_iter()
        .find_map(|i| name.strip_prefix(i.prefix()).map(|rest| (i, rest)))?;
    let indices: Option<Vec<u32>> = rest.split(':').map(|p| p.parse().ok()).collect();
    let indices = indices?;
    (1..=2).contains(&indices.len()).then_some((iface, indices))
}

#[derive(Debug)]
struct Candidate {
    iface: Interface,
    indices: Vec<u32>,
    path: PathBuf,
    kind: ZoneKind,
    package: Option<u32>,
}

impl RaplMeter {
    /// Discovers the zones under `<sysfs>/class/powercap`. `source` is the label this meter
    /// reports ([`SOURCE`] for hardware, [`super::fake::SOURCE`] for the fake tree).
    pub fn discover(sysfs: &Path, source: &'static str) -> Result<RaplMeter, DiscoverError> {
        Self::discover_powercap(&sysfs.join("class").join("powercap"), source)
    }

    /// Discovers the zones in a `/sys/class/powercap`-shaped directory.
    pub fn discover_powercap(
        powercap: &Path,
        source: &'static str,
    ) -> Result<RaplMeter, DiscoverError> {
        let entries = match fs::read_dir(powercap) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DiscoverError::NoPowercap {
                    path: powercap.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(DiscoverError::Io {
                    path: powercap.to_path_buf(),
                    source,
                })
            }
        };
        let mut candidates = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DiscoverError::Io {
                path: powercap.to_path_buf(),
                source,
            })?;
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let Some((iface, indices)) = parse_dir_name(&dir_name) else {
                continue;
            };
            // `entry.path()` may be a symlink into /sys/devices; reading through it follows it.
            let path = entry.path();
            let name_path = path.join("name");
            let name = match fs::read_to_string(&name_path) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(path = %name_path.display(), error = %e, "skipping RAPL zone without a readable name");
                    continue;
                }
            };
            let Some((kind, package)) = ZoneKind::from_zone_name(&name) else {
                tracing::debug!(path = %path.display(), name = name.trim(), "skipping unknown RAPL zone");
                continue;
            };
            candidates.push(Candidate {
                iface,
                indices,
                path,
                kind,
                package,
            });
        }
        candidates.sort_by(|a, b| (a.iface, &a.indices).cmp(&(b.iface, &b.indices)));

        let zones = assign_sockets(&candidates, powercap);
        if zones.is_empty() {
            return Err(DiscoverError::NoZones {
                path: powercap.to_path_buf(),
            });
        }
        // Try one read of each counter now, so a permission problem stops start-up with one
        // clear message instead of failing every interval.
        for zone in &zones {
            match read_energy(&zone.path) {
                Ok(_) => {}
                Err(ReadError::PermissionDenied { path }) => {
                    return Err(DiscoverError::PermissionDenied { path })
                }
                Err(e) => {
                    tracing::warn!(zone = %zone.id, error = %e, "RAPL zone not readable at start-up; keeping it")
                }
            }
        }
        for zone in &zones {
            tracing::debug!(zone = %zone.id, path = %zone.path.display(), max_energy_uj = zone.max_energy.0, "RAPL zone");
        }
        Ok(RaplMeter { source, zones })
    }
}

/// Turns the sorted candidates into zones: sockets assigned, duplicates dropped, sorted by id.
fn assign_sockets(candidates: &[Candidate], powercap: &Path) -> Vec<Zone> {
    // Package number of each top-level zone, to give sub-zones the socket of their parent.
    let parents: BTreeMap<(Interface, u32), u32> = candidates
        .iter()
        .filter_map(|c| match (c.indices.as_slice(), c.package) {
            ([top], Some(pkg)) => Some(((c.iface, *top), pkg)),
            _ => None,
        })
        .collect();
    let mut top_level_ordinals: BTreeMap<(Interface, ZoneKind), u32> = BTreeMap::new();
    let mut by_id: BTreeMap<ZoneId, Zone> = BTreeMap::new();
    for c in candidates {
        let socket = match (c.package, c.indices.as_slice()) {
            (Some(pkg), _) => pkg,
            (None, [_]) => {
                // A top-level non-package zone (psys): number them in directory order.
                let n = top_level_ordinals.entry((c.iface, c.kind)).or_insert(0);
                let socket = *n;
                *n += 1;
                socket
            }
            (None, [top, ..]) => parents
                .get(&(c.iface, *top))
                .copied()
                .or_else(|| parent_package(powercap, c.iface, *top))
                .unwrap_or(*top),
            (None, []) => continue,
        };
        let id = ZoneId {
            kind: c.kind,
            socket,
        };
        if let Some(existing) = by_id.get(&id) {
            // Candidates are sorted MSR first, so the kept one is the `intel-rapl:` zone.
            tracing::debug!(zone = %id, kept = %existing.path.display(), dropped = %c.path.display(), "duplicate RAPL zone");
            continue;
        }
        let max_path = c.path.join("max_energy_range_uj");
        let max_energy = match fs::read_to_string(&max_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(max) => Microjoules(max),
            None => {
                tracing::warn!(path = %max_path.display(), "unreadable max_energy_range_uj: counter wraps of this zone cannot be accounted");
                Microjoules::ZERO
            }
        };
        by_id.insert(
            id,
            Zone {
                id,
                path: c.path.clone(),
                max_energy,
            },
        );
    }
    by_id.into_values().collect()
}

/// The package number named by a parent zone that was not itself kept (e.g. unreadable).
fn parent_package(powercap: &Path, iface: Interface, top: u32) -> Option<u32> {
    let name = fs::read_to_string(
        powercap
            .join(format!("{}{top}", iface.prefix()))
            .join("name"),
    );
    match ZoneKind::from_zone_name(&name.ok()?)? {
        (ZoneKind::Package, Some(pkg)) => Some(pkg),
        _ => None,
    }
}

/// Maps an I/O error on `path` to the reading error kinds.
pub(crate) fn classify_io_error(path: &Path, err: &io::Error) -> ReadError {
    let path = path.to_path_buf();
    match err.kind() {
        io::ErrorKind::NotFound => ReadError::Vanished { path },
        // std maps both EACCES and EPERM to PermissionDenied.
        io::ErrorKind::PermissionDenied => ReadError::PermissionDenied { path },
        _ => ReadError::Io {
            path,
            message: err.to_string(),
        },
    }
}

/// Parses the content of an `energy_uj` file.
fn parse_energy(path: &Path, bytes: &[u8]) -> Result<Microjoules, ReadError> {
    let garbage = || {
        let mut content = String::from_utf8_lossy(bytes).into_owned();
        if content.len() > 64 {
            let mut end = 64;
            while !content.is_char_boundary(end) {
                end -= 1;
            }
            content.truncate(end);
            content.push('…');
        }
        ReadError::Garbage {
            path: path.to_path_buf(),
            content,
        }
    };
    let text = std::str::from_utf8(bytes).map_err(|_| garbage())?;
    text.trim()
        .parse::<u64>()
        .map(Microjoules)
        .map_err(|_| garbage())
}

/// Reads a zone directory's `energy_uj` counter.
fn read_energy(zone_dir: &Path) -> Result<Microjoules, ReadError> {
    let path = zone_dir.join("energy_uj");
    match fs::read(&path) {
        Ok(bytes) => parse_energy(&path, &bytes),
        Err(e) => Err(classify_io_error(&path, &e)),
    }
}

impl PowerMeter for RaplMeter {
    fn source(&self) -> &'static str {
        self.source
    }

    fn zones(&self) -> &[Zone] {
        &self.zones
    }

    fn read(&mut self) -> Vec<ZoneReading> {
        self.zones
            .iter()
            .map(|zone| ZoneReading {
                id: zone.id,
                energy: read_energy(&zone.path),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(host: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/powercap")).join(host)
    }

    fn id(kind: ZoneKind, socket: u32) -> ZoneId {
        ZoneId { kind, socket }
    }

    fn ids(meter: &RaplMeter) -> Vec<ZoneId> {
        meter.zones().iter().map(|z| z.id).collect()
    }

    #[test]
    fn two_socket_server_fixture() {
        let dir = fixture("intel-2socket-server");
        let mut meter = RaplMeter::discover_powercap(&dir, SOURCE).unwrap();
        assert_eq!(meter.source(), "rapl-sysfs");
        assert_eq!(
            ids(&meter),
            vec![
                id(ZoneKind::Package, 0),
                id(ZoneKind::Package, 1),
                id(ZoneKind::Dram, 0),
                id(ZoneKind::Dram, 1),
            ]
        );
        // The MMIO duplicate of package-0 loses to the MSR zone.
        assert_eq!(meter.zones()[0].path, dir.join("intel-rapl:0"));
        assert_eq!(meter.zones()[0].max_energy, Microjoules(262_143_328_850));
        assert_eq!(meter.zones()[2].max_energy, Microjoules(65_712_999_613));
        let readings = meter.read();
        let energies: Vec<_> = readings.iter().map(|r| r.energy.clone()).collect();
        assert_eq!(
            energies,
            vec![
                Ok(Microjoules(183_742_110_543)),
                Ok(Microjoules(261_990_001_234)),
                Ok(Microjoules(40_211_874_512)),
                Ok(Microjoules(38_001_987_145)),
            ]
        );
    }

    #[test]
    fn client_fixture_with_psys() {
        let mut meter =
            RaplMeter::discover_powercap(&fixture("intel-client-psys"), SOURCE).unwrap();
        assert_eq!(
            ids(&meter),
            vec![
                id(ZoneKind::Package, 0),
                id(ZoneKind::Core, 0),
                id(ZoneKind::Uncore, 0),
                id(ZoneKind::Dram, 0),
                id(ZoneKind::Psys, 0),
            ]
        );
        let psys = meter.read().pop().unwrap();
        assert_eq!(psys.energy, Ok(Microjoules(90_311_774_520)));
    }

    /// Copies a fixture into `<root>/devices/virtual/powercap/intel-rapl/<zone>` and links
    /// `<root>/class/powercap/<zone>` to it, as the real sysfs does. Also adds the control-type
    /// entry and a foreign control type, which discovery must ignore.
    fn symlinked_sysfs(host: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let class = tmp.path().join("class/powercap");
        let devices = tmp.path().join("devices/virtual/powercap/intel-rapl");
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(&devices).unwrap();
        for entry in fs::read_dir(fixture(host)).unwrap() {
            let entry = entry.unwrap();
            let zone = entry.file_name();
            fs::create_dir(devices.join(&zone)).unwrap();
            for file in fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                fs::copy(file.path(), devices.join(&zone).join(file.file_name())).unwrap();
            }
            let target = Path::new("../../devices/virtual/powercap/intel-rapl").join(&zone);
            std::os::unix::fs::symlink(target, class.join(&zone)).unwrap();
        }
        std::os::unix::fs::symlink(
            "../../devices/virtual/powercap/intel-rapl",
            class.join("intel-rapl"),
        )
        .unwrap();
        fs::create_dir_all(class.join("dtpm:0")).unwrap();
        fs::write(class.join("dtpm:0/name"), "package-7\n").unwrap();
        tmp
    }

    #[test]
    fn symlinked_sysfs_tree() {
        let tmp = symlinked_sysfs("intel-client-psys");
        let mut meter = RaplMeter::discover(tmp.path(), SOURCE).unwrap();
        assert_eq!(meter.zones().len(), 5);
        assert_eq!(
            meter.zones()[0].path,
            tmp.path().join("class/powercap/intel-rapl:0")
        );
        assert!(meter.read().iter().all(|r| r.energy.is_ok()));
    }

    #[test]
    fn garbage_and_empty_counters() {
        let tmp = symlinked_sysfs("intel-2socket-server");
        let mut meter = RaplMeter::discover(tmp.path(), SOURCE).unwrap();
        let pkg0 = tmp.path().join("class/powercap/intel-rapl:0/energy_uj");
        for content in ["", "\n", "12 34", "-5", "18446744073709551616", "abc"] {
            fs::write(&pkg0, content).unwrap();
            let reading = meter.read().remove(0);
            assert!(
                matches!(reading.energy, Err(ReadError::Garbage { .. })),
                "{content:?}: {reading:?}"
            );
        }
        fs::write(&pkg0, [0xff, 0xfe, b'1']).unwrap();
        assert_eq!(
            meter.read()[0].energy.as_ref().unwrap_err().reason(),
            "garbage"
        );
        fs::write(&pkg0, " 42\n").unwrap();
        assert_eq!(meter.read()[0].energy, Ok(Microjoules(42)));
        // The other zones are unaffected throughout.
        assert!(meter.read()[1..].iter().all(|r| r.energy.is_ok()));
    }

    #[test]
    fn vanished_zone_returns() {
        let tmp = symlinked_sysfs("intel-2socket-server");
        let mut meter = RaplMeter::discover(tmp.path(), SOURCE).unwrap();
        let devices = tmp.path().join("devices/virtual/powercap/intel-rapl");
        fs::rename(devices.join("intel-rapl:1"), devices.join("gone")).unwrap();
        let readings = meter.read();
        assert_eq!(readings.len(), 4, "the zone list stays fixed");
        assert_eq!(readings[1].id, id(ZoneKind::Package, 1));
        assert!(matches!(
            readings[1].energy,
            Err(ReadError::Vanished { .. })
        ));
        assert!(readings[0].energy.is_ok());
        fs::rename(devices.join("gone"), devices.join("intel-rapl:1")).unwrap();
        assert_eq!(meter.read()[1].energy, Ok(Microjoules(261_990_001_234)));
    }

    #[test]
    fn missing_powercap_says_rapl_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let err = RaplMeter::discover(tmp.path(), SOURCE).unwrap_err();
        assert!(matches!(err, DiscoverError::NoPowercap { .. }));
        let msg = err.to_string();
        assert!(msg.contains("class/powercap"), "{msg}");
        assert!(
            msg.contains("RAPL is absent") && msg.contains("--fake-rapl"),
            "{msg}"
        );
    }

    #[test]
    fn empty_powercap_has_no_zones() {
        let tmp = tempfile::tempdir().unwrap();
        let class = tmp.path().join("class/powercap");
        fs::create_dir_all(class.join("dtpm")).unwrap();
        fs::create_dir_all(class.join("intel-rapl:0")).unwrap();
        fs::write(class.join("intel-rapl:0/name"), "mystery\n").unwrap();
        let err = RaplMeter::discover(tmp.path(), SOURCE).unwrap_err();
        assert!(matches!(err, DiscoverError::NoZones { .. }), "{err}");
        assert!(err.to_string().contains("--fake-rapl"));
    }

    #[test]
    fn permission_errors_are_mapped() {
        let path = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let err = classify_io_error(path, &denied);
        assert_eq!(err.reason(), "permission_denied");
        assert!(err.to_string().contains("CVE-2020-8694"), "{err}");
        assert!(err.to_string().contains("run as root"));
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(
            classify_io_error(path, &eperm).reason(),
            "permission_denied"
        );
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(
            classify_io_error(path, &eacces).reason(),
            "permission_denied"
        );
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(classify_io_error(path, &enoent).reason(), "vanished");
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(classify_io_error(path, &eio).reason(), "io");
        let msg = DiscoverError::PermissionDenied {
            path: path.to_path_buf(),
        }
        .to_string();
        assert!(
            msg.contains("CVE-2020-8694") && msg.contains("run as root"),
            "{msg}"
        );
    }

    #[test]
    fn subzone_takes_socket_from_parent_package_name() {
        // Parent directory index 0 names package-1: its dram is socket 1, not 0.
        let tmp = tempfile::tempdir().unwrap();
        let class = tmp.path().join("class/powercap");
        for (dir, name) in [
            ("intel-rapl:0", "package-1"),
            ("intel-rapl:0:0", "dram"),
            ("intel-rapl:1", "package-0"),
            ("intel-rapl:2", "psys"),
            ("intel-rapl:3", "psys"),
            ("intel-rapl:9:0", "core"),
        ] {
            fs::create_dir_all(class.join(dir)).unwrap();
            fs::write(class.join(dir).join("name"), format!("{name}\n")).unwrap();
            fs::write(class.join(dir).join("energy_uj"), "1\n").unwrap();
            fs::write(class.join(dir).join("max_energy_range_uj"), "100\n").unwrap();
        }
        let meter = RaplMeter::discover(tmp.path(), "fake-rapl").unwrap();
        assert_eq!(meter.source(), "fake-rapl");
        assert_eq!(
            ids(&meter),
            vec![
                id(ZoneKind::Package, 0),
                id(ZoneKind::Package, 1),
                id(ZoneKind::Core, 9),
                id(ZoneKind::Dram, 1),
                id(ZoneKind::Psys, 0),
                id(ZoneKind::Psys, 1),
            ]
        );
    }

    #[test]
    fn dir_names() {
        assert_eq!(
            parse_dir_name("intel-rapl:0"),
            Some((Interface::Msr, vec![0]))
        );
        assert_eq!(
            parse_dir_name("intel-rapl-mmio:1:2"),
            Some((Interface::Mmio, vec![1, 2]))
        );
        for bad in [
            "intel-rapl",
            "intel-rapl:",
            "intel-rapl:x",
            "intel-rapl:0:1:2",
            "dtpm:0",
        ] {
            assert_eq!(parse_dir_name(bad), None, "{bad}");
        }
    }
}
