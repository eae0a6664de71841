//! Loads a BPF object from the `kepler-ebpf` crate with aya, attaches its raw tracepoints, and
//! drains its maps.
//!
//! [`EbpfProgram::drain`] flips the `generation` global (the object's `.bss` map) so that the
//! kernel writes into the other CPU map, runs the flush program on every CPU (the time each CPU
//! keeps pending for the pairs it charged last goes into the map of its generation), then reads
//! and deletes every entry of the map it just left: three `bpf(2)` calls per (process, cgroup)
//! pair that ran in the interval, nothing for processes that did not run. Exited processes are
//! drained from the `exits` map the same way, and the time that found a CPU map full is read
//! from the per-CPU `overflow` counter. Everything the kernel wrote is owned by the returned
//! [`Drained`]; the maps and links live as long as the program.
//!
//! Hardware counters: before loading, [`EbpfProgram::load`] opens each counter's perf event on
//! every online CPU ([`super::perf`]); the counters whose events all opened are switched on in
//! the program (`counters_enabled`, fixed at load so the verifier drops the others' reads) and
//! their events put into the counter's perf event array. A counter that cannot be opened (no
//! PMU, as in most VMs) stays off, with the reason in [`EbpfProgram::counter_status`]. With no
//! counter on, the time-only build of the program is loaded instead (docs/adr/0008): no counter
//! code, smaller map values.
//!
//! Kernel events: after the CPU-time programs, the load attaches the kernel event hooks (the
//! `softirq_entry` raw tracepoint; the page cache's `writeback_dirty_folio` raw tracepoint and
//! `folio_mark_accessed` kprobe). They are optional: a hook the kernel does not offer is left
//! out with the reason in [`EbpfProgram::hook_status`], and only the events of the hooks that
//! attached are in [`EbpfProgram::counters`]. Their per-interval maps flip and drain with the CPU
//! maps.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::{KProbe, ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun};
use aya::{Ebpf, EbpfLoader};
use kepler_ebpf::{CpuKey, CpuTime, CpuValue, EventCounts, Overflow};
use thiserror::Error;

use super::perf::{self, PerfEventSpec};
use crate::workload::{HardwareCounter, HardwareCounterSet};

/// Why the eBPF CPU accounting is not available; the message is the one log line the exporter
/// prints before falling back to procfs.
#[derive(Debug, Error)]
pub enum EbpfError {
    #[error("eBPF not built in (kepler-rs was built without clang and without the committed BPF objects)")]
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
    /// CPUs whose pending time could not be flushed (their time comes with a later drain).
    pub flush_errors: Vec<(u32, ProgramError)>,
    /// Time that found a CPU map full since the previous drain (not in `cpu`), and how many
    /// updates that was.
    pub overflow: Overflow,
    /// Kernel events per (process, cgroup) since the previous drain.
    pub events: Vec<(CpuKey, EventCounts)>,
    /// Kernel events that found an event map full since the previous drain (not in `events`).
    pub events_overflow: u64,
}

/// A kernel event hook: its program, where it attaches, and the events it counts.
#[derive(Debug, Clone, Copy)]
struct Hook {
    program: &'static str,
    target: &'static str,
    kprobe: bool,
    events: &'static [HardwareCounter],
}

/// The kernel event hooks, in the order they are attached.
const HOOKS: [Hook; 3] = [
    Hook {
        program: kepler_ebpf::SOFTIRQ_PROGRAM,
        target: kepler_ebpf::SOFTIRQ_TRACEPOINT,
        kprobe: false,
        events: &[
            HardwareCounter::NetTxIrq,
            HardwareCounter::NetRxIrq,
            HardwareCounter::BlockIrq,
        ],
    },
    Hook {
        program: kepler_ebpf::PAGE_CACHE_WRITE_PROGRAM,
        target: kepler_ebpf::PAGE_CACHE_WRITE_TRACEPOINT,
        kprobe: false,
        events: &[HardwareCounter::PageCacheHit],
    },
    Hook {
        program: kepler_ebpf::PAGE_CACHE_READ_PROGRAM,
        target: kepler_ebpf::PAGE_CACHE_READ_FUNCTION,
        kprobe: true,
        events: &[HardwareCounter::PageCacheHit],
    },
];

/// Whether one kernel event hook is attached, or why not.
#[derive(Debug, Clone)]
pub struct HookStatus {
    /// The program's name in the object.
    pub program: &'static str,
    /// `raw_tracepoint:<name>` or `kprobe:<function>`.
    pub target: String,
    /// Attached, or the error (one line).
    pub attached: Result<(), String>,
}

/// Kernel statistics of one attached program (with `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_time: Duration,
    pub run_count: u64,
}

/// The perf event each hardware counter is read from, in [`HardwareCounter::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterEvents(pub [PerfEventSpec; 3]);

impl CounterEvents {
    /// CPU cycles, instructions and cache misses from the PMU: what the exporter uses.
    pub const HARDWARE: Self = Self([
        PerfEventSpec::CPU_CYCLES,
        PerfEventSpec::INSTRUCTIONS,
        PerfEventSpec::CACHE_MISSES,
    ]);

    fn get(&self, counter: HardwareCounter) -> PerfEventSpec {
        self.0[counter.index()]
    }
}

/// The two per-interval CPU maps of whichever build is loaded.
enum CpuMaps {
    /// The time-only build: no counter is on.
    Time([HashMap<MapData, CpuKey, CpuTime>; 2]),
    /// The build with hardware counters.
    Counted([HashMap<MapData, CpuKey, CpuValue>; 2]),
}

/// The loaded and attached BPF object.
pub struct EbpfProgram {
    bpf: Ebpf,
    cpu: CpuMaps,
    generation: Array<MapData, u32>,
    overflow: PerCpuArray<MapData, Overflow>,
    /// The overflow totals (summed over CPUs) at the previous drain.
    overflow_seen: Overflow,
    exits: HashMap<MapData, u32, u64>,
    current: u32,
    /// The CPUs online at load (the flush program runs on the CPUs online at each drain).
    cpus: Vec<u32>,
    /// Per counter: on, or why not.
    counters: [Result<(), String>; 3],
    /// The perf event arrays of the counters that are on: their entries live as long as these fds.
    _counter_maps: Vec<MapData>,
    /// The two per-interval kernel event maps.
    events: [HashMap<MapData, CpuKey, EventCounts>; 2],
    events_overflow: PerCpuArray<MapData, u64>,
    /// The event overflow total (summed over CPUs) at the previous drain.
    events_overflow_seen: u64,
    /// Per kernel event hook: attached, or why not.
    hooks: Vec<HookStatus>,
}

impl std::fmt::Debug for EbpfProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfProgram")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl EbpfProgram {
    /// Loads the object built into this binary with the hardware counters the PMU allows and
    /// attaches every program.
    pub fn load() -> Result<Self, EbpfError> {
        Self::load_with(&CounterEvents::HARDWARE)
    }

    /// As [`Self::load`], reading each counter from the given event (tests use a software event
    /// where there is no PMU).
    pub fn load_with(events: &CounterEvents) -> Result<Self, EbpfError> {
        Self::load_with_capacity(events, kepler_ebpf::CPU_MAP_ENTRIES)
    }

    /// As [`Self::load_with`], with room for `cpu_map_entries` (process, cgroup) pairs per
    /// interval instead of [`kepler_ebpf::CPU_MAP_ENTRIES`] (tests fill a small map).
    pub fn load_with_capacity(
        events: &CounterEvents,
        cpu_map_entries: u32,
    ) -> Result<Self, EbpfError> {
        let (Some(time_only), Some(with_counters)) = (
            kepler_ebpf::cpu_object(),
            kepler_ebpf::cpu_counters_object(),
        ) else {
            return Err(EbpfError::NotBuiltIn);
        };
        let mut counters: [Result<(), String>; 3] = std::array::from_fn(|_| Ok(()));
        let mut opened: [Vec<(u32, OwnedFd)>; 3] = Default::default();
        let online = aya::util::online_cpus();
        match &online {
            Ok(cpus) => {
                for c in HardwareCounter::ALL {
                    match perf::open_per_cpu(events.get(c), cpus) {
                        Ok(fds) => opened[c.index()] = fds,
                        Err(e) => counters[c.index()] = Err(format!("perf_event_open: {e}")),
                    }
                }
            }
            Err((path, e)) => {
                counters = std::array::from_fn(|_| Err(format!("cannot read {path}: {e}")));
            }
        }
        // A counter whose events the map refuses is switched off and the object loaded again
        // (at most once per counter), so a counter is either on everywhere or absent. With no
        // counter on, the time-only build is loaded: it has no counter code at all.
        let (mut bpf, counter_maps) = loop {
            let on = counters
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_ok())
                .fold(0u32, |mask, (i, _)| mask | 1 << i);
            // No kernel BTF: the program reads no kernel struct (no CO-RE relocation); parsing
            // /sys/kernel/btf/vmlinux would add ~13 MiB to the exporter's peak RSS.
            let mut loader = EbpfLoader::new();
            loader.btf(None);
            for map in kepler_ebpf::CPU_MAPS {
                loader.map_max_entries(map, cpu_map_entries);
            }
            if on == 0 {
                break (loader.load(time_only).map_err(EbpfError::Load)?, Vec::new());
            }
            let mut bpf = loader
                .override_global(kepler_ebpf::COUNTERS_ENABLED, &on, true)
                .load(with_counters)
                .map_err(EbpfError::Load)?;
            match fill_counter_maps(&mut bpf, &counters, &opened) {
                Ok(maps) => break (bpf, maps),
                Err((counter, why)) => counters[counter.index()] = Err(why),
            }
        };
        let [a, b] = kepler_ebpf::CPU_MAPS;
        let cpu = if counter_maps.is_empty() {
            CpuMaps::Time([take_hash(&mut bpf, a)?, take_hash(&mut bpf, b)?])
        } else {
            CpuMaps::Counted([take_hash(&mut bpf, a)?, take_hash(&mut bpf, b)?])
        };
        let generation = take_map(&mut bpf, kepler_ebpf::GENERATION_MAP)?;
        let generation = Array::try_from(generation).map_err(|source| EbpfError::Map {
            map: kepler_ebpf::GENERATION_MAP,
            source,
        })?;
        let overflow = take_map(&mut bpf, kepler_ebpf::OVERFLOW_MAP)?;
        let overflow = PerCpuArray::try_from(overflow).map_err(|source| EbpfError::Map {
            map: kepler_ebpf::OVERFLOW_MAP,
            source,
        })?;
        let exits = take_hash(&mut bpf, kepler_ebpf::EXITS_MAP)?;
        let [ea, eb] = kepler_ebpf::EVENT_MAPS;
        let events = [take_hash(&mut bpf, ea)?, take_hash(&mut bpf, eb)?];
        let events_overflow = take_map(&mut bpf, kepler_ebpf::EVENTS_OVERFLOW_MAP)?;
        let events_overflow =
            PerCpuArray::try_from(events_overflow).map_err(|source| EbpfError::Map {
                map: kepler_ebpf::EVENTS_OVERFLOW_MAP,
                source,
            })?;
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
        let flush: &mut RawTracePoint = bpf
            .program_mut(kepler_ebpf::FLUSH_PROGRAM)
            .ok_or(EbpfError::MissingProgram(kepler_ebpf::FLUSH_PROGRAM))?
            .try_into()
            .map_err(|source| EbpfError::LoadProgram {
                program: kepler_ebpf::FLUSH_PROGRAM,
                source,
            })?;
        flush.load().map_err(|source| EbpfError::LoadProgram {
            program: kepler_ebpf::FLUSH_PROGRAM,
            source,
        })?;
        let cpus = online
            .map_err(|(path, e)| EbpfError::Unsupported(format!("cannot read {path}: {e}")))?;
        let hooks = HOOKS.iter().map(|h| attach_hook(&mut bpf, h)).collect();
        Ok(Self {
            bpf,
            cpus,
            cpu,
            generation,
            overflow,
            overflow_seen: Overflow::default(),
            exits,
            current: 0,
            counters,
            _counter_maps: counter_maps,
            events,
            events_overflow,
            events_overflow_seen: 0,
            hooks,
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
            self.flush_pending(&mut out);
        }
        let old = old as usize & 1;
        match &mut self.cpu {
            CpuMaps::Time(maps) => drain_cpu(&mut maps[old], &mut out),
            CpuMaps::Counted(maps) => drain_cpu(&mut maps[old], &mut out),
        }
        drain_events(&mut self.events[old], &mut out);
        match self.events_overflow.get(&0, 0) {
            Ok(per_cpu) => {
                let total = per_cpu.iter().fold(0u64, |t, n| t.wrapping_add(*n));
                out.events_overflow = total.wrapping_sub(self.events_overflow_seen);
                self.events_overflow_seen = total;
            }
            Err(e) => out.errors.push(e),
        }
        match self.overflow.get(&0, 0) {
            Ok(per_cpu) => {
                let total = per_cpu.iter().fold(Overflow::default(), |t, o| Overflow {
                    cpu_ns: t.cpu_ns.wrapping_add(o.cpu_ns),
                    count: t.count.wrapping_add(o.count),
                });
                out.overflow = Overflow {
                    cpu_ns: total.cpu_ns.wrapping_sub(self.overflow_seen.cpu_ns),
                    count: total.count.wrapping_sub(self.overflow_seen.count),
                };
                self.overflow_seen = total;
            }
            Err(e) => out.errors.push(e),
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

    /// Runs the flush program on every CPU: afterwards no time of the previous generation is
    /// pending in a CPU's state (except where a program read the generation just before the
    /// flip and is still charging).
    fn flush_pending(&self, out: &mut Drained) {
        let flush: &RawTracePoint = match self
            .bpf
            .program(kepler_ebpf::FLUSH_PROGRAM)
            .map(TryInto::try_into)
        {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                out.flush_errors.push((0, e));
                return;
            }
            None => return,
        };
        // CPUs brought online since the load are flushed too (the list at load if the file
        // cannot be read now).
        let online = aya::util::online_cpus().ok();
        for &cpu in online.as_deref().unwrap_or(&self.cpus) {
            let opts = RawTracePointRunOptions {
                cpu: Some(cpu),
                ..RawTracePointRunOptions::new()
            };
            if let Err(e) = flush.test_run(opts) {
                out.flush_errors.push((cpu, e));
            }
        }
    }

    /// Per possible CPU: its accounting state (the pairs it charged last, the time it holds
    /// pending for them and of which generation), as the time-only object's [`CpuState`];
    /// tests check what a drain and a cgroup move leave there.
    ///
    /// [`CpuState`]: kepler_ebpf::CpuState
    pub fn cpu_states(&self) -> Result<Vec<kepler_ebpf::CpuState>, MapError> {
        let map = self.map(kepler_ebpf::STATE_MAP)?;
        Ok(match self.cpu {
            CpuMaps::Time(_) => PerCpuArray::<_, kepler_ebpf::CpuState>::try_from(map)?
                .get(&0, 0)?
                .iter()
                .copied()
                .collect(),
            CpuMaps::Counted(_) => PerCpuArray::<_, kepler_ebpf::CpuStateCounted>::try_from(map)?
                .get(&0, 0)?
                .iter()
                .map(|&s| s.into())
                .collect(),
        })
    }

    /// How many times a task was moved to another cgroup since the load, plus one (the
    /// object's `cgroup_moves` global, in its `.data` map): tests check the move hook counts.
    pub fn cgroup_moves(&self) -> Result<u64, MapError> {
        Array::<_, u64>::try_from(self.map(kepler_ebpf::DATA_MAP)?)?.get(&0, 0)
    }

    /// One of the object's maps that stays in it after the load (read by tests).
    fn map(&self, name: &'static str) -> Result<&Map, MapError> {
        self.bpf
            .map(name)
            .ok_or(MapError::InvalidName { name: name.into() })
    }

    /// The generation the kernel writes now (0: the first CPU map).
    pub fn generation(&self) -> u32 {
        self.current
    }

    /// Whether the loaded program is the build with hardware counters (else the time-only one).
    pub fn reads_counters(&self) -> bool {
        matches!(self.cpu, CpuMaps::Counted(_))
    }

    /// The hardware counters and kernel events that are collected.
    pub fn counters(&self) -> HardwareCounterSet {
        let events = self
            .hooks
            .iter()
            .zip(HOOKS)
            .filter(|(status, _)| status.attached.is_ok())
            .flat_map(|(_, hook)| hook.events.iter().copied());
        HardwareCounter::ALL
            .into_iter()
            .filter(|c| self.counters[c.index()].is_ok())
            .chain(events)
            .fold(HardwareCounterSet::NONE, HardwareCounterSet::with)
    }

    /// Per kernel event hook: attached, or why not.
    pub fn hook_status(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// Per counter: collected, or why not (one line each).
    pub fn counter_status(&self) -> impl Iterator<Item = (HardwareCounter, Result<(), &str>)> {
        HardwareCounter::ALL.into_iter().map(|c| {
            (
                c,
                self.counters[c.index()]
                    .as_ref()
                    .map(|_| ())
                    .map_err(String::as_str),
            )
        })
    }

    /// Run time and count of each attached program, as the kernel counts them (zero unless
    /// `kernel.bpf_stats_enabled` is 1 or an `enable_stats` fd is held).
    pub fn stats(&self) -> Vec<ProgramStats> {
        let hooks = self
            .hooks
            .iter()
            .filter(|h| h.attached.is_ok())
            .map(|h| h.program);
        kepler_ebpf::PROGRAMS
            .iter()
            .map(|(name, _)| *name)
            .chain(hooks)
            .filter_map(|name| {
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

/// Puts each opened counter's per-CPU events into its perf event array; the first refusal names
/// the counter and why.
fn fill_counter_maps(
    bpf: &mut Ebpf,
    counters: &[Result<(), String>; 3],
    opened: &[Vec<(u32, OwnedFd)>; 3],
) -> Result<Vec<MapData>, (HardwareCounter, String)> {
    let mut maps = Vec::new();
    for c in HardwareCounter::ALL {
        if counters[c.index()].is_err() {
            continue;
        }
        let name = kepler_ebpf::COUNTER_MAPS[c.index()];
        let map = match bpf.take_map(name) {
            Some(Map::PerfEventArray(map)) => map,
            _ => return Err((c, format!("BPF map {name} missing from the object"))),
        };
        for (cpu, event) in &opened[c.index()] {
            perf::set_event(map.fd().as_fd(), *cpu, event.as_fd())
                .map_err(|e| (c, format!("BPF map {name}, CPU {cpu}: {e}")))?;
        }
        maps.push(map);
    }
    Ok(maps)
}

/// Loads and attaches one kernel event hook; its status either way.
fn attach_hook(bpf: &mut Ebpf, hook: &Hook) -> HookStatus {
    let (kind, attached) = if hook.kprobe {
        ("kprobe", attach_kprobe(bpf, hook))
    } else {
        ("raw_tracepoint", attach_raw_tracepoint(bpf, hook))
    };
    HookStatus {
        program: hook.program,
        target: format!("{kind}:{}", hook.target),
        attached,
    }
}

fn attach_raw_tracepoint(bpf: &mut Ebpf, hook: &Hook) -> Result<(), String> {
    let program: &mut RawTracePoint = bpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("BPF program {} missing from the object", hook.program))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load().map_err(|e| error_chain(&e))?;
    program.attach(hook.target).map_err(|e| error_chain(&e))?;
    Ok(())
}

fn attach_kprobe(bpf: &mut Ebpf, hook: &Hook) -> Result<(), String> {
    let program: &mut KProbe = bpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("BPF program {} missing from the object", hook.program))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load().map_err(|e| error_chain(&e))?;
    program
        .attach(hook.target, 0)
        .map_err(|e| error_chain(&e))?;
    Ok(())
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads and deletes every entry of one event map into `out.events`.
fn drain_events(map: &mut HashMap<MapData, CpuKey, EventCounts>, out: &mut Drained) {
    let keys: Vec<CpuKey> = map
        .keys()
        .filter_map(|k| keep(k, &mut out.errors))
        .collect();
    out.events.reserve(keys.len());
    for key in keys {
        match map.get(&key, 0) {
            Ok(value) => out.events.push((key, value)),
            Err(MapError::KeyNotFound) => {}
            Err(e) => out.errors.push(e),
        }
        remove(map, &key, &mut out.errors);
    }
}

/// Reads and deletes every entry of one CPU map into `out.cpu`.
fn drain_cpu<V: aya::Pod + Into<CpuValue>>(
    map: &mut HashMap<MapData, CpuKey, V>,
    out: &mut Drained,
) {
    let keys: Vec<CpuKey> = map
        .keys()
        .filter_map(|k| keep(k, &mut out.errors))
        .collect();
    out.cpu.reserve(keys.len());
    for key in keys {
        match map.get(&key, 0) {
            Ok(value) => out.cpu.push((key, value.into())),
            Err(MapError::KeyNotFound) => {}
            Err(e) => out.errors.push(e),
        }
        remove(map, &key, &mut out.errors);
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
        // Evicted by the exits map's LRU (or deleted) since it was listed.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => errors.push(e),
    }
}
