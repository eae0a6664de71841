//! Per-cgroup CPU usage: where the cgroup hierarchies are mounted and how to read a cgroup's
//! cumulative CPU time.
//!
//! [`CgroupLayout::detect`] looks at a cgroup root (`/sys/fs/cgroup`, or `/host/sys/fs/cgroup` in
//! a DaemonSet) and finds the unified v2 hierarchy (the root itself, or `unified/` on hybrid
//! hosts) and the v1 `cpuacct` controller. [`CgroupLayout::usage`] reads `cpu.stat`'s
//! `usage_usec` (v2) or `cpuacct.usage` (v1) for a [`CgroupRef`] from
//! [`super::cgroup::resolve`]. The values are raw cumulative counters: callers turn them into
//! deltas with [`crate::power::counter::Counter`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::cgroup::{CgroupRef, Hierarchy};
use crate::power::units::CpuNanos;

/// Why a cgroup's CPU usage could not be read.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no mounted cgroup hierarchy for {hierarchy} under {root}")]
    NoHierarchy { hierarchy: String, root: PathBuf },
    #[error("cgroup path {path:?} is not a plain absolute path below the hierarchy root")]
    UnsafePath { path: String },
    /// The cgroup's directory no longer exists: its container ended (normal churn).
    #[error("cgroup {dir} was removed")]
    Gone { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected content in {path}: {reason}")]
    Garbage { path: PathBuf, reason: String },
}

impl CgroupError {
    /// Whether the cgroup directory (or its file) does not exist, e.g. the container just exited.
    pub fn is_not_found(&self) -> bool {
        match self {
            CgroupError::Gone { .. } => true,
            CgroupError::Read { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Where the cgroup hierarchies that account CPU time are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    root: PathBuf,
    v2: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
}

impl CgroupLayout {
    /// Inspects `cgroup_root`: pure v2 if `<root>/cgroup.controllers` exists, hybrid if
    /// `<root>/unified/cgroup.controllers` exists, and the v1 `cpuacct` controller at
    /// `<root>/cpuacct`, `<root>/cpu,cpuacct` or `<root>/cpu` (the first with `cpuacct.usage`).
    pub fn detect(cgroup_root: &Path) -> CgroupLayout {
        let v2 = if cgroup_root.join("cgroup.controllers").is_file() {
            Some(cgroup_root.to_path_buf())
        } else {
            let unified = cgroup_root.join("unified");
            unified
                .join("cgroup.controllers")
                .is_file()
                .then_some(unified)
        };
        let cpuacct = ["cpuacct", "cpu,cpuacct", "cpu"]
            .iter()
            .map(|d| cgroup_root.join(d))
            .find(|d| d.join("cpuacct.usage").is_file());
        CgroupLayout {
            root: cgroup_root.to_path_buf(),
            v2,
            cpuacct,
        }
    }

    /// The mount point of the unified (v2) hierarchy, if any.
    pub fn v2_root(&self) -> Option<&Path> {
        self.v2.as_deref()
    }

    /// The mount point of the v1 `cpuacct` controller, if any.
    pub fn cpuacct_root(&self) -> Option<&Path> {
        self.cpuacct.as_deref()
    }

    /// Whether no hierarchy that accounts CPU time was found.
    pub fn is_empty(&self) -> bool {
        self.v2.is_none() && self.cpuacct.is_none()
    }

    /// Cumulative CPU time of a cgroup (all its processes, past and present, and its children).
    pub fn usage(&self, cg: &CgroupRef) -> Result<CpuNanos, CgroupError> {
        let rel = safe_relative(&cg.path)?;
        match &cg.hierarchy {
            Hierarchy::V2 => {
                let root = self.v2.as_ref().ok_or_else(|| self.missing("v2"))?;
                let path = root.join(rel).join("cpu.stat");
                let content = read(&path)?;
                let usec = content
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .ok_or_else(|| garbage(&path, "no usage_usec line"))?;
                let usec = usec
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| garbage(&path, &format!("usage_usec {usec:?}: {e}")))?;
                Ok(CpuNanos::from_micros(usec))
            }
            h @ Hierarchy::V1 { controllers } => {
                if !h.has_controller("cpuacct") {
                    return Err(self.missing(&format!("v1 {controllers} (no cpuacct)")));
                }
                let root = self
                    .cpuacct
                    .as_ref()
                    .ok_or_else(|| self.missing("cpuacct"))?;
                let path = root.join(rel).join("cpuacct.usage");
                let content = read(&path)?;
                let ns = content
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| garbage(&path, &format!("{:?}: {e}", content.trim())))?;
                Ok(CpuNanos(ns))
            }
        }
    }

    fn missing(&self, hierarchy: &str) -> CgroupError {
        CgroupError::NoHierarchy {
            hierarchy: hierarchy.to_string(),
            root: self.root.clone(),
        }
    }
}

impl fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Option<PathBuf>| match p {
            Some(p) => p.display().to_string(),
            None => "none".to_string(),
        };
        write!(f, "v2={} cpuacct={}", show(&self.v2), show(&self.cpuacct))
    }
}

/// `/a/b` -> `a/b`, refusing anything that could leave the hierarchy root.
fn safe_relative(path: &str) -> Result<&str, CgroupError> {
    let unsafe_path = || CgroupError::UnsafePath {
        path: path.to_string(),
    };
    let rel = path.strip_prefix('/').ok_or_else(unsafe_path)?;
    if rel.contains('\0') || rel.split('/').any(|s| s == ".." || s == ".") {
        return Err(unsafe_path());
    }
    Ok(rel)
}

/// Reads a cgroup's counter file; a missing file whose cgroup directory is missing too is
/// [`CgroupError::Gone`] (the container ended between listing and reading), not a read error.
fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| match path.parent() {
        Some(dir) if source.kind() == io::ErrorKind::NotFound && !dir.exists() => {
            CgroupError::Gone {
                dir: dir.to_path_buf(),
            }
        }
        _ => CgroupError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn garbage(path: &Path, reason: &str) -> CgroupError {
    CgroupError::Garbage {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn v2(path: &str) -> CgroupRef {
        CgroupRef {
            hierarchy: Hierarchy::V2,
            path: path.into(),
        }
    }

    fn v1(controllers: &str, path: &str) -> CgroupRef {
        CgroupRef {
            hierarchy: Hierarchy::V1 {
                controllers: controllers.into(),
            },
            path: path.into(),
        }
    }

    const STAT: &str = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";

    #[test]
    fn pure_v2() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cgroup.controllers", "cpu io memory\n");
        write(t.path(), "kubepods.slice/x.scope/cpu.stat", STAT);
        let l = CgroupLayout::detect(t.path());
        assert_eq!(l.v2_root(), Some(t.path()));
        assert_eq!(l.cpuacct_root(), None);
        assert_eq!(
            l.usage(&v2("/kubepods.slice/x.scope")).unwrap(),
            CpuNanos(1_500_000)
        );
        assert!(matches!(
            l.usage(&v1("cpu,cpuacct", "/x")),
            Err(CgroupError::NoHierarchy { .. })
        ));
        let gone = l.usage(&v2("/gone.scope")).unwrap_err();
        assert!(gone.is_not_found());
        assert!(matches!(gone, CgroupError::Gone { .. }), "{gone:?}");
        assert!(gone.to_string().contains("gone.scope"), "{gone}");
        // The directory is there but its counter file is not: a real error, not churn.
        fs::create_dir_all(t.path().join("nostat.scope")).unwrap();
        let missing = l.usage(&v2("/nostat.scope")).unwrap_err();
        assert!(matches!(missing, CgroupError::Read { .. }), "{missing:?}");
        assert!(
            missing.to_string().contains("nostat.scope/cpu.stat"),
            "{missing}"
        );
    }

    #[test]
    fn hybrid() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "unified/cgroup.controllers", "hugetlb\n");
        write(t.path(), "unified/a.slice/cpu.stat", STAT);
        write(t.path(), "cpuacct/cpuacct.usage", "99\n");
        write(t.path(), "cpu/cpuacct.usage", "1\n");
        write(t.path(), "cpuacct/a.slice/cpuacct.usage", "123456789\n");
        let l = CgroupLayout::detect(t.path());
        assert_eq!(l.v2_root(), Some(t.path().join("unified").as_path()));
        assert_eq!(l.cpuacct_root(), Some(t.path().join("cpuacct").as_path()));
        assert_eq!(l.usage(&v2("/a.slice")).unwrap(), CpuNanos(1_500_000));
        assert_eq!(
            l.usage(&v1("cpuacct", "/a.slice")).unwrap(),
            CpuNanos(123_456_789)
        );
        assert_eq!(l.usage(&v1("cpuacct", "/")).unwrap(), CpuNanos(99));
        assert!(l.to_string().contains("unified"));
    }

    #[test]
    fn v1_only() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cpu,cpuacct/cpuacct.usage", "5\n");
        write(t.path(), "cpu,cpuacct/docker/abc/cpuacct.usage", "42");
        fs::create_dir_all(t.path().join("memory/docker")).unwrap();
        let l = CgroupLayout::detect(t.path());
        assert_eq!(l.v2_root(), None);
        assert!(!l.is_empty());
        assert_eq!(
            l.usage(&v1("cpu,cpuacct", "/docker/abc")).unwrap(),
            CpuNanos(42)
        );
        assert!(l.usage(&v1("memory", "/docker/abc")).is_err());
        assert!(matches!(
            l.usage(&v2("/docker/abc")),
            Err(CgroupError::NoHierarchy { .. })
        ));
        assert!(CgroupLayout::detect(&t.path().join("nothing")).is_empty());
    }

    #[test]
    fn garbage_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cgroup.controllers", "");
        write(t.path(), "a/cpu.stat", "user_usec 5\n");
        write(t.path(), "b/cpu.stat", "usage_usec lots\n");
        write(t.path(), "c/cpu.stat", "");
        write(t.path(), "cpuacct/cpuacct.usage", "x");
        let l = CgroupLayout::detect(t.path());
        for p in ["/a", "/b", "/c"] {
            let e = l.usage(&v2(p)).unwrap_err();
            assert!(matches!(e, CgroupError::Garbage { .. }), "{p}: {e}");
            assert!(e.to_string().contains("cpu.stat"), "{e}");
        }
        for p in ["/../etc", "/a/../../x", "relative", "/./a"] {
            assert!(
                matches!(l.usage(&v2(p)), Err(CgroupError::UnsafePath { .. })),
                "{p}"
            );
        }
    }
}
