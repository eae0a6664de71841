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
//!
//! A GPU whose current MIG mode is on is listed with its MIG instances (found at start-up
//! through their MIG device handles: GPU and compute instance ids, UUID, SM and slice counts).
//! MIG instances have no meter of their own (NVML answers NOT_SUPPORTED for energy, power and
//! utilisation on a MIG handle), so the GPU is still read whole; each reading lists each
//! instance's running compute processes (NVML has no per-process samples on MIG). A GPU whose
//! MIG mode is only pending (on after the next reset) is read as a whole GPU.

use std::collections::BTreeMap;
use std::ffi::{c_uint, c_void, CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::{Device, Nvml};

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
    /// Its MIG mode, where it supports MIG.
    pub mig_mode: Option<MigModeState>,
    /// Its MIG instances where its current MIG mode is on (else empty), by MIG device index.
    pub mig: Vec<MigInstance>,
}

/// A GPU's MIG mode: now, and after its next reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigModeState {
    pub current: bool,
    pub pending: bool,
}

/// One MIG instance (a MIG device: one compute instance of one GPU instance) of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigInstance {
    /// Its index among its GPU's MIG device handles.
    pub index: u32,
    pub gpu_instance: u32,
    pub compute_instance: u32,
    /// Its MIG UUID (`MIG-...`).
    pub uuid: String,
    /// NVML's name for it (e.g. `NVIDIA A100-SXM4-40GB MIG 3g.20gb`).
    pub name: String,
    /// Its streaming multiprocessors (0 where NVML did not say).
    pub multiprocessors: u32,
    /// Its GPU instance's slices of the GPU (0 where NVML did not say).
    pub gpu_instance_slices: u32,
    /// Its compute instance's slices (0 where NVML did not say).
    pub compute_instance_slices: u32,
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
    /// The processes that used the GPU since the previous reading, by pid (empty for a GPU
    /// with MIG instances: see `instances`).
    pub processes: Vec<GpuProcessUse>,
    /// For a GPU with MIG instances, each instance's running compute processes, in the order
    /// of [`GpuDevice::mig`].
    pub instances: Vec<MigReading>,
}

/// The running compute processes of one MIG instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigReading {
    /// The instance's MIG device index.
    pub index: u32,
    /// Its running compute processes (`compute` 0: NVML has no samples on MIG).
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

/// The MIG handle entry points `nvml-wrapper` 0.11 does not wrap, resolved from the NVML
/// library already loaded.
#[derive(Clone, Copy)]
struct MigApi {
    max_count: unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_uint,
    handle_by_index: unsafe extern "C" fn(*mut c_void, c_uint, *mut *mut c_void) -> c_uint,
    gpu_instance_id: unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_uint,
    compute_instance_id: unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_uint,
}

type IdFn = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_uint;
type ByIndexFn = unsafe extern "C" fn(*mut c_void, c_uint, *mut *mut c_void) -> c_uint;

impl MigApi {
    /// Resolves the MIG entry points of `library` (the one `Nvml` loaded); `None` where it
    /// lacks one (a driver before MIG).
    fn resolve(library: &OsStr) -> Option<Self> {
        let name = CString::new(library.as_bytes()).ok()?;
        // SAFETY: dlopen of a library Nvml has already loaded (same name, so the same handle;
        // no initialiser runs again). The handle is never closed, so the symbols below stay
        // valid for the life of the process. Each symbol is NVML's, with the C signature its
        // header gives (nvmlDevice_t is a pointer, nvmlReturn_t an unsigned enum), which the
        // function-pointer types below repeat.
        #[allow(unsafe_code)]
        unsafe {
            let lib = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                return None;
            }
            let sym = |symbol: &std::ffi::CStr| {
                let p = libc::dlsym(lib, symbol.as_ptr());
                (!p.is_null()).then_some(p)
            };
            let max_count = sym(c"nvmlDeviceGetMaxMigDeviceCount")?;
            let handle_by_index = sym(c"nvmlDeviceGetMigDeviceHandleByIndex")?;
            let gpu_instance_id = sym(c"nvmlDeviceGetGpuInstanceId")?;
            let compute_instance_id = sym(c"nvmlDeviceGetComputeInstanceId")?;
            Some(Self {
                max_count: std::mem::transmute::<*mut c_void, IdFn>(max_count),
                handle_by_index: std::mem::transmute::<*mut c_void, ByIndexFn>(handle_by_index),
                gpu_instance_id: std::mem::transmute::<*mut c_void, IdFn>(gpu_instance_id),
                compute_instance_id: std::mem::transmute::<*mut c_void, IdFn>(compute_instance_id),
            })
        }
    }

    /// The MIG device at `index` of `parent`: its handle as a `Device` of `nvml`.
    fn device<'n>(
        &self,
        nvml: &'n Nvml,
        parent: &Device<'n>,
        index: u32,
    ) -> Result<Device<'n>, NvmlError> {
        // SAFETY: `parent` is a live handle of `nvml`; NVML writes one handle to `mig` when it
        // answers success, and a MIG device handle is used with the same calls as a GPU handle
        // (NVML answers NOT_SUPPORTED to those that are per GPU only).
        #[allow(unsafe_code)]
        unsafe {
            let mut mig: *mut c_void = std::ptr::null_mut();
            nvml_try((self.handle_by_index)(
                parent.handle().cast(),
                index,
                &mut mig,
            ))?;
            Ok(Device::new(mig.cast(), nvml))
        }
    }

    /// One of the `u32` getters above on `device`.
    fn get(&self, f: IdFn, device: &Device<'_>) -> Result<u32, NvmlError> {
        let mut value: c_uint = 0;
        // SAFETY: `device` is a live handle; NVML writes one unsigned int.
        #[allow(unsafe_code)]
        unsafe {
            nvml_try(f(device.handle().cast(), &mut value))?;
        }
        Ok(value)
    }

    /// The MIG instances of `parent` (a GPU whose current MIG mode is on), by index.
    fn instances(&self, nvml: &Nvml, parent: &Device<'_>) -> Vec<MigInstance> {
        let max = self.get(self.max_count, parent).unwrap_or(0);
        let mut out = Vec::new();
        for index in 0..max {
            // NOT_FOUND: no MIG device at this index.
            let Ok(mig) = self.device(nvml, parent, index) else {
                continue;
            };
            let attributes = mig.attributes().ok();
            out.push(MigInstance {
                index,
                gpu_instance: self.get(self.gpu_instance_id, &mig).unwrap_or(0),
                compute_instance: self.get(self.compute_instance_id, &mig).unwrap_or(0),
                uuid: mig.uuid().unwrap_or_default(),
                name: mig.name().unwrap_or_default(),
                multiprocessors: attributes.as_ref().map_or(0, |a| a.multiprocessor_count),
                gpu_instance_slices: attributes
                    .as_ref()
                    .map_or(0, |a| a.gpu_instance_slice_count),
                compute_instance_slices: attributes
                    .as_ref()
                    .map_or(0, |a| a.compute_instance_slice_count),
            });
        }
        out
    }
}

/// NVML, opened, and the GPUs it listed at start-up.
pub struct NvmlGpus {
    nvml: Nvml,
    /// Where the library has the MIG entry points.
    mig_api: Option<MigApi>,
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
        let path = library.map_or(OsStr::new("libnvidia-ml.so.1"), Path::as_os_str);
        builder.lib_path(path);
        let nvml = builder.init().map_err(|e| GpuError::new("nvmlInit", &e))?;
        let mig_api = MigApi::resolve(path);
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
            let mig_mode = device.mig_mode().ok().map(|m| MigModeState {
                current: m.current == 1,
                pending: m.pending == 1,
            });
            let mig = match (&mig_api, mig_mode) {
                (Some(api), Some(MigModeState { current: true, .. })) => {
                    api.instances(&nvml, &device)
                }
                _ => Vec::new(),
            };
            devices.push(GpuDevice {
                index,
                uuid,
                name,
                has_energy_counter,
                mig_mode,
                mig,
            });
        }
        Ok(Self {
            nvml,
            mig_api,
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
        let mig_api = self.mig_api;
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
                            instances: Vec::new(),
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
                let (processes, instances) = match mig_api.filter(|_| !gpu.mig.is_empty()) {
                    Some(api) => (
                        Vec::new(),
                        gpu.mig
                            .iter()
                            .map(|m| MigReading {
                                index: m.index,
                                processes: api
                                    .device(nvml, &device, m.index)
                                    .map(|mig| running(&mig))
                                    .unwrap_or_default(),
                            })
                            .collect(),
                    ),
                    None => {
                        let last = last_sample.entry(gpu.index).or_insert(0);
                        (process_use(&device, last), Vec::new())
                    }
                };
                GpuReading {
                    index: gpu.index,
                    measure,
                    utilisation,
                    processes,
                    instances,
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
        return running(device);
    }
    by_pid.into_values().collect()
}

/// The running compute processes of `device` (a GPU or a MIG device), by pid, with no
/// utilisation; empty where NVML cannot say.
fn running(device: &Device<'_>) -> Vec<GpuProcessUse> {
    let mut pids: Vec<u32> = device
        .running_compute_processes()
        .map(|r| r.into_iter().map(|p| p.pid).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| GpuProcessUse {
            pid,
            compute: 0,
            memory: 0,
        })
        .collect()
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
                for m in &d.mig {
                    tracing::info!(
                        gpu = d.index,
                        gpu_instance = m.gpu_instance,
                        compute_instance = m.compute_instance,
                        uuid = %m.uuid,
                        name = %m.name,
                        multiprocessors = m.multiprocessors,
                        slices = m.gpu_instance_slices,
                        "MIG instance: its own GPU device, with its share of the GPU's energy"
                    );
                }
                if d.mig_mode.is_some_and(|m| m.pending && !m.current) {
                    tracing::info!(
                        gpu = d.index,
                        "MIG mode pending (on after the GPU's next reset): measured as a whole GPU until then"
                    );
                }
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
