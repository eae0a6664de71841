//! Freezing a cgroup v2 and waiting until the kernel says it is done. Shared by the kepler-rs
//! root tests (`TestContainer::freeze`) and the e2e tests (`Workload::freeze`, which include this
//! file by path).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Freezes (`true`) or thaws (`false`) the cgroup at `dir` (`cgroup.freeze`) and waits, bounded,
/// until its `cgroup.events` says so. A frozen cgroup's processes are off the CPU, so its CPU
/// time stands still while a source and `cpu.stat` are both read. `name` labels the panic.
pub fn freeze_cgroup(dir: &Path, name: &str, frozen: bool) {
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(dir.join("cgroup.events"))
        .unwrap()
        .lines()
        .any(|l| l == want)
    {
        assert!(Instant::now() < deadline, "{name}: never {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
