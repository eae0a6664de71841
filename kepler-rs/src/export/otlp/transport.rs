//! Sends one OTLP metrics request over gRPC or HTTP/protobuf and says what became of it.
//!
//! Both transports gzip by default, add the configured headers (a bearer token) to every
//! request, and speak TLS with rustls when the endpoint is `https://` (system roots, or only
//! the configured CA), presenting the configured client certificate to a hub that requires one. Connections are made lazily, so a hub that is down at start-up is just a
//! retryable failure of the first export. Every response is turned into a
//! [`retry::Outcome`](super::retry::Outcome) by the OTLP rules in [`super::retry`].

use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::retry::{classify_grpc, classify_http, Outcome};
use crate::config::otlp::{Compression, Protocol, TransportOptions};

/// Why a transport cannot be built (configuration problems, reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the client certificate or key {path}: {source}")]
    ClientIdentity {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid header {name:?}: not a valid HTTP header name or value")]
    Header { name: String },
    #[error("cannot set up gRPC to {endpoint}: {source}")]
    Grpc {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A ready-to-use OTLP client.
#[derive(Debug, Clone)]
pub enum Transport {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
        tls: bool,
    },
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        gzip: bool,
    },
}

impl Transport {
    /// Builds the client; connects lazily on the first send.
    pub fn new(options: &TransportOptions) -> Result<Self, TransportError> {
        let ca = match &options.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| TransportError::CaFile {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let identity = match &options.client_identity {
            Some(files) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|source| TransportError::ClientIdentity {
                        path: path.clone(),
                        source,
                    })
                };
                Some(PemIdentity {
                    cert: read(&files.cert_file)?,
                    key: read(&files.key_file)?,
                })
            }
            None => None,
        };
        match options.protocol {
            Protocol::Grpc => grpc(options, ca, identity),
            Protocol::HttpProtobuf => http(options, ca, identity),
        }
    }

    /// Sends `request` once.
    pub async fn send(&self, request: ExportMetricsServiceRequest) -> Outcome {
        match self {
            Transport::Grpc {
                client,
                metadata,
                tls,
            } => {
                let mut req = tonic::Request::new(request);
                for kv in metadata.iter() {
                    if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                        req.metadata_mut().insert(k.clone(), v.clone());
                    }
                }
                match client.clone().export(req).await {
                    Ok(response) => sent(response.into_inner()),
                    Err(status) => {
                        let mut message = status.message().to_string();
                        let Some(source) = std::error::Error::source(&status) else {
                            return classify_grpc(status.code(), &message, status.details());
                        };
                        // Raised on our side (connection lost, TLS handshake): a network
                        // failure, retried like UNAVAILABLE, not a status from the hub.
                        message = tls_hint(*tls, format!("{message} ({})", error_chain(source)));
                        match status.code() {
                            tonic::Code::Unknown | tonic::Code::Internal => Outcome::Retryable {
                                reason: format!("cannot reach the hub over gRPC: {message}"),
                                after: None,
                            },
                            code => classify_grpc(code, &message, status.details()),
                        }
                    }
                }
            }
            Transport::Http { client, url, gzip } => {
                let mut body = request.encode_to_vec();
                drop(request);
                let mut builder = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    if enc.write_all(&body).is_ok() {
                        if let Ok(zipped) = enc.finish() {
                            body = zipped;
                            builder = builder.header(reqwest::header::CONTENT_ENCODING, "gzip");
                        }
                    }
                }
                let response = match builder.body(body).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Retryable {
                            reason: tls_hint(
                                url.scheme() == "https",
                                format!("cannot reach the hub: {}", error_chain(&e)),
                            ),
                            after: None,
                        }
                    }
                };
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = response.bytes().await.unwrap_or_default();
                if (200..300).contains(&status) {
                    return match ExportMetricsServiceResponse::decode(bytes.as_ref()) {
                        Ok(r) => sent(r),
                        Err(_) => Outcome::Sent {
                            rejected: 0,
                            message: String::new(),
                        },
                    };
                }
                classify_http(status, retry_after.as_deref(), &bytes, SystemTime::now())
            }
        }
    }
}

fn sent(response: ExportMetricsServiceResponse) -> Outcome {
    match response.partial_success {
        Some(p) if p.rejected_data_points > 0 || !p.error_message.is_empty() => Outcome::Sent {
            rejected: p.rejected_data_points,
            message: p.error_message,
        },
        _ => Outcome::Sent {
            rejected: 0,
            message: String::new(),
        },
    }
}

/// Says that a connection error of an `https://` endpoint is a TLS failure, and what to check.
fn tls_hint(tls: bool, message: String) -> String {
    let lower = message.to_ascii_lowercase();
    let handshake = [
        "invalidcontenttype",
        "corrupt message",
        "certificate",
        "tls",
        "handshake",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    if tls && handshake {
        format!(
            "TLS with the hub failed: {message} (a plaintext hub needs http://; an unknown CA \
             needs otlp.caFile)"
        )
    } else {
        message
    }
}

/// An error and its sources on one line (`a: b: c`), for log lines that say what failed.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A client certificate chain and key as read from their PEM files.
struct PemIdentity {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn grpc(
    options: &TransportOptions,
    ca: Option<Vec<u8>>,
    identity: Option<PemIdentity>,
) -> Result<Transport, TransportError> {
    let url = options.endpoint.as_str().trim_end_matches('/').to_string();
    let grpc_err = |source| TransportError::Grpc {
        endpoint: url.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(grpc_err)?
        .timeout(options.timeout)
        .connect_timeout(options.timeout);
    if options.endpoint.scheme() == "https" {
        let mut tls = match ca {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(identity.cert, identity.key));
        }
        endpoint = endpoint.tls_config(tls).map_err(grpc_err)?;
    }
    let mut client = MetricsServiceClient::new(endpoint.connect_lazy())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(4 << 20);
    if options.compression == Compression::Gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let mut metadata = MetadataMap::new();
    for (name, value) in &options.headers {
        let bad = || TransportError::Header { name: name.clone() };
        let key =
            MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| bad())?;
        let value: MetadataValue<_> = value.parse().map_err(|_| bad())?;
        metadata.insert(key, value);
    }
    Ok(Transport::Grpc {
        client,
        metadata,
        tls: options.endpoint.scheme() == "https",
    })
}

fn http(
    options: &TransportOptions,
    ca: Option<Vec<u8>>,
    identity: Option<PemIdentity>,
) -> Result<Transport, TransportError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &options.headers {
        let bad = || TransportError::Header { name: name.clone() };
        let key = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| bad())?;
        headers.insert(key, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(options.timeout)
        .connect_timeout(options.timeout)
        .no_proxy();
    if let Some(pem) = ca {
        builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
    }
    if let Some(identity) = identity {
        let mut pem = identity.cert;
        pem.push(b'\n');
        pem.extend_from_slice(&identity.key);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(Transport::Http {
        client: builder.build()?,
        url: options.endpoint.clone(),
        gzip: options.compression == Compression::Gzip,
    })
}
