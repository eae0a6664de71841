//! The kernel side of kepler-rs's eBPF CPU accounting: the BPF objects of `src/cpu.bpf.c`
//! (compiled by clang at build time, or the ones committed in `prebuilt/` where clang is
//! missing; see build.rs), the names of their programs and maps, and the `#[repr(C)]` layouts of
//! their map keys and values, which must match the C structs: both sides check sizes and
//! offsets at compile time (`_Static_assert` in the C, `const` asserts here).
//!
//! The one source is built twice (docs/adr/0008): [`cpu_object`] counts on-CPU time only (map
//! values [`CpuTime`]) and is what the exporter loads where no hardware counter is available;
//! [`cpu_counters_object`] also reads the hardware counters (map values [`CpuValue`]).
//!
//! Loading, attaching and draining happen in `kepler_rs::workload::ebpf`. Only a build with
//! neither clang nor the committed objects lacks them ([`cpu_object`] returns `None`).

/// The time-only BPF object (ELF with BTF), empty when the build had none.
pub const CPU_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu.bpf.o"));
/// The BPF object with hardware counters (`-DKEPLER_COUNTERS`), empty likewise.
pub const CPU_COUNTERS_OBJECT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cpu_counters.bpf.o"));

/// The clang that compiled the objects (`clang --version`'s first line), or `none` when they
/// are the committed ones.
pub const CLANG_VERSION: &str = env!("KEPLER_BPF_CLANG_VERSION");

/// Whether the objects were compiled from `src/cpu.bpf.c` by this build (else: committed ones).
pub const BUILT_FROM_SOURCE: bool = cfg!(kepler_ebpf_from_source);

/// The time-only object, or `None` when this build has no eBPF support.
pub fn cpu_object() -> Option<&'static [u8]> {
    (cfg!(kepler_ebpf_built) && !CPU_OBJECT.is_empty()).then_some(CPU_OBJECT)
}

/// The object that also reads hardware counters, or `None` when this build has no eBPF support.
pub fn cpu_counters_object() -> Option<&'static [u8]> {
    (cfg!(kepler_ebpf_built) && !CPU_COUNTERS_OBJECT.is_empty()).then_some(CPU_COUNTERS_OBJECT)
}

/// Raw tracepoint programs in the object: (program name, tracepoint).
pub const PROGRAMS: [(&str, &str); 4] = [
    // First: from the first switch on, a cgroup move never goes unseen.
    (CGROUP_MOVE_PROGRAM, "cgroup_attach_task"),
    (SCHED_SWITCH_PROGRAM, "sched_switch"),
    (TIMER_FLUSH_PROGRAM, "hrtimer_expire_entry"),
    (PROCESS_EXIT_PROGRAM, "sched_process_exit"),
];
/// Charges the outgoing task at every context switch.
pub const SCHED_SWITCH_PROGRAM: &str = "kepler_sched_switch";
/// Charges a running task from the timer interrupt when it has not switched for 10 ms.
pub const TIMER_FLUSH_PROGRAM: &str = "kepler_timer_flush";
/// Counts tasks moved to another cgroup: each CPU then reads its pending pair's cgroup id again.
pub const CGROUP_MOVE_PROGRAM: &str = "kepler_cgroup_move";
/// Records exited processes in [`EXITS_MAP`].
pub const PROCESS_EXIT_PROGRAM: &str = "kepler_process_exit";

/// Counts the softirqs of the NET_TX, NET_RX and BLOCK vectors per (process, cgroup) in
/// [`EVENT_MAPS`]; attached to the raw tracepoint [`SOFTIRQ_TRACEPOINT`] where it exists.
pub const SOFTIRQ_PROGRAM: &str = "kepler_softirq_entry";
/// The raw tracepoint of [`SOFTIRQ_PROGRAM`].
pub const SOFTIRQ_TRACEPOINT: &str = "softirq_entry";
/// Counts page cache hits of writes (a folio dirtied in the page cache) in [`EVENT_MAPS`].
pub const PAGE_CACHE_WRITE_PROGRAM: &str = "kepler_page_cache_write";
/// The raw tracepoint of [`PAGE_CACHE_WRITE_PROGRAM`].
pub const PAGE_CACHE_WRITE_TRACEPOINT: &str = "writeback_dirty_folio";
/// Counts page cache hits of reads in [`EVENT_MAPS`]: a kprobe, where the kernel has kprobes.
pub const PAGE_CACHE_READ_PROGRAM: &str = "kepler_page_cache_read";
/// The kernel function [`PAGE_CACHE_READ_PROGRAM`] probes (`filemap_read` calls it for every
/// cached folio it reads).
pub const PAGE_CACHE_READ_FUNCTION: &str = "folio_mark_accessed";

/// Not attached: user space runs it on every CPU (`BPF_PROG_TEST_RUN` on that CPU) after flipping
/// the generation, to move each CPU's pending time into the map it then drains.
pub const FLUSH_PROGRAM: &str = "kepler_flush_pending";

/// An empty `sched_switch` program that only the benchmark attaches: the floor of the kernel's
/// BPF run-time statistics on the machine.
pub const CALIBRATION_PROGRAM: &str = "kepler_calibration_noop";

/// The two per-interval hash maps ([`CpuKey`] -> [`CpuTime`], or [`CpuValue`] in the object with
/// counters); [`GENERATION_MAP`] says which one the kernel writes (0: the first).
pub const CPU_MAPS: [&str; 2] = ["cpu_a", "cpu_b"];
/// The `.bss` section's map: index 0 -> the `u32` global `generation` (the section's only
/// variable), written by user space, read by the program as a plain load.
pub const GENERATION_MAP: &str = ".bss";
/// The object's initialised globals: `cgroup_moves` (a u64) only.
pub const DATA_MAP: &str = ".data";
/// Per-CPU array, index 0 -> [`Overflow`]: time that found a CPU map full.
pub const OVERFLOW_MAP: &str = "overflow";
/// Exited thread-group leaders: `u32` tgid -> `u64` exit time (`bpf_ktime_get_ns`).
pub const EXITS_MAP: &str = "exits";
/// Capacity of each CPU map (the C side's `CPU_ENTRIES`).
pub const CPU_MAP_ENTRIES: u32 = 32768;
/// The two per-interval kernel event maps ([`CpuKey`] -> [`EventCounts`]), written in the same
/// generation as [`CPU_MAPS`] and drained with them.
pub const EVENT_MAPS: [&str; 2] = ["events_a", "events_b"];
/// Per-CPU array, index 0 -> `u64`: kernel events that found an event map full.
pub const EVENTS_OVERFLOW_MAP: &str = "events_overflow";
/// Capacity of each event map (the C side's `EVENT_ENTRIES`).
pub const EVENT_MAP_ENTRIES: u32 = 16384;

/// The `u32` global (`const volatile`, set at load time) whose bit `i` switches counter `i` on;
/// only in [`cpu_counters_object`].
pub const COUNTERS_ENABLED: &str = "counters_enabled";
/// The perf event arrays (one event per CPU, index = CPU id) of the counters, in the order of
/// [`CpuValue::counters`]: CPU cycles, instructions, cache misses.
pub const COUNTER_MAPS: [&str; 3] = [
    "cycles_events",
    "instructions_events",
    "cache_misses_events",
];

/// Key of the CPU maps: a process (kernel tgid) in one cgroup v2 (its id = the directory's inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct CpuKey {
    pub tgid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
}

/// Value of the CPU maps of the time-only object: on-CPU nanoseconds in the interval and the `comm`
/// of the thread that first ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct CpuTime {
    pub cpu_ns: u64,
    pub comm: [u8; 16],
}

impl From<CpuTime> for CpuValue {
    fn from(t: CpuTime) -> Self {
        Self {
            cpu_ns: t.cpu_ns,
            counters: [0; 3],
            comm: t.comm,
        }
    }
}

/// Value of the event maps: kernel events charged to a (process, cgroup) pair in the interval,
/// in the order of the `EVENT_*` indexes: NET_TX softirqs, NET_RX softirqs, BLOCK softirqs,
/// page cache hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct EventCounts {
    pub count: [u64; 4],
}

/// Index in [`EventCounts::count`]: softirqs of the NET_TX vector.
pub const EVENT_NET_TX_IRQ: usize = 0;
/// Index in [`EventCounts::count`]: softirqs of the NET_RX vector.
pub const EVENT_NET_RX_IRQ: usize = 1;
/// Index in [`EventCounts::count`]: softirqs of the BLOCK vector.
pub const EVENT_BLOCK_IRQ: usize = 2;
/// Index in [`EventCounts::count`]: page cache hits.
pub const EVENT_PAGE_CACHE_HIT: usize = 3;

/// Per CPU: on-CPU nanoseconds that could not be charged because the CPU map was full, and how
/// many times that happened. The kernel only adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Overflow {
    pub cpu_ns: u64,
    pub count: u64,
}

/// How many (process, cgroup) pairs a CPU keeps pending (`SLOTS` in the program).
pub const PENDING_SLOTS: usize = 2;

/// A pair a CPU charged recently (`key.tgid` 0: none) with the time of its later slices in
/// generation `gen` that is not yet in a CPU map, and `moves`: the object's `cgroup_moves` when
/// `key.cgroup_id` was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Pending {
    pub key: CpuKey,
    pub gen: u32,
    pub _pad: u32,
    pub ns: u64,
    pub moves: u64,
}

/// [`Pending`] in the object with counters: with the counters' pending increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct PendingCounted {
    pub key: CpuKey,
    pub gen: u32,
    pub _pad: u32,
    pub ns: u64,
    pub moves: u64,
    pub counters: [u64; 3],
}

/// Per-CPU state of the time-only object (`last_state`, index 0): the last accounting point,
/// and the pairs the CPU keeps pending (`last`: the slot charged last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct CpuState {
    pub ts: u64,
    pub last: u32,
    pub _pad: u32,
    pub slots: [Pending; PENDING_SLOTS],
}

/// Per-CPU state of the object with counters: as [`CpuState`], with the counters' values at the
/// last accounting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct CpuStateCounted {
    pub ts: u64,
    pub counters: [u64; 3],
    pub last: u32,
    pub _pad: u32,
    pub slots: [PendingCounted; PENDING_SLOTS],
}

impl Pending {
    /// The generation of the time this slot holds pending, if it holds any.
    pub fn pending_generation(&self) -> Option<u32> {
        (self.key.tgid != 0 && self.ns > 0).then_some(self.gen)
    }
}

impl From<PendingCounted> for Pending {
    /// The counted slot without its counters.
    fn from(p: PendingCounted) -> Self {
        Self {
            key: p.key,
            gen: p.gen,
            _pad: p._pad,
            ns: p.ns,
            moves: p.moves,
        }
    }
}

impl From<CpuStateCounted> for CpuState {
    /// The counted state without its counters.
    fn from(s: CpuStateCounted) -> Self {
        Self {
            ts: s.ts,
            last: s.last,
            _pad: s._pad,
            slots: s.slots.map(Pending::from),
        }
    }
}

/// The per-CPU state map ([`CpuState`] or [`CpuStateCounted`] at index 0).
pub const STATE_MAP: &str = "last_state";

/// Value of the CPU maps of the object with counters: on-CPU nanoseconds in the interval, the counters' increase over the
/// same time (zero for counters that are off), and the `comm` of the thread that first ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct CpuValue {
    pub cpu_ns: u64,
    pub counters: [u64; 3],
    pub comm: [u8; 16],
}

impl CpuValue {
    /// `comm` up to its first NUL, lossily as UTF-8.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(self.comm.get(..end).unwrap_or(&[])).into_owned()
    }
}

// The layouts of the C structs in src/cpu.bpf.c (which asserts the same numbers): a field moved
// on either side fails the build.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<CpuKey>() == 16);
    assert!(offset_of!(CpuKey, cgroup_id) == 8);
    assert!(size_of::<CpuTime>() == 24);
    assert!(offset_of!(CpuTime, comm) == 8);
    assert!(size_of::<CpuValue>() == 48);
    assert!(offset_of!(CpuValue, counters) == 8);
    assert!(offset_of!(CpuValue, comm) == 32);
    assert!(size_of::<Overflow>() == 16);
    assert!(offset_of!(Overflow, count) == 8);
    assert!(size_of::<Pending>() == 40);
    assert!(offset_of!(Pending, gen) == 16);
    assert!(offset_of!(Pending, ns) == 24);
    assert!(offset_of!(Pending, moves) == 32);
    assert!(size_of::<PendingCounted>() == 64);
    assert!(offset_of!(PendingCounted, counters) == 40);
    assert!(size_of::<CpuState>() == 16 + 2 * 40);
    assert!(offset_of!(CpuState, last) == 8);
    assert!(offset_of!(CpuState, slots) == 16);
    assert!(size_of::<CpuStateCounted>() == 40 + 2 * 64);
    assert!(offset_of!(CpuStateCounted, last) == 32);
    assert!(offset_of!(CpuStateCounted, slots) == 40);
    assert!(size_of::<EventCounts>() == 32);
};

// SAFETY: both are #[repr(C)] structs of integers and byte arrays with explicit padding fields,
// so every bit pattern is a valid value and there are no implicit padding bytes.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuKey {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuValue {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuTime {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Overflow {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuState {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuStateCounted {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for EventCounts {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_converts_to_a_value_without_counters() {
        let t = CpuTime {
            cpu_ns: 7,
            comm: *b"0123456789abcdef",
        };
        let v = CpuValue::from(t);
        assert_eq!((v.cpu_ns, v.counters, v.comm), (7, [0; 3], t.comm));
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut v = CpuValue::default();
        v.comm[..5].copy_from_slice(b"sleep");
        assert_eq!(v.comm(), "sleep");
        v.comm = *b"0123456789abcdef";
        assert_eq!(v.comm(), "0123456789abcdef");
    }

    /// The objects committed in prebuilt/ (what a build without clang embeds).
    const COMMITTED: [(&str, &[u8]); 2] = [
        ("cpu.bpf.o", include_bytes!("../prebuilt/cpu.bpf.o")),
        (
            "cpu_counters.bpf.o",
            include_bytes!("../prebuilt/cpu_counters.bpf.o"),
        ),
    ];

    #[test]
    fn committed_objects_are_what_the_source_compiles_to() {
        if !BUILT_FROM_SOURCE {
            kepler_test_support::require::tool_missing(
                "clang, to compile src/cpu.bpf.c and compare with the committed objects",
            );
            return;
        }
        let committed_with = include_str!("../prebuilt/clang-version").trim();
        for ((name, committed), fresh) in COMMITTED.iter().zip([CPU_OBJECT, CPU_COUNTERS_OBJECT]) {
            assert!(
                *committed == fresh,
                "ebpf/prebuilt/{name} is not what src/cpu.bpf.c compiles to: run \
                 scripts/update-bpf-objects.sh and commit the result (compiled here by {CLANG_VERSION}; \
                 committed from {committed_with})"
            );
        }
    }

    #[test]
    fn committed_objects_are_bpf_elf_files() {
        for (name, committed) in COMMITTED {
            assert_eq!(committed.get(..4), Some(&b"\x7fELF"[..]), "{name}");
            // e_machine (offset 18, little endian) 247: EM_BPF.
            assert_eq!(committed.get(18..20), Some(&[247u8, 0][..]), "{name}");
        }
    }

    #[test]
    fn object_is_built() {
        assert!(cpu_object().is_some(), "no BPF object in this build");
        assert_eq!(cpu_object().is_some(), cpu_counters_object().is_some());
        for obj in [cpu_object(), cpu_counters_object()].into_iter().flatten() {
            assert_eq!(obj.get(..4), Some(&b"\x7fELF"[..]));
        }
        if let (Some(a), Some(b)) = (cpu_object(), cpu_counters_object()) {
            assert_ne!(a, b, "the two builds must differ");
        }
    }
}
