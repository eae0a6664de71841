//! A real QEMU guest for the VM tests: `qemu-system-x86_64` under TCG, spinning in a
//! one-instruction boot sector, started inside a libvirt-shaped cgroup
//! (`machine.slice/machine-qemu\x2d<N>\x2d<name>.scope/libvirt/emulator`) under the cgroup v2
//! mount, with `-name guest=<name>` and `-uuid`, as libvirt starts its guests. The guest is
//! killed on drop (or by [`QemuGuest::kill`]), and its cgroups removed after it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kepler_test_support::cgroup::{spawn_in_cgroup, CreatedDirs};
use kepler_test_support::process::ChildGuard;

/// A running guest. Fields drop in order: the guest, then its cgroups, then its disk.
#[derive(Debug)]
pub struct QemuGuest {
    guest: Option<ChildGuard>,
    _dirs: CreatedDirs,
    _work: tempfile::TempDir,
    /// The guest's `-uuid` (libvirt's domain UUID), unique per test run.
    pub uuid: String,
    /// The guest's `-name guest=`.
    pub name: String,
    /// The scope cgroup's name, `machine-qemu\x2d<N>\x2d<name>.scope`.
    pub scope: String,
    /// QEMU's pid.
    pub pid: u32,
}

impl QemuGuest {
    /// Starts `qemu` (the `qemu-system-x86_64` binary) as guest `name` in a new scope under the
    /// cgroup v2 mount `v2`, and checks that it really keeps a CPU busy and sits in its scope.
    pub fn start(v2: &Path, qemu: &Path, name: &str) -> Self {
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let uuid = format!(
            "{pid:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (nanos >> 48) as u16,
            (nanos >> 36) as u16 & 0xfff,
            (nanos >> 24) as u16 & 0xfff,
            nanos as u64 & 0xffff_ffff_ffff
        );
        let scope = format!("machine-qemu\\x2d{pid}\\x2d{name}.scope");
        let work = tempfile::tempdir().unwrap();
        let disk = spinning_boot_sector(work.path());
        let mut dirs = CreatedDirs::default();
        let emulator = dirs.create_path(
            v2,
            &[
                "machine.slice".to_string(),
                scope.clone(),
                "libvirt".to_string(),
                "emulator".to_string(),
            ],
        );
        // `exec`: the shell that joined the cgroup becomes QEMU (same pid, killed by the guard).
        let script = format!(
            "exec '{}' -accel tcg -nographic -no-reboot -nodefaults -display none -m 16 \
             -monitor none -serial none -name guest={name},debug-threads=on -uuid {uuid} \
             -drive file='{}',format=raw,if=floppy",
            qemu.display(),
            disk.display()
        );
        let guest = ChildGuard(spawn_in_cgroup(&emulator, &script));
        let qemu_pid = guest.0.id();

        // The guest spins: it must really use CPU, or there is nothing to attribute. A loaded
        // machine gives it less than a core, so it has up to 10 s for 20 ticks (0.2 s).
        std::thread::sleep(Duration::from_millis(500));
        let before = cpu_ticks(qemu_pid);
        let started = std::time::Instant::now();
        let mut used = 0;
        while used < 20 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(250));
            used = cpu_ticks(qemu_pid) - before;
        }
        println!(
            "qemu (pid {qemu_pid}) used {used} ticks in {:?}",
            started.elapsed()
        );
        assert!(used >= 20, "the guest used {used} ticks in 10 s: not busy");
        let cgroup = std::fs::read_to_string(format!("/proc/{qemu_pid}/cgroup")).unwrap();
        assert!(
            cgroup.contains(&scope),
            "qemu is not in its scope: {cgroup}"
        );
        Self {
            guest: Some(guest),
            _dirs: dirs,
            _work: work,
            uuid,
            name: name.to_string(),
            scope,
            pid: qemu_pid,
        }
    }

    /// Kills the guest now; its cgroups stay until drop.
    pub fn kill(&mut self) {
        drop(self.guest.take());
    }
}

/// A 512-byte boot sector that loops forever (`jmp $`), so the guest keeps a CPU busy.
fn spinning_boot_sector(dir: &Path) -> PathBuf {
    let mut sector = [0u8; 512];
    sector[0] = 0xEB;
    sector[1] = 0xFE;
    sector[510] = 0x55;
    sector[511] = 0xAA;
    let path = dir.join("spin.img");
    std::fs::write(&path, sector).unwrap();
    path
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
