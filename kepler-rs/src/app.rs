//! Wiring: turns a [`Config`] into a running exporter (meter, CPU-time source, monitor thread,
//! pod-metadata poller, HTTP server). The one place where implementations are chosen; `main.rs` only parses the
//! command line and calls [`run`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use kepler_web_config::{ServeOptions, WebConfig};

use crate::config::{Config, IdlePolicy, KubeConfig, MetadataSource};
use crate::export::family::{BuildInfo, RenderOptions};
use crate::export::otlp::{self, Identity, SnapshotSource, Transport};
use crate::export::relay::{RelayIdentity, RelaySource};
use crate::host;
use crate::monitor::node_share::NodeShare;
use crate::monitor::{self, Monitor, MonitorOptions};
use crate::power::estimator::{EstimatorMeter, EstimatorModel};
use crate::power::fake::FakeRapl;
use crate::power::gpu;
use crate::power::rapl::{self, RaplMeter};
use crate::power::PowerMeter;
use crate::selfmetrics::SelfMetrics;
use crate::server::{self, AppState};
use crate::snapshot::NodeInfo;
use crate::workload::ebpf::{EbpfError, EbpfSource};
use crate::workload::kube::apiserver::{self, ApiServerOptions, ApiServerWatch};
use crate::workload::kube::kubelet::{self, KubeletClient, KubeletOptions};
use crate::workload::kube::SharedPods;
use crate::workload::procfs::ProcfsSource;
use crate::workload::CpuTimeSource;

/// The power meter and, in fake-RAPL mode, the simulator that must live as long as it.
#[derive(Debug)]
pub struct Meter {
    pub meter: Box<dyn PowerMeter>,
    pub fake: Option<FakeRapl>,
}

/// Chooses the power meter, first that works: the fake-RAPL tree when asked, the host's RAPL
/// powercap, then the CPU-utilisation estimator (unless disabled). One log line says what was
/// tried and why it fell back.
pub fn select_meter(config: &Config) -> Result<Meter> {
    if let Some(fake) = &config.fake_rapl {
        let sim = FakeRapl::start(
            fake.dir.as_deref(),
            fake.model.clone(),
            config.procfs.clone(),
        )
        .context("cannot start fake RAPL")?;
        let meter = RaplMeter::discover(sim.sysfs_root(), "fake-rapl").with_context(|| {
            format!(
                "cannot read the fake RAPL tree at {}",
                sim.sysfs_root().display()
            )
        })?;
        tracing::info!(dir = %sim.sysfs_root().display(), zones = meter.zones().len(), "fake RAPL: simulated energy follows this host's CPU load");
        return Ok(Meter {
            meter: Box::new(meter),
            fake: Some(sim),
        });
    }
    let refusal = match RaplMeter::discover(&config.sysfs, rapl::SOURCE) {
        Ok(meter) => {
            tracing::info!(zones = meter.zones().len(), sysfs = %config.sysfs.display(), "RAPL powercap meter");
            return Ok(Meter {
                meter: Box::new(meter),
                fake: None,
            });
        }
        // Unreadable RAPL is fixable (run as root): say so rather than estimate.
        Err(e @ rapl::DiscoverError::PermissionDenied { .. }) => {
            return Err(anyhow::Error::new(e).context("RAPL is present but unreadable"))
        }
        Err(e) => e,
    };
    if !config.estimator.enabled {
        return Err(anyhow::Error::new(refusal)
            .context("no power meter found (estimator.enabled=false, so no estimate either)"));
    }
    let meter = EstimatorMeter::new(
        EstimatorModel::for_host(&config.procfs, config.estimator.watts),
        config.procfs.clone(),
    );
    let model = meter.model();
    tracing::warn!(
        "no RAPL meter ({refusal}); estimating power from CPU utilisation instead: {} W idle to {} W max per socket x {} socket(s) ({}); every series carries source=\"estimator\"",
        model.idle.0,
        model.max.0,
        model.sockets,
        model.origin
    );
    Ok(Meter {
        meter: Box::new(meter),
        fake: None,
    })
}

/// The node name for the `instance` label: configured, else $NODE_NAME, else the host name.
pub fn node_name(config: &Config, env: impl Fn(&str) -> Option<String>) -> String {
    if !config.node_name.is_empty() {
        return config.node_name.clone();
    }
    if let Some(name) = env("NODE_NAME").filter(|n| !n.trim().is_empty()) {
        return name.trim().to_string();
    }
    std::fs::read_to_string(config.procfs.join("sys/kernel/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn node_info(config: &Config, meter: &dyn PowerMeter) -> NodeInfo {
    let has_platform = meter
        .zones()
        .iter()
        .any(|z| z.id.kind == crate::power::ZoneKind::Psys);
    NodeInfo {
        node_name: node_name(config, |k| std::env::var(k).ok()),
        cpu_architecture: host::cpu_model(&config.procfs)
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        components_power_source: meter.source().to_string(),
        platform_power_source: if has_platform {
            meter.source().to_string()
        } else {
            "none".to_string()
        },
        cpus: host::cpu_infos(&config.procfs),
    }
}

/// The kubelet URL: configured, else `https://$NODE_IP:10250`, else the loopback kubelet.
pub fn kubelet_url(kube: &KubeConfig, env: impl Fn(&str) -> Option<String>) -> String {
    if !kube.kubelet_url.is_empty() {
        return kube.kubelet_url.clone();
    }
    kubelet_base_url(env)
}

/// The default kubelet URL: `https://$NODE_IP:10250`, else the loopback kubelet.
pub fn kubelet_base_url(env: impl Fn(&str) -> Option<String>) -> String {
    match env("NODE_IP").map(|ip| ip.trim().to_string()) {
        Some(ip) if ip.contains(':') => format!("https://[{ip}]:10250"),
        Some(ip) if !ip.is_empty() => format!("https://{ip}:10250"),
        _ => "https://127.0.0.1:10250".to_string(),
    }
}

/// The API server: configured, else from the in-cluster service variables.
pub fn api_server_url(kube: &KubeConfig, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    if !kube.api_server_url.is_empty() {
        return Ok(kube.api_server_url.clone());
    }
    match (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")) {
        (Some(host), Some(port)) if host.contains(':') => Ok(format!("https://[{host}]:{port}")),
        (Some(host), Some(port)) => Ok(format!("https://{host}:{port}")),
        _ => anyhow::bail!(
            "kube.metadataSource=api-server: set kube.apiServerUrl (not running in a pod: no $KUBERNETES_SERVICE_HOST)"
        ),
    }
}

/// Starts the pod-metadata source (kubelet poller or API-server watch); the index it keeps current is what the monitor reads.
pub fn start_pod_metadata(
    config: &Config,
    kube: &KubeConfig,
    metrics: Arc<SelfMetrics>,
) -> Result<(SharedPods, tokio::task::JoinHandle<()>)> {
    let pods = SharedPods::default();
    if kube.source == MetadataSource::ApiServer {
        let options = ApiServerOptions {
            url: api_server_url(kube, |k| std::env::var(k).ok())?,
            token_file: kube.token_file.clone(),
            ca_file: kube.ca_file.clone(),
            node_name: node_name(config, |k| std::env::var(k).ok()),
            timeout: std::time::Duration::from_secs(30),
        };
        let watch = ApiServerWatch::new(&options)
            .context("kube.metadataSource=api-server: cannot set up the API-server client")?;
        tracing::info!(
            url = watch.url(),
            "pod metadata from an API-server watch of this node's pods"
        );
        let task = tokio::spawn(apiserver::run(watch, pods.clone(), metrics));
        return Ok((pods, task));
    }
    let options = KubeletOptions {
        url: kubelet_url(kube, |k| std::env::var(k).ok()),
        token_file: kube.token_file.clone(),
        ca_file: kube.ca_file.clone(),
        insecure_skip_verify: kube.insecure_skip_verify,
        timeout: kube.poll_interval.min(std::time::Duration::from_secs(10)),
    };
    let client =
        KubeletClient::new(&options).context("kube.enable: cannot set up the kubelet client")?;
    tracing::info!(url = client.url(), interval = ?kube.poll_interval, insecure = kube.insecure_skip_verify, "pod metadata from the kubelet");
    let task = tokio::spawn(kubelet::poll(
        client,
        kube.poll_interval,
        pods.clone(),
        metrics,
    ));
    Ok((pods, task))
}

/// The cgroup mount under the configured sysfs.
pub fn cgroup_root(sysfs: &Path) -> PathBuf {
    sysfs.join("fs/cgroup")
}

/// Chooses the CPU-time source: eBPF (exact scheduler time) unless `ebpf.enabled` is false or it
/// cannot start, then procfs/cgroups, with one log line naming the reason.
pub fn select_cpu_source(config: &Config, metrics: &Arc<SelfMetrics>) -> Box<dyn CpuTimeSource> {
    let cgroups = cgroup_root(&config.sysfs);
    let refused = if config.ebpf_enabled {
        match EbpfSource::new(config.procfs.clone(), &cgroups, metrics.clone()) {
            Ok(source) => {
                tracing::info!(source = "ebpf", "CPU time source");
                return Box::new(source.list_idle_processes(config.process_metrics));
            }
            Err(e) => e,
        }
    } else {
        EbpfError::Disabled
    };
    if config.ebpf_enabled {
        tracing::warn!(source = "procfs", reason = %refused, "CPU time source: procfs (eBPF unavailable)");
    } else {
        tracing::info!(source = "procfs", reason = %refused, "CPU time source: procfs");
    }
    Box::new(ProcfsSource::new(
        config.procfs.clone(),
        cgroups,
        metrics.clone(),
    ))
}

/// Runs the exporter until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(SelfMetrics::new());
    // Counters start now: every pushed Sum's start time.
    let started = std::time::SystemTime::now();
    let Meter { meter, fake } = select_meter(&config)?;
    let info = node_info(&config, meter.as_ref());
    let cpu = select_cpu_source(&config, &metrics);
    let options = MonitorOptions {
        procfs: config.procfs.clone(),
        terminated_retention: config.terminated_retention,
        max_terminated: config.max_terminated,
        process_metrics: config.process_metrics,
        idle_policy: config.idle_policy,
        idle_window: config.idle_window,
        idle_half_life: config.idle_half_life,
    };
    let mut monitor = Monitor::new(meter, cpu, options, info, metrics.clone());
    if let Some(gpus) = gpu::open_configured(config.gpu_enabled, config.nvml_library.as_deref()) {
        monitor = monitor.with_gpus(gpus);
    }
    if config.node_share {
        let root = cgroup_root(&config.sysfs);
        tracing::info!(cgroup = %root.display(), "monitor.nodeShare: node energy scaled by this node's share of host CPU time");
        monitor = monitor.with_node_share(NodeShare::new(&root));
    }
    let pod_poller = match &config.kube {
        Some(kube) => {
            let (pods, task) = start_pod_metadata(&config, kube, metrics.clone())?;
            monitor = monitor.with_pods(pods);
            Some(task)
        }
        None => {
            if config.idle_policy == IdlePolicy::Requests {
                tracing::warn!("attribution.idlePolicy is requests but no pod metadata is configured (kube): idle energy is split by cpu-share");
            }
            None
        }
    };
    let snapshots = Arc::new(ArcSwap::from_pointee(monitor.initial_snapshot()));

    let web = web_options(&config, &metrics)?;
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (web.listenAddress)",
                config.listen_address
            )
        })?;
    tracing::info!(address = %config.listen_address, interval = ?config.interval, "serving /metrics");

    let (stop_tx, stop_rx) = mpsc::channel();
    let publish = snapshots.clone();
    let interval = config.interval;
    let monitor_thread = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || monitor::run(monitor, interval, publish, stop_rx))
        .context("cannot start the monitor thread")?;

    let state = AppState {
        snapshot: snapshots,
        self_metrics: metrics,
        render: RenderOptions {
            process_metrics: config.process_metrics,
            schema: config.schema,
        },
        build: BuildInfo::current(),
    };
    let exporters = start_otlp(&config, &state, started)?;
    let served = server::serve(listener, state, web, shutdown).await;
    for task in exporters {
        task.abort();
    }
    let _ = stop_tx.send(());
    if let Some(task) = pod_poller {
        task.abort();
    }
    if monitor_thread.join().is_err() {
        tracing::error!("monitor thread panicked");
    }
    drop(fake);
    served.context("HTTP server failed")
}

/// The web configuration (`web.configFile`), loaded now so that a bad file fails the start
/// with its path; a failed reload later counts as
/// `kepler_exporter_errors_total{component="web",reason="config_reload_failed"}`.
pub fn web_options(config: &Config, metrics: &Arc<SelfMetrics>) -> Result<ServeOptions> {
    let Some(path) = &config.web_config_file else {
        return Ok(ServeOptions::default());
    };
    let metrics = metrics.clone();
    let web = WebConfig::load(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("web.configFile")?
        .on_reload_failure(move |_| {
            metrics.record("web", "config_reload_failed");
        });
    Ok(ServeOptions::with_web_config(
        web,
        config.healthz_without_auth,
        "metrics",
    ))
}

/// Starts the OTLP push (and the relay) when configured; the tasks run until aborted.
fn start_otlp(
    config: &Config,
    state: &AppState,
    started: std::time::SystemTime,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let Some(otlp) = &config.otlp else {
        return Ok(Vec::new());
    };
    // One process-wide rustls provider for tonic and reqwest.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = Transport::new(&otlp.transport).context("cannot set up the OTLP exporter")?;
    let identity = Identity {
        service_name: otlp.service_name.clone(),
        node_name: state.snapshot.load().info.node_name.clone(),
        cluster: config.cluster.clone(),
    };
    let source = SnapshotSource::new(
        state.snapshot.clone(),
        state.self_metrics.clone(),
        state.render,
        state.build.clone(),
        identity,
        started,
    );
    let interval = otlp.interval.unwrap_or(config.interval);
    tracing::info!(endpoint = %otlp.transport.endpoint, protocol = ?otlp.transport.protocol, interval = ?interval, cluster = config.cluster.as_deref().unwrap_or(""), "pushing metrics over OTLP");
    let mut tasks = vec![tokio::spawn(otlp::run_pipeline(
        "push",
        source,
        transport,
        interval,
        otlp.retry,
        state.self_metrics.clone(),
    ))];
    if let Some(relay) = &config.relay {
        let mut targets = relay.targets.clone();
        if let Some(kubelet) = &relay.kubelet {
            let base = if kubelet.url.is_empty() {
                kubelet_base_url(|k| std::env::var(k).ok())
            } else {
                kubelet.url.clone()
            };
            match kubelet.target(&base) {
                Ok(t) => targets.push(t),
                Err(e) => anyhow::bail!("relay.kubelet.enabled: invalid kubelet URL {e}"),
            }
        }
        for t in &targets {
            tracing::info!(job = %t.job, url = %t.url, interval = ?relay.interval, "relaying a Prometheus endpoint over OTLP");
        }
        let identity = RelayIdentity {
            node_name: state.snapshot.load().info.node_name.clone(),
            cluster: config.cluster.clone(),
        };
        let source = RelaySource::new(
            targets,
            relay.filter.clone(),
            identity,
            relay.interval.min(std::time::Duration::from_secs(10)),
            state.self_metrics.clone(),
        );
        let transport =
            Transport::new(&otlp.transport).context("cannot set up the relay's OTLP exporter")?;
        tasks.push(tokio::spawn(otlp::run_pipeline(
            "relay",
            source,
            transport,
            relay.interval,
            otlp.retry,
            state.self_metrics.clone(),
        )));
    }
    Ok(tasks)
}
