//! Host-wide facts read from procfs: the node's aggregate CPU times (`/proc/stat`, first
//! `cpu ` line) and the CPU model (`/proc/cpuinfo`).
//!
//! The procfs root is always passed in (`/proc` on a host, `/host/proc` in a DaemonSet, a fixture
//! directory in tests). Nothing here keeps state; callers keep the previous [`CpuTimes`] and ask
//! [`CpuTimes::utilisation_since`] for the busy fraction of an interval.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a host file could not be used.
#[derive(Debug, Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Clock ticks per second of `/proc/stat` and `/proc/<pid>/stat` (USER_HZ, what
/// `sysconf(_SC_CLK_TCK)` answers): part of the kernel ABI, 100 on every architecture we build
/// for, whatever the kernel's internal HZ. The one tick rate every tick conversion uses.
pub const USER_HZ: u64 = 100;

/// Node-wide CPU time since boot, in clock ticks (jiffies, [`USER_HZ`] per second), from the
/// first `cpu ` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// `total - idle - iowait`.
    pub busy: u64,
    /// `user + nice + system + idle + iowait + irq + softirq + steal` (guest time is already
    /// counted inside user and nice, so it is not added again).
    pub total: u64,
    /// Online CPUs: the `cpuN` lines of the same file.
    pub cpus: u32,
}

impl CpuTimes {
    /// Parses the content of `/proc/stat`. `path` only names the file in errors.
    pub fn parse(content: &str, path: &Path) -> Result<CpuTimes, HostError> {
        let parse_err = |reason: String| HostError::Parse {
            path: path.to_path_buf(),
            reason,
        };
        let line = content
            .lines()
            .find(|l| l.starts_with("cpu ") || l.starts_with("cpu\t"))
            .ok_or_else(|| parse_err("no aggregate `cpu` line".to_string()))?;
        let mut fields = Vec::with_capacity(10);
        for (i, token) in line.split_whitespace().skip(1).enumerate() {
            let value: u64 = token
                .parse()
                .map_err(|_| parse_err(format!("cpu field {}: not a number: {token:?}", i + 1)))?;
            fields.push(value);
        }
        // user nice system idle are present on every kernel; later fields were added over time.
        if fields.len() < 4 {
            return Err(parse_err(format!(
                "cpu line has {} fields, expected at least 4",
                fields.len()
            )));
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        let (idle, iowait) = (field(3), field(4));
        let total = (0..8).map(field).fold(0u64, u64::saturating_add);
        let busy = total.saturating_sub(idle).saturating_sub(iowait);
        Ok(CpuTimes {
            busy,
            total,
            cpus: count_cpus(content),
        })
    }

    /// The busy fraction of the CPU between `earlier` and `self`, in `0.0..=1.0`. Zero when no
    /// time passed (or the readings are out of order); never NaN.
    pub fn utilisation_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let u = busy as f64 / total as f64;
        if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Reads the node's aggregate CPU times from `<procfs>/stat`.
pub fn read_cpu_times(procfs: &Path) -> Result<CpuTimes, HostError> {
    let path = procfs.join("stat");
    let content = fs::read_to_string(&path).map_err(|source| HostError::Io {
        path: path.clone(),
        source,
    })?;
    CpuTimes::parse(&content, &path)
}

/// The `cpuN` lines of a `/proc/stat` content.
fn count_cpus(content: &str) -> u32 {
    content
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32
}

/// The first `model name` in `<procfs>/cpuinfo`, or `None` when the file is unreadable or has
/// none (some architectures name the CPU differently).
pub fn cpu_model(procfs: &Path) -> Option<String> {
    let content = fs::read_to_string(procfs.join("cpuinfo")).ok()?;
    parse_cpu_model(&content)
}

fn parse_cpu_model(content: &str) -> Option<String> {
    content.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "model name" {
            return None;
        }
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// One logical CPU as `/proc/cpuinfo` describes it (empty strings where it says nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub processor: String,
    pub vendor_id: String,
    pub model_name: String,
    pub physical_id: String,
    pub core_id: String,
}

/// Every logical CPU in `<procfs>/cpuinfo` (empty when unreadable).
pub fn cpu_infos(procfs: &Path) -> Vec<CpuInfo> {
    let content = fs::read_to_string(procfs.join("cpuinfo")).unwrap_or_default();
    parse_cpu_infos(&content)
}

fn parse_cpu_infos(content: &str) -> Vec<CpuInfo> {
    let mut cpus: Vec<CpuInfo> = Vec::new();
    for line in content.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        if key.trim() == "processor" {
            cpus.push(CpuInfo {
                processor: value,
                ..CpuInfo::default()
            });
            continue;
        }
        let Some(cpu) = cpus.last_mut() else { continue };
        match key.trim() {
            "vendor_id" => cpu.vendor_id = value,
            "model name" => cpu.model_name = value,
            "physical id" => cpu.physical_id = value,
            "core id" => cpu.core_id = value,
            _ => {}
        }
    }
    cpus
}

/// How many CPUs and sockets the host has, from `<procfs>/cpuinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Logical CPUs (`processor` entries); at least 1.
    pub logical: u32,
    /// Distinct `physical id`s; 1 where the file does not say (VMs, some architectures).
    pub sockets: u32,
}

/// Reads the CPU topology; an unreadable file counts as one CPU on one socket.
pub fn cpu_topology(procfs: &Path) -> CpuTopology {
    let content = fs::read_to_string(procfs.join("cpuinfo")).unwrap_or_default();
    parse_cpu_topology(&content)
}

fn parse_cpu_topology(content: &str) -> CpuTopology {
    let mut logical = 0u32;
    let mut sockets = std::collections::BTreeSet::new();
    for line in content.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => logical = logical.saturating_add(1),
            "physical id" => {
                sockets.insert(value.trim().to_string());
            }
            _ => {}
        }
    }
    CpuTopology {
        logical: logical.max(1),
        sockets: (sockets.len() as u32).max(1),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn online_cpus_are_the_numbered_cpu_lines() {
        let stat = "cpu  1 2 3 4\ncpu0 1 1 1 1\ncpu1 0 1 2 3\ncpu12 0 0 0 0\nintr 5\ncpufreq 1\n";
        assert_eq!(count_cpus(stat), 3);
        assert_eq!(count_cpus("cpu  1 2 3 4\n"), 0);
    }

    use super::*;

    #[test]
    fn user_hz_is_what_the_system_says() {
        assert_eq!(USER_HZ, procfs::ticks_per_second());
    }

    #[test]
    fn cpu_infos_one_per_processor() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nphysical id\t: 0\ncore id\t: 3\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n";
        let cpus = parse_cpu_infos(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[0],
            CpuInfo {
                processor: "0".into(),
                vendor_id: "GenuineIntel".into(),
                model_name: "Xeon".into(),
                physical_id: "0".into(),
                core_id: "3".into()
            }
        );
        assert_eq!(cpus[1].core_id, "");
    }

    #[test]
    fn topology_counts_processors_and_sockets() {
        let two_sockets = "processor\t: 0\nphysical id\t: 0\n\nprocessor\t: 1\nphysical id\t: 1\n\nprocessor\t: 2\nphysical id\t: 0\n";
        assert_eq!(
            parse_cpu_topology(two_sockets),
            CpuTopology {
                logical: 3,
                sockets: 2
            }
        );
        assert_eq!(
            parse_cpu_topology("processor : 0\nprocessor : 1\n"),
            CpuTopology {
                logical: 2,
                sockets: 1
            }
        );
        assert_eq!(
            parse_cpu_topology(""),
            CpuTopology {
                logical: 1,
                sockets: 1
            }
        );
    }

    const STAT: &str = "cpu  4705 150 1120 16250 520 30 45 5 100 7\n\
                        cpu0 2000 75 560 8000 260 15 20 3 50 3\n\
                        intr 114930548 113199788 3 0 5 263 0 4 [... 242 more]\n\
                        ctxt 1990473\nbtime 1062191376\nprocesses 2915\n";

    #[test]
    fn parses_first_cpu_line_without_guest() {
        let t = CpuTimes::parse(STAT, Path::new("/proc/stat")).unwrap();
        let total = 4705 + 150 + 1120 + 16250 + 520 + 30 + 45 + 5;
        assert_eq!(t.total, total);
        assert_eq!(t.busy, total - 16250 - 520);
    }

    #[test]
    fn old_kernels_with_four_fields() {
        let t = CpuTimes::parse("cpu 10 0 10 80\n", Path::new("x")).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 20,
                total: 100,
                cpus: 0
            }
        );
    }

    #[test]
    fn parse_errors_name_the_file() {
        for bad in ["", "cpu0 1 2 3 4\n", "cpu 1 2 x 4\n", "cpu 1 2 3\n"] {
            let err = CpuTimes::parse(bad, Path::new("/host/proc/stat")).unwrap_err();
            assert!(err.to_string().starts_with("/host/proc/stat: "), "{err}");
        }
    }

    #[test]
    fn utilisation_is_bounded_and_never_nan() {
        let a = CpuTimes {
            busy: 100,
            total: 400,
            ..Default::default()
        };
        let b = CpuTimes {
            busy: 150,
            total: 500,
            ..Default::default()
        };
        assert_eq!(b.utilisation_since(&a), 0.5);
        assert_eq!(a.utilisation_since(&a), 0.0);
        // Out of order or inconsistent readings stay in range.
        assert_eq!(a.utilisation_since(&b), 0.0);
        let odd = CpuTimes {
            busy: 1000,
            total: 450,
            ..Default::default()
        };
        assert_eq!(odd.utilisation_since(&a), 1.0);
        let max = CpuTimes {
            busy: u64::MAX,
            total: u64::MAX,
            ..Default::default()
        };
        let u = max.utilisation_since(&CpuTimes::default());
        assert!((0.0..=1.0).contains(&u));
    }

    #[test]
    fn reads_files_from_a_procfs_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), STAT).unwrap();
        std::fs::write(
            dir.path().join("cpuinfo"),
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n\n\
             processor\t: 1\nmodel name\t: Other\n",
        )
        .unwrap();
        assert!(read_cpu_times(dir.path()).unwrap().total > 0);
        assert_eq!(
            cpu_model(dir.path()).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz")
        );
        let missing = dir.path().join("nope");
        let err = read_cpu_times(&missing).unwrap_err();
        assert!(err.to_string().contains("nope/stat"), "{err}");
        assert_eq!(cpu_model(&missing), None);
        assert_eq!(parse_cpu_model("processor : 0\nmodel name :   \n"), None);
    }

    #[test]
    fn real_proc_is_readable() {
        let a = read_cpu_times(Path::new("/proc")).unwrap();
        assert!(a.total > 0 && a.busy <= a.total);
    }
}
