//! NVIDIA GPUs through NVML: which GPUs this node has and what each one's meter says now.
//!
//! NVML (`libnvidia-ml.so.1`, installed with the NVIDIA driver) is loaded at run time through
//! `nvml-wrapper`, so the exporter builds and runs on nodes without a GPU or driver: there
//! [`NvmlGpus::open`] fails and the exporter measures the CPU side only. Each GPU is read from
//! the driver's total-energy counter (millijoules since the driver loaded) where it has one,
//! else from its power draw (milliwatts), which the monitor integrates over the interval. This
//! module only reads; turning readings into energy, idle and active is the monitor's work.

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

    /// Reads every GPU's meter now: its energy counter, else its power draw.
    pub fn read(&self) -> Vec<GpuReading> {
        self.devices
            .iter()
            .map(|gpu| {
                let device = match self.nvml.device_by_index(gpu.index) {
                    Ok(device) => device,
                    Err(e) => {
                        return GpuReading {
                            index: gpu.index,
                            measure: Err(GpuError::new("nvmlDeviceGetHandleByIndex", &e)),
                            utilisation: None,
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
                GpuReading {
                    index: gpu.index,
                    measure,
                    utilisation,
                }
            })
            .collect()
    }
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
