//! NVIDIA GPUs through NVML: which GPUs this node has and what each one's meter says now.
//!
//! NVML (`libnvidia-ml.so.1`, installed with the NVIDIA driver) is loaded at run time through
//! `nvml-wrapper`, so the exporter builds and runs on nodes without a GPU or driver: there
//! [`NvmlGpus::open`] fails and the exporter measures the CPU side only. Each GPU is read from
//! the driver's total-energy counter (millijoules since the driver loaded) where it has one,
//! else from its power draw (milliwatts), which the monitor integrates over the interval. Which
//! processes used a GPU comes from NVML's per-process utilisation samples since the previous
//! reading, else (no samples) from its running compute processes. This module only reads;
//! turning readings into energy, idle and active, and shares of it, is the monitor's work.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

/// The classic `source` label of GPU energy, as upstream Kepler names its NVML backend.
pub const SOURCE: &str = "NVML";
/// The modern `vendor` label.
pub const VENDOR: &str = "nvidia";

/// One GPU as found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// NVML's device index (the modern `gpu` label, the classic `package` label).
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// Whether the driver keeps a total-energy counter for it (Volta and newer); without one,
    /// its energy is integrated from power samples.
    pub has_energy_counter: bool,
}

/// What one GPU's meter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMeasure {
    /// The total-energy counter, millijoules.
    EnergyMillijoules(u64),
    /// The power draw now, milliwatts.
    PowerMilliwatts(u32),
}

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    pub index: u32,
    pub measure: Result<GpuMeasure, GpuError>,
    /// The GPU's busy fraction (0..=1) over NVML's last sample period, where NVML reports it.
    pub utilisation: Option<f64>,
    /// The processes that used the GPU since the previous reading, by pid.
    pub processes: Vec<GpuProcessUse>,
}

/// How much one process used one GPU since the previous reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcessUse {
    pub pid: u32,
    /// Sum of its SM (compute) utilisation samples, percent; 0 where NVML only listed it as a
    /// running compute process.
    pub compute: u64,
    /// Sum of its memory (frame buffer) utilisation samples, percent.
    pub memory: u64,
}

/// An NVML call that failed: which call, NVML's reason, and a short stable reason for the
/// self-metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message}")]
pub struct GpuError {
    pub call: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl GpuError {
    fn new(call: &'static str, e: &NvmlError) -> Self {
        Self {
            call,
            reason: reason(e),
            message: e.to_string(),
        }
    }
}

/// A short, stable name for an NVML error (the `reason` of `kepler_exporter_errors_total`).
fn reason(e: &NvmlError) -> &'static str {
    match e {
        NvmlError::NotSupported => "not_supported",
        NvmlError::NoPermission => "no_permission",
        NvmlError::NotFound | NvmlError::InvalidArg => "not_found",
        NvmlError::GpuLost => "gpu_lost",
        NvmlError::ResetRequired => "reset_required",
        NvmlError::Uninitialized => "uninitialized",
        NvmlError::DriverNotLoaded => "driver_not_loaded",
        NvmlError::LibraryNotFound | NvmlError::LibloadingError(_) => "library_not_found",
        NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound => "function_not_found",
        NvmlError::Timeout => "timeout",
        NvmlError::NoData => "no_data",
        NvmlError::LibRmVersionMismatch => "driver_mismatch",
        _ => "nvml_error",
    }
}

/// NVML, opened, and the GPUs it listed at start-up.
pub struct NvmlGpus {
    nvml: Nvml,
    driver_version: String,
    devices: Vec<GpuDevice>,
    /// Per GPU, the timestamp of the newest process sample read (NVML's clock, µs).
    last_sample: BTreeMap<u32, u64>,
}

impl fmt::Debug for NvmlGpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlGpus")
            .field("driver_version", &self.driver_version)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl NvmlGpus {
    /// Loads NVML from `library` (`None`: the system's `libnvidia-ml.so.1`), initialises it and
    /// lists its GPUs. Fails where there is no NVML (no NVIDIA driver) or it cannot start.
    pub fn open(library: Option<&Path>) -> Result<Self, GpuError> {
        let mut builder = Nvml::builder();
        if let Some(path) = library {
            builder.lib_path(path.as_os_str());
        } else {
            builder.lib_path(OsStr::new("libnvidia-ml.so.1"));
        }
        let nvml = builder.init().map_err(|e| GpuError::new("nvmlInit", &e))?;
        let driver_version = nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".to_string());
        let count = nvml
            .device_count()
            .map_err(|e| GpuError::new("nvmlDeviceGetCount", &e))?;
        let mut devices = Vec::new();
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(|e| GpuError::new("nvmlDeviceGetHandleByIndex", &e))?;
            let name = device.name().unwrap_or_else(|_| "unknown".to_string());
            let uuid = device.uuid().unwrap_or_default();
            let has_energy_counter = device.total_energy_consumption().is_ok();
            devices.push(GpuDevice {
                index,
                uuid,
                name,
                has_energy_counter,
            });
        }
        Ok(Self {
            nvml,
            driver_version,
            devices,
            last_sample: BTreeMap::new(),
        })
    }

    /// The NVIDIA driver's version, as NVML reports it.
    pub fn driver_version(&self) -> &str {
        &self.driver_version
    }

    /// The GPUs found at start-up, by index.
    pub fn devices(&self) -> &[GpuDevice] {
        &self.devices
    }

    /// Reads every GPU's meter now (its energy counter, else its power draw) and which
    /// processes used it since the previous reading.
    pub fn read(&mut self) -> Vec<GpuReading> {
        let nvml = &self.nvml;
        let last_sample = &mut self.last_sample;
        self.devices
            .iter()
            .map(|gpu| {
                let device = match nvml.device_by_index(gpu.index) {
                    Ok(device) => device,
                    Err(e) => {
                        return GpuReading {
                            index: gpu.index,
                            measure: Err(GpuError::new("nvmlDeviceGetHandleByIndex", &e)),
                            utilisation: None,
                            processes: Vec::new(),
                        }
                    }
                };
                let measure = if gpu.has_energy_counter {
                    device
                        .total_energy_consumption()
                        .map(GpuMeasure::EnergyMillijoules)
                        .map_err(|e| GpuError::new("nvmlDeviceGetTotalEnergyConsumption", &e))
                } else {
                    device
                        .power_usage()
                        .map(GpuMeasure::PowerMilliwatts)
                        .map_err(|e| GpuError::new("nvmlDeviceGetPowerUsage", &e))
                };
                let utilisation = device
                    .utilization_rates()
                    .ok()
                    .map(|u| f64::from(u.gpu.min(100)) / 100.0);
                let last = last_sample.entry(gpu.index).or_insert(0);
                let processes = process_use(&device, last);
                GpuReading {
                    index: gpu.index,
                    measure,
                    utilisation,
                    processes,
                }
            })
            .collect()
    }
}

/// The processes that used `device` since the sample at `last` (which it advances): NVML's
/// utilisation samples summed per pid, else its running compute processes with no
/// utilisation. Empty where NVML offers neither.
fn process_use(device: &nvml_wrapper::Device<'_>, last: &mut u64) -> Vec<GpuProcessUse> {
    let mut by_pid: BTreeMap<u32, GpuProcessUse> = BTreeMap::new();
    if let Ok(samples) = device.process_utilization_stats(*last) {
        for sample in samples.iter().filter(|s| s.timestamp > *last) {
            let entry = by_pid.entry(sample.pid).or_insert(GpuProcessUse {
                pid: sample.pid,
                compute: 0,
                memory: 0,
            });
            entry.compute += u64::from(sample.sm_util);
            entry.memory += u64::from(sample.mem_util);
        }
        if let Some(newest) = samples.iter().map(|s| s.timestamp).max() {
            *last = (*last).max(newest);
        }
    }
    if by_pid.is_empty() {
        if let Ok(running) = device.running_compute_processes() {
            for p in running {
                by_pid.entry(p.pid).or_insert(GpuProcessUse {
                    pid: p.pid,
                    compute: 0,
                    memory: 0,
                });
            }
        }
    }
    by_pid.into_values().collect()
}

/// Opens NVML as `gpu.*` asks, logging once what came of it: `None` when GPU accounting is
/// off, NVML is absent, or it has no GPU.
pub fn open_configured(enabled: bool, library: Option<&Path>) -> Option<NvmlGpus> {
    if !enabled {
        tracing::info!("gpu.enabled is false: no GPU energy");
        return None;
    }
    match NvmlGpus::open(library) {
        Ok(gpus) if gpus.devices().is_empty() => {
            tracing::info!(
                driver = gpus.driver_version(),
                "NVML found but it lists no GPU: no GPU energy"
            );
            None
        }
        Ok(gpus) => {
            for d in gpus.devices() {
                tracing::info!(
                    gpu = d.index,
                    uuid = %d.uuid,
                    name = %d.name,
                    energy_counter = d.has_energy_counter,
                    "GPU energy from {}",
                    if d.has_energy_counter {
                        "the driver's total-energy counter"
                    } else {
                        "power samples integrated over each interval"
                    }
                );
            }
            tracing::info!(
                driver = gpus.driver_version(),
                gpus = gpus.devices().len(),
                "NVML loaded: measuring NVIDIA GPU energy"
            );
            Some(gpus)
        }
        Err(e) => {
            tracing::info!(
                library = %library.map_or("libnvidia-ml.so.1".into(), |p| p.display().to_string()),
                "no NVIDIA GPU energy: NVML is not available ({e}); measuring the CPU side only"
            );
            None
        }
    }
}
