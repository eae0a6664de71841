//! The three-cluster harness: network namespaces `<prefix>-hub`, `<prefix>-c1`, `<prefix>-c2`
//! (prefix `kre2e-<pid>-<n>`, unique per run) whose veth links meet on a bridge in the hub
//! namespace (10.200.7.0/24: hub 10.200.7.1, cluster1 .11, cluster2 .12; these addresses exist
//! only inside the test's namespaces). Processes run in a namespace through `nsenter --net`
//! (only the network namespace changes: /proc, /sys and the cgroup tree stay the host's), and the
//! test talks to them with `curl` run the same way. Everything is torn down on drop (processes
//! killed, namespaces deleted), also when a test panics; namespaces left by a killed run (whose
//! pid is gone) are deleted at the next start.
//!
//! Binaries: `KEPLER_E2E_BIN_DIR` (a directory with `kepler-rs` and `kepler-collector`), else
//! the directory above this test executable (`target/<profile>/`, where `cargo test
//! --workspace` puts them). Not being root, lacking `ip netns`, the binaries or Prometheus
//! skips, or fails under CI (kepler_test_support::require).
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod cadvisor;
pub mod grpc;

pub use kepler_test_support::cgroup::{v2_root, TestContainer, CGROUP_ROOT};
pub use kepler_test_support::process::ChildGuard;
use kepler_test_support::promql;
pub use kepler_test_support::require::{
    require_binary, require_root, require_tool, tool_missing, which,
};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const SUBNET_PREFIX: &str = "10.200.7";
pub const HUB_IP: &str = "10.200.7.1";
pub const SPOKES: [&str; 2] = ["cluster1", "cluster2"];
pub const CLUSTERS: [&str; 3] = ["hub", "cluster1", "cluster2"];

/// One test at a time in this binary: each starts several processes on shared CPUs.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// Preconditions

/// Root, `ip netns`, `nsenter` and `curl`; a skip line (a failure under CI) when not.
pub fn require_netns(what: &str) -> bool {
    if !require_root(&format!("{what} (network namespaces)")) {
        return false;
    }
    for tool in ["ip", "nsenter", "curl"] {
        if require_tool(tool).is_none() {
            return false;
        }
    }
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tool_missing(&format!("{what}: `ip netns` is unavailable"));
    }
    ok
}

/// The workspace binaries: (kepler-rs, kepler-collector), or `None` with a skip line.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    Some((
        require_binary("kepler-rs")?,
        require_binary("kepler-collector")?,
    ))
}

/// The Debian `prometheus`, or `None` with a skip line.
pub fn prometheus_binary() -> Option<PathBuf> {
    require_tool("prometheus")
}

// Commands

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
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

// Processes

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

// Namespaces

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
fn remove_stale() {
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
fn kill_all(pids: &str) {
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
fn remove_stale_workloads() {
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

// Workloads

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

// Prometheus text

/// One sample: metric name and labels (sorted).
pub type SeriesKey = (String, BTreeMap<String, String>);

/// Parses Prometheus text exposition (comments skipped) into samples.
pub fn parse_text(text: &str) -> BTreeMap<SeriesKey, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..]);
                (&line[..open], labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
                (name, BTreeMap::new(), rest)
            }
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        out.insert((name.to_string(), labels), value);
    }
    out
}

/// Parses `k="v",...}` (after the opening brace): the labels and the text after `}`.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'}' {
            return (labels, s.get(i + 1..).unwrap_or(""));
        }
        let eq = s[i..].find('=').map(|p| p + i).unwrap_or(bytes.len());
        let key = s[i..eq].to_string();
        i = eq + 2; // past ="
        let mut value = String::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                value.push(match bytes[i] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                let c = s[i..].chars().next().unwrap();
                value.push(c);
                i += c.len_utf8() - 1;
            }
            i += 1;
        }
        i += 1; // past closing quote
        labels.insert(key, value);
    }
}

// Prometheus

/// A real Prometheus in the hub namespace (127.0.0.1:9090 there) scraping the hub's exposition
/// every 2 s (timeout 2 s); temporary config and data directory.
#[derive(Debug)]
pub struct Prometheus {
    pub ns: String,
    pub proc: Proc,
}

impl Prometheus {
    pub fn start(bin: &Path, ns: &str, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\nscrape_configs:\n  - job_name: kepler-hub\n    honor_labels: true\n    static_configs:\n      - targets: [\"127.0.0.1:9464\"]\n",
        )
        .unwrap();
        let proc = Proc::spawn(
            "prometheus",
            in_ns(ns, bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prom-data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .arg("--log.level=warn"),
            &dir.join("prometheus.log"),
        );
        Prometheus {
            ns: ns.to_string(),
            proc,
        }
    }

    /// An instant query: `Some(result array)`, `None` while Prometheus is not up.
    pub fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let url = format!("http://127.0.0.1:9090{}", promql::query_path(promql));
        let (_, body) = http_get(&self.ns, &url)?;
        Some(promql::results(promql, &body))
    }

    /// Polls `promql` until `accept` holds for its result (deadline `secs`); the last result.
    pub fn wait_for(
        &self,
        promql: &str,
        secs: u64,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Vec::new();
        loop {
            if let Some(result) = self.query(promql) {
                if accept(&result) {
                    return result;
                }
                last = result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: not answered as expected within {secs} s; last answer: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

pub use kepler_test_support::promql::sample_value;

// The pipeline

/// A cluster with a token but no exporter (attack tests send as it).
pub const FLOOD: &str = "flood";

/// Per-cluster bearer tokens (at least 16 characters).
pub fn token(cluster: &str) -> String {
    format!("{cluster}-token-{}", "0123456789abcdef")
}

/// The hub's config: its four listeners (hub and spokes, gRPC and HTTP) with tokens on the spoke listeners, the
/// exposition on :9464, series expiring after `expiration`.
pub fn hub_config(expiration: &str, extra: &str) -> String {
    let mut tokens = String::from("    auth:\n      tokens:\n");
    for c in SPOKES.iter().chain(&[FLOOD]) {
        tokens.push_str(&format!(
            "        - {{cluster: {c}, token: \"{}\"}}\n",
            token(c)
        ));
    }
    format!(
        "listeners:\n  - name: hub-grpc\n    protocol: grpc\n    address: 0.0.0.0:4317\n    insert_cluster: hub\n  - name: hub-http\n    protocol: http\n    address: 0.0.0.0:4318\n    insert_cluster: hub\n  - name: spokes-grpc\n    protocol: grpc\n    address: 0.0.0.0:4327\n{tokens}  - name: spokes-http\n    protocol: http\n    address: 0.0.0.0:4328\n{tokens}exposition:\n  address: 0.0.0.0:9464\n  metric_expiration: {expiration}\n{extra}"
    )
}

/// The whole three-cluster pipeline: namespaces, hub, exporters, workloads, Prometheus.
/// Field order is drop order: processes first, namespaces last.
#[derive(Debug)]
pub struct Pipeline {
    pub prometheus: Prometheus,
    /// Exporters in the order of [`CLUSTERS`] (hub, cluster1, cluster2).
    pub exporters: Vec<Proc>,
    pub collector: Proc,
    pub workloads: Vec<Workload>,
    pub exporter_bin: PathBuf,
    pub collector_bin: PathBuf,
    /// Extra flags of each exporter (order of [`CLUSTERS`]), kept for restarts.
    pub exporter_args: Vec<Vec<String>>,
    pub topo: Topology,
    pub dir: tempfile::TempDir,
}

impl Pipeline {
    /// Starts everything, or `None` (with a skip line) where the host cannot run it.
    pub fn start(what: &str, expiration: &str) -> Option<Pipeline> {
        Self::start_with(what, expiration, "")
    }

    /// Like [`Pipeline::start`], with `extra` appended to the hub's config (e.g. `limits:`).
    pub fn start_with(what: &str, expiration: &str, extra: &str) -> Option<Pipeline> {
        Self::start_full(what, expiration, extra, vec![Vec::new(); CLUSTERS.len()])
    }

    /// Like [`Pipeline::start_with`], with extra flags for each exporter (order of
    /// [`CLUSTERS`]; e.g. the relay on cluster1's).
    pub fn start_full(
        what: &str,
        expiration: &str,
        extra: &str,
        exporter_args: Vec<Vec<String>>,
    ) -> Option<Pipeline> {
        assert_eq!(exporter_args.len(), CLUSTERS.len());
        if !require_netns(what) {
            return None;
        }
        let (exporter_bin, collector_bin) = binaries()?;
        let prometheus_bin = prometheus_binary()?;
        let workloads: Vec<Workload> = SPOKES.iter().filter_map(|_| Workload::start()).collect();
        if workloads.len() != SPOKES.len() {
            return None;
        }
        let topo = Topology::create();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("hub.yaml"), hub_config(expiration, extra)).unwrap();
        let collector = start_collector(&collector_bin, &topo.hub, dir.path());
        let mut exporters = Vec::new();
        for (i, cluster) in CLUSTERS.iter().enumerate() {
            exporters.push(start_exporter(
                &exporter_bin,
                &topo,
                i,
                cluster,
                dir.path(),
                &exporter_args[i],
            ));
        }
        let prometheus = Prometheus::start(&prometheus_bin, &topo.hub, dir.path());
        Some(Pipeline {
            prometheus,
            exporters,
            collector,
            workloads,
            exporter_bin,
            collector_bin,
            exporter_args,
            topo,
            dir,
        })
    }

    /// The namespace of cluster `i` (order of [`CLUSTERS`]).
    pub fn ns(&self, i: usize) -> &str {
        if i == 0 {
            &self.topo.hub
        } else {
            &self.topo.spokes[i - 1]
        }
    }

    /// The hub's exposition, parsed.
    pub fn hub_metrics(&self) -> Option<BTreeMap<SeriesKey, f64>> {
        let (code, body) = http_get(&self.topo.hub, "http://127.0.0.1:9464/metrics")?;
        (code == 200).then(|| parse_text(&body))
    }

    /// Exporter `i`'s /metrics, parsed.
    pub fn exporter_metrics(&self, i: usize) -> Option<BTreeMap<SeriesKey, f64>> {
        let (code, body) = http_get(self.ns(i), "http://127.0.0.1:9102/metrics")?;
        (code == 200).then(|| parse_text(&body))
    }

    /// The collector's resident memory in KiB (`nsenter` execs it, so the pid is its own).
    pub fn collector_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.collector.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Restarts the collector (after [`Proc::kill`] on it).
    pub fn restart_collector(&mut self) {
        self.collector = start_collector(&self.collector_bin, &self.topo.hub, self.dir.path());
    }

    /// Restarts exporter `i` (after [`Proc::kill`] on it).
    pub fn restart_exporter(&mut self, i: usize) {
        self.exporters[i] = start_exporter(
            &self.exporter_bin,
            &self.topo,
            i,
            CLUSTERS[i],
            self.dir.path(),
            &self.exporter_args[i],
        );
    }
}

impl Drop for Pipeline {
    /// A failing test prints the last lines of every process's log (the temporary directory
    /// goes with the pipeline), so a crash or a refusal shows up in the test's output.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for (proc, status) in self
            .exporters
            .iter_mut()
            .chain([&mut self.collector, &mut self.prometheus.proc])
            .map(|p| (p.name.clone(), p.child.try_wait()))
        {
            eprintln!("--- {proc}: {status:?} (None: still running)");
        }
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 20 of {} lines)", log.display(), lines.len());
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{line}");
            }
        }
    }
}

pub fn start_collector(bin: &Path, ns: &str, dir: &Path) -> Proc {
    let mut proc = Proc::spawn(
        "kepler-collector",
        in_ns(ns, bin)
            .arg(format!("--config.file={}", dir.join("hub.yaml").display()))
            .args(["--log.level", "warn"]),
        &dir.join("collector.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(ns, "http://127.0.0.1:9464/healthz").is_none_or(|(c, _)| c != 200) {
        proc.assert_running();
        assert!(Instant::now() < deadline, "the hub never served /healthz");
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// Exporter `i` of [`CLUSTERS`] on the real eBPF CPU-time source (each exporter loads its own
/// copy of the program): the hub's pushes to 127.0.0.1:4317 (no cluster name, the hub inserts
/// it), each spoke's across its link to the hub's spoke listener with its token; `extra` flags
/// appended.
pub fn start_exporter(
    bin: &Path,
    topo: &Topology,
    i: usize,
    cluster: &str,
    dir: &Path,
    extra: &[String],
) -> Proc {
    let ns = if i == 0 {
        topo.hub.clone()
    } else {
        topo.spokes[i - 1].clone()
    };
    let mut args = if i == 0 {
        vec!["--otlp.endpoint=http://127.0.0.1:4317".to_string()]
    } else {
        vec![
            format!("--cluster={cluster}"),
            format!("--otlp.endpoint=http://{HUB_IP}:4327"),
            format!("--otlp.headers=authorization=Bearer%20{}", token(cluster)),
        ]
    };
    args.push("--ebpf.enabled=true".to_string());
    args.extend_from_slice(extra);
    spawn_exporter(bin, &ns, cluster, 9102, &args, dir)
}

/// A fake-RAPL `kepler-rs` named `name` in `ns` serving on 127.0.0.1:`web_port` there, with
/// the flags `push` (the push, `--ebpf.enabled`, anything else); waits (bounded) for its
/// /healthz.
pub fn spawn_exporter(
    bin: &Path,
    ns: &str,
    name: &str,
    web_port: u16,
    push: &[String],
    dir: &Path,
) -> Proc {
    let mut cmd = in_ns(ns, bin);
    cmd.args([
        "--fake-rapl",
        "--log.level=warn",
        "--monitor.interval=1s",
        "--otlp.interval=1s",
        "--otlp.retry.initial-interval=1s",
        "--otlp.retry.max-interval=2s",
        "--otlp.timeout=10s",
    ])
    .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
    .arg(format!("--kube.node-name={name}-node"))
    .arg(format!(
        "--fake-rapl.dir={}",
        dir.join(format!("rapl-{name}")).display()
    ))
    .args(push)
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let mut proc = Proc::spawn(
        &format!("kepler-rs ({name})"),
        &mut cmd,
        &dir.join(format!("exporter-{name}.log")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = format!("http://127.0.0.1:{web_port}/healthz");
    while http_get(ns, &health).is_none_or(|(c, _)| c != 200) {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "exporter {name} never served /healthz"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// Samples of `name` in `metrics` with `cluster` (or all, for `None`), keyed by their other
/// labels minus the ones the hub adds or rewrites (`cluster`, `job`, `instance`, `otel_scope_*`).
pub fn series_of(
    metrics: &BTreeMap<SeriesKey, f64>,
    name: &str,
    cluster: Option<&str>,
) -> BTreeMap<BTreeMap<String, String>, f64> {
    metrics
        .iter()
        .filter(|((n, labels), _)| {
            n == name
                && cluster.is_none_or(|c| labels.get("cluster").map(String::as_str) == Some(c))
        })
        .map(|((_, labels), v)| {
            let mut labels = labels.clone();
            labels.remove("cluster");
            labels.remove("job");
            for added in ["instance", "otel_scope_name", "otel_scope_version"] {
                labels.remove(added);
            }
            (labels, *v)
        })
        .collect()
}

// Conservation

pub fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Energy families (`kepler_{container,node}_*joules_total`) in an exporter's `/metrics`.
pub fn energy_families(metrics: &BTreeMap<SeriesKey, f64>) -> Vec<String> {
    let mut names: Vec<String> = metrics
        .keys()
        .map(|(n, _)| n.clone())
        .filter(|n| {
            (n.starts_with("kepler_container_") || n.starts_with("kepler_node_"))
                && n.ends_with("joules_total")
        })
        .collect();
    names.dedup();
    names
}

pub fn single(
    metrics: &BTreeMap<SeriesKey, f64>,
    name: &str,
    cluster: Option<&str>,
) -> Option<f64> {
    let s = series_of(metrics, name, cluster);
    (s.len() == 1).then(|| *s.values().next().unwrap())
}

/// Sum of `name` per `mode`.
pub fn by_mode(metrics: &BTreeMap<SeriesKey, f64>, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in series_of(metrics, name, None) {
        *out.entry(labels.get("mode").cloned().unwrap_or_default())
            .or_insert(0.0) += v;
    }
    out
}

/// Whether the hub holds every one of `exporter`'s energy series for `cluster`, each with the
/// exporter's value.
pub fn compare_energy(
    cluster: &str,
    exporter: &BTreeMap<SeriesKey, f64>,
    hub: &BTreeMap<SeriesKey, f64>,
) -> Result<(), String> {
    let families = energy_families(exporter);
    if !(families.contains(&"kepler_container_joules_total".to_string())
        && families.contains(&"kepler_node_package_joules_total".to_string()))
    {
        return Err(format!("{cluster}: energy families missing: {families:?}"));
    }
    for name in &families {
        let served = series_of(exporter, name, None);
        let relayed = series_of(hub, name, Some(cluster));
        // The hub may still hold series the exporter has since dropped (a removed container
        // past its retention) until they expire; every series the exporter serves must be there.
        for (labels, v) in &served {
            match relayed.get(labels) {
                None => return Err(format!("{cluster} {name}{labels:?}: missing at the hub")),
                Some(h) if !close(*v, *h, 1e-9) => {
                    return Err(format!("{cluster} {name}{labels:?}: exporter {v}, hub {h}"))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

impl Pipeline {
    /// Polls (deadline 180 s: generous for a loaded host) until the hub holds exactly exporter
    /// `i`'s energy series and
    /// values at the same snapshot (`kepler_exporter_snapshot_sequence`, which travels with the
    /// data): (exporter, hub) metrics. A thread records every snapshot the exporter serves;
    /// the hub's render is compared with the recorded snapshot of the sequence it shows. A
    /// render in the middle of ingesting a request just does not match and is read again;
    /// energy lost or altered anywhere never matches.
    pub fn assert_hub_holds_the_exporters_energy(
        &self,
        i: usize,
    ) -> (BTreeMap<SeriesKey, f64>, BTreeMap<SeriesKey, f64>) {
        let cluster = CLUSTERS[i];
        let deadline = Instant::now() + Duration::from_secs(180);
        // Every snapshot the exporter serves meanwhile, by sequence (a loaded hub can take
        // longer to render than the exporter takes to move on).
        let history = Mutex::new(BTreeMap::<u64, BTreeMap<SeriesKey, f64>>::new());
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let m = self.exporter_metrics(i).unwrap_or_default();
                    if let Some(seq) = single(&m, "kepler_exporter_snapshot_sequence", None) {
                        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
                        h.insert(seq as u64, m);
                        while h.len() > 64 {
                            h.pop_first();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let result = loop {
                let hub = self.hub_metrics().unwrap_or_default();
                let hub_seq = single(&hub, "kepler_exporter_snapshot_sequence", Some(cluster));
                let exporter = hub_seq.and_then(|s| {
                    history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&(s as u64))
                        .cloned()
                });
                let outcome = match &exporter {
                    Some(exporter) => compare_energy(cluster, exporter, &hub),
                    None => Err(format!(
                        "{cluster}: the hub's snapshot {hub_seq:?} was not seen at the exporter"
                    )),
                };
                match outcome {
                    Ok(()) => break (exporter.unwrap_or_default(), hub),
                    Err(e) if Instant::now() >= deadline => {
                        done.store(true, Ordering::Relaxed);
                        panic!("the hub never held exactly the exporter's energy within 180 s; last: {e}");
                    }
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            done.store(true, Ordering::Relaxed);
            result
        })
    }
}
