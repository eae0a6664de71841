//! Loads the BPF object from the `kepler-ebpf` crate with aya, attaches its raw tracepoints, and
//! drains its maps.
//!
//! [`EbpfProgram::drain`] flips the `generation` map so that the kernel writes into the other CPU
//! map, then reads and deletes every entry of the one it just left: three `bpf(2)` calls per
//! (process, cgroup) pair that ran in the interval, nothing for processes that did not run.
//! Exited processes are drained from the `exits` map the same way. Everything the kernel wrote
//! is owned by the returned [`Drained`]; the maps and links live as long as the program.

use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, MapError};
use aya::programs::perf_event::{HardwareEvent, PerfEventConfig, PerfEventScope, SamplePolicy};
use aya::programs::{PerfEvent, ProgramError, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use kepler_ebpf::{CpuKey, CpuValue};
use thiserror::Error;

/// Why the eBPF CPU accounting is not available; the message is the one log line the exporter
/// prints before falling back to procfs.
#[derive(Debug, Error)]
pub enum EbpfError {
    #[error("eBPF not built in (clang was missing when kepler-rs was built)")]
    NotBuiltIn,
    #[error("eBPF disabled by configuration (ebpf.enabled=false)")]
    Disabled,
    #[error("cannot load the BPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("BPF program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("BPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot load BPF program {program}: {source}")]
    LoadProgram {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach BPF program {program} to raw tracepoint {tracepoint}: {source}")]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// What one drain returned.
#[derive(Debug, Default)]
pub struct Drained {
    /// On-CPU time per (process, cgroup) since the previous drain.
    pub cpu: Vec<(CpuKey, CpuValue)>,
    /// Processes (kernel tgids) that exited since the previous drain.
    pub exits: Vec<u32>,
    /// Map operations that failed (each is counted by the caller).
    pub errors: Vec<MapError>,
}

/// Kernel statistics of one attached program (with `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_time: Duration,
    pub run_count: u64,
}

/// The loaded and attached BPF object.
pub struct EbpfProgram {
    bpf: Ebpf,
    cpu: [HashMap<MapData, CpuKey, CpuValue>; 2],
    generation: Array<MapData, u32>,
    exits: HashMap<MapData, u32, u64>,
    current: u32,
}

impl std::fmt::Debug for EbpfProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfProgram")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl EbpfProgram {
    /// Loads the object built into this binary and attaches every program.
    pub fn load() -> Result<Self, EbpfError> {
        let object = kepler_ebpf::cpu_object().ok_or(EbpfError::NotBuiltIn)?;
        // No kernel BTF: the program reads no kernel struct (no CO-RE relocation), and parsing
        // /sys/kernel/btf/vmlinux, which EbpfLoader::new() does by default, would add ~13 MiB
        // to the exporter's peak RSS.
        let mut bpf = EbpfLoader::new()
            .btf(None)
            .load(object)
            .map_err(EbpfError::Load)?;
        let [a, b] = kepler_ebpf::CPU_MAPS;
        let cpu = [take_hash(&mut bpf, a)?, take_hash(&mut bpf, b)?];
        let generation = take_map(&mut bpf, kepler_ebpf::GENERATION_MAP)?;
        let generation = Array::try_from(generation).map_err(|source| EbpfError::Map {
            map: kepler_ebpf::GENERATION_MAP,
            source,
        })?;
        let exits = take_hash(&mut bpf, kepler_ebpf::EXITS_MAP)?;
        for (name, tracepoint) in kepler_ebpf::PROGRAMS {
            let program: &mut RawTracePoint = bpf
                .program_mut(name)
                .ok_or(EbpfError::MissingProgram(name))?
                .try_into()
                .map_err(|source| EbpfError::LoadProgram {
                    program: name,
                    source,
                })?;
            program.load().map_err(|source| EbpfError::LoadProgram {
                program: name,
                source,
            })?;
            program
                .attach(tracepoint)
                .map_err(|source| EbpfError::Attach {
                    program: name,
                    tracepoint,
                    source,
                })?;
        }
        Ok(Self {
            bpf,
            cpu,
            generation,
            exits,
            current: 0,
        })
    }

    /// Switches the kernel to the other CPU map and returns (and deletes) everything in the one
    /// it was writing, plus the exited processes.
    pub fn drain(&mut self) -> Drained {
        let mut out = Drained::default();
        let old = self.current;
        let next = old ^ 1;
        if let Err(e) = self.generation.set(0, next, 0) {
            // Keep draining the map the kernel still writes: some time lands next interval.
            out.errors.push(e);
        } else {
            self.current = next;
        }
        let map = &mut self.cpu[old as usize & 1];
        let keys: Vec<CpuKey> = map
            .keys()
            .filter_map(|k| keep(k, &mut out.errors))
            .collect();
        out.cpu.reserve(keys.len());
        for key in keys {
            match map.get(&key, 0) {
                Ok(value) => out.cpu.push((key, value)),
                Err(MapError::KeyNotFound) => {}
                Err(e) => out.errors.push(e),
            }
            remove(map, &key, &mut out.errors);
        }
        let exited: Vec<u32> = self
            .exits
            .keys()
            .filter_map(|k| keep(k, &mut out.errors))
            .collect();
        for tgid in &exited {
            remove(&mut self.exits, tgid, &mut out.errors);
        }
        out.exits = exited;
        out
    }

    /// Whether the PMU allows hardware counters (CPU cycles, system-wide on CPU 0): opens the
    /// event with the probe program attached, then detaches it. `Err` says why not.
    pub fn probe_hardware_counters(&mut self) -> Result<(), String> {
        let name = kepler_ebpf::PMU_PROBE_PROGRAM;
        let program: &mut PerfEvent = self
            .bpf
            .program_mut(name)
            .ok_or_else(|| format!("{name} missing from the object"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        program.load().map_err(|e| e.to_string())?;
        let attached = program.attach(
            PerfEventConfig::Hardware(HardwareEvent::CpuCycles),
            PerfEventScope::AllProcessesOneCpu { cpu: 0 },
            SamplePolicy::Period(u64::MAX >> 1),
            false,
        );
        let result = match attached {
            Ok(link) => program.detach(link).map_err(|e| e.to_string()),
            Err(ProgramError::SyscallError(e)) => Err(format!("perf_event_open: {}", e.io_error)),
            Err(e) => Err(e.to_string()),
        };
        let _ = program.unload();
        result
    }

    /// Run time and count of each attached program, as the kernel counts them (zero unless
    /// `kernel.bpf_stats_enabled` is 1 or an `enable_stats` fd is held).
    pub fn stats(&self) -> Vec<ProgramStats> {
        kepler_ebpf::PROGRAMS
            .iter()
            .filter_map(|(name, _)| {
                let info = self.bpf.program(name)?.info().ok()?;
                Some(ProgramStats {
                    name,
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }
}

fn take_map(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    bpf.take_map(name).ok_or(EbpfError::MissingMap(name))
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, EbpfError> {
    HashMap::try_from(take_map(bpf, name)?).map_err(|source| EbpfError::Map { map: name, source })
}

fn keep<K>(key: Result<K, MapError>, errors: &mut Vec<MapError>) -> Option<K> {
    key.map_err(|e| errors.push(e)).ok()
}

fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    errors: &mut Vec<MapError>,
) {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => {}
        // Evicted by the LRU (or deleted) since it was listed.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => errors.push(e),
    }
}
