//! The exporter's one typed configuration tree.
//!
//! Values come in layers (defaults < YAML file < `KEPLER_*` environment < flags, see [`layers`])
//! as raw strings keyed by dotted path; [`Config::from_values`] parses and validates them in one
//! pass and reports every problem at once, each with its path
//! (`monitor.interval: must be > 0, got 0s`).

pub mod kube;
pub mod layers;
pub mod otlp;
mod parser;
pub mod power;
pub mod relay;
pub mod settings;
pub mod top;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use parser::Parser;

pub use kube::{KubeConfig, MetadataSource};
pub use layers::Values;
pub use otlp::OtlpConfig;
pub use power::{EstimatorConfig, FakeRaplConfig};
pub use relay::RelayConfig;

pub use kepler_config_errors::{ConfigError, ConfigErrors};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Kepler's two metric families (`metrics.schema`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Schema {
    /// Kepler <= 0.9 names (`kepler_container_joules_total`): the default.
    #[default]
    Classic,
    /// Kepler >= 0.10 names (`kepler_container_cpu_joules_total`, watts gauges, pods).
    Modern,
    Both,
}

/// How idle energy is shared among workloads (see docs/attribution.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// By each workload's share of CPU time over a longer window (default).
    CpuShare,
    /// Equally per container, pseudo containers included.
    Even,
    /// By each container's CPU request (Kubernetes `resources.requests.cpu`) against the
    /// node's CPUs; the capacity no container requested goes to `system_processes`. Without any
    /// known request (no pod metadata), as `CpuShare`.
    Requests,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: String,
    pub log_format: LogFormat,
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub listen_address: SocketAddr,
    /// `web.configFile`: TLS, basic auth and headers of the /metrics server (`None`: plain
    /// HTTP).
    pub web_config_file: Option<PathBuf>,
    /// `web.healthzWithoutAuth`: /healthz needs no basic auth.
    pub healthz_without_auth: bool,
    pub interval: Duration,
    pub terminated_retention: Duration,
    pub max_terminated: usize,
    pub idle_policy: IdlePolicy,
    pub idle_window: Duration,
    pub idle_half_life: Duration,
    pub process_metrics: bool,
    pub schema: Schema,
    /// Try the eBPF CPU-time source first (`ebpf.enabled`).
    pub ebpf_enabled: bool,
    /// `gpu.enabled`: measure NVIDIA GPU energy where NVML loads.
    pub gpu_enabled: bool,
    /// `gpu.nvmlLibrary`: the NVML library to load (`None`: the system's).
    pub nvml_library: Option<PathBuf>,
    /// Empty: decided at start-up from $NODE_NAME or the host name.
    pub node_name: String,
    /// `Some` when fake RAPL is enabled.
    pub fake_rapl: Option<FakeRaplConfig>,
    pub estimator: EstimatorConfig,
    /// `Some` when pod metadata is enabled (`kube.enable`).
    pub kube: Option<KubeConfig>,
    /// `monitor.nodeShare`: scale node energy by this node's share of host CPU time.
    pub node_share: bool,
    /// `cluster`: `None` when not set (no `cluster` attribute is sent then).
    pub cluster: Option<String>,
    /// OTLP push, when `otlp.endpoint` is set.
    pub otlp: Option<OtlpConfig>,
    /// Relay of Prometheus endpoints over OTLP, when targets are configured.
    pub relay: Option<RelayConfig>,
}

impl Config {
    /// Builds and validates the configuration from merged raw values.
    pub fn from_values(values: &Values) -> Result<Config, ConfigErrors> {
        let mut p = Parser::new(values);
        let log_level = p.raw("log.level").trim().to_ascii_lowercase();
        if !matches!(
            log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            p.fail(
                "log.level",
                format!("must be one of error, warn, info, debug, trace, got {log_level:?}"),
            );
        }
        let log_format = match p.raw("log.format").trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                let other = other.to_string();
                p.fail("log.format", format!("must be text or json, got {other:?}"));
                LogFormat::Text
            }
        };
        let idle_policy = match p.raw("attribution.idlePolicy").trim() {
            "cpu-share" => IdlePolicy::CpuShare,
            "even" => IdlePolicy::Even,
            "requests" => IdlePolicy::Requests,
            other => {
                let other = other.to_string();
                p.fail(
                    "attribution.idlePolicy",
                    format!("must be cpu-share, even or requests, got {other:?}"),
                );
                IdlePolicy::CpuShare
            }
        };
        let listen_raw = p.raw("web.listenAddress").trim().to_string();
        let listen_address = listen_raw.parse().unwrap_or_else(|_| {
            p.fail(
                "web.listenAddress",
                format!("must be HOST:PORT with an IP address, got {listen_raw:?}"),
            );
            SocketAddr::from(([0, 0, 0, 0], 9102))
        });
        let web_config_file = Some(p.raw("web.configFile").trim())
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        let healthz_without_auth = p.bool("web.healthzWithoutAuth");
        let interval = p.duration("monitor.interval", Duration::from_millis(100));
        let terminated_retention = p.duration("monitor.terminatedRetention", Duration::ZERO);
        let max_terminated = p.parse::<usize>("monitor.maxTerminated", "a whole number >= 0");
        let idle_window = p.duration("attribution.idleWindow", Duration::from_millis(1));
        let idle_half_life = p.duration("attribution.idleHalfLife", Duration::from_millis(1));
        if !idle_window.is_zero() && idle_window < interval {
            p.fail(
                "attribution.idleWindow",
                format!(
                    "must be at least monitor.interval ({}), got {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(idle_window)
                ),
            );
        }
        let schema = match p.raw("metrics.schema").trim() {
            "classic" => Schema::Classic,
            "modern" => Schema::Modern,
            "both" => Schema::Both,
            other => {
                let other = other.to_string();
                p.fail(
                    "metrics.schema",
                    format!("must be classic, modern or both, got {other:?}"),
                );
                Schema::Classic
            }
        };
        // Unset: each Kepler's default, process level on in v0.11 (modern), off in v0.7.
        let process_metrics = if p.raw("metrics.processes").trim().is_empty() {
            schema != Schema::Classic
        } else {
            p.bool("metrics.processes")
        };
        let ebpf_enabled = p.bool("ebpf.enabled");
        let gpu_enabled = p.bool("gpu.enabled");
        let nvml_library = Some(p.raw("gpu.nvmlLibrary").trim())
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        let sysfs = p.path("host.sysfs");
        let procfs = p.path("host.procfs");
        let node_name = p.raw("kube.nodeName").trim().to_string();
        let estimator = power::estimator_config(&mut p);
        let node_share = p.bool("monitor.nodeShare");
        let kube = if p.bool("kube.enable") {
            Some(kube::kube_config(&mut p))
        } else {
            None
        };
        let fake_rapl = if p.bool("fakeRapl.enabled") {
            Some(power::fake_rapl_config(&mut p))
        } else {
            None
        };
        let cluster = otlp::cluster(&mut p);
        let otlp = otlp::otlp_config(&mut p);
        let relay = relay::relay_config(&mut p, otlp.is_some(), kube.as_ref());
        if p.errors.is_empty() {
            Ok(Config {
                log_level,
                log_format,
                sysfs,
                procfs,
                listen_address,
                web_config_file,
                healthz_without_auth,
                interval,
                terminated_retention,
                max_terminated,
                idle_policy,
                idle_window,
                idle_half_life,
                process_metrics,
                schema,
                ebpf_enabled,
                gpu_enabled,
                nvml_library,
                node_name,
                fake_rapl,
                estimator,
                kube,
                node_share,
                cluster,
                otlp,
                relay,
            })
        } else {
            Err(ConfigErrors(p.errors))
        }
    }

    /// Merges the layers in precedence order and builds the configuration.
    pub fn load(
        command_line: &layers::CommandLine,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut values = layers::defaults();
        values.extend(otlp::from_otel_env(&env));
        if let Some(file) = &command_line.config_file {
            let path = PathBuf::from(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigErrors(vec![ConfigError::new(
                    "config.file",
                    format!("cannot read {}: {e}", path.display()),
                )])
            })?;
            values.extend(layers::from_yaml(&text, &path).map_err(ConfigErrors)?);
        }
        values.extend(layers::from_env(env));
        values.extend(command_line.values.clone());
        Config::from_values(&values)
    }
}

#[cfg(test)]
mod tests;
