//! The exporter's one typed configuration tree.
//!
//! Values come in layers (defaults < YAML file < `KEPLER_*` environment < flags, see [`layers`])
//! as raw strings keyed by dotted path; [`Config::from_values`] parses and validates them in one
//! pass and reports every problem at once, each with its path
//! (`monitor.interval: must be > 0, got 0s`).

pub mod layers;
pub mod otlp;
pub mod relay;
pub mod settings;
pub mod top;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::power::fake::{FakeRaplModel, FakeZoneModel};
use crate::power::units::{Microjoules, Watts};
use crate::power::ZoneKind;

pub use layers::Values;
pub use otlp::OtlpConfig;
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

/// Where pod metadata comes from (`kube.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// Empty: decided at start-up from $NODE_IP.
    pub kubelet_url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub poll_interval: Duration,
    pub source: MetadataSource,
    /// Empty: from $KUBERNETES_SERVICE_HOST and $KUBERNETES_SERVICE_PORT.
    pub api_server_url: String,
}

/// `kube.metadataSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    /// Poll the local kubelet's `/pods` (default).
    Kubelet,
    /// List and watch this node's pods on the API server.
    ApiServer,
}

/// The fallback power estimator (see `power::estimator`).
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorConfig {
    pub enabled: bool,
    /// (idle, max) per socket when configured; otherwise chosen from the CPU model.
    pub watts: Option<(Watts, Watts)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeRaplConfig {
    pub dir: Option<PathBuf>,
    pub model: FakeRaplModel,
}

/// Parses each raw value once, collecting errors instead of stopping at the first.
struct Parser<'a> {
    values: &'a Values,
    errors: Vec<ConfigError>,
}

impl Parser<'_> {
    fn raw(&self, path: &'static str) -> &str {
        self.values
            .get(path)
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn fail(&mut self, path: &str, message: String) {
        self.errors.push(ConfigError::new(path, message));
    }

    fn parse<T: FromStr + Default>(&mut self, path: &'static str, what: &str) -> T {
        let raw = self.raw(path).trim().to_string();
        match raw.parse() {
            Ok(v) => v,
            Err(_) => {
                self.fail(path, format!("must be {what}, got {raw:?}"));
                T::default()
            }
        }
    }

    fn bool(&mut self, path: &'static str) -> bool {
        match self.raw(path).trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            other => {
                let other = other.to_string();
                self.fail(path, format!("must be true or false, got {other:?}"));
                false
            }
        }
    }

    fn duration(&mut self, path: &'static str, min: Duration) -> Duration {
        let raw = self.raw(path).trim().to_string();
        match humantime::parse_duration(&raw) {
            Ok(d) if d < min => {
                let shown = humantime::format_duration(d);
                if min.is_zero() {
                    d
                } else if d.is_zero() {
                    self.fail(path, format!("must be > 0, got {shown}"));
                    d
                } else {
                    let min_shown = humantime::format_duration(min);
                    self.fail(path, format!("must be at least {min_shown}, got {shown}"));
                    d
                }
            }
            Ok(d) => d,
            Err(e) => {
                self.fail(
                    path,
                    format!("must be a duration like 3s or 500ms, got {raw:?} ({e})"),
                );
                Duration::ZERO
            }
        }
    }

    fn watts(&mut self, path: &'static str) -> Watts {
        let w: f64 = self.parse(path, "a number of watts");
        if !w.is_finite() || w < 0.0 {
            self.fail(path, format!("must be a finite number >= 0, got {w}"));
        }
        Watts(w)
    }

    fn path(&mut self, path: &'static str) -> PathBuf {
        let raw = PathBuf::from(self.raw(path).trim());
        if raw.as_os_str().is_empty() {
            self.fail(path, "must not be empty".to_string());
        }
        raw
    }
}

impl Config {
    /// Builds and validates the configuration from merged raw values.
    pub fn from_values(values: &Values) -> Result<Config, ConfigErrors> {
        let mut p = Parser {
            values,
            errors: Vec::new(),
        };
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
        let process_metrics = p.bool("metrics.processes");
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
        let ebpf_enabled = p.bool("ebpf.enabled");
        let sysfs = p.path("host.sysfs");
        let procfs = p.path("host.procfs");
        let node_name = p.raw("kube.nodeName").trim().to_string();
        let estimator = estimator_config(&mut p);
        let node_share = p.bool("monitor.nodeShare");
        let kube = if p.bool("kube.enable") {
            Some(kube_config(&mut p))
        } else {
            None
        };
        let fake_rapl = if p.bool("fakeRapl.enabled") {
            Some(fake_rapl_config(&mut p))
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
                interval,
                terminated_retention,
                max_terminated,
                idle_policy,
                idle_window,
                idle_half_life,
                process_metrics,
                schema,
                ebpf_enabled,
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

fn estimator_config(p: &mut Parser<'_>) -> EstimatorConfig {
    let enabled = p.bool("estimator.enabled");
    let idle_raw = p.raw("estimator.idleWatts").trim().is_empty();
    let max_raw = p.raw("estimator.maxWatts").trim().is_empty();
    let watts = match (idle_raw, max_raw) {
        (true, true) => None,
        (false, false) => {
            let (idle, max) = (
                p.watts("estimator.idleWatts"),
                p.watts("estimator.maxWatts"),
            );
            if max.0 < idle.0 {
                p.fail(
                    "estimator.maxWatts",
                    format!(
                        "must be at least estimator.idleWatts ({}), got {}",
                        idle.0, max.0
                    ),
                );
            }
            Some((idle, max))
        }
        (true, false) => {
            p.fail(
                "estimator.idleWatts",
                "must be set together with estimator.maxWatts".to_string(),
            );
            None
        }
        (false, true) => {
            p.fail(
                "estimator.maxWatts",
                "must be set together with estimator.idleWatts".to_string(),
            );
            None
        }
    };
    EstimatorConfig { enabled, watts }
}

fn kube_config(p: &mut Parser<'_>) -> KubeConfig {
    let optional_path = |p: &Parser<'_>, path| {
        Some(p.raw(path).trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let kubelet_url = p.raw("kube.kubeletUrl").trim().to_string();
    if !kubelet_url.is_empty()
        && !kubelet_url.starts_with("https://")
        && !kubelet_url.starts_with("http://")
    {
        p.fail(
            "kube.kubeletUrl",
            format!("must start with https:// (or http://), got {kubelet_url:?}"),
        );
    }
    let source = match p.raw("kube.metadataSource").trim() {
        "kubelet" => MetadataSource::Kubelet,
        "api-server" => MetadataSource::ApiServer,
        other => {
            let other = other.to_string();
            p.fail(
                "kube.metadataSource",
                format!("must be kubelet or api-server, got {other:?}"),
            );
            MetadataSource::Kubelet
        }
    };
    let api_server_url = p.raw("kube.apiServerUrl").trim().to_string();
    KubeConfig {
        source,
        api_server_url,
        kubelet_url,
        token_file: optional_path(p, "kube.tokenFile"),
        ca_file: optional_path(p, "kube.caFile"),
        insecure_skip_verify: p.bool("kube.kubeletInsecureSkipVerify"),
        poll_interval: p.duration("kube.pollInterval", Duration::from_millis(100)),
    }
}

fn fake_rapl_config(p: &mut Parser<'_>) -> FakeRaplConfig {
    let dir = Some(p.raw("fakeRapl.dir").trim())
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let sockets = p.parse::<u32>("fakeRapl.sockets", "a whole number");
    if sockets == 0 {
        p.fail("fakeRapl.sockets", "must be > 0, got 0".to_string());
    }
    let zone = |p: &mut Parser<'_>, kind, idle, dynamic| FakeZoneModel {
        kind,
        idle: p.watts(idle),
        dynamic: p.watts(dynamic),
    };
    let zones = vec![
        zone(
            p,
            ZoneKind::Package,
            "fakeRapl.packageIdleWatts",
            "fakeRapl.packageDynamicWatts",
        ),
        zone(
            p,
            ZoneKind::Core,
            "fakeRapl.coreIdleWatts",
            "fakeRapl.coreDynamicWatts",
        ),
        zone(
            p,
            ZoneKind::Dram,
            "fakeRapl.dramIdleWatts",
            "fakeRapl.dramDynamicWatts",
        ),
    ];
    let max_range = p.parse::<u64>("fakeRapl.maxEnergyRangeUj", "a whole number of microjoules");
    if max_range == 0 {
        p.fail(
            "fakeRapl.maxEnergyRangeUj",
            "must be > 0, got 0".to_string(),
        );
    }
    let tick = p.duration("fakeRapl.tick", Duration::from_millis(1));
    FakeRaplConfig {
        dir,
        model: FakeRaplModel {
            sockets,
            zones,
            max_energy_range: Microjoules(max_range),
            tick,
        },
    }
}

#[cfg(test)]
mod tests;
