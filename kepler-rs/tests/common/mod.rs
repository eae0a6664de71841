//! Shared helpers for root tests on this kernel: kubepods-shaped cgroups that clean themselves
//! up, busy processes that die with the test, unique container ids and pod UIDs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod freeze;
pub mod otlp;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the test runs as root; prints the skip line when not.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        println!("skipped: {what} needs root (euid {euid})");
    }
    euid == 0
}

/// The cgroup v2 mount: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
pub fn v2_root() -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|p| p.join("cgroup.controllers").is_file())
}

/// A fresh 64-hex container id and a pod UID, unique per process and call.
pub fn unique_ids() -> (String, String) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let pid = std::process::id();
    let id = format!("{nanos:032x}{pid:016x}{n:016x}");
    let uid = format!(
        "{pid:08x}-{n:04x}-4000-8000-{:012x}",
        nanos as u64 & 0xffff_ffff_ffff
    );
    (id, uid)
}

/// Copies a shared powercap fixture (e.g. `intel-2socket-server`) to `<sysfs>/class/powercap`.
pub fn copy_powercap_fixture(host: &str, sysfs: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/powercap")
        .join(host);
    let powercap = sysfs.join("class/powercap");
    for zone in fs::read_dir(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display())) {
        let zone = zone.unwrap();
        fs::create_dir_all(powercap.join(zone.file_name())).unwrap();
        for file in fs::read_dir(zone.path()).unwrap() {
            let file = file.unwrap();
            fs::copy(
                file.path(),
                powercap.join(zone.file_name()).join(file.file_name()),
            )
            .unwrap();
        }
    }
}

/// A real-shaped `/proc/<pid>/stat` line (all 52 fields): parent 1, `flags`, `utime` ticks, no
/// system time, and a start time derived from the pid (so a pid is one process per test).
pub fn proc_stat_line(pid: u32, comm: &str, flags: u64, utime: u64) -> String {
    format!(
        "{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 100 0 0 0 {utime} 0 0 0 20 0 1 0 {} 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        5000 + pid
    )
}

/// `cpu.stat usage_usec` of a v2 cgroup directory.
pub fn usage_usec(cgroup: &Path) -> u64 {
    let stat = fs::read_to_string(cgroup.join("cpu.stat")).unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Directories this test created; removed bottom-up on drop (shared parents that existed
/// before are left alone).
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
            // A dying task can keep a cgroup busy for a moment.
            for _ in 0..50 {
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

/// A kubepods-shaped containerd container cgroup under the v2 mount (systemd driver,
/// besteffort QoS): `kubepods.slice/.../kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
pub fn kubepods_segments(id: &str, pod_uid: &str) -> Vec<String> {
    vec![
        "kubepods.slice".to_string(),
        "kubepods-besteffort.slice".to_string(),
        format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{id}.scope"),
    ]
}

/// A CPU-burning shell loop, killed on drop.
#[derive(Debug)]
pub struct BusyProcess(Child);

impl BusyProcess {
    pub fn spawn() -> Self {
        Self(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        )
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Moves the process into a cgroup (v1 or v2 directory).
    pub fn join(&self, cgroup: &Path) {
        fs::write(cgroup.join("cgroup.procs"), self.pid().to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", cgroup.display()));
    }
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it cannot be reaped before drop waits on it.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }
}

impl Drop for BusyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Golden files

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

/// Compares `actual` with the golden file, or rewrites it when `UPDATE_GOLDEN=1`.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let exp: Vec<&str> = expected.split('\n').collect();
    let act: Vec<&str> = actual.split('\n').collect();
    let first = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    let from = first.saturating_sub(2);
    let mut report = format!(
        "{name} differs from {} at line {} (expected {} lines, got {}):\n",
        path.display(),
        first + 1,
        exp.len(),
        act.len()
    );
    for i in from..(first + 3) {
        let marker = if i == first { ">" } else { " " };
        if let Some(line) = exp.get(i) {
            report.push_str(&format!("{marker} {:>5} - {line}\n", i + 1));
        }
        if let Some(line) = act.get(i) {
            report.push_str(&format!("{marker} {:>5} + {line}\n", i + 1));
        }
    }
    report.push_str("(- golden, + rendered; rerun with UPDATE_GOLDEN=1 if the change is intended)");
    panic!("{report}");
}

// promtool

/// Runs `promtool check metrics` on `text`: exit code and everything it printed.
/// `None` when promtool is not installed (and not required).
pub fn promtool_check(text: &str) -> Option<(i32, String)> {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("KEPLER_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("promtool not installed but KEPLER_REQUIRE_TOOLS=1");
            }
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), printed))
}

/// promtool lint messages we accept, each for a name fixed by Kepler compatibility.
pub fn is_accepted_lint(line: &str) -> bool {
    // Kepler's classic `*_bpf_cpu_time_ms_total` counters carry the abbreviated unit `ms`;
    // dashboards and runbooks query these exact names, so we cannot rename them.
    const MS_NAMES: [&str; 2] = [
        "kepler_container_bpf_cpu_time_ms_total",
        "kepler_process_bpf_cpu_time_ms_total",
    ];
    MS_NAMES.iter().any(|name| {
        line.trim() == format!("{name} metric names should not contain abbreviated units")
    })
}

/// Asserts that `promtool check metrics` accepts `text`: clean, or only lint findings listed in
/// [`is_accepted_lint`] (promtool 2.42 exits 3 for lint-only findings). Skips when promtool is
/// absent and not required.
pub fn assert_promtool_accepts(name: &str, text: &str) {
    let Some((code, printed)) = promtool_check(text) else {
        println!("skipped: promtool not installed");
        return;
    };
    let findings: Vec<&str> = printed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let unexpected = findings
        .iter()
        .filter(|line| !is_accepted_lint(line))
        .count();
    let clean = code == 0 && findings.is_empty();
    let accepted_lints = code == 3 && !findings.is_empty() && unexpected == 0;
    assert!(
        clean || accepted_lints,
        "promtool check metrics on {name}: exit {code}\n{printed}"
    );
}

// eBPF

/// Whether the eBPF root tests can run: root, and the BPF object built in (required when
/// `KEPLER_REQUIRE_TOOLS=1`, as in CI). Prints the skip line when not.
pub fn require_ebpf(what: &str) -> bool {
    if !require_root(what) {
        return false;
    }
    if kepler_ebpf::cpu_object().is_none() {
        if std::env::var("KEPLER_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!(
                "BPF object not built in (clang missing at build time) but KEPLER_REQUIRE_TOOLS=1"
            );
        }
        println!("skipped: {what} needs the BPF object (clang was missing at build time)");
        return false;
    }
    true
}

/// A container cgroup for a test: kubepods-shaped under the v2 mount, removed on drop.
pub struct TestContainer {
    pub id: String,
    pub pod_uid: String,
    pub dir: PathBuf,
    // Last: removed after everything that lived in it.
    _dirs: CreatedDirs,
}

impl TestContainer {
    /// `None` (with a skip line) when no v2 hierarchy is mounted.
    pub fn create() -> Option<Self> {
        let Some(v2) = v2_root() else {
            println!("skipped: no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
            return None;
        };
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
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.dir).unwrap().ino()
    }

    /// `cpu.stat usage_usec` of the container.
    pub fn usage_usec(&self) -> u64 {
        usage_usec(&self.dir)
    }

    /// Freezes (`true`) or thaws the container (cgroup v2 `cgroup.freeze`) and waits, bounded,
    /// until `cgroup.events` says so. A frozen container's processes are off the CPU, so its
    /// CPU time stands still while a source and `cpu.stat` are both read.
    pub fn freeze(&self, frozen: bool) {
        freeze::freeze_cgroup(&self.dir, &self.id, frozen);
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        // A test that failed with the container frozen: thaw it so its processes can die.
        let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
    }
}

/// A shell command whose children start inside `cgroup` (it joins before exec), killed on drop.
pub fn spawn_in_cgroup(cgroup: &Path, script: &str) -> Child {
    let procs = cgroup.join("cgroup.procs");
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > '{}' && {script}", procs.display()))
        .spawn()
        .unwrap()
}

/// Kills and reaps a child on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
