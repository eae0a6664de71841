//! The kernel side of kepler-rs's eBPF CPU accounting: the BPF object compiled from
//! `src/cpu.bpf.c` by clang at build time ([`CPU_OBJECT`]), the names of its programs and maps,
//! and the `#[repr(C)]` layouts of its map keys and values, which must match the C structs.
//!
//! Loading, attaching and draining happen in `kepler_rs::workload::ebpf`. When clang was not
//! available at build time the object is absent ([`cpu_object`] returns `None`).

/// The compiled BPF object (ELF with BTF), empty when clang was missing at build time.
pub const CPU_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu.bpf.o"));

/// The compiled BPF object, or `None` when this build has no eBPF support.
pub fn cpu_object() -> Option<&'static [u8]> {
    (cfg!(kepler_ebpf_built) && !CPU_OBJECT.is_empty()).then_some(CPU_OBJECT)
}

/// Raw tracepoint programs in the object: (program name, tracepoint).
pub const PROGRAMS: [(&str, &str); 3] = [
    (SCHED_SWITCH_PROGRAM, "sched_switch"),
    (TIMER_FLUSH_PROGRAM, "hrtimer_expire_entry"),
    (PROCESS_EXIT_PROGRAM, "sched_process_exit"),
];
/// Charges the outgoing task at every context switch.
pub const SCHED_SWITCH_PROGRAM: &str = "kepler_sched_switch";
/// Charges a running task from the timer interrupt when it has not switched for 10 ms.
pub const TIMER_FLUSH_PROGRAM: &str = "kepler_timer_flush";
/// Records exited processes in [`EXITS_MAP`].
pub const PROCESS_EXIT_PROGRAM: &str = "kepler_process_exit";

/// An empty `sched_switch` program that only the benchmark attaches: the floor of the kernel's
/// BPF run-time statistics on the machine.
pub const CALIBRATION_PROGRAM: &str = "kepler_calibration_noop";

/// The two per-interval maps ([`CpuKey`] -> [`CpuValue`]); [`GENERATION_MAP`] says which one the
/// kernel writes (0: the first).
pub const CPU_MAPS: [&str; 2] = ["cpu_a", "cpu_b"];
/// `u32` index 0 -> `u32` generation, written by user space.
pub const GENERATION_MAP: &str = "generation";
/// Exited thread-group leaders: `u32` tgid -> `u64` exit time (`bpf_ktime_get_ns`).
pub const EXITS_MAP: &str = "exits";
/// Capacity of each CPU map (the C side's `CPU_ENTRIES`).
pub const CPU_MAP_ENTRIES: u32 = 32768;

/// The `u32` global (`const volatile`, set at load time) whose bit `i` switches counter `i` on.
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

/// Value of the CPU maps: on-CPU nanoseconds in the interval, the counters' increase over the
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

// SAFETY: both are #[repr(C)] structs of integers and byte arrays with explicit padding fields,
// so every bit pattern is a valid value and there are no implicit padding bytes.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuKey {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<CpuKey>(), 16);
        assert_eq!(std::mem::size_of::<CpuValue>(), 48);
        assert_eq!(std::mem::offset_of!(CpuValue, counters), 8);
        assert_eq!(std::mem::offset_of!(CpuValue, comm), 32);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut v = CpuValue::default();
        v.comm[..5].copy_from_slice(b"sleep");
        assert_eq!(v.comm(), "sleep");
        v.comm = *b"0123456789abcdef";
        assert_eq!(v.comm(), "0123456789abcdef");
    }

    #[test]
    fn object_is_built_when_required() {
        if std::env::var("KEPLER_REQUIRE_TOOLS").as_deref() == Ok("1") {
            assert!(
                cpu_object().is_some(),
                "BPF object missing but KEPLER_REQUIRE_TOOLS=1"
            );
        }
        if let Some(obj) = cpu_object() {
            assert_eq!(obj.get(..4), Some(&b"\x7fELF"[..]));
        }
    }
}
