//! The whole pipeline: hub collector and exporters in their namespaces, their series, and the
//! conservation checks between what the exporters and the hub show.

use super::*;

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

/// The program serving as the hub in the hub namespace.
#[derive(Debug, Clone)]
pub enum HubProgram {
    /// kepler-collector with [`hub_config`]: tokens on the spoke listeners.
    KeplerCollector(PathBuf),
    /// The OpenTelemetry Collector built from its Go modules (`tests/peers/otelcol`), configured
    /// as the reference deployment's hub ([`otelcol_hub_config`]).
    OtelCollector(PathBuf),
}

/// The reference deployment's hub Collector on the harness's ports: `otlp/hub` on 4317/4318,
/// `otlp/spokes` on 4327/4328, `prometheus` on 0.0.0.0:9464.
pub fn otelcol_hub_config() -> String {
    kepler_test_support::peers::otelcol_hub_config(&kepler_test_support::peers::OtelcolHub {
        host: "0.0.0.0",
        hub_grpc: 4317,
        hub_http: Some(4318),
        spokes_grpc: 4327,
        spokes_http: Some(4328),
        exposition: 9464,
        exporter_settings: &[],
    })
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
    pub hub_program: HubProgram,
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
        if !require_netns(what) {
            return None;
        }
        let (exporter_bin, collector_bin) = binaries()?;
        let hub = HubProgram::KeplerCollector(collector_bin);
        Self::start_hub(hub, exporter_bin, expiration, extra, exporter_args, true)
    }

    /// The pipeline with the real OpenTelemetry Collector as the hub, scraped by Prometheus
    /// with `honor_labels: false` as a ServiceMonitor does (pushed `job`/`instance` become
    /// `exported_job`/`exported_instance`); exporters as in [`Pipeline::start`].
    pub fn start_otel_collector(what: &str) -> Option<Pipeline> {
        if !require_netns(what) {
            return None;
        }
        let (exporter_bin, _) = binaries()?;
        let otelcol = kepler_test_support::peers::require_peer("otelcol")?;
        let hub = HubProgram::OtelCollector(otelcol);
        let args = vec![Vec::new(); CLUSTERS.len()];
        Self::start_hub(hub, exporter_bin, "5m", "", args, false)
    }

    fn start_hub(
        hub_program: HubProgram,
        exporter_bin: PathBuf,
        expiration: &str,
        extra: &str,
        exporter_args: Vec<Vec<String>>,
        honor_labels: bool,
    ) -> Option<Pipeline> {
        assert_eq!(exporter_args.len(), CLUSTERS.len());
        let prometheus_bin = prometheus_binary()?;
        let workloads: Vec<Workload> = SPOKES.iter().filter_map(|_| Workload::start()).collect();
        if workloads.len() != SPOKES.len() {
            return None;
        }
        let topo = Topology::create();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("hub.yaml"), hub_config(expiration, extra)).unwrap();
        fs::write(dir.path().join("otelcol.yaml"), otelcol_hub_config()).unwrap();
        let collector = start_hub_program(&hub_program, &topo.hub, dir.path());
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
        let prometheus = Prometheus::start(&prometheus_bin, &topo.hub, dir.path(), honor_labels);
        Some(Pipeline {
            prometheus,
            exporters,
            collector,
            workloads,
            exporter_bin,
            hub_program,
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
        self.collector = start_hub_program(&self.hub_program, &self.topo.hub, self.dir.path());
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

/// Starts the hub program in `ns` with its config in `dir` and waits (bounded) until it serves.
pub fn start_hub_program(hub: &HubProgram, ns: &str, dir: &Path) -> Proc {
    match hub {
        HubProgram::KeplerCollector(bin) => start_collector(bin, ns, dir),
        HubProgram::OtelCollector(bin) => start_otel_collector(bin, ns, dir),
    }
}

/// The real Collector with `otelcol.yaml` from `dir`; ready once its exporter serves /metrics.
pub fn start_otel_collector(bin: &Path, ns: &str, dir: &Path) -> Proc {
    let mut proc = Proc::spawn(
        "otelcol",
        in_ns(ns, bin).arg(format!("--config={}", dir.join("otelcol.yaml").display())),
        &dir.join("otelcol.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(ns, "http://127.0.0.1:9464/metrics").is_none_or(|(c, _)| c != 200) {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "the Collector never served /metrics"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    proc
}

/// kepler-collector with `hub.yaml` from `dir`; ready once it serves /healthz.
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
            // What the hub adds: the push's identity and scope (the Collector also writes
            // `otel_scope_schema_url`, empty for kepler-rs).
            for added in [
                "instance",
                "otel_scope_name",
                "otel_scope_version",
                "otel_scope_schema_url",
            ] {
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
