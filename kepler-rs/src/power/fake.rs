//! Fake RAPL: a powercap-shaped directory tree whose counters advance by a documented power
//! model, so that machines without RAPL (VMs, kind, CI) run the production [`RaplMeter`].
//!
//! It owns the model ([`FakeRaplModel`] in [`model`]: per zone and socket
//! `P = idle + dynamic * u`, with `u` the host's CPU utilisation), the tree ([`FakeRaplTree`]: the deterministic core tests drive
//! directly) and the background ticker ([`FakeRapl`]: reads `/proc/stat` every tick and advances
//! the tree). Energy accumulates exactly in integer microjoules; the written counter wraps at
//! `max_energy_range_uj` like hardware, and every write is atomic (temp file + rename).
//!
//! Layout, as in the real sysfs: `devices/virtual/powercap/intel-rapl/intel-rapl:S` (`package-S`)
//! with sub-zones `intel-rapl:S:K` (core, uncore, dram) inside it, psys as the top-level
//! `intel-rapl:<sockets>`, and `class/powercap/<zone>` symlinks to all of them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::rapl::{DiscoverError, RaplMeter};
use super::units::Microjoules;
use super::{ZoneId, ZoneKind};
use crate::host::{self, CpuTimes, HostError};

pub mod model;

pub use model::{FakeRaplModel, FakeZoneModel, ModelError, MAX_SOCKETS};

/// The `source` label of a meter reading the fake tree.
pub const SOURCE: &str = "fake-rapl";

/// Why the fake tree could not be built or started.
#[derive(Debug, Error)]
pub enum FakeRaplError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("fake RAPL follows the host CPU utilisation: {0}")]
    Host(#[from] HostError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FakeRaplError + '_ {
    move |source| FakeRaplError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct FakeZoneState {
    id: ZoneId,
    model: usize,
    dir: PathBuf,
    /// Unwrapped energy since creation: the ground truth.
    total: Microjoules,
    removed: bool,
}

/// The deterministic core of fake RAPL: a tree on disk plus the true (unwrapped) totals.
#[derive(Debug)]
pub struct FakeRaplTree {
    root: PathBuf,
    model: FakeRaplModel,
    zones: Vec<FakeZoneState>,
}

const ENERGY: &str = "energy_uj";
const REMOVED: &str = ".energy_uj.removed";

/// Writes `dir/name` atomically: readers see the old or the new content, never a part.
fn write_atomic(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, content)?;
    fs::rename(&tmp, dir.join(name))
}

impl FakeRaplTree {
    /// Validates `model` and builds its tree under `root` (created if needed; an earlier fake
    /// tree there is replaced). All counters start at 0.
    pub fn create(root: &Path, model: FakeRaplModel) -> Result<FakeRaplTree, FakeRaplError> {
        model.validate()?;
        let devices = root.join("devices/virtual/powercap/intel-rapl");
        let class = root.join("class/powercap");
        if devices.exists() {
            fs::remove_dir_all(&devices).map_err(io_at(&devices))?;
        }
        fs::create_dir_all(&devices).map_err(io_at(&devices))?;
        fs::create_dir_all(&class).map_err(io_at(&class))?;
        for entry in fs::read_dir(&class).map_err(io_at(&class))? {
            let entry = entry.map_err(io_at(&class))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("intel-rapl")
            {
                let path = entry.path();
                let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                let removed = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io_at(&path))?;
            }
        }

        // (zone dir relative to `devices`, model index, socket); the `name` follows from them.
        let mut layout: Vec<(PathBuf, usize, u32)> = Vec::new();
        let package = model.zones.iter().position(|z| z.kind == ZoneKind::Package);
        for socket in 0..model.sockets {
            let top = PathBuf::from(format!("intel-rapl:{socket}"));
            if let Some(p) = package {
                layout.push((top.clone(), p, socket));
            }
            let subzones = model.zones.iter().enumerate().filter(|(_, z)| {
                matches!(z.kind, ZoneKind::Core | ZoneKind::Uncore | ZoneKind::Dram)
            });
            for (k, (i, _)) in subzones.enumerate() {
                layout.push((top.join(format!("intel-rapl:{socket}:{k}")), i, socket));
            }
        }
        if let Some(p) = model.zones.iter().position(|z| z.kind == ZoneKind::Psys) {
            layout.push((PathBuf::from(format!("intel-rapl:{}", model.sockets)), p, 0));
        }

        let max = model.max_energy_range.0.to_string();
        let mut zones = Vec::with_capacity(layout.len());
        for (rel, model_index, socket) in layout {
            let kind = model.zones[model_index].kind;
            let dir = devices.join(&rel);
            fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            let name = match kind {
                ZoneKind::Package => format!("package-{socket}"),
                other => other.as_str().to_string(),
            };
            for (file, content) in [
                ("name", format!("{name}\n")),
                ("max_energy_range_uj", format!("{max}\n")),
                (ENERGY, "0\n".to_string()),
            ] {
                write_atomic(&dir, file, &content).map_err(io_at(&dir.join(file)))?;
            }
            let link = class.join(rel.file_name().unwrap_or(rel.as_os_str()));
            let target = Path::new("../../devices/virtual/powercap/intel-rapl").join(&rel);
            std::os::unix::fs::symlink(&target, &link).map_err(io_at(&link))?;
            zones.push(FakeZoneState {
                id: ZoneId { kind, socket },
                model: model_index,
                dir,
                total: Microjoules::ZERO,
                removed: false,
            });
        }
        // The control-type entry the real class/powercap also has; readers must skip it.
        let control = class.join("intel-rapl");
        std::os::unix::fs::symlink("../../devices/virtual/powercap/intel-rapl", &control)
            .map_err(io_at(&control))?;
        Ok(FakeRaplTree {
            root: root.to_path_buf(),
            model,
            zones,
        })
    }

    /// The sysfs root to give [`RaplMeter::discover`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn model(&self) -> &FakeRaplModel {
        &self.model
    }

    /// The zones in the tree, in creation order.
    pub fn zone_ids(&self) -> Vec<ZoneId> {
        self.zones.iter().map(|z| z.id).collect()
    }

    /// Opens the production reader on this tree.
    pub fn meter(&self) -> Result<RaplMeter, DiscoverError> {
        RaplMeter::discover(&self.root, SOURCE)
    }

    /// Adds `P(u) * elapsed` to every zone and writes the wrapped counters. Removed zones keep
    /// counting but are not written. All zones are advanced even if one write fails; the first
    /// error is returned.
    pub fn advance(&mut self, utilisation: f64, elapsed: Duration) -> io::Result<()> {
        let wrap = u128::from(self.model.max_energy_range.0) + 1;
        let mut result = Ok(());
        for zone in &mut self.zones {
            let Some(zone_model) = self.model.zones.get(zone.model) else {
                continue;
            };
            zone.total += self
                .model
                .power_at(zone_model, utilisation)
                .for_duration(elapsed);
            if zone.removed {
                continue;
            }
            let raw = u128::from(zone.total.0) % wrap;
            if let Err(e) = write_atomic(&zone.dir, ENERGY, &format!("{raw}\n")) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// The unwrapped energy a zone has counted since creation (zero for an unknown zone).
    pub fn true_total(&self, id: ZoneId) -> Microjoules {
        self.zones
            .iter()
            .find(|z| z.id == id)
            .map_or(Microjoules::ZERO, |z| z.total)
    }

    fn zone_mut(&mut self, id: ZoneId) -> io::Result<&mut FakeZoneState> {
        self.zones.iter_mut().find(|z| z.id == id).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no fake RAPL zone {id}"))
        })
    }

    /// Makes a zone's `energy_uj` disappear (renamed away) until [`Self::restore_zone`].
    pub fn remove_zone(&mut self, id: ZoneId) -> io::Result<()> {
        let zone = self.zone_mut(id)?;
        if !zone.removed {
            fs::rename(zone.dir.join(ENERGY), zone.dir.join(REMOVED))?;
            zone.removed = true;
        }
        Ok(())
    }

    /// Brings a removed zone back, showing the energy counted while it was away.
    pub fn restore_zone(&mut self, id: ZoneId) -> io::Result<()> {
        let wrap = u128::from(self.model.max_energy_range.0) + 1;
        let zone = self.zone_mut(id)?;
        if zone.removed {
            let raw = u128::from(zone.total.0) % wrap;
            write_atomic(&zone.dir, ENERGY, &format!("{raw}\n"))?;
            zone.removed = false;
            match fs::remove_file(zone.dir.join(REMOVED)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A fake RAPL tree advanced by a background thread that follows the host CPU utilisation.
/// Dropping it stops and joins the thread (and removes the tree if it made a temp dir).
#[derive(Debug)]
pub struct FakeRapl {
    root: PathBuf,
    tree: Arc<Mutex<FakeRaplTree>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Declared last: dropped after the thread has been joined in `Drop`.
    _tempdir: Option<tempfile::TempDir>,
}

impl FakeRapl {
    /// Builds the tree in `dir` (or a new temp dir) and starts ticking. `procfs` is where
    /// `/proc/stat` is read from; it must be readable now.
    pub fn start(
        dir: Option<&Path>,
        model: FakeRaplModel,
        procfs: PathBuf,
    ) -> Result<FakeRapl, FakeRaplError> {
        let first = host::read_cpu_times(&procfs)?;
        let (tempdir, root) = match dir {
            Some(dir) => (None, dir.to_path_buf()),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("fake-rapl-")
                    .tempdir()
                    .map_err(io_at(&std::env::temp_dir()))?;
                let root = tmp.path().to_path_buf();
                (Some(tmp), root)
            }
        };
        let tick = model.tick;
        let tree = Arc::new(Mutex::new(FakeRaplTree::create(&root, model)?));
        let (stop, stopped) = mpsc::channel();
        let thread_tree = Arc::clone(&tree);
        let thread = std::thread::Builder::new()
            .name("fake-rapl".to_string())
            .spawn(move || tick_loop(&thread_tree, &procfs, tick, &stopped, first))
            .map_err(io_at(&root))?;
        tracing::info!(root = %root.display(), tick = ?tick, "fake RAPL started");
        Ok(FakeRapl {
            root,
            tree,
            stop: Some(stop),
            thread: Some(thread),
            _tempdir: tempdir,
        })
    }

    /// The sysfs root to give [`RaplMeter::discover`] (it holds `class/powercap`).
    pub fn sysfs_root(&self) -> &Path {
        &self.root
    }

    /// Opens the production reader on this tree, labelled [`SOURCE`].
    pub fn meter(&self) -> Result<RaplMeter, DiscoverError> {
        RaplMeter::discover(&self.root, SOURCE)
    }

    /// The ground-truth unwrapped energy of a zone so far.
    pub fn true_total(&self, id: ZoneId) -> Microjoules {
        self.tree
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .true_total(id)
    }
}

impl Drop for FakeRapl {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("fake RAPL thread ended abnormally");
            }
        }
    }
}

/// Every `tick`: measure utilisation since the last tick and advance by the time really elapsed.
/// Errors are logged once per failing streak; the counters keep advancing at the last known
/// utilisation when `/proc/stat` cannot be read.
fn tick_loop(
    tree: &Mutex<FakeRaplTree>,
    procfs: &Path,
    tick: Duration,
    stop: &mpsc::Receiver<()>,
    mut prev: CpuTimes,
) {
    let mut last = Instant::now();
    let mut utilisation = 0.0;
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
        let now = Instant::now();
        let elapsed = now.duration_since(last);
        last = now;
        let mut error = None;
        match host::read_cpu_times(procfs) {
            Ok(times) => {
                utilisation = times.utilisation_since(&prev);
                prev = times;
            }
            Err(e) => error = Some(e.to_string()),
        }
        let advanced = tree
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(utilisation, elapsed);
        if let Err(e) = advanced {
            error = Some(e.to_string());
        }
        match error {
            Some(e) if !failing => {
                tracing::warn!(error = %e, "fake RAPL tick failed");
                failing = true;
            }
            Some(_) => {}
            None if failing => {
                tracing::info!("fake RAPL ticks recovered");
                failing = false;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
