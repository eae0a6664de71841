//! The OTLP push settings: their types, parsing and validation, and the standard
//! `OTEL_EXPORTER_OTLP_*` environment variables as a layer below the YAML file.
//! `export::otlp` builds its transport and retry loop from these.

use std::path::PathBuf;
use std::time::Duration;

use super::layers::Values;
use super::parser::Parser;

/// The OTLP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// Where and how to send.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportOptions {
    /// Full URL: for gRPC the server's address, for HTTP the `/v1/metrics` URL.
    pub endpoint: reqwest::Url,
    pub protocol: Protocol,
    pub compression: Compression,
    /// Sent with every request (`authorization: Bearer ...`).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Trust only this CA (PEM) for `https://`; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate presented for mutual TLS: PEM certificate chain and key files.
    pub client_identity: Option<ClientIdentityFiles>,
}

/// A PEM certificate chain and its private key, presented to a server that asks for a client
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentityFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Retry timing: initial and maximum interval, and the randomness for the jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A batch still failing after this long is dropped.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// The Collector's exporter defaults.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// OTLP push settings (present when `otlp.endpoint` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    pub transport: TransportOptions,
    /// `None`: push every `monitor.interval`.
    pub interval: Option<Duration>,
    pub retry: RetryPolicy,
    pub service_name: String,
}

/// Standard OpenTelemetry variables, the metrics-specific one winning over the generic one.
/// Lower precedence than the YAML file, `KEPLER_*` variables and flags.
pub fn from_otel_env(lookup: impl Fn(&str) -> Option<String>) -> Values {
    let mut values = Values::new();
    let pick = |name: &str| {
        lookup(&format!("OTEL_EXPORTER_OTLP_METRICS_{name}"))
            .or_else(|| lookup(&format!("OTEL_EXPORTER_OTLP_{name}")))
            .filter(|v| !v.trim().is_empty())
    };
    // The metrics-specific endpoint is used as is; the generic one is a base URL to which the
    // HTTP exporter appends the signal path (OTLP exporter spec), e.g. `/otlp` -> `/otlp/v1/metrics`.
    let endpoint = lookup("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            let base = lookup("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty())?;
            let http = pick("PROTOCOL").is_some_and(|p| p.trim().starts_with("http"));
            Some(if http {
                format!("{}/v1/metrics", base.trim().trim_end_matches('/'))
            } else {
                base
            })
        });
    if let Some(v) = endpoint {
        values.insert("otlp.endpoint", v);
    }
    for (var, path) in [
        ("PROTOCOL", "otlp.protocol"),
        ("HEADERS", "otlp.headers"),
        ("COMPRESSION", "otlp.compression"),
        ("CERTIFICATE", "otlp.caFile"),
        ("CLIENT_CERTIFICATE", "otlp.clientCertFile"),
        ("CLIENT_KEY", "otlp.clientKeyFile"),
    ] {
        if let Some(v) = pick(var) {
            values.insert(path, v);
        }
    }
    if let Some(ms) = pick("TIMEOUT") {
        values.insert("otlp.timeout", format!("{}ms", ms.trim()));
    }
    if let Some(name) = lookup("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
        values.insert("otlp.serviceName", name);
    }
    values
}

/// `a=b,c=d%20e` -> pairs; values are percent-decoded (W3C baggage style, as the OTel spec says).
pub fn parse_headers(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("expected key=value, got {pair:?}"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("empty header name in {pair:?}"));
        }
        out.push((k.to_string(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `cluster`: `None` when empty.
pub(super) fn cluster(p: &mut Parser<'_>) -> Option<String> {
    Some(p.raw("cluster").trim().to_string()).filter(|c| !c.is_empty())
}

/// The push settings, `None` when `otlp.endpoint` is empty.
pub(super) fn otlp_config(p: &mut Parser<'_>) -> Option<OtlpConfig> {
    let protocol = match p.raw("otlp.protocol").trim() {
        "grpc" => Protocol::Grpc,
        "http/protobuf" => Protocol::HttpProtobuf,
        other => {
            let other = other.to_string();
            p.fail(
                "otlp.protocol",
                format!("must be grpc or http/protobuf, got {other:?}"),
            );
            Protocol::Grpc
        }
    };
    let compression = match p.raw("otlp.compression").trim() {
        "gzip" => Compression::Gzip,
        "none" => Compression::None,
        other => {
            let other = other.to_string();
            p.fail(
                "otlp.compression",
                format!("must be gzip or none, got {other:?}"),
            );
            Compression::Gzip
        }
    };
    let headers = match parse_headers(p.raw("otlp.headers")) {
        Ok(h) => h,
        Err(e) => {
            p.fail("otlp.headers", format!("must be key=value,...: {e}"));
            Vec::new()
        }
    };
    let timeout = p.duration("otlp.timeout", Duration::from_millis(1));
    let interval = if p.raw("otlp.interval").trim().is_empty() {
        None
    } else {
        Some(p.duration("otlp.interval", Duration::from_millis(100)))
    };
    let retry = RetryPolicy {
        initial: p.duration("otlp.retry.initialInterval", Duration::from_millis(1)),
        max: p.duration("otlp.retry.maxInterval", Duration::from_millis(1)),
        ..RetryPolicy::default()
    };
    let service_name = p.raw("otlp.serviceName").trim().to_string();
    if service_name.is_empty() {
        p.fail("otlp.serviceName", "must not be empty".to_string());
    }
    let ca_file = p.optional_path("otlp.caFile");
    let client_identity = match (
        p.optional_path("otlp.clientCertFile"),
        p.optional_path("otlp.clientKeyFile"),
    ) {
        (Some(cert_file), Some(key_file)) => Some(ClientIdentityFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) => {
            p.fail(
                "otlp.clientKeyFile",
                "must be set with otlp.clientCertFile".to_string(),
            );
            None
        }
        (None, Some(_)) => {
            p.fail(
                "otlp.clientCertFile",
                "must be set with otlp.clientKeyFile".to_string(),
            );
            None
        }
    };
    let raw = p.raw("otlp.endpoint").trim().to_string();
    if raw.is_empty() {
        return None;
    }
    let mut endpoint = p.url("otlp.endpoint", &raw)?;
    if protocol == Protocol::HttpProtobuf && matches!(endpoint.path(), "" | "/") {
        endpoint.set_path("/v1/metrics");
    }
    Some(OtlpConfig {
        transport: TransportOptions {
            endpoint,
            protocol,
            compression,
            headers,
            timeout,
            ca_file,
            client_identity,
        },
        interval,
        retry,
        service_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_pairs_with_decoded_values() {
        assert_eq!(
            parse_headers("authorization=Bearer%20abc, x-tenant = t1").unwrap(),
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-tenant".to_string(), "t1".to_string())
            ]
        );
        assert_eq!(parse_headers("").unwrap(), vec![]);
        assert_eq!(parse_headers("a=%2").unwrap()[0].1, "%2");
        assert!(parse_headers("novalue").is_err());
        assert!(parse_headers("=v").is_err());
    }

    #[test]
    fn otel_env_metrics_specific_wins() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://generic:4317".to_string()),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => Some("http://metrics:4317".to_string()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("2500".to_string()),
            "OTEL_SERVICE_NAME" => Some("svc".to_string()),
            _ => None,
        };
        let v = from_otel_env(env);
        assert_eq!(v["otlp.endpoint"], "http://metrics:4317");
        assert_eq!(v["otlp.timeout"], "2500ms");
        assert_eq!(v["otlp.serviceName"], "svc");
        assert!(!v.contains_key("otlp.protocol"));
    }

    #[test]
    fn generic_endpoint_is_a_base_url_for_http() {
        let env = |protocol: &'static str| {
            move |k: &str| match k {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/otlp/".to_string()),
                "OTEL_EXPORTER_OTLP_PROTOCOL" => Some(protocol.to_string()),
                _ => None,
            }
        };
        assert_eq!(
            from_otel_env(env("http/protobuf"))["otlp.endpoint"],
            "http://collector:4318/otlp/v1/metrics"
        );
        assert_eq!(
            from_otel_env(env("grpc"))["otlp.endpoint"],
            "http://collector:4318/otlp/"
        );
    }
}
