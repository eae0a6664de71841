#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! NVIDIA GPU energy against a fake NVML: `testdata/fake-nvml/fake_nvml.c`, built here with the
//! system `cc` and loaded through `gpu.nvmlLibrary`, the same run-time path as the real
//! `libnvidia-ml.so.1`. Each test scripts the GPUs (energy counters, power, utilisation, error
//! codes, a GPU that vanishes) in a state file, so the energy the exporter must report is known
//! exactly. The in-process tests drive the real monitor on an injected clock; the binary tests
//! run the exporter itself.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use common::host_tree::HostTree;
use kepler_rs::config::IdlePolicy;
use kepler_rs::monitor::{Monitor, MonitorOptions};
use kepler_rs::power::gpu::NvmlGpus;
use kepler_rs::power::rapl::RaplMeter;
use kepler_rs::power::units::Microjoules;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::snapshot::{NodeInfo, Snapshot};
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_test_support::https::get_plain;
use kepler_test_support::net::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");

/// The in-process tests share one environment (`FAKE_NVML_STATE`), so they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A state file with `lines`, pointed at by `FAKE_NVML_STATE` (hold [`serial`] while using it).
struct State {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl State {
    fn new(lines: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, lines).unwrap();
        std::env::set_var("FAKE_NVML_STATE", &path);
        Self { _dir: dir, path }
    }

    fn set(&self, lines: &str) {
        fs::write(&self.path, lines).unwrap();
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// The real monitor over a fixture host (RAPL from the two-socket fixture, procfs CPU time),
/// measuring the GPUs of `gpus` when given.
fn monitor(host: &HostTree, gpus: Option<NvmlGpus>, metrics: &Arc<SelfMetrics>) -> Monitor {
    host.write_node_ticks(100, 900);
    let meter = RaplMeter::discover(&host.sysfs(), "rapl-sysfs").unwrap();
    let cpu = ProcfsSource::new(host.procfs(), host.cgroup_root(), metrics.clone());
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
        node_name: "gpu-node".into(),
        ..NodeInfo::default()
    };
    let m = Monitor::new(
        Box::new(meter),
        Box::new(cpu),
        options,
        info,
        metrics.clone(),
    );
    match gpus {
        Some(g) => m.with_gpus(g),
        None => m,
    }
}

/// Advances the fixture's CPU side by one interval: 10 J in package-0, CPU 50 % busy.
fn advance_cpu(host: &HostTree, i: u64) {
    host.add_energy("intel-rapl:0", 10_000_000);
    host.write_node_ticks(100 + 50 * i, 900 + 50 * i);
}

fn gpu_joules(s: &Snapshot, index: u32) -> (u64, u64) {
    let g = s.gpus.iter().find(|g| g.index == index).unwrap();
    (g.energy.dynamic.0, g.energy.idle.0)
}

#[test]
fn node_gpu_energy_is_the_counter_deltas_exactly() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    // GPU 0 counts energy; GPU 1 (no counter) is read by power.
    let state = State::new(
        "driver 550.54.15\n\
         gpu GPU-aaaa Fake_A100 1000000 250000 80 0\n\
         gpu GPU-bbbb Fake_T4 -3 70000 10 0\n",
    );
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    assert_eq!(gpus.driver_version(), "550.54.15");
    let devices = gpus.devices();
    assert_eq!(devices.len(), 2);
    assert_eq!(
        (
            devices[0].name.as_str(),
            devices[0].uuid.as_str(),
            devices[0].has_energy_counter
        ),
        ("Fake A100", "GPU-aaaa", true)
    );
    assert!(!devices[1].has_energy_counter);

    let host = HostTree::new("intel-2socket-server", "cpu");
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    // Counter deltas (mJ) of GPU 0 per 3 s interval, utilisation varying; GPU 1 draws 70 W,
    // then 130 W.
    let mut counter = 1_000_000u64;
    let mut expected_uj = 0u64;
    let mut last = None;
    for (i, (delta_mj, util, power_t4)) in [
        (600_000u64, 80u32, 70_000u32),
        (450_000, 40, 130_000),
        (900_000, 95, 130_000),
        (300_000, 5, 130_000),
    ]
    .into_iter()
    .enumerate()
    {
        counter += delta_mj;
        expected_uj += delta_mj * 1000;
        state.set(&format!(
            "driver 550.54.15\n\
             gpu GPU-aaaa Fake_A100 {counter} 250000 {util} 0\n\
             gpu GPU-bbbb Fake_T4 -3 {power_t4} 10 0\n"
        ));
        advance_cpu(&host, i as u64 + 1);
        let s = m.step(at(3 * (i as u64 + 1)));
        let (active, idle) = gpu_joules(&s, 0);
        assert_eq!(active + idle, expected_uj, "interval {i}");
        last = Some(s);
    }
    let s = last.unwrap();
    // GPU 1: (70 W + 70 W)/2·3 s, then (70 + 130)/2·3 s, then 130 W·3 s twice.
    let (active, idle) = gpu_joules(&s, 1);
    assert_eq!(active + idle, 210_000_000 + 300_000_000 + 2 * 390_000_000);
    let a100 = &s.gpus[0];
    assert!((a100.watts.0 - 100.0).abs() < 1e-9, "{:?}", a100.watts);
    assert!(a100.idle_watts.0 <= a100.watts.0 + 1e-9);
    // The CPU side is measured as without GPUs.
    assert_eq!(s.sequence, 4);
    assert!(s.node_zones.values().any(|z| z.energy.total().0 > 0));
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
}

#[test]
fn power_integration_when_the_counter_is_unsupported() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    let state = State::new("driver 535.1\ngpu GPU-cccc Fake_V100 -3 100000 50 0\n");
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    let host = HostTree::new("intel-2socket-server", "cpu");
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    let mut expected = 0u64;
    let mut before = 100_000u64;
    let mut s = None;
    for (i, mw) in [100_000u64, 300_000, 300_000, 50_000]
        .into_iter()
        .enumerate()
    {
        state.set(&format!(
            "driver 535.1\ngpu GPU-cccc Fake_V100 -3 {mw} 50 0\n"
        ));
        advance_cpu(&host, i as u64 + 1);
        // 2 s intervals: the mean of the two samples times 2 s, in µJ.
        s = Some(m.step(at(2 * (i as u64 + 1))));
        expected += (before + mw) * 2_000 / 2;
        before = mw;
    }
    let s = s.unwrap();
    let (active, idle) = gpu_joules(&s, 0);
    assert_eq!(active + idle, expected);
    assert_eq!(expected, 1_550_000_000);
    // Last interval: (300 W + 50 W) / 2.
    assert!((s.gpus[0].watts.0 - 175.0).abs() < 1e-9);
}

#[test]
fn nvml_errors_are_reported_and_counted_and_the_cpu_side_goes_on() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    let ok = "driver 550.1\n\
              gpu GPU-aaaa Fake_A100 5000 250000 50 0\n\
              gpu GPU-bbbb Fake_A100 7000 250000 50 0\n";
    let state = State::new(ok);
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    let host = HostTree::new("intel-2socket-server", "cpu");
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    // Interval 1: GPU 0's counter call fails (no permission); GPU 1 vanishes (GPU is lost).
    state.set(
        "driver 550.1\n\
         gpu GPU-aaaa Fake_A100 -4 250000 50 0\n\
         gpu GPU-bbbb Fake_A100 9000 250000 50 15\n",
    );
    advance_cpu(&host, 1);
    let s = m.step(at(3));
    assert_eq!(gpu_joules(&s, 0), (0, 0));
    assert_eq!(gpu_joules(&s, 1), (0, 0));
    assert!(
        s.node_zones.values().any(|z| z.energy.total().0 > 0),
        "CPU side measured"
    );
    let errors = metrics.errors();
    assert!(errors.contains(&("gpu", "no_permission", 1)), "{errors:?}");
    assert!(errors.contains(&("gpu", "gpu_lost", 1)), "{errors:?}");
    // Interval 2: both are back; their counters continue from the last good reading.
    state.set(
        "driver 550.1\n\
         gpu GPU-aaaa Fake_A100 8000 250000 50 0\n\
         gpu GPU-bbbb Fake_A100 10000 250000 50 0\n",
    );
    advance_cpu(&host, 2);
    let s = m.step(at(6));
    let (a, i) = gpu_joules(&s, 0);
    assert_eq!(a + i, 3_000_000);
    let (a, i) = gpu_joules(&s, 1);
    assert_eq!(a + i, 3_000_000);
    assert_eq!(s.sequence, 2);
}

#[test]
fn init_failure_is_an_error_not_a_panic() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    // NVML_ERROR_DRIVER_NOT_LOADED
    let _state = State::new("init 9\n");
    let e = NvmlGpus::open(Some(lib)).unwrap_err();
    assert_eq!(e.reason, "driver_not_loaded");
    assert!(NvmlGpus::open(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))).is_err());
}

/// The exporter binary with `args` on a free port, its log into `log`; killed on drop.
struct Running(std::process::Child, u16);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], state: Option<&Path>, log: &Path) -> Running {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--fake-rapl",
        "--log.level",
        "info",
        "--monitor.interval",
        "200ms",
    ])
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .args(args)
    .env("NODE_NAME", "gpu-test")
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    .stdout(Stdio::null())
    .stderr(fs::File::create(log).unwrap());
    match state {
        Some(state) => cmd.env("FAKE_NVML_STATE", state),
        None => cmd.env_remove("FAKE_NVML_STATE"),
    };
    Running(cmd.spawn().unwrap(), port)
}

/// Polls `/metrics` until `done` accepts the page (30 s at most) and returns it.
fn wait_for_page(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, page)) = get_plain(("127.0.0.1", port), "/metrics") {
            if done(&page) {
                return page;
            }
            assert!(Instant::now() < deadline, "{what}; last page:\n{page}");
        }
        assert!(Instant::now() < deadline, "{what}: no page");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample line starting with `prefix` (name and labels).
fn value(page: &str, prefix: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn exporter_serves_gpu_energy_from_the_configured_library() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::write(
        &state,
        "driver 550.54.15\ngpu GPU-aaaa Fake_A100 2000000 250000 60 0\n",
    )
    .unwrap();
    let log = dir.path().join("log");
    let lib_arg = format!("--gpu.nvml-library={}", lib.display());
    let e = start(
        &[&lib_arg, "--metrics.schema", "modern"],
        Some(&state),
        &log,
    );
    let series = "kepler_node_gpu_joules_total{node_name=";
    // The baseline is read once the GPU's series are served.
    wait_for_page(e.1, "GPU series served", |p| p.contains(series));
    fs::write(
        &state,
        "driver 550.54.15\ngpu GPU-aaaa Fake_A100 2123456 250000 60 0\n",
    )
    .unwrap();
    let page = wait_for_page(e.1, "GPU energy = counter delta", |p| {
        value(p, series) == Some(123.456)
    });
    assert!(
        page.contains(
            "kepler_node_gpu_info{node_name=\"gpu-test\",gpu=\"0\",gpu_uuid=\"GPU-aaaa\",\
             gpu_name=\"Fake A100\",vendor=\"nvidia\"} 1"
        ),
        "{page}"
    );
    assert!(
        page.contains("kepler_node_cpu_joules_total{"),
        "CPU side served: {page}"
    );
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("NVML loaded"), "{log}");
}

#[test]
fn exporter_without_nvml_runs_as_before_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let e = start(
        &[
            "--gpu.nvml-library=/nonexistent/libnvidia-ml.so.1",
            "--metrics.schema",
            "both",
        ],
        None,
        &log,
    );
    let page = wait_for_page(e.1, "CPU energy served", |p| {
        value(p, "kepler_node_package_joules_total{").is_some_and(|v| v > 0.0)
    });
    assert!(
        !page.contains("_gpu_"),
        "no GPU series without NVML:\n{page}"
    );
    assert!(!page.contains("component=\"gpu\""), "{page}");
    drop(e);
    let log = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("NVML")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("no NVIDIA GPU energy"), "{log}");
}

/// The `/proc/<pid>/cgroup` content of a case of the shared `cgroup-paths.tsv` fixture.
fn cgroup_row(case: &str) -> String {
    let tsv = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/cgroup-paths.tsv"
    ))
    .unwrap();
    tsv.lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|cols| cols[0] == case)
        .map(|cols| cols[1].replace("\\n", "\n"))
        .unwrap_or_else(|| panic!("no fixture row {case}"))
}

#[test]
fn gpu_energy_follows_utilisation_to_containers_and_adds_up() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    const WEB: &str = WEB_CG;
    const JOB: &str = JOB_CG;
    let host = HostTree::new("intel-2socket-server", "cpu");
    host.add_process(
        3001,
        &cgroup_row("kubernetes + containerd, cgroup v2, systemd driver, burstable"),
        Some(WEB),
    );
    host.add_process(
        3002,
        &cgroup_row("kubernetes + containerd, cgroup v2, guaranteed QoS (no qos slice)"),
        Some(JOB),
    );
    let write_cpu = |i: u64| {
        for (pid, comm, cg) in [(3001, "web", WEB), (3002, "job", JOB)] {
            host.write_process_ticks(pid, comm, 0, 1000 + 10 * i);
            host.write_cgroup_usage(cg, (1000 + 10 * i) * 10_000);
        }
    };
    write_cpu(0);
    // Interval i: the counter advances 400 J + i mJ; web's samples sum to 3x job's.
    let nvml_state = |i: u64, counter: u64, samples: bool| {
        let mut st = format!("driver 550.1\ngpu GPU-aaaa Fake_A100 {counter} 250000 60 0\n");
        if samples {
            let t = 1_000 * i;
            st.push_str(&format!(
                "proc 0 3001 {} 40 10\nproc 0 3001 {} 50 12\nproc 0 3002 {} 30 5\n",
                t + 1,
                t + 2,
                t + 3
            ));
            // An old sample (seen before): not counted again.
            st.push_str("proc 0 3002 1 99 99\n");
        } else {
            st.push_str("running 0 3001\nrunning 0 3002\n");
        }
        st
    };
    let state = State::new(&nvml_state(0, 1_000, true));
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    let web = kepler_rs::workload::WorkloadKey::Container("9c".repeat(32));
    let job = kepler_rs::workload::WorkloadKey::Container("7e".repeat(32));
    let g0 = kepler_rs::snapshot::GpuId::whole(0);
    let mut counter = 1_000u64;
    for i in 1..=3u64 {
        counter += 400_000 + i;
        state.set(&nvml_state(i, counter, true));
        advance_cpu(&host, i);
        write_cpu(i);
        let s = m.step(at(3 * i));
        let gpu = s.gpus[0].energy;
        // Every microjoule of the GPU is attributed, mode by mode.
        let mut sum = kepler_rs::snapshot::ModeSplit::default();
        for shares in s.gpu_workloads.values() {
            sum += shares.get(&g0).map(|g| g.energy).unwrap_or_default();
        }
        assert_eq!(sum, gpu, "interval {i}");
        let share = |k| s.gpu_workloads[k][&g0];
        let (w, j) = (share(&web), share(&job));
        // 90 : 30 of compute samples, each interval.
        let (wt, jt) = (w.energy.total().0, j.energy.total().0);
        assert_eq!(wt + jt, gpu.total().0);
        assert!((wt as i64 - 3 * jt as i64).abs() <= 6, "{wt} vs 3 x {jt}");
        assert_eq!((w.compute_util, j.compute_util), (90 * i, 30 * i));
        assert_eq!((w.memory_util, j.memory_util), (22 * i, 5 * i));
    }
    // No samples: the running compute processes share equally.
    let before = m.step(at(9));
    let (w0, j0) = (
        before.gpu_workloads[&web][&g0].energy.total().0,
        before.gpu_workloads[&job][&g0].energy.total().0,
    );
    counter += 100_000;
    state.set(&nvml_state(5, counter, false));
    advance_cpu(&host, 5);
    write_cpu(5);
    let s = m.step(at(12));
    let w = s.gpu_workloads[&web][&g0].energy.total().0 - w0;
    let j = s.gpu_workloads[&job][&g0].energy.total().0 - j0;
    assert_eq!(w + j, 100_000_000);
    assert!(w.abs_diff(j) <= 2, "{w} vs {j}");
    // The exposition: modern container and pod families carry the active share.
    let text = render_modern(&s);
    assert!(
        text.contains(
            "kepler_container_gpu_joules_total{node_name=\"gpu-node\",container_id=\"7e7e"
        ),
        "{text}"
    );
    assert!(text.contains("kepler_pod_gpu_watts{"), "{text}");
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
}

fn render_modern(s: &Snapshot) -> String {
    use kepler_rs::export::prometheus::{render, BuildInfo, Format, RenderOptions};
    let options = RenderOptions {
        process_metrics: true,
        schema: kepler_rs::config::Schema::Modern,
    };
    let build = BuildInfo::default();
    render(s, &SelfMetrics::new(), &options, &build, Format::Text)
}

/// Two fixture containers with a process each (web 3001, job 3002), their CPU time advanced by
/// the returned closure each interval.
const WEB_CG: &str = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b2d2c5e_5f0a_4d3b_9c1e_8a7f6e5d4c3b.slice/cri-containerd-9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c.scope";
const JOB_CG: &str = "kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e.scope";

fn two_containers(host: &HostTree) -> impl Fn(u64) + '_ {
    host.add_process(
        3001,
        &cgroup_row("kubernetes + containerd, cgroup v2, systemd driver, burstable"),
        Some(WEB_CG),
    );
    host.add_process(
        3002,
        &cgroup_row("kubernetes + containerd, cgroup v2, guaranteed QoS (no qos slice)"),
        Some(JOB_CG),
    );
    let write_cpu = move |i: u64| {
        for (pid, comm, cg) in [(3001, "web", WEB_CG), (3002, "job", JOB_CG)] {
            host.write_process_ticks(pid, comm, 0, 1000 + 10 * i);
            host.write_cgroup_usage(cg, (1000 + 10 * i) * 10_000);
        }
    };
    write_cpu(0);
    write_cpu
}

fn web() -> kepler_rs::workload::WorkloadKey {
    kepler_rs::workload::WorkloadKey::Container("9c".repeat(32))
}

fn job() -> kepler_rs::workload::WorkloadKey {
    kepler_rs::workload::WorkloadKey::Container("7e".repeat(32))
}

fn mig_id(gi: u32) -> kepler_rs::snapshot::GpuId {
    kepler_rs::snapshot::GpuId {
        index: 0,
        mig: Some(kepler_rs::snapshot::MigId {
            gpu_instance: gi,
            compute_instance: 0,
        }),
    }
}

/// An A100 in MIG mode with a 4g (GPU instance 1, 56 SMs, 4 of 7 slices) and a 3g instance
/// (GPU instance 2, 42 SMs, 3 slices) at MIG device indices 0 and 2 (none at 1): web (3001)
/// and a process the CPU side does not know (3003) run in the 4g, job (3002) in the 3g.
fn mig_state(counter_mj: u64) -> String {
    format!(
        "driver 550.54.15\n\
         gpu GPU-aaaa Fake_A100 {counter_mj} 250000 -3 0\n\
         mig 0 1 1\n\
         migdev 0 0 1 0 MIG-1111 Fake_A100_MIG_4g.20gb 56 4 4\n\
         migdev 0 2 2 0 MIG-2222 Fake_A100_MIG_3g.20gb 42 3 3\n\
         running 0 3001 1 0\n\
         running 0 3003 1 0\n\
         running 0 3002 2 0\n"
    )
}

#[test]
fn mig_instances_are_gpus_with_their_sm_share_of_the_gpu_exactly() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    let state = State::new(&mig_state(1_000));
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    let d = &gpus.devices()[0];
    assert_eq!(
        d.mig_mode,
        Some(kepler_rs::power::gpu::MigModeState {
            current: true,
            pending: true
        })
    );
    let found: Vec<_> = d
        .mig
        .iter()
        .map(|m| {
            (
                m.index,
                m.gpu_instance,
                m.compute_instance,
                m.uuid.as_str(),
                m.name.as_str(),
                m.multiprocessors,
                m.gpu_instance_slices,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (0, 1, 0, "MIG-1111", "Fake A100 MIG 4g.20gb", 56, 4),
            (2, 2, 0, "MIG-2222", "Fake A100 MIG 3g.20gb", 42, 3)
        ]
    );

    let host = HostTree::new("intel-2socket-server", "cpu");
    let write_cpu = two_containers(&host);
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    let (a, b) = (mig_id(1), mig_id(2));
    let mut counter = 1_000u64;
    let mut before = (
        kepler_rs::snapshot::ModeSplit::default(),
        kepler_rs::snapshot::ModeSplit::default(),
    );
    let mut last = None;
    for i in 1..=4u64 {
        // Odd steps, so the split has remainders to place.
        let step_mj = 700_000 + 7 * i + (i % 2);
        counter += step_mj;
        state.set(&mig_state(counter));
        advance_cpu(&host, i);
        write_cpu(i);
        let s = m.step(at(3 * i));
        // The instances are the devices; the GPU itself is not listed beside them.
        let ids: Vec<_> = s.gpus.iter().map(|g| g.id()).collect();
        assert_eq!(ids, [a, b], "interval {i}");
        let (ea, eb) = (s.gpus[0].energy, s.gpus[1].energy);
        let minus = |x: kepler_rs::snapshot::ModeSplit, y: kepler_rs::snapshot::ModeSplit| {
            kepler_rs::snapshot::ModeSplit::new(
                Microjoules(x.dynamic.0 - y.dynamic.0),
                Microjoules(x.idle.0 - y.idle.0),
            )
        };
        let (da, db) = (minus(ea, before.0), minus(eb, before.1));
        before = (ea, eb);
        // Together exactly the counter's step; mode by mode exactly the 56 : 42 SM split.
        assert_eq!(da.total().0 + db.total().0, step_mj * 1000, "interval {i}");
        for (x, y) in [(da.dynamic.0, db.dynamic.0), (da.idle.0, db.idle.0)] {
            let want = kepler_rs::attribution::split::split_exact(x + y, &[56, 42]).unwrap();
            assert_eq!(vec![x, y], want, "interval {i}");
        }
        // 4/7 of the step, to the µJ the per-mode rounding allows.
        assert!(
            (da.total().0 as i64 - (step_mj * 4000 / 7) as i64).abs() <= 2,
            "interval {i}: {da:?}"
        );
        // Each instance's energy goes to its processes: web and an unknown process
        // (system_processes) share the 4g equally, job has the 3g alone.
        let share = |k: &kepler_rs::workload::WorkloadKey, id| {
            s.gpu_workloads
                .get(k)
                .and_then(|g| g.get(&id))
                .map(|g| g.energy)
                .unwrap_or_default()
        };
        assert_eq!(share(&job(), b), eb, "interval {i}");
        assert_eq!(share(&job(), a), Default::default());
        let system = kepler_rs::workload::WorkloadKey::System;
        let (w, sys) = (share(&web(), a), share(&system, a));
        let mut both = w;
        both += sys;
        assert_eq!(both, ea, "interval {i}");
        assert!(
            w.total().0.abs_diff(sys.total().0) <= 2 * i,
            "{w:?} vs {sys:?}"
        );
        // Every microjoule of each device is attributed once.
        for (id, energy) in [(a, ea), (b, eb)] {
            let mut sum = kepler_rs::snapshot::ModeSplit::default();
            for shares in s.gpu_workloads.values() {
                sum += shares.get(&id).map(|g| g.energy).unwrap_or_default();
            }
            assert_eq!(sum, energy, "interval {i}");
        }
        assert!(s
            .gpu_workloads
            .values()
            .all(|g| !g.contains_key(&kepler_rs::snapshot::GpuId::whole(0))));
        last = Some(s);
    }
    let s = last.unwrap();
    let text = render_modern(&s);
    assert!(
        text.contains(
            "kepler_node_gpu_info{node_name=\"gpu-node\",gpu=\"0:1:0\",gpu_uuid=\"MIG-1111\",\
             gpu_name=\"Fake A100 MIG 4g.20gb\",vendor=\"nvidia\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("kepler_node_gpu_joules_total{node_name=\"gpu-node\",gpu=\"0:2:0\",gpu_uuid=\"MIG-2222\""), "{text}");
    assert!(
        !text.contains("gpu=\"0\""),
        "the whole GPU is not served beside its instances:\n{text}"
    );
    assert!(!text.contains("GPU-aaaa"), "{text}");
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
}

/// A GPU whose MIG mode is `current`/`pending` but off now, with MIG devices scripted (which
/// NVML does not list while MIG is off) and web running on the whole GPU: measured and shared
/// as a GPU without MIG.
fn mig_off_is_a_whole_gpu(current_pending: &str) {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let _serial = serial();
    let nvml_state = |counter: u64| {
        format!(
            "driver 550.54.15\n\
             gpu GPU-aaaa Fake_A100 {counter} 250000 50 0\n\
             mig 0 {current_pending}\n\
             migdev 0 0 1 0 MIG-1111 Fake_A100_MIG_4g.20gb 56 4 4\n\
             migdev 0 2 2 0 MIG-2222 Fake_A100_MIG_3g.20gb 42 3 3\n\
             running 0 3001\n"
        )
    };
    let state = State::new(&nvml_state(1_000));
    let gpus = NvmlGpus::open(Some(lib)).unwrap();
    let d = &gpus.devices()[0];
    assert!(d.mig_mode.is_some_and(|m| !m.current), "{d:?}");
    assert!(d.mig.is_empty(), "{d:?}");
    let host = HostTree::new("intel-2socket-server", "cpu");
    let write_cpu = two_containers(&host);
    let metrics = Arc::new(SelfMetrics::new());
    let mut m = monitor(&host, Some(gpus), &metrics);
    m.step(at(0));
    let mut counter = 1_000u64;
    let mut s = None;
    for i in 1..=2u64 {
        counter += 500_001;
        state.set(&nvml_state(counter));
        advance_cpu(&host, i);
        write_cpu(i);
        s = Some(m.step(at(3 * i)));
    }
    let s = s.unwrap();
    assert_eq!(s.gpus.len(), 1);
    let g = &s.gpus[0];
    assert_eq!(
        (g.id(), g.uuid.as_str()),
        (kepler_rs::snapshot::GpuId::whole(0), "GPU-aaaa")
    );
    assert_eq!(g.energy.total().0, 2 * 500_001_000);
    assert_eq!(s.gpu_workloads[&web()][&g.id()].energy, g.energy);
    let text = render_modern(&s);
    assert!(
        text.contains(
            "kepler_node_gpu_joules_total{node_name=\"gpu-node\",gpu=\"0\",gpu_uuid=\"GPU-aaaa\""
        ),
        "{text}"
    );
    assert!(!text.contains("MIG-"), "{text}");
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
}

#[test]
fn mig_mode_disabled_is_measured_as_before() {
    mig_off_is_a_whole_gpu("0 0");
}

#[test]
fn mig_mode_pending_but_not_current_is_disabled() {
    mig_off_is_a_whole_gpu("0 1");
}

#[test]
fn exporter_and_doctor_show_mig_instances_as_gpus() {
    let Some(lib) = common::fake_nvml::library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::write(&state, mig_state(2_000_000)).unwrap();
    let lib_arg = format!("--gpu.nvml-library={}", lib.display());

    let out = Command::new(BIN)
        .args(["doctor", &lib_arg])
        .env("FAKE_NVML_STATE", &state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "0:1:0: MIG instance of GPU 0: Fake A100 MIG 4g.20gb MIG-1111 (56 SMs, 4 slices; 56/98 of the GPU's energy)",
        "0:2:0: MIG instance of GPU 0: Fake A100 MIG 3g.20gb MIG-2222 (42 SMs, 3 slices; 42/98 of the GPU's energy)",
    ] {
        assert!(stdout.contains(want), "{want} not in:\n{stdout}");
    }

    let log = dir.path().join("log");
    let e = start(
        &[&lib_arg, "--metrics.schema", "modern"],
        Some(&state),
        &log,
    );
    let series_a =
        "kepler_node_gpu_joules_total{node_name=\"gpu-test\",gpu=\"0:1:0\",gpu_uuid=\"MIG-1111\"";
    let series_b =
        "kepler_node_gpu_joules_total{node_name=\"gpu-test\",gpu=\"0:2:0\",gpu_uuid=\"MIG-2222\"";
    wait_for_page(e.1, "MIG series served", |p| p.contains(series_a));
    // 700.007 J: 400.004 J to the 4g, 300.003 J to the 3g (to the µJ per mode).
    fs::write(&state, mig_state(2_700_007)).unwrap();
    let page = wait_for_page(
        e.1,
        "MIG instances add up to the counter step",
        |p| matches!((value(p, series_a), value(p, series_b)), (Some(a), Some(b)) if (a + b - 700.007).abs() < 1e-9),
    );
    let a = value(&page, series_a).unwrap();
    assert!((a - 400.004).abs() <= 2e-6, "{a}\n{page}");
    assert!(!page.contains("gpu=\"0\""), "{page}");
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("MIG instance"), "{log}");
}
