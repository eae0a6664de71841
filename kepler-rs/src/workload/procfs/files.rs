//! One process's files under `/proc/<pid>`, for the procfs source: listing the pids, reading
//! `stat` (parsed here, see [`parse_stat`]), `schedstat` and other files through the process's
//! directory handle, and the one kernel-thread rule; [`Skip`] says why a process is left out.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use ::procfs::process::Process;
use ::procfs::ProcError;

/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags: the task is a kernel thread.
pub(super) const PF_KTHREAD: u64 = 0x0020_0000;
/// Why a listed process is not in the sample.
#[derive(Debug)]
pub(super) enum Skip {
    /// It exited between listing and reading: normal, only counted.
    Vanished,
    /// Its data does not parse (the reason is the self-metric label).
    Garbage(&'static str),
    /// A file could not be read for another reason.
    Unreadable(&'static str, String),
}

impl From<&ProcError> for Skip {
    fn from(e: &ProcError) -> Self {
        match e {
            ProcError::NotFound(_) => Skip::Vanished,
            ProcError::Io(io, _) if is_vanished_io(io) => Skip::Vanished,
            other => Skip::Unreadable("dir", other.to_string()),
        }
    }
}

fn is_vanished_io(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// How a failed read of a process file is reported.
pub(super) fn io_skip(name: &'static str, e: &std::io::Error) -> Skip {
    if is_vanished_io(e) {
        Skip::Vanished
    } else {
        Skip::Unreadable(name, e.to_string())
    }
}

/// The pids under a procfs root (its numeric entries), in directory order.
pub(super) fn list_pids(procfs: &std::path::Path) -> std::io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(procfs)? {
        let entry = entry?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Nanoseconds on CPU from a kept-open `/proc/<pid>/schedstat` (its first field), re-read from
/// offset 0: the kernel regenerates the text on every read, and answers `ESRCH` once the
/// process it was opened for is gone.
pub(super) fn read_schedstat(file: &File) -> Result<u64, Skip> {
    let mut buf = [0u8; 96];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| io_skip("schedstat", &e))?;
    if n == 0 {
        // Emptied: a fixture tree's file being rewritten, or a process being reaped.
        return Err(Skip::Vanished);
    }
    buf.get(..n)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.split_ascii_whitespace().next())
        .and_then(|f| f.parse().ok())
        .ok_or(Skip::Garbage("garbage_schedstat"))
}

/// Reads `/proc/<pid>/<name>` through the process's directory handle (so a reused pid cannot
/// hand us another process's file).
pub(super) fn read_relative(proc: &Process, name: &'static str) -> Result<String, Skip> {
    let mut file = proc.open_relative(name).map_err(|e| match Skip::from(&e) {
        Skip::Unreadable(_, msg) => Skip::Unreadable(name, msg),
        other => other,
    })?;
    let mut bytes = Vec::with_capacity(512);
    file.read_to_end(&mut bytes)
        .map_err(|e| io_skip(name, &e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether a process is a kernel thread: `PF_KTHREAD` in its flags, `kthreadd` (pid 2) or a
/// child of it. The one rule for `kernel_processes`, shared by every CPU-time source.
pub(super) fn is_kernel_thread(pid: u32, stat: &StatLine) -> bool {
    stat.flags & PF_KTHREAD != 0 || pid == 2 || stat.ppid == 2
}

/// `comm` and whether the process is a kernel thread, from `<procfs>/<pid>/stat`; `None` when it
/// has exited (or the file cannot be parsed).
pub(crate) fn read_identity(procfs: &std::path::Path, pid: u32) -> Option<(String, bool)> {
    let content = std::fs::read_to_string(procfs.join(pid.to_string()).join("stat")).ok()?;
    let stat = parse_stat(&content)?;
    let kthread = is_kernel_thread(pid, &stat);
    Some((stat.comm, kthread))
}

/// The fields of `/proc/<pid>/stat` this source uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatLine {
    pub(super) pid: u32,
    pub(super) comm: String,
    pub(super) ppid: i64,
    pub(super) flags: u64,
    pub(super) utime: u64,
    pub(super) stime: u64,
    /// Threads in the process; 1 where the field is missing.
    pub(super) num_threads: u64,
    pub(super) starttime: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` is everything between the first `(` and the last `)`, so
/// names with spaces and parentheses work. (Parsed here rather than with procfs-core's `Stat`,
/// whose parser slices without bounds checks and panics on some malformed input.)
pub(super) fn parse_stat(content: &str) -> Option<StatLine> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = content.get(..open)?.trim().parse().ok()?;
    let comm = content.get(open + 1..close)?.to_string();
    // Fields after comm: state(0) ppid(1) pgrp session tty_nr tpgid flags(6) minflt cminflt
    // majflt cmajflt utime(11) stime(12) cutime cstime priority nice num_threads itrealvalue
    // starttime(19).
    let rest: Vec<&str> = content.get(close + 1..)?.split_whitespace().collect();
    let num = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(StatLine {
        pid,
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        flags: num(6)?,
        utime: num(11)?,
        stime: num(12)?,
        num_threads: num(17).unwrap_or(1),
        starttime: num(19)?,
    })
}
