//! Per-CPU perf events for the hardware counters, and handing them to the BPF program.
//!
//! [`open_per_cpu`] opens one counting event (no sampling, no ring buffer) per online CPU for
//! all processes on it, as `perf stat -a` does; [`set_event`] puts an event's fd into a
//! `BPF_MAP_TYPE_PERF_EVENT_ARRAY` at the CPU's index, where the `sched_switch` program reads it
//! with `bpf_perf_event_read_value`. Neither call is offered by aya 0.14 (it opens perf events
//! only to attach programs to them), and libc has no `perf_event_attr`, so both are made here:
//! the only `unsafe` is the two system calls, on structures this module owns.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What one counter counts: a `perf_event_attr` type and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfEventSpec {
    /// `perf_type_id` (`PERF_TYPE_HARDWARE` = 0, `PERF_TYPE_SOFTWARE` = 1, ...).
    pub kind: u32,
    pub config: u64,
}

impl PerfEventSpec {
    /// `PERF_COUNT_HW_CPU_CYCLES`.
    pub const CPU_CYCLES: Self = Self { kind: 0, config: 0 };
    /// `PERF_COUNT_HW_INSTRUCTIONS`.
    pub const INSTRUCTIONS: Self = Self { kind: 0, config: 1 };
    /// `PERF_COUNT_HW_CACHE_MISSES`.
    pub const CACHE_MISSES: Self = Self { kind: 0, config: 3 };
    /// `PERF_COUNT_SW_CPU_CLOCK`: nanoseconds of CPU time, counted by the kernel without a PMU.
    /// Not a hardware counter: tests put it in a counter's place to check the plumbing on
    /// machines without a PMU (its per-process value must equal the on-CPU time).
    pub const SOFTWARE_CPU_CLOCK: Self = Self { kind: 1, config: 0 };
}

/// `struct perf_event_attr` up to `config1` (`PERF_ATTR_SIZE_VER0`, 64 bytes), which every
/// kernel with perf events accepts; later fields are then zero.
#[repr(C)]
#[derive(Debug, Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit field: disabled (bit 0), inherit (bit 1), ... all zero: enabled at once, not
    /// inherited (the BPF read refuses inherited events).
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Opens `spec` on one CPU for every process (`pid` -1), counting from now.
pub fn open(spec: PerfEventSpec, cpu: u32) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: spec.kind,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: spec.config,
        ..PerfEventAttr::default()
    };
    let cpu = libc::c_int::try_from(cpu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "CPU id out of range"))?;
    // SAFETY: perf_event_open(2) reads `attr.size` bytes from the valid, fully initialised
    // `attr` (its size is exactly that), and takes integer arguments only.
    #[allow(unsafe_code)]
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `spec` on each of `cpus`; the first failure is the answer.
pub fn open_per_cpu(spec: PerfEventSpec, cpus: &[u32]) -> io::Result<Vec<(u32, OwnedFd)>> {
    cpus.iter()
        .map(|&cpu| Ok((cpu, open(spec, cpu)?)))
        .collect()
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// Puts `event` at index `cpu` of the perf event array `map`. The map keeps its own reference to
/// the event for as long as `map`'s fd stays open.
pub fn set_event(map: BorrowedFd<'_>, cpu: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    let key: u32 = cpu;
    let value: u32 = u32::try_from(event.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative fd"))?;
    let attr = MapUpdateAttr {
        map_fd: u32::try_from(map.as_raw_fd())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative fd"))?,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) reads `size_of::<MapUpdateAttr>()` bytes from the valid `attr`, whose key
    // and value pointers point to live u32s for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapUpdateAttr,
            std::mem::size_of::<MapUpdateAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_is_the_first_abi_version() {
        // PERF_ATTR_SIZE_VER0 and the offsets of the fields the kernel reads.
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, config), 8);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, flags), 40);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(std::mem::size_of::<MapUpdateAttr>(), 32);
    }

    #[test]
    fn bad_cpu_is_an_error_not_a_panic() {
        let err = open(PerfEventSpec::SOFTWARE_CPU_CLOCK, u32::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
