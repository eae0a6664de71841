//! Real cgroups for root tests: the cgroup v2 mount, kubepods-shaped container cgroups that
//! remove themselves, freezing, and the kernel's CPU time of a cgroup.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 mount: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
pub fn v2_root() -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|p| p.join("cgroup.controllers").is_file())
}

/// The cgroup v2 mount, or `None` after [`crate::require::tool_missing`] (fails under CI).
pub fn require_v2_root() -> Option<PathBuf> {
    let root = v2_root();
    if root.is_none() {
        crate::require::tool_missing(
            "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified",
        );
    }
    root
}

/// A fresh 64-hex container id and a pod UID (with dashes), unique per process and call.
pub fn unique_ids() -> (String, String) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let pid = std::process::id();
    let id = format!("{nanos:032x}{pid:016x}{n:016x}");
    let uid = format!(
        "{pid:08x}-{n:04x}-4000-8000-{:012x}",
        nanos as u64 & 0xffff_ffff_ffff
    );
    (id, uid)
}

/// The path segments of a containerd container cgroup as the kubelet's systemd driver makes it
/// for a besteffort pod:
/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
pub fn kubepods_segments(id: &str, pod_uid: &str) -> Vec<String> {
    vec![
        "kubepods.slice".to_string(),
        "kubepods-besteffort.slice".to_string(),
        format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{id}.scope"),
    ]
}

/// Directories a test created; removed bottom-up on drop (parents that existed before are left
/// alone). A dying task can keep a cgroup busy for a moment, so removal retries for two seconds.
#[derive(Debug, Default)]
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates `base/seg1/seg2/...`, remembering only what did not exist, and returns the leaf.
    pub fn create_path(&mut self, base: &Path, segments: &[String]) -> PathBuf {
        let mut dir = base.to_path_buf();
        for seg in segments {
            dir.push(seg);
            match fs::create_dir(&dir) {
                Ok(()) => self.0.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {}: {e}", dir.display()),
            }
        }
        dir
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// `cpu.stat usage_usec` of a v2 cgroup directory.
pub fn usage_usec(cgroup: &Path) -> u64 {
    let stat = fs::read_to_string(cgroup.join("cpu.stat"))
        .unwrap_or_else(|e| panic!("{}/cpu.stat: {e}", cgroup.display()));
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}/cpu.stat has no usage_usec", cgroup.display()))
}

/// Freezes (`true`) or thaws (`false`) the cgroup at `dir` (`cgroup.freeze`) and waits, bounded,
/// until its `cgroup.events` says so. A frozen cgroup's processes are off the CPU, so its CPU
/// time stands still while a source and `cpu.stat` are both read. `name` labels the panic.
pub fn freeze_cgroup(dir: &Path, name: &str, frozen: bool) {
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
        .unwrap_or_else(|e| panic!("{name}: write cgroup.freeze: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(dir.join("cgroup.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == want)
    {
        assert!(Instant::now() < deadline, "{name}: never {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A shell command whose children start inside `cgroup` (the shell joins before it runs
/// `script`).
pub fn spawn_in_cgroup(cgroup: &Path, script: &str) -> Child {
    let procs = cgroup.join("cgroup.procs");
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > '{}' && {script}", procs.display()))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sh: {e}"))
}

/// A container cgroup for a test: kubepods-shaped under the v2 mount, thawed and removed on drop.
#[derive(Debug)]
pub struct TestContainer {
    pub id: String,
    pub pod_uid: String,
    pub dir: PathBuf,
    // Last: removed after everything that lived in it.
    _dirs: CreatedDirs,
}

impl TestContainer {
    /// A new container cgroup; `None` when no cgroup v2 hierarchy is mounted (see
    /// [`require_v2_root`]).
    pub fn create() -> Option<Self> {
        let v2 = require_v2_root()?;
        let (id, pod_uid) = unique_ids();
        let mut dirs = CreatedDirs::default();
        let dir = dirs.create_path(&v2, &kubepods_segments(&id, &pod_uid));
        Some(Self {
            id,
            pod_uid,
            dir,
            _dirs: dirs,
        })
    }

    /// The cgroup's id as the kernel reports it (`bpf_get_current_cgroup_id`): the inode number
    /// of its directory.
    pub fn cgroup_id(&self) -> u64 {
        fs::metadata(&self.dir)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.display()))
            .ino()
    }

    /// `cpu.stat usage_usec` of the container.
    pub fn usage_usec(&self) -> u64 {
        usage_usec(&self.dir)
    }

    /// Freezes (`true`) or thaws the container; see [`freeze_cgroup`].
    pub fn freeze(&self, frozen: bool) {
        freeze_cgroup(&self.dir, &self.id, frozen);
    }

    /// A shell command started inside the container; see [`spawn_in_cgroup`].
    pub fn spawn(&self, script: &str) -> Child {
        spawn_in_cgroup(&self.dir, script)
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        // A test that failed with the container frozen: thaw it so its processes can die.
        let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped_like_the_runtime_s() {
        let (a, uid_a) = unique_ids();
        let (b, _) = unique_ids();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            uid_a.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        let segments = kubepods_segments(&a, &uid_a);
        assert_eq!(
            segments[2],
            format!("kubepods-besteffort-pod{}.slice", uid_a.replace('-', "_"))
        );
        assert_eq!(segments[3], format!("cri-containerd-{a}.scope"));
    }

    #[test]
    fn created_dirs_are_removed_but_existing_parents_stay() {
        let base = std::env::temp_dir().join(format!("kepler-test-support-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        {
            let mut dirs = CreatedDirs::default();
            let leaf = dirs.create_path(&base, &["a".to_string(), "b".to_string()]);
            assert!(leaf.is_dir());
        }
        assert!(base.is_dir());
        assert!(!base.join("a").exists());
        fs::remove_dir(&base).unwrap();
    }
}
