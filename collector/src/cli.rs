//! The command line of `kepler-collector` (flags over the config file), here so that the man
//! page and shell completions are generated from the same definition.

use std::path::PathBuf;

/// The multi-cluster hub: OTLP in (4317/4318 for the hub, 4327/4328 for spokes), Prometheus out
/// (:9464/metrics).
#[derive(Debug, clap::Parser)]
#[command(name = "kepler-collector", version = crate::VERSION, about)]
pub struct Args {
    /// YAML configuration file (listeners, limits, auth, expiry, exposition address).
    #[arg(long = "config.file")]
    pub config_file: Option<PathBuf>,
    /// Overrides exposition.address.
    #[arg(long = "exposition.address")]
    pub exposition_address: Option<String>,
    /// Overrides exposition.metric_expiration (e.g. 5m).
    #[arg(long = "exposition.metric-expiration")]
    pub metric_expiration: Option<String>,
    /// Web configuration file in the Prometheus exporter-toolkit format (as node_exporter's):
    /// TLS, client certificates, basic auth and headers for /metrics and /healthz, re-read when
    /// it or a certificate changes. Overrides exposition.web_config_file.
    #[arg(long = "web.config-file")]
    pub web_config_file: Option<PathBuf>,
    /// Serve /healthz without basic auth (for Kubernetes probes; TLS still applies). Overrides
    /// exposition.healthz_without_auth.
    #[arg(long = "web.healthz-without-auth")]
    pub healthz_without_auth: bool,
    /// Log filter (tracing env-filter syntax).
    #[arg(long = "log.level", default_value = "info")]
    pub log_level: String,
}
