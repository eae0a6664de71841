//! cgroup v2 id -> cgroup path -> container, resolved lazily and cached.
//!
//! The kernel names a task's cgroup by its 64-bit id (`bpf_get_current_cgroup_id`), which is the
//! inode number of the cgroup's directory in the v2 hierarchy. An unknown id is resolved once:
//! first by opening the directory straight from the id with `open_by_handle_at(2)` (a kernfs
//! file handle is the id itself) and reading the path back from `/proc/self/fd`, which works
//! even when every process of the cgroup has already exited; where that is not permitted, from
//! `/proc/<tgid>/cgroup` of a live process that ran in it, accepted only if the directory's
//! inode equals the id. The path is then classified by [`super::super::cgroup::container_in_path`].
//! Ids are never reused by the kernel, so a cached answer is never wrong; entries are dropped
//! when their container's cgroup is removed or, for other cgroups, after a while unused, so the
//! cache stays bounded. Nothing here walks the cgroup tree.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::workload::cgroup::{self, CgroupRef, Hierarchy};
use crate::workload::ContainerIdentity;

/// Ticks after which an unused non-container entry is forgotten.
const FORGET_AFTER_TICKS: u64 = 100;

/// What a cgroup id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupClass {
    /// A container's cgroup (or one below it); `dir` is the container's own v2 directory.
    Container {
        identity: ContainerIdentity,
        dir: CgroupRef,
    },
    /// Any other cgroup (system services, user sessions, the root).
    Other,
}

#[derive(Debug)]
struct Cached {
    class: CgroupClass,
    last_used: u64,
}

/// Why an id could not be resolved now.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Unresolved {
    /// The cgroup is gone and no live process says where it was.
    Gone,
    /// A live process's cgroup file did not match the id (it moved, or the pid was reused).
    Mismatch,
}

/// The cache; one per eBPF source.
#[derive(Debug)]
pub struct CgroupIds {
    /// The v2 mount as this process sees it (canonical), e.g. `/sys/fs/cgroup/unified`.
    v2_root: PathBuf,
    procfs: PathBuf,
    /// The v2 mount's root directory, for `open_by_handle_at`; `None` once it proved unusable.
    mount: Option<File>,
    cache: HashMap<u64, Cached>,
    tick: u64,
}

impl CgroupIds {
    pub fn new(v2_root: &Path, procfs: PathBuf) -> io::Result<Self> {
        let v2_root = v2_root.canonicalize()?;
        let mount = File::open(&v2_root)?;
        Ok(Self {
            v2_root,
            procfs,
            mount: Some(mount),
            cache: HashMap::new(),
            tick: 0,
        })
    }

    /// The canonical v2 mount point.
    pub fn v2_root(&self) -> &Path {
        &self.v2_root
    }

    /// How many ids are cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Classifies a cgroup id; `tgid` is a process that ran in it (for the `/proc` fallback).
    pub fn resolve(&mut self, id: u64, tgid: u32) -> Result<&CgroupClass, Unresolved> {
        let tick = self.tick;
        if !self.cache.contains_key(&id) {
            let path = self.path_by_handle(id).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESTALE) {
                    // Removed: only a process that still says so could tell, and it cannot.
                    self.path_from_proc(id, tgid).map_err(|_| Unresolved::Gone)
                } else {
                    self.path_from_proc(id, tgid)
                }
            })?;
            self.cache.insert(
                id,
                Cached {
                    class: classify(&path),
                    last_used: tick,
                },
            );
        }
        match self.cache.get_mut(&id) {
            Some(c) => {
                c.last_used = tick;
                Ok(&c.class)
            }
            None => Err(Unresolved::Gone),
        }
    }

    /// Forgets every id that belongs to a container (its cgroup was removed).
    pub fn forget_container(&mut self, container_id: &str) {
        self.cache.retain(|_, c| {
            !matches!(&c.class, CgroupClass::Container { identity, .. } if identity.id == container_id)
        });
    }

    /// Advances the clock and forgets non-container ids unused for a while.
    pub fn tick(&mut self) {
        self.tick += 1;
        let now = self.tick;
        self.cache.retain(|_, c| {
            matches!(c.class, CgroupClass::Container { .. })
                || now.saturating_sub(c.last_used) < FORGET_AFTER_TICKS
        });
    }

    /// Whether a v2 cgroup directory still exists.
    pub fn exists(&self, dir: &CgroupRef) -> bool {
        let rel = dir.path.trim_start_matches('/');
        !rel.split('/').any(|s| s == "..") && self.v2_root.join(rel).is_dir()
    }

    /// The cgroup's path below the v2 root (`/kubepods.slice/...`), from its id alone.
    fn path_by_handle(&mut self, id: u64) -> io::Result<String> {
        let Some(mount) = &self.mount else {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        };
        let fd = match open_by_cgroup_id(mount, id) {
            Ok(fd) => fd,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                ) {
                    tracing::info!(error = %e, "cannot open cgroups by id; resolving cgroup ids from /proc/<pid>/cgroup");
                    self.mount = None;
                }
                return Err(e);
            }
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let rel = link
            .strip_prefix(&self.v2_root)
            .map_err(|_| io::Error::other(format!("{} is outside the v2 mount", link.display())))?;
        Ok(format!("/{}", rel.display()))
    }

    /// The v2 path from `/proc/<tgid>/cgroup`, if its directory's inode is `id`.
    fn path_from_proc(&self, id: u64, tgid: u32) -> Result<String, Unresolved> {
        let content = std::fs::read_to_string(self.procfs.join(tgid.to_string()).join("cgroup"))
            .map_err(|_| Unresolved::Gone)?;
        let line = cgroup::parse(&content)
            .into_iter()
            .find(|l| l.is_v2())
            .ok_or(Unresolved::Mismatch)?;
        let rel = line.path.trim_start_matches('/');
        if rel.split('/').any(|s| s == "..") {
            return Err(Unresolved::Mismatch);
        }
        let ino = std::fs::metadata(self.v2_root.join(rel))
            .map_err(|_| Unresolved::Mismatch)?
            .ino();
        if ino == id {
            Ok(line.path.to_string())
        } else {
            Err(Unresolved::Mismatch)
        }
    }
}

/// Classifies a v2 cgroup path.
pub fn classify(path: &str) -> CgroupClass {
    match cgroup::container_in_path(path) {
        Some((identity, prefix)) => CgroupClass::Container {
            identity,
            dir: CgroupRef {
                hierarchy: Hierarchy::V2,
                path: prefix.to_string(),
            },
        },
        None => CgroupClass::Other,
    }
}

/// `struct file_handle` with the 8-byte payload of a kernfs handle (the cgroup id).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// `FILEID_KERNFS` from include/linux/exportfs.h.
const FILEID_KERNFS: i32 = 0xfe;

/// Opens the cgroup directory whose id is `id` on the v2 mount `mount`.
fn open_by_cgroup_id(mount: &File, id: u64) -> io::Result<OwnedFd> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a properly initialised `struct file_handle` header followed by exactly
    // `handle_bytes` (8) bytes of payload, alive for the call; the kernel only reads it.
    // `mount` is an open directory descriptor. No Rust invariant depends on the result.
    #[allow(unsafe_code)]
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast::<libc::file_handle>(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel, is valid and owned by nobody else.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn classify_paths() {
        let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b2d2c5e_5f0a_4d3b_9c1e_8a7f6e5d4c3b.slice/cri-containerd-{ID}.scope/sub");
        match classify(&path) {
            CgroupClass::Container { identity, dir } => {
                assert_eq!(identity.id, ID);
                assert_eq!(
                    identity.pod_uid.as_deref(),
                    Some("6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b")
                );
                assert!(dir.path.ends_with(".scope"), "{}", dir.path);
            }
            CgroupClass::Other => panic!("not a container"),
        }
        assert_eq!(classify("/"), CgroupClass::Other);
        assert_eq!(classify("/system.slice/sshd.service"), CgroupClass::Other);
    }

    #[test]
    fn resolves_this_process_from_proc_when_handles_are_unusable() {
        let v2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.controllers").is_file());
        let Some(v2) = v2 else {
            println!("skipped: no cgroup v2 mount");
            return;
        };
        let mut ids = CgroupIds::new(v2, "/proc".into()).unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let line = cgroup::parse(&own).into_iter().find(|l| l.is_v2()).unwrap();
        let rel = line.path.trim_start_matches('/');
        let ino = std::fs::metadata(ids.v2_root().join(rel)).unwrap().ino();
        let pid = std::process::id();
        assert_eq!(ids.path_from_proc(ino, pid).as_deref(), Ok(line.path));
        assert_eq!(ids.path_from_proc(ino + 1, pid), Err(Unresolved::Mismatch));
        ids.mount = None;
        assert!(ids.resolve(ino, pid).is_ok());
        assert_eq!(ids.len(), 1);
        for _ in 0..FORGET_AFTER_TICKS {
            ids.tick();
        }
        assert!(ids.is_empty(), "unused non-container ids are forgotten");
    }
}
