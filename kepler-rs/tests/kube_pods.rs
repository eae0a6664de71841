#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pod metadata end to end: a real-shaped kubelet `/pods` (the shared fixture and lists of our
//! own) served over real HTTPS with a bearer token, fetched by the production kubelet client,
//! joined by the real monitor with the production procfs/cgroup source over a `/proc` tree whose
//! processes sit in kubepods cgroups, and rendered by the classic renderer; then the real binary
//! against the same fake kubelet. Covers: running, restarted (previous instance) and init
//! containers, a sandbox known only by its pod UID, a container seen before its pod, a deleted
//! pod whose containers keep their names for the terminated window and then leave, token
//! rotation, wrong CA, 401, garbage.

mod kubelet_server;

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::host_tree::HostTree;
use kepler_rs::config::IdlePolicy;
use kepler_rs::export::prometheus::{render_classic, BuildInfo, Format, RenderOptions};
use kepler_rs::monitor::{Monitor, MonitorOptions};
use kepler_rs::power::rapl::RaplMeter;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::snapshot::{NodeInfo, Snapshot, State};
use kepler_rs::workload::kube::kubelet::{KubeletClient, KubeletError, KubeletOptions};
use kepler_rs::workload::kube::SharedPods;
use kepler_rs::workload::procfs::ProcfsSource;
use kubelet_server::{fixture_with, pod, Kubelet, FIXTURE};

const WEB: &str = "web-7d9f8b6c5d-x2k4q";
const LATE_UID: &str = "99999999-aaaa-4bbb-8ccc-dddddddddddd";

fn hex(h: &str) -> String {
    h.repeat(64 / h.len())
}

/// (pid, comm, container id, pod UID): processes in kubepods cgroups.
fn processes() -> Vec<(u32, &'static str, String, &'static str)> {
    vec![
        (
            3001,
            "nginx",
            hex("9c"),
            "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b",
        ),
        (
            3004,
            "sidecar",
            hex("1"),
            "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b",
        ),
        // The sidecar's previous instance (restarted; its cgroup still has a process).
        (
            3005,
            "sidecar-old",
            hex("2"),
            "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b",
        ),
        // The init container of the batch pod.
        (
            3006,
            "fetch",
            hex("3"),
            "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
        ),
        (
            3002,
            "job",
            hex("7e"),
            "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
        ),
        // The pending pod's sandbox: in no container status.
        (
            3007,
            "pause",
            hex("ab"),
            "44444444-5555-6666-7777-888888888888",
        ),
        // Started before the kubelet lists its pod.
        (3008, "early", hex("cd"), LATE_UID),
    ]
}

/// A `/proc` + `/sys` tree: the powercap fixture, kubepods cgroups, one process per container.
struct FakeHost {
    tree: HostTree,
    interval: u64,
    gone: Vec<u32>,
}

impl FakeHost {
    fn new() -> Self {
        let tree = HostTree::new("intel-client-psys", "cpu memory pids");
        for (pid, _, id, uid) in processes() {
            let cgroup = cgroup_path(&id, uid);
            tree.add_process(pid, &format!("0::/{cgroup}"), Some(&cgroup));
        }
        let host = Self {
            tree,
            interval: 0,
            gone: Vec::new(),
        };
        host.write_counters();
        host
    }

    fn sysfs(&self) -> PathBuf {
        self.tree.sysfs()
    }

    fn procfs(&self) -> PathBuf {
        self.tree.procfs()
    }

    fn write_counters(&self) {
        let n = self.interval;
        let mut busy = 0;
        for (pid, comm, id, uid) in processes() {
            if self.gone.contains(&pid) {
                continue;
            }
            let utime = 1000 + 20 * n;
            busy += 20 * n;
            self.tree.write_process_ticks(pid, comm, 0, utime);
            self.tree
                .write_cgroup_usage(&cgroup_path(&id, uid), utime * 10_000);
        }
        self.tree
            .write_node_ticks(busy, 600 * n - busy.min(600 * n));
    }

    /// 3 s more of CPU and 20 W of package power.
    fn advance(&mut self) {
        self.interval += 1;
        self.tree.add_energy("intel-rapl:0", 60_000_000);
        self.write_counters();
    }

    /// The process exits and its container's cgroup is removed.
    fn exit(&mut self, pid: u32) {
        let (_, _, id, uid) = processes().into_iter().find(|p| p.0 == pid).unwrap();
        self.tree.remove_process(pid, Some(&cgroup_path(&id, uid)));
        self.gone.push(pid);
    }
}

fn cgroup_path(id: &str, pod_uid: &str) -> String {
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        pod_uid.replace('-', "_")
    )
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs)
}

/// (pod_name, container_name, container_namespace, terminated) of the container `id`.
fn names(s: &Snapshot, id: &str) -> Option<(String, String, String, bool)> {
    s.workloads
        .iter()
        .find(|w| w.key.container_id() == id)
        .map(|w| {
            (
                w.pod_name.clone(),
                w.container_name.clone(),
                w.namespace.clone(),
                matches!(w.state, State::Terminated(_)),
            )
        })
}

fn running(pod: &str, container: &str, ns: &str) -> Option<(String, String, String, bool)> {
    Some((pod.into(), container.into(), ns.into(), false))
}

fn render(s: &Snapshot, metrics: &SelfMetrics) -> String {
    let build = BuildInfo::default();
    render_classic(
        s,
        metrics,
        &RenderOptions {
            process_metrics: false,
            ..Default::default()
        },
        &build,
        Format::Text,
    )
}

fn options(url: &str, dir: &Path, ca: Option<PathBuf>, insecure: bool) -> KubeletOptions {
    KubeletOptions {
        url: url.to_string(),
        token_file: Some(dir.join("token")),
        ca_file: ca,
        insecure_skip_verify: insecure,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_series_carry_pod_names_from_the_kubelet() {
    let kubelet = Kubelet::start(fs::read(FIXTURE).unwrap(), "s3cr3t").await;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("token"), "s3cr3t\n").unwrap();
    let ca = kubelet.write_ca(dir.path());
    let client = KubeletClient::new(&options(&kubelet.url, dir.path(), Some(ca), false)).unwrap();
    let pods = SharedPods::default();
    pods.store(Arc::new(client.fetch().await.unwrap()));

    let mut host = FakeHost::new();
    let metrics = Arc::new(SelfMetrics::new());
    let meter = RaplMeter::discover(&host.sysfs(), "rapl-sysfs").unwrap();
    let cpu = ProcfsSource::new(
        host.procfs(),
        host.sysfs().join("fs/cgroup"),
        metrics.clone(),
    );
    let options = MonitorOptions {
        procfs: host.procfs(),
        terminated_retention: Duration::from_secs(300),
        max_terminated: 500,
        process_metrics: false,
        idle_policy: IdlePolicy::CpuShare,
        idle_window: Duration::from_secs(60),
        idle_half_life: Duration::from_secs(3600),
    };
    let info = NodeInfo {
        node_name: "worker-1".into(),
        ..NodeInfo::default()
    };
    let mut monitor = Monitor::new(
        Box::new(meter),
        Box::new(cpu),
        options,
        info,
        metrics.clone(),
    )
    .with_pods(pods.clone());

    monitor.step(at(0));
    host.advance();
    let s = monitor.step(at(3));
    assert_eq!(names(&s, &hex("9c")), running(WEB, "nginx", "shop"));
    assert_eq!(names(&s, &hex("1")), running(WEB, "sidecar", "shop"));
    assert_eq!(
        names(&s, &hex("2")),
        running(WEB, "sidecar", "shop"),
        "restarted"
    );
    assert_eq!(
        names(&s, &hex("3")),
        running("etl-29400000-abcde", "fetch", "batch"),
        "init"
    );
    assert_eq!(
        names(&s, &hex("7e")),
        running("etl-29400000-abcde", "job", "batch")
    );
    assert_eq!(
        names(&s, &hex("ab")),
        running("starting-0", "", "shop"),
        "sandbox"
    );
    assert_eq!(
        names(&s, &hex("cd")),
        running("", "", ""),
        "pod not listed yet"
    );
    let text = render(&s, &metrics);
    let nginx = format!(
        "kepler_container_joules_total{{container_id=\"{}\",pod_name=\"{WEB}\",container_name=\"nginx\",container_namespace=\"shop\",mode=\"dynamic\",source=\"\"}}",
        hex("9c")
    );
    assert!(text.contains(&nginx), "{nginx} missing from\n{text}");

    // The early container's pod appears: resolved on the next interval.
    let late = pod("late-0", "shop", LATE_UID, "worker", &hex("cd"));
    kubelet.set_body(fixture_with(std::slice::from_ref(&late), None));
    pods.store(Arc::new(client.fetch().await.unwrap()));
    host.advance();
    let s = monitor.step(at(6));
    assert_eq!(names(&s, &hex("cd")), running("late-0", "worker", "shop"));

    // The web pod is deleted and its containers exit: they keep their names while terminated.
    kubelet.set_body(fixture_with(&[late], Some(WEB)));
    pods.store(Arc::new(client.fetch().await.unwrap()));
    for pid in [3001, 3004, 3005] {
        host.exit(pid);
    }
    host.advance();
    let s = monitor.step(at(9));
    assert_eq!(
        names(&s, &hex("9c")),
        Some((WEB.into(), "nginx".into(), "shop".into(), true))
    );
    assert!(render(&s, &metrics).contains(&nginx));
    assert_eq!(names(&s, &hex("cd")), running("late-0", "worker", "shop"));
    // ... and leave after the terminated-workload window.
    host.advance();
    let s = monitor.step(at(9 + 301));
    assert_eq!(names(&s, &hex("9c")), None);
    assert_eq!(names(&s, &hex("2")), None);
    assert_eq!(
        names(&s, &hex("7e")),
        running("etl-29400000-abcde", "job", "batch")
    );
    assert!(metrics.errors().iter().all(|(c, _, _)| *c != "kube"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_client_checks_token_certificate_and_body() {
    let kubelet = Kubelet::start(fs::read(FIXTURE).unwrap(), "first").await;
    let other = Kubelet::start(Vec::new(), "x").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = kubelet.write_ca(dir.path());
    fs::write(dir.path().join("token"), "wrong").unwrap();
    let client =
        KubeletClient::new(&options(&kubelet.url, dir.path(), Some(ca.clone()), false)).unwrap();
    let err = client.fetch().await.unwrap_err();
    assert!(
        matches!(err, KubeletError::Status { status: 401, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "unauthorized");

    // The projected token rotates: the next poll reads the new file.
    fs::write(dir.path().join("token"), "first\n").unwrap();
    assert_eq!(client.fetch().await.unwrap().pods(), 3);
    kubelet.set_token("second");
    fs::write(dir.path().join("token"), "second").unwrap();
    assert_eq!(client.fetch().await.unwrap().pods(), 3);

    // Another CA does not verify this kubelet; skipping verification does.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = other.write_ca(other_dir.path());
    let wrong =
        KubeletClient::new(&options(&kubelet.url, dir.path(), Some(other_ca), false)).unwrap();
    let err = wrong.fetch().await.unwrap_err();
    assert_eq!(err.reason(), "request", "{err}");
    let insecure = KubeletClient::new(&options(&kubelet.url, dir.path(), None, true)).unwrap();
    assert_eq!(insecure.fetch().await.unwrap().containers(), 5);

    // Garbage and non-list answers are errors, not panics.
    kubelet.set_body(b"<html>proxy error</html>".to_vec());
    assert_eq!(client.fetch().await.unwrap_err().reason(), "bad_pod_list");
    kubelet.set_body(br#"{"kind":"Status","status":"Failure"}"#.to_vec());
    assert_eq!(client.fetch().await.unwrap_err().reason(), "bad_pod_list");

    // Set-up errors.
    let bad_ca = dir.path().join("bad.crt");
    fs::write(&bad_ca, "not a certificate").unwrap();
    let err =
        KubeletClient::new(&options(&kubelet.url, dir.path(), Some(bad_ca), false)).unwrap_err();
    assert_eq!(err.reason(), "tls_setup", "{err}");
    let err = KubeletClient::new(&options("ftp://x", dir.path(), None, true)).unwrap_err();
    assert_eq!(err.reason(), "url", "{err}");
    fs::remove_file(dir.path().join("token")).unwrap();
    assert_eq!(client.fetch().await.unwrap_err().reason(), "token");
}

// The real binary.

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get_metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Scrapes until `pred` holds (the exporter polls and measures on its own intervals).
async fn wait_for(port: u16, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(text) = tokio::task::spawn_blocking(move || get_metrics(port))
            .await
            .unwrap()
        {
            if pred(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}; last /metrics:\n{last}");
}

/// The real binary on `host`, reading pods from `kubelet` with the token "tok" (its token and
/// CA files go to `dir`), measuring every 200 ms, with `extra` flags; killed on drop.
fn spawn_binary(kubelet: &Kubelet, host: &FakeHost, dir: &Path, extra: &[&str]) -> (Exporter, u16) {
    fs::write(dir.join("token"), "tok").unwrap();
    let ca = kubelet.write_ca(dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .args([
            "--log.level",
            "warn",
            "--monitor.interval",
            "200ms",
            "--kube.enable",
        ])
        .args(extra)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--host.sysfs={}", host.sysfs().display()))
        .arg(format!("--host.procfs={}", host.procfs().display()))
        .arg(format!("--kube.kubelet-url={}", kubelet.url))
        .arg(format!("--kube.token-file={}", dir.join("token").display()))
        .arg(format!("--kube.ca-file={}", ca.display()))
        .args(["--kube.poll-interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (Exporter(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_labels_containers_from_the_kubelet() {
    let kubelet = Kubelet::start(fs::read(FIXTURE).unwrap(), "tok").await;
    let host = FakeHost::new();
    let dir = tempfile::tempdir().unwrap();
    let (_exporter, port) = spawn_binary(&kubelet, &host, dir.path(), &[]);
    let nginx = format!(
        "container_id=\"{}\",pod_name=\"{WEB}\",container_name=\"nginx\",container_namespace=\"shop\"",
        hex("9c")
    );
    wait_for(port, "the nginx container's names", |t| t.contains(&nginx)).await;

    let late = format!(
        "container_id=\"{}\",pod_name=\"late-0\",container_name=\"worker\",container_namespace=\"shop\"",
        hex("cd")
    );
    kubelet.set_body(fixture_with(
        &[pod("late-0", "shop", LATE_UID, "worker", &hex("cd"))],
        None,
    ));
    wait_for(port, "the late pod's container", |t| t.contains(&late)).await;

    // The token stops working: errors are counted, the names already known stay.
    kubelet.set_token("rotated-away");
    let text = wait_for(port, "the kube error counter", |t| {
        t.contains("kepler_exporter_errors_total{component=\"kube\",reason=\"unauthorized\"}")
    })
    .await;
    assert!(text.contains(&nginx) && text.contains(&late));
}

/// `--attribution.idle-policy=requests` end to end: the real binary reads the containers' CPU
/// requests from the kubelet (nginx 250m, the running sidecar 50m, job 1 CPU; the restarted
/// sidecar's previous instance, the finished init container and the sandboxes none) and splits
/// idle energy by them. This `/proc/stat` lists no single CPU, so no capacity is left over for
/// `system_processes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_splits_idle_energy_by_the_kubelets_cpu_requests() {
    let kubelet = Kubelet::start(fs::read(FIXTURE).unwrap(), "tok").await;
    let mut host = FakeHost::new();
    let dir = tempfile::tempdir().unwrap();
    let (_exporter, port) = spawn_binary(
        &kubelet,
        &host,
        dir.path(),
        &[
            "--attribution.idle-policy",
            "requests",
            // Steady simulated power (the fake host's counters move in steps the exporter's
            // intervals would sample unevenly, which the idle estimator reads as zero idle).
            "--fake-rapl",
        ],
    );
    let idle = |text: &str, id: &str| -> f64 {
        let prefix = format!("kepler_container_package_joules_total{{container_id=\"{id}\",");
        // One simulated socket: package-0.
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("mode=\"idle\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // The fake host's CPU counters move while the exporter measures.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        host.advance();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = tokio::task::spawn_blocking(move || get_metrics(port))
            .await
            .unwrap()
            .unwrap_or_default();
        if idle(&text, &hex("9c")) > 1.0 && idle(&text, &hex("1")) > 0.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no idle energy for nginx and the sidecar yet:\n{text}"
        );
    };
    let (nginx, sidecar, job) = (
        idle(&text, &hex("9c")),
        idle(&text, &hex("1")),
        idle(&text, &hex("7e")),
    );
    println!("idle joules: nginx {nginx}, sidecar {sidecar}, job {job}");
    // 250m : 50m : 1000m. Interval by interval the split is exact to a microjoule; the scrape
    // may fall between the containers' updates of one interval, hence the tolerance.
    assert!(
        (job / nginx - 4.0).abs() < 0.05,
        "job/nginx {}",
        job / nginx
    );
    assert!(
        (nginx / sidecar - 5.0).abs() < 0.1,
        "nginx/sidecar {}",
        nginx / sidecar
    );
    for nothing in [hex("2"), hex("3"), hex("ab"), hex("cd")] {
        assert_eq!(idle(&text, &nothing), 0.0, "{nothing} has no request");
    }
    assert_eq!(idle(&text, "system_processes"), 0.0);
}
