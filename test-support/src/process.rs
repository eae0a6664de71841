//! Child processes that die with the test: a guard for any child, and a CPU-burning loop.

use std::path::Path;
use std::process::{Child, Command};

/// Kills and reaps a child on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CPU-burning shell loop, killed on drop.
#[derive(Debug)]
pub struct BusyProcess(ChildGuard);

impl BusyProcess {
    pub fn spawn() -> Self {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sh: {e}"));
        Self(ChildGuard(child))
    }

    pub fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    /// Moves the process into a cgroup (v1 or v2 directory).
    pub fn join(&self, cgroup: &Path) {
        std::fs::write(cgroup.join("cgroup.procs"), self.pid().to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", cgroup.display()));
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it is not reaped before drop waits on it.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_busy_process_is_gone() {
        let pid = BusyProcess::spawn().pid();
        // Reaped by drop: no /proc entry, or (pid reused at once) not our shell loop.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("while :"));
    }
}
