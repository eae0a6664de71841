//! A fake host for tests that run the real readers on files: a temporary `/sys` with a powercap
//! tree of the test data and a cgroup v2 mount, and a `/proc` with processes whose counters the
//! test advances interval by interval.

use std::fs;
use std::path::PathBuf;

/// A `/proc` + `/sys` tree in a temporary folder, removed on drop.
#[derive(Debug)]
pub struct HostTree {
    dir: tempfile::TempDir,
}

impl HostTree {
    /// The powercap tree `kepler-rs/testdata/powercap/<powercap>` and a cgroup v2 mount whose
    /// `cgroup.controllers` lists `controllers`.
    pub fn new(powercap: &str, controllers: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        super::copy_powercap_fixture(powercap, &dir.path().join("sys"));
        let tree = Self { dir };
        fs::create_dir_all(tree.cgroup_root()).unwrap();
        fs::write(
            tree.cgroup_root().join("cgroup.controllers"),
            format!("{controllers}\n"),
        )
        .unwrap();
        tree
    }

    pub fn sysfs(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    pub fn procfs(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    pub fn cgroup_root(&self) -> PathBuf {
        self.sysfs().join("fs/cgroup")
    }

    /// A process whose `/proc/<pid>/cgroup` is `cgroup_file`; `container_cgroup` (relative to the
    /// cgroup mount) is created when given.
    pub fn add_process(&self, pid: u32, cgroup_file: &str, container_cgroup: Option<&str>) {
        let dir = self.procfs().join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup"), format!("{cgroup_file}\n")).unwrap();
        if let Some(cgroup) = container_cgroup {
            fs::create_dir_all(self.cgroup_root().join(cgroup)).unwrap();
        }
    }

    /// Removes a process (it exited) and, when given, its container's cgroup.
    pub fn remove_process(&self, pid: u32, container_cgroup: Option<&str>) {
        fs::remove_dir_all(self.procfs().join(pid.to_string())).unwrap();
        if let Some(cgroup) = container_cgroup {
            fs::remove_dir_all(self.cgroup_root().join(cgroup)).unwrap();
        }
    }

    /// `/proc/<pid>/stat` with `utime` ticks of user time.
    pub fn write_process_ticks(&self, pid: u32, comm: &str, flags: u64, utime: u64) {
        let stat = super::proc_stat_line(pid, comm, flags, utime);
        fs::write(self.procfs().join(pid.to_string()).join("stat"), stat).unwrap();
    }

    /// `cpu.stat` of a cgroup (relative to the mount): `usec` of user time.
    pub fn write_cgroup_usage(&self, cgroup: &str, usec: u64) {
        fs::write(
            self.cgroup_root().join(cgroup).join("cpu.stat"),
            format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
        )
        .unwrap();
    }

    /// `/proc/stat` with the node's busy and idle ticks.
    pub fn write_node_ticks(&self, busy: u64, idle: u64) {
        fs::create_dir_all(self.procfs()).unwrap();
        fs::write(
            self.procfs().join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        )
        .unwrap();
    }

    /// Adds `microjoules` to a powercap zone's `energy_uj` (e.g. `intel-rapl:0`).
    pub fn add_energy(&self, zone: &str, microjoules: u64) {
        let path = self
            .sysfs()
            .join("class/powercap")
            .join(zone)
            .join("energy_uj");
        let now: u64 = fs::read_to_string(&path).unwrap().trim().parse().unwrap();
        fs::write(&path, format!("{}\n", now + microjoules)).unwrap();
    }
}
