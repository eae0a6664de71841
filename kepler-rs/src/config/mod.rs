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
mod tests {
    use super::*;

    fn load(
        args: &[&str],
        env: &[(&str, &str)],
        yaml: Option<&str>,
    ) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["kepler-rs".to_string()];
        if let Some(yaml) = yaml {
            let file = dir.path().join("config.yaml");
            std::fs::write(&file, yaml).unwrap();
            argv.push(format!("--config.file={}", file.display()));
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        let cli = layers::parse_args(argv).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&cli, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_match_kepler() {
        let c = load(&[], &[], None).unwrap();
        assert_eq!(c.listen_address, "0.0.0.0:9102".parse().unwrap());
        assert_eq!(c.interval, Duration::from_secs(3));
        assert_eq!(c.sysfs, PathBuf::from("/sys"));
        assert_eq!(c.procfs, PathBuf::from("/proc"));
        assert!(!c.process_metrics);
        assert!(c.fake_rapl.is_none());
        assert_eq!(c.idle_policy, IdlePolicy::CpuShare);
    }

    #[test]
    fn precedence_file_env_flags() {
        let yaml = "monitor:\n  interval: 10s\n  maxTerminated: 7\nhost:\n  sysfs: /yaml/sys\n  procfs: /yaml/proc\n";
        let c = load(
            &["--monitor.interval", "5s"],
            &[
                ("KEPLER_MONITOR_INTERVAL", "7s"),
                ("KEPLER_HOST_PROCFS", "/env/proc"),
            ],
            Some(yaml),
        )
        .unwrap();
        assert_eq!(
            c.interval,
            Duration::from_secs(5),
            "flag beats env and file"
        );
        assert_eq!(c.procfs, PathBuf::from("/env/proc"), "env beats file");
        assert_eq!(c.sysfs, PathBuf::from("/yaml/sys"), "file beats default");
        assert_eq!(c.max_terminated, 7);
    }

    #[test]
    fn fake_rapl_switch_and_model() {
        let c = load(
            &[
                "--fake-rapl",
                "--fake-rapl.sockets",
                "2",
                "--fake-rapl.package-idle-watts=12.5",
            ],
            &[],
            None,
        )
        .unwrap();
        let fake = c.fake_rapl.unwrap();
        assert_eq!(fake.model.sockets, 2);
        assert_eq!(fake.model.zones[0].idle, Watts(12.5));
        assert!(fake.dir.is_none());
        let c = load(
            &["--fake-rapl=false"],
            &[],
            Some("fakeRapl:\n  enabled: true\n"),
        )
        .unwrap();
        assert!(c.fake_rapl.is_none(), "flag false overrides file true");
        let c = load(&[], &[("KEPLER_FAKE_RAPL_ENABLED", "true")], None).unwrap();
        assert!(c.fake_rapl.is_some());
    }

    #[test]
    fn every_idle_policy_parses_from_flag_and_file() {
        for (name, policy) in [
            ("cpu-share", IdlePolicy::CpuShare),
            ("even", IdlePolicy::Even),
            ("requests", IdlePolicy::Requests),
        ] {
            let flag = load(&["--attribution.idle-policy", name], &[], None).unwrap();
            assert_eq!(flag.idle_policy, policy, "{name}");
            let file = format!("attribution:\n  idlePolicy: {name}\n");
            let file = load(&[], &[], Some(&file)).unwrap();
            assert_eq!(file.idle_policy, policy, "{name}");
        }
    }

    #[test]
    fn all_errors_reported_with_paths() {
        let err = load(
            &[
                "--monitor.interval",
                "0s",
                "--web.listen-address",
                "nope",
                "--fake-rapl",
                "--fake-rapl.sockets",
                "0",
            ],
            &[("KEPLER_LOG_LEVEL", "loud")],
            Some("attribution:\n  idlePolicy: random\n"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("monitor.interval: must be > 0, got 0s"),
            "{text}"
        );
        assert!(
            text.contains("web.listenAddress: must be HOST:PORT"),
            "{text}"
        );
        assert!(text.contains("log.level: must be one of"), "{text}");
        assert!(
            text.contains("attribution.idlePolicy: must be cpu-share, even or requests"),
            "{text}"
        );
        assert!(text.contains("fakeRapl.sockets: must be > 0"), "{text}");
        assert_eq!(err.0.len(), 5, "{text}");
    }

    #[test]
    fn unknown_and_malformed_yaml() {
        let err = load(
            &[],
            &[],
            Some("monitor:\n  intervall: 3s\n  interval: [1, 2]\n"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("monitor.intervall: unknown setting"),
            "{text}"
        );
        assert!(
            text.contains("monitor.interval: must be a single value"),
            "{text}"
        );
        let err = load(&[], &[], Some("monitor: [unclosed")).unwrap_err();
        assert!(err.to_string().contains("config.file:"), "{err}");
    }

    #[test]
    fn bad_durations_and_numbers() {
        let err = load(
            &["--monitor.interval", "fast", "--monitor.max-terminated=-1"],
            &[],
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("monitor.interval: must be a duration"),
            "{text}"
        );
        assert!(
            text.contains("monitor.maxTerminated: must be a whole number"),
            "{text}"
        );
    }

    #[test]
    fn estimator_watts_come_in_pairs() {
        let c = load(&[], &[], None).unwrap();
        assert_eq!(
            c.estimator,
            EstimatorConfig {
                enabled: true,
                watts: None
            }
        );
        let c = load(
            &[
                "--estimator.idle-watts",
                "20",
                "--estimator.max-watts",
                "90",
            ],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(c.estimator.watts, Some((Watts(20.0), Watts(90.0))));
        let err = load(&["--estimator.idle-watts", "20"], &[], None).unwrap_err();
        assert!(
            err.to_string()
                .contains("estimator.maxWatts: must be set together"),
            "{err}"
        );
        let err = load(
            &[
                "--estimator.idle-watts",
                "50",
                "--estimator.max-watts",
                "10",
            ],
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("estimator.maxWatts: must be at least"),
            "{err}"
        );
        let c = load(&["--estimator.enabled=false"], &[], None).unwrap();
        assert!(!c.estimator.enabled);
    }

    #[test]
    fn subcommand_sees_flags_before_and_after_it() {
        let cli = layers::parse_args([
            "kepler-rs",
            "--host.sysfs",
            "/a",
            "doctor",
            "--host.procfs",
            "/b",
        ])
        .unwrap();
        assert_eq!(cli.action, layers::Action::Doctor);
        assert_eq!(cli.values.get("host.sysfs").map(String::as_str), Some("/a"));
        assert_eq!(
            cli.values.get("host.procfs").map(String::as_str),
            Some("/b")
        );
        let cli = layers::parse_args(["kepler-rs", "--host.sysfs", "/a"]).unwrap();
        assert_eq!(cli.action, layers::Action::Run);
    }

    #[test]
    fn kube_settings() {
        assert!(load(&[], &[], None).unwrap().kube.is_none());
        let c = load(
            &["--kube.enable", "--kube.kubelet-insecure-skip-verify"],
            &[("KEPLER_KUBE_KUBELET_URL", "https://10.0.0.1:10250")],
            Some("kube:\n  pollInterval: 30s\n  caFile: \"\"\n"),
        )
        .unwrap();
        let kube = c.kube.unwrap();
        assert_eq!(kube.kubelet_url, "https://10.0.0.1:10250");
        assert!(kube.insecure_skip_verify);
        assert_eq!(kube.poll_interval, Duration::from_secs(30));
        assert_eq!(kube.ca_file, None);
        assert_eq!(
            kube.token_file,
            Some(PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount/token"
            ))
        );
        let err = load(
            &["--kube.enable", "--kube.kubelet-url", "10.0.0.1:10250"],
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("kube.kubeletUrl: must start with https://"),
            "{err}"
        );
        assert_eq!(kube.source, MetadataSource::Kubelet);
        let c = load(
            &["--kube.enable", "--kube.metadata-source=api-server"],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(c.kube.unwrap().source, MetadataSource::ApiServer);
        let err = load(
            &["--kube.enable", "--kube.metadata-source=watch"],
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("kube.metadataSource: must be kubelet or api-server"),
            "{err}"
        );
    }

    #[test]
    fn otlp_push_and_relay_settings() {
        let c = load(&[], &[], None).unwrap();
        assert!(c.otlp.is_none() && c.relay.is_none() && c.cluster.is_none());
        let c = load(
            &[
                "--cluster",
                "cluster1",
                "--otlp.endpoint",
                "http://hub:4318",
                "--otlp.protocol",
                "http/protobuf",
                "--relay.targets",
                "cadvisor=http://127.0.0.1:8080/metrics,http://127.0.0.1:9100/metrics",
            ],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t")],
            None,
        )
        .unwrap();
        assert_eq!(c.cluster.as_deref(), Some("cluster1"));
        let otlp = c.otlp.unwrap();
        assert_eq!(
            otlp.transport.endpoint.as_str(),
            "http://hub:4318/v1/metrics"
        );
        assert_eq!(
            otlp.transport.headers,
            vec![("authorization".to_string(), "Bearer t".to_string())]
        );
        assert_eq!(otlp.interval, None, "defaults to monitor.interval");
        let relay = c.relay.unwrap();
        assert_eq!(relay.targets[0].job, "cadvisor");
        assert_eq!(relay.targets[1].job, "relay");
        // The OTEL variable is below the KEPLER_ one.
        let c = load(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("KEPLER_OTLP_ENDPOINT", "https://kepler:4317"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            c.otlp.unwrap().transport.endpoint.as_str(),
            "https://kepler:4317/"
        );
    }

    #[test]
    fn otlp_errors_name_the_setting() {
        let err = load(
            &[
                "--otlp.endpoint",
                "hub:4317",
                "--otlp.protocol",
                "udp",
                "--otlp.headers",
                "nonsense",
                "--relay.kubelet.enabled",
            ],
            &[],
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("otlp.endpoint: must start with http:// (plaintext) or https://"),
            "{text}"
        );
        assert!(
            text.contains("otlp.protocol: must be grpc or http/protobuf"),
            "{text}"
        );
        assert!(text.contains("otlp.headers: must be key=value"), "{text}");
        let err = load(
            &["--relay.targets", "http://127.0.0.1:1/metrics"],
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("relaying needs otlp.endpoint"),
            "{err}"
        );
    }

    #[test]
    fn metrics_schema() {
        assert_eq!(load(&[], &[], None).unwrap().schema, Schema::Classic);
        assert_eq!(
            load(&["--metrics.schema", "both"], &[], None)
                .unwrap()
                .schema,
            Schema::Both
        );
        assert_eq!(
            load(&[], &[("KEPLER_METRICS_SCHEMA", "modern")], None)
                .unwrap()
                .schema,
            Schema::Modern
        );
        let err = load(&["--metrics.schema", "v2"], &[], None).unwrap_err();
        assert!(
            err.to_string()
                .contains("metrics.schema: must be classic, modern or both"),
            "{err}"
        );
    }

    #[test]
    fn unknown_flag_is_a_clap_error() {
        assert!(layers::parse_args(["kepler-rs", "--no-such-flag"]).is_err());
    }
}
