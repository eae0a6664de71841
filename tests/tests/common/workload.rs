//! A busy kubepods-shaped container for the exporters to measure.

use super::*;

/// A kubepods-shaped containerd container cgroup (systemd driver, besteffort QoS) with a
/// CPU-burning shell loop in it; the process is killed and the directories removed on drop.
#[derive(Debug)]
pub struct Workload {
    // First: the loop dies before its cgroup is removed.
    _burner: ChildGuard,
    container: TestContainer,
    pub id: String,
    /// The container's cgroup directory.
    pub dir: PathBuf,
}

impl Workload {
    /// `None` (a skip line; a failure under CI) when no cgroup v2 hierarchy is mounted.
    pub fn start() -> Option<Workload> {
        let container = TestContainer::create()?;
        // About half a CPU: a counting loop, then a short sleep.
        let burner = container.spawn(
            "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.05; done",
        );
        Some(Workload {
            _burner: ChildGuard(burner),
            id: container.id.clone(),
            dir: container.dir.clone(),
            container,
        })
    }

    /// Freezes (`true`) or thaws the container's cgroup and waits until the kernel says so: a
    /// frozen container uses no CPU, so its CPU time stands still while exporters catch up.
    pub fn freeze(&self, frozen: bool) {
        self.container.freeze(frozen);
    }

    /// The kernel's CPU time of the container (`cpu.stat` `usage_usec`), in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        self.container.usage_usec() as f64 / 1000.0
    }
}
