//! The hub's one typed configuration tree, read from YAML (`--config.file`) with a few flag
//! overrides; without a file, the reference deployment's hub ([`default_listeners`], series
//! expiring after 5 minutes). [`RawConfig`] is what serde reads (unknown keys are errors);
//! [`RawConfig::validate`] turns it into [`Config`] and reports every problem at once, each
//! with its path (`listeners[2].address: invalid socket address "x"`).

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use kepler_config_errors::{ConfigError, ConfigErrors};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

/// A bearer token bound to a cluster name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub cluster: String,
    /// The token itself (prefer `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// A client certificate bound to a cluster: a sender whose verified certificate has this
/// subject common name or this DNS subject alternative name speaks for `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificateIdentity {
    pub cluster: String,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// Client certificates bound to clusters (needs `tls.client_ca_file`).
    #[serde(default)]
    pub certificates: Vec<RawCertificateIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Require a client certificate signed by one of these CAs (PEM) on every connection.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub protocol: Protocol,
    pub address: String,
    /// Insert `cluster=<this>` on data points that have none.
    #[serde(default)]
    pub insert_cluster: Option<String>,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Request size cap after decompression (`4MiB`, `20MiB`, bytes).
    #[serde(default)]
    pub max_request_size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExposition {
    #[serde(default = "default_exposition_address")]
    pub address: String,
    #[serde(default = "default_expiration")]
    pub metric_expiration: String,
    /// Serve OpenMetrics 1.0 text to scrapers whose `Accept` header prefers it (the
    /// Collector's prometheus exporter option of the same name; off by default, as there).
    #[serde(default)]
    pub enable_open_metrics: bool,
    /// Web configuration file in the Prometheus exporter-toolkit format (TLS, client
    /// certificates, basic auth, headers) for `/metrics` and `/healthz`; none: plain HTTP.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// Serve `/healthz` without basic auth (Kubernetes probes); TLS still applies.
    #[serde(default)]
    pub healthz_without_auth: bool,
}

impl Default for RawExposition {
    fn default() -> Self {
        Self {
            address: default_exposition_address(),
            metric_expiration: default_expiration(),
            enable_open_metrics: false,
            web_config_file: None,
            healthz_without_auth: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    #[serde(default = "default_max_series_per_cluster")]
    pub max_series_per_cluster: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_series: default_max_series(),
            max_series_per_cluster: default_max_series_per_cluster(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    pub url: String,
    #[serde(default = "default_rw_interval")]
    pub interval: String,
    #[serde(default = "default_rw_timeout")]
    pub timeout: String,
    #[serde(default = "default_rw_queue")]
    pub max_queue: usize,
    #[serde(default = "default_rw_samples")]
    pub max_samples_per_request: usize,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

fn default_rw_interval() -> String {
    "15s".into()
}
fn default_rw_timeout() -> String {
    "10s".into()
}
fn default_rw_queue() -> usize {
    100
}
fn default_rw_samples() -> usize {
    2_000
}

/// The YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listeners")]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub exposition: RawExposition,
    #[serde(default)]
    pub limits: RawLimits,
    /// Prometheus remote write (off when absent).
    #[serde(default)]
    pub remote_write: Option<RawRemoteWrite>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listeners: default_listeners(),
            exposition: RawExposition::default(),
            limits: RawLimits::default(),
            remote_write: None,
        }
    }
}

fn default_exposition_address() -> String {
    "0.0.0.0:9464".into()
}
fn default_expiration() -> String {
    "5m".into()
}
fn default_max_series() -> usize {
    2_000_000
}
fn default_max_series_per_cluster() -> usize {
    500_000
}

/// The four listeners of the reference deployment's hub Collector: the hub's own OTLP
/// gRPC/HTTP on 4317/4318 inserting `cluster="hub"`, the spokes' on 4327/4328 keeping theirs.
pub fn default_listeners() -> Vec<RawListener> {
    let l = |name: &str, protocol, address: &str, insert: Option<&str>| RawListener {
        name: name.into(),
        protocol,
        address: address.into(),
        insert_cluster: insert.map(Into::into),
        auth: None,
        tls: None,
        max_request_size: None,
    };
    vec![
        l("hub-grpc", Protocol::Grpc, "0.0.0.0:4317", Some("hub")),
        l("hub-http", Protocol::Http, "0.0.0.0:4318", Some("hub")),
        l("spokes-grpc", Protocol::Grpc, "0.0.0.0:4327", None),
        l("spokes-http", Protocol::Http, "0.0.0.0:4328", None),
    ]
}

/// Default request size cap after decompression: gRPC's 4 MiB, the Collector's HTTP 20 MiB.
pub fn default_max_request(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Grpc => 4 << 20,
        Protocol::Http => 20 << 20,
    }
}

/// Bearer tokens of a listener: token -> cluster.
pub type Tokens = BTreeMap<String, String>;

/// A name a client certificate can carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertificateName {
    /// The subject's common name (CN).
    CommonName(String),
    /// A DNS name among the subject alternative names.
    DnsName(String),
}

/// Client certificates of a listener: certificate name -> cluster.
pub type CertificateIdentities = BTreeMap<CertificateName, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: Protocol,
    pub address: SocketAddr,
    pub insert_cluster: Option<String>,
    /// `None`: auth off (the hub trusts the sender's `cluster`).
    pub tokens: Option<Tokens>,
    /// `None`: no certificate names a cluster.
    pub certificates: Option<CertificateIdentities>,
    pub tls: Option<RawTls>,
    pub max_request_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub exposition_address: SocketAddr,
    pub metric_expiration: Duration,
    /// Whether `/metrics` offers OpenMetrics to scrapers that ask for it.
    pub enable_open_metrics: bool,
    /// `exposition.web_config_file`: TLS, basic auth and headers of the exposition.
    pub web_config_file: Option<PathBuf>,
    /// `exposition.healthz_without_auth`.
    pub healthz_without_auth: bool,
    pub max_series: usize,
    pub max_series_per_cluster: usize,
    pub remote_write: Option<RemoteWrite>,
}

/// Remote-write settings, validated from [`RawRemoteWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWrite {
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_queue: usize,
    pub max_samples_per_request: usize,
    pub bearer_token: Option<String>,
}

/// Parses `4MiB`, `20MB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl RawConfig {
    /// Reads a YAML document (`path` names it in errors).
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigErrors> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.to_string(),
                message: e.to_string(),
            }])
        })
    }

    /// Checks everything and builds the typed tree, or lists every problem.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(ConfigError { path, message });
        let mut listeners = Vec::new();
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        if self.listeners.is_empty() {
            err("listeners".into(), "at least one listener is needed".into());
        }
        for (i, raw) in self.listeners.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if raw.name.is_empty() {
                err(format!("{p}.name"), "must not be empty".into());
            } else if !names.insert(raw.name.clone()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate listener name {:?}", raw.name),
                );
            }
            let address = match raw.address.parse::<SocketAddr>() {
                Ok(a) => {
                    if a.port() != 0 && !addresses.insert(a) {
                        err(
                            format!("{p}.address"),
                            format!("{a} is used by another listener"),
                        );
                    }
                    Some(a)
                }
                Err(_) => {
                    err(
                        format!("{p}.address"),
                        format!("invalid socket address {:?} (want host:port)", raw.address),
                    );
                    None
                }
            };
            if raw.insert_cluster.as_deref() == Some("") {
                err(format!("{p}.insert_cluster"), "must not be empty".into());
            }
            let max_request_bytes = match &raw.max_request_size {
                None => default_max_request(raw.protocol),
                Some(text) => match parse_size(text) {
                    Some(n) if n > 0 => n,
                    _ => {
                        err(
                            format!("{p}.max_request_size"),
                            format!("invalid size {text:?} (want e.g. 4MiB, 20MB, > 0)"),
                        );
                        0
                    }
                },
            };
            if let Some(auth) = &raw.auth {
                if auth.tokens.is_empty() && auth.certificates.is_empty() {
                    err(
                        format!("{p}.auth"),
                        "auth needs at least one token or certificate".into(),
                    );
                }
            }
            let certificates = raw
                .auth
                .as_ref()
                .filter(|auth| !auth.certificates.is_empty())
                .map(|auth| {
                    let mut identities = CertificateIdentities::new();
                    if raw
                        .tls
                        .as_ref()
                        .and_then(|t| t.client_ca_file.as_ref())
                        .is_none()
                    {
                        err(
                            format!("{p}.auth.certificates"),
                            "needs tls.client_ca_file (the CA that signs the client certificates)"
                                .into(),
                        );
                    }
                    for (j, c) in auth.certificates.iter().enumerate() {
                        let cp = format!("{p}.auth.certificates[{j}]");
                        if c.cluster.is_empty() {
                            err(format!("{cp}.cluster"), "must not be empty".into());
                        }
                        let name = match (&c.common_name, &c.dns_name) {
                            (Some(cn), None) if !cn.is_empty() => {
                                CertificateName::CommonName(cn.clone())
                            }
                            (None, Some(dns)) if !dns.is_empty() => {
                                CertificateName::DnsName(dns.to_ascii_lowercase())
                            }
                            _ => {
                                err(
                                    cp.clone(),
                                    "set exactly one of common_name and dns_name (not empty)"
                                        .into(),
                                );
                                continue;
                            }
                        };
                        if identities.insert(name, c.cluster.clone()).is_some() {
                            err(cp, "the same certificate name is given twice".into());
                        }
                    }
                    identities
                });
            let tokens = raw
                .auth
                .as_ref()
                .filter(|auth| !auth.tokens.is_empty())
                .map(|auth| {
                    let mut tokens = Tokens::new();
                    for (j, t) in auth.tokens.iter().enumerate() {
                        let tp = format!("{p}.auth.tokens[{j}]");
                        if t.cluster.is_empty() {
                            err(format!("{tp}.cluster"), "must not be empty".into());
                        }
                        let token = match (&t.token, &t.token_file) {
                            (Some(token), None) => Some(token.trim().to_string()),
                            (None, Some(file)) => match std::fs::read_to_string(file) {
                                Ok(text) => Some(text.trim().to_string()),
                                Err(e) => {
                                    err(
                                        format!("{tp}.token_file"),
                                        format!("{}: {e}", file.display()),
                                    );
                                    None
                                }
                            },
                            _ => {
                                err(tp.clone(), "set exactly one of token and token_file".into());
                                None
                            }
                        };
                        if let Some(token) = token {
                            if token.len() < 16 {
                                err(tp.clone(), "token must be at least 16 characters".into());
                            } else if tokens.insert(token, t.cluster.clone()).is_some() {
                                err(tp.clone(), "the same token is given twice".into());
                            }
                        }
                    }
                    tokens
                });
            if let Some(tls) = &raw.tls {
                let files = [
                    ("cert_file", Some(&tls.cert_file)),
                    ("key_file", Some(&tls.key_file)),
                    ("client_ca_file", tls.client_ca_file.as_ref()),
                ];
                for (field, file) in files {
                    let Some(file) = file else { continue };
                    if !file.is_file() {
                        err(
                            format!("{p}.tls.{field}"),
                            format!("{}: no such file", file.display()),
                        );
                    }
                }
            }
            if let Some(address) = address {
                listeners.push(Listener {
                    name: raw.name.clone(),
                    protocol: raw.protocol,
                    address,
                    insert_cluster: raw.insert_cluster.clone(),
                    tokens,
                    certificates,
                    tls: raw.tls.clone(),
                    max_request_bytes,
                });
            }
        }
        let exposition_address = match self.exposition.address.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    "exposition.address".into(),
                    format!(
                        "invalid socket address {:?} (want host:port)",
                        self.exposition.address
                    ),
                );
                None
            }
        };
        let metric_expiration = match humantime::parse_duration(&self.exposition.metric_expiration)
        {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                err("exposition.metric_expiration".into(), "must be > 0".into());
                None
            }
            Err(e) => {
                err(
                    "exposition.metric_expiration".into(),
                    format!(
                        "invalid duration {:?}: {e}",
                        self.exposition.metric_expiration
                    ),
                );
                None
            }
        };
        let remote_write = self.remote_write.as_ref().and_then(|rw| {
            let p = "remote_write";
            if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
                err(
                    format!("{p}.url"),
                    format!("want an http:// or https:// URL, got {:?}", rw.url),
                );
            }
            let mut duration = |field: &str, text: &str| match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    err(
                        format!("{p}.{field}"),
                        format!("invalid duration {text:?} (want e.g. 15s, > 0)"),
                    );
                    None
                }
            };
            let interval = duration("interval", &rw.interval);
            let timeout = duration("timeout", &rw.timeout);
            if rw.max_queue == 0 {
                err(format!("{p}.max_queue"), "must be > 0".into());
            }
            if rw.max_samples_per_request == 0 {
                err(format!("{p}.max_samples_per_request"), "must be > 0".into());
            }
            let bearer_token = match &rw.bearer_token_file {
                None => Some(None),
                Some(file) => match std::fs::read_to_string(file) {
                    Ok(t) => Some(Some(t.trim().to_string())),
                    Err(e) => {
                        err(
                            format!("{p}.bearer_token_file"),
                            format!("{}: {e}", file.display()),
                        );
                        None
                    }
                },
            };
            Some(RemoteWrite {
                url: rw.url.clone(),
                interval: interval?,
                timeout: timeout?,
                max_queue: rw.max_queue,
                max_samples_per_request: rw.max_samples_per_request,
                bearer_token: bearer_token?,
            })
        });
        match (exposition_address, metric_expiration) {
            (Some(exposition_address), Some(metric_expiration)) if errors.is_empty() => {
                Ok(Config {
                    listeners,
                    exposition_address,
                    metric_expiration,
                    enable_open_metrics: self.exposition.enable_open_metrics,
                    web_config_file: self.exposition.web_config_file.clone(),
                    healthz_without_auth: self.exposition.healthz_without_auth,
                    max_series: self.limits.max_series,
                    max_series_per_cluster: self.limits.max_series_per_cluster,
                    remote_write,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_hub() {
        let c = RawConfig::default().validate().unwrap();
        let ports: Vec<_> = c.listeners.iter().map(|l| l.address.port()).collect();
        assert_eq!(ports, [4317, 4318, 4327, 4328]);
        assert_eq!(c.listeners[0].insert_cluster.as_deref(), Some("hub"));
        assert_eq!(c.listeners[2].insert_cluster, None);
        assert_eq!(c.exposition_address.port(), 9464);
        assert_eq!(c.metric_expiration, Duration::from_secs(300));
        assert!(!c.enable_open_metrics);
        assert_eq!(c.listeners[0].max_request_bytes, 4 << 20);
        assert_eq!(c.listeners[1].max_request_bytes, 20 << 20);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let yaml = r#"
listeners:
  - {name: a, protocol: grpc, address: "nope", max_request_size: "12 parsecs"}
  - {name: a, protocol: http, address: "127.0.0.1:1", auth: {tokens: [{cluster: c1, token: short}]}}
exposition: {address: "x", metric_expiration: "0s"}
"#;
        let errors = RawConfig::from_yaml(yaml, "hub.yaml")
            .unwrap()
            .validate()
            .unwrap_err();
        let text: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "listeners[0].address: invalid socket address \"nope\" (want host:port)",
                "listeners[0].max_request_size: invalid size \"12 parsecs\" (want e.g. 4MiB, 20MB, > 0)",
                "listeners[1].name: duplicate listener name \"a\"",
                "listeners[1].auth.tokens[0]: token must be at least 16 characters",
                "exposition.address: invalid socket address \"x\" (want host:port)",
                "exposition.metric_expiration: must be > 0",
            ]
        );
    }

    #[test]
    fn the_exposition_web_config_is_read_from_yaml() {
        let c = RawConfig::from_yaml(
            "exposition: {web_config_file: /etc/kepler-collector/web.yml, healthz_without_auth: true}",
            "hub.yaml",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            c.web_config_file,
            Some(PathBuf::from("/etc/kepler-collector/web.yml"))
        );
        assert!(c.healthz_without_auth);
        let plain = RawConfig::default().validate().unwrap();
        assert_eq!(
            (plain.web_config_file, plain.healthz_without_auth),
            (None, false)
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = RawConfig::from_yaml("exposition: {adress: x}", "hub.yaml").unwrap_err();
        assert!(e.to_string().contains("unknown field `adress`"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("20MB"), Some(20_000_000));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
    }
}
