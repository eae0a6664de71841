//! Commands, processes and network namespaces: running a program inside a test host's
//! namespace, its log, and the three hosts' topology (veth links on a bridge) torn down on drop.

use super::*;

pub(super) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub(super) fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn ip(args: &[&str]) {
    must(Command::new("ip").args(args));
}

/// A command that runs in network namespace `ns`.
pub fn in_ns(ns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    cmd
}

/// HTTP GET from inside `ns`: (status code, body); `None` when nothing answered.
pub fn http_get(ns: &str, url: &str) -> Option<(u16, String)> {
    let out = run(in_ns(ns, Path::new("curl")).args([
        "-s",
        "--max-time",
        "30",
        "-w",
        "\n%{http_code}",
        url,
    ]));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// HTTP POST of a file from inside `ns` with extra headers: (status code (0: no answer), body).
pub fn http_post(ns: &str, url: &str, file: &Path, headers: &[&str]) -> (u16, String) {
    let mut cmd = in_ns(ns, Path::new("curl"));
    cmd.args(["-s", "--max-time", "60", "-w", "\n%{http_code}"]);
    // No `Expect: 100-continue` for large bodies: otherwise a refusal that closes the
    // connection after the interim 100 is reported by curl as status 100.
    cmd.args(["-H", "Expect:"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    cmd.arg(url);
    let out = run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once('\n') {
        Some((body, code)) => (code.trim().parse().unwrap_or(0), body.to_string()),
        None => (text.trim().parse().unwrap_or(0), String::new()),
    }
}

/// Runs `f` on a new thread that has joined network namespace `ns` (setns(2) moves only the
/// calling thread): every socket it opens lives in `ns`, while the rest of the test stays in
/// the host's namespace.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsRawFd;
    let handle = fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open /run/netns/{ns}: {e}"));
    let ns = ns.to_string();
    std::thread::spawn(move || {
        // SAFETY: `handle` is an open namespace file for the whole call; setns(2) only reads it
        // and changes this thread's network namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {ns}: {}",
            std::io::Error::last_os_error()
        );
        drop(handle);
        f()
    })
}

/// A process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let log = fs::File::create(log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    /// Panics (naming the process) when it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited: {status}", self.name);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The three namespaces and their links; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub hub: String,
    /// Spoke namespaces, in the order of [`SPOKES`].
    pub spokes: Vec<String>,
    /// Namespaces added later with [`Topology::add_ns`].
    pub extra: Vec<String>,
}

impl Topology {
    pub fn create() -> Topology {
        remove_stale();
        static RUN: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "kre2e-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let topo = Topology {
            hub: format!("{prefix}-hub"),
            spokes: (1..=SPOKES.len())
                .map(|i| format!("{prefix}-c{i}"))
                .collect(),
            extra: Vec::new(),
        };
        // From here on, drop deletes whatever was created.
        for ns in topo.all() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let hub = topo.hub.as_str();
        ip(&["-n", hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", hub, "link", "set", "br0", "up"]);
        for (i, spoke) in topo.spokes.iter().enumerate() {
            let port = format!("p{}", i + 1);
            ip(&[
                "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                spoke,
            ]);
            ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                spoke,
                "addr",
                "add",
                &format!("{}/24", topo.spoke_ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", spoke, "link", "set", "eth0", "up"]);
        }
        topo
    }

    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hub.as_str())
            .chain(self.spokes.iter().map(String::as_str))
            .chain(self.extra.iter().map(String::as_str))
    }

    /// Another namespace on the bridge (e.g. a rogue sender) at `10.200.7.<host>`: its name.
    pub fn add_ns(&mut self, suffix: &str, host: u8) -> String {
        let ns = format!("{}-{suffix}", self.hub.trim_end_matches("-hub"));
        ip(&["netns", "add", &ns]);
        self.extra.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let port = format!("x{}", self.extra.len());
        ip(&[
            "-n", &self.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &self.hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{SUBNET_PREFIX}.{host}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    pub fn spoke_ip(&self, i: usize) -> String {
        format!("{SUBNET_PREFIX}.{}", 11 + i)
    }

    /// Takes spoke `i`'s link down (`up == false`) or up again, on the hub's side of the veth.
    pub fn set_link(&self, i: usize, up: bool) {
        let port = format!("p{}", i + 1);
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes `kre2e-<pid>-*` namespaces whose pid no longer runs (a run killed before drop).
/// Its processes (collector, exporters, Prometheus) are killed first, and the workload cgroups
/// of such runs go too ([`remove_stale_workloads`]).
pub(super) fn remove_stale() {
    let out = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("kre2e-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let pids = run(Command::new("ip").args(["netns", "pids", name]));
            kill_all(&String::from_utf8_lossy(&pids.stdout));
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    remove_stale_workloads();
}

/// SIGKILL to every pid in `pids` (one a line).
pub(super) fn kill_all(pids: &str) {
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the container cgroups [`Workload::start`] made for a run whose pid is gone (killed
/// before drop), with their CPU burners: recognised by both names, the pod slice
/// `kubepods-besteffort-pod<pid:08x>_<n:04x>_4000_8000_<t>.slice` and its one scope
/// `cri-containerd-<t:032x><pid:016x><n:016x>.scope`, so no other suite's cgroup is touched.
pub(super) fn remove_stale_workloads() {
    let Some(v2) = v2_root() else {
        return;
    };
    let qos = v2.join("kubepods.slice/kubepods-besteffort.slice");
    let Ok(pods) = fs::read_dir(&qos) else {
        return;
    };
    for pod in pods.filter_map(Result::ok) {
        let name = pod.file_name().to_string_lossy().into_owned();
        let Some(uid) = name
            .strip_prefix("kubepods-besteffort-pod")
            .and_then(|n| n.strip_suffix(".slice"))
        else {
            continue;
        };
        let parts: Vec<&str> = uid.split('_').collect();
        let [pid, n, "4000", "8000", _] = parts[..] else {
            continue;
        };
        let (Ok(pid), Ok(n)) = (u32::from_str_radix(pid, 16), u32::from_str_radix(n, 16)) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let suffix = format!("{pid:016x}{n:016x}.scope");
        let scopes: Vec<PathBuf> = fs::read_dir(pod.path())
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        let ours = |p: &PathBuf| {
            p.file_name().is_some_and(|f| {
                let f = f.to_string_lossy();
                f.starts_with("cri-containerd-") && f.ends_with(&suffix) && f.len() == 15 + 64 + 6
            })
        };
        let scope_dirs: Vec<&PathBuf> = scopes.iter().filter(|p| p.is_dir()).collect();
        if scope_dirs.len() != 1 || !ours(scope_dirs[0]) {
            continue;
        }
        let scope = scope_dirs[0];
        let _ = fs::write(scope.join("cgroup.freeze"), "0");
        kill_all(&fs::read_to_string(scope.join("cgroup.procs")).unwrap_or_default());
        for dir in [scope.as_path(), pod.path().as_path()] {
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
