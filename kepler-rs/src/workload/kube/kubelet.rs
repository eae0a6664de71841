//! The kubelet `/pods` poller: node-local pod metadata over HTTPS with the service-account token.
//!
//! Kepler moved from an API-server watch to polling the local kubelet because thousands of
//! exporters watching pods overloaded large clusters' API servers; the kubelet answers only for
//! its own node. Design choice: this needs no Kubernetes client machinery (no kubeconfig, no
//! discovery, no watch), so it uses `k8s-openapi` types (in [`super`]) and a plain `reqwest`
//! client on rustls, the same HTTP stack the OTLP push uses, rather than `kube`'s client.
//! The token file is re-read on every poll (projected tokens rotate). Kubelet serving
//! certificates are self-signed on kubeadm and kind clusters unless `serverTLSBootstrap` is on,
//! so verification against the service-account CA can be switched off explicitly
//! (`kube.kubeletInsecureSkipVerify`, what Kepler always did). A failed poll keeps the previous
//! index (names do not flap away during a kubelet restart), logs at most once a minute and
//! counts `kepler_exporter_errors_total{component="kube"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{PodIndex, PodListError, SharedPods};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;

/// Largest `/pods` answer accepted (a node with 250 big pods answers a few MiB).
pub const MAX_BODY: usize = 64 << 20;

/// Where and how to reach the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletOptions {
    /// `https://NODE_IP:10250`; `/pods` is appended.
    pub url: String,
    pub token_file: Option<PathBuf>,
    /// PEM bundle to verify the kubelet's certificate; `None` with `insecure` off uses none
    /// (every certificate is then rejected, which the error says).
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub timeout: Duration,
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the CA bundle {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid kubelet URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered more than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("{url}: {source}")]
    PodList { url: String, source: PodListError },
}

impl KubeletError {
    /// The `reason` label of the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            KubeletError::Token { .. } => "token",
            KubeletError::Ca { .. } | KubeletError::Tls(_) => "tls_setup",
            KubeletError::Url { .. } => "url",
            KubeletError::Request { .. } => "request",
            KubeletError::Status { status: 401, .. } | KubeletError::Status { status: 403, .. } => {
                "unauthorized"
            }
            KubeletError::Status { .. } => "http_status",
            KubeletError::TooLarge { .. } => "too_large",
            KubeletError::PodList { .. } => "bad_pod_list",
        }
    }
}

/// A configured kubelet client.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    http: reqwest::Client,
    url: String,
    token_file: Option<PathBuf>,
}

impl KubeletClient {
    pub fn new(options: &KubeletOptions) -> Result<Self, KubeletError> {
        let base = options.url.trim_end_matches('/');
        let url = format!("{base}/pods");
        let parsed = reqwest::Url::parse(&url).map_err(|e| KubeletError::Url {
            url: options.url.clone(),
            message: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(KubeletError::Url {
                url: options.url.clone(),
                message: "scheme must be https:// (or http:// for a read-only port)".into(),
            });
        }
        // Plain HTTP (the kubelet's read-only port, or a stand-in) needs no CA, and a
        // service-account token must not travel in clear text.
        let https = parsed.scheme() == "https";
        let tls = if https {
            tls_config(options.ca_file.as_deref(), options.insecure_skip_verify)?
        } else {
            tls_config(None, false)?
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(options.timeout)
            .build()
            .map_err(|source| KubeletError::Request {
                url: url.clone(),
                source,
            })?;
        Ok(Self {
            http,
            url,
            token_file: options.token_file.clone().filter(|_| https),
        })
    }

    /// The URL polled.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `GET /pods`.
    pub async fn fetch(&self) -> Result<PodIndex, KubeletError> {
        let mut request = self.http.get(&self.url);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| KubeletError::Token {
                path: path.clone(),
                source,
            })?;
            request = request.bearer_auth(token.trim());
        }
        let request_error = |source| KubeletError::Request {
            url: self.url.clone(),
            source,
        };
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(KubeletError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(KubeletError::TooLarge {
                    url: self.url.clone(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        PodIndex::from_pod_list(&body).map_err(|source| KubeletError::PodList {
            url: self.url.clone(),
            source,
        })
    }
}

/// Polls until the task is dropped or aborted, publishing each new index into `shared`.
pub async fn poll(
    client: KubeletClient,
    interval: Duration,
    shared: SharedPods,
    metrics: Arc<SelfMetrics>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match client.fetch().await {
            Ok(index) => {
                if index.skipped > 0 {
                    report_error!(
                        metrics,
                        "kube",
                        "bad_pod",
                        url = client.url(),
                        skipped = index.skipped,
                        "kubelet listed pods that could not be used"
                    );
                }
                tracing::debug!(
                    pods = index.pods(),
                    containers = index.containers(),
                    "pod metadata refreshed"
                );
                shared.store(Arc::new(index));
            }
            Err(e) => {
                report_error!(metrics, "kube", e.reason(), "kubelet pod metadata: {e}");
            }
        }
    }
}

pub(crate) fn tls_config(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<rustls::ClientConfig, KubeletError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let ca_error = |message: String| KubeletError::Ca {
            path: path.to_path_buf(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ca_error("no usable certificate in it".into()));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any server certificate but still checks the handshake signatures (so the session is
/// encrypted to whoever holds the key). Only with `kube.kubeletInsecureSkipVerify`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn options(url: &str) -> KubeletOptions {
        KubeletOptions {
            url: url.to_string(),
            token_file: Some("/nonexistent/token".into()),
            ca_file: Some("/nonexistent/ca.crt".into()),
            insecure_skip_verify: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn https_needs_its_ca_file() {
        let err = KubeletClient::new(&options("https://127.0.0.1:10250")).unwrap_err();
        assert!(matches!(err, KubeletError::Ca { .. }), "{err}");
    }

    #[tokio::test]
    async fn plain_http_needs_no_ca_and_sends_no_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).unwrap();
            let body = br#"{"kind":"PodList","apiVersion":"v1","items":[]}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(body).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let client = KubeletClient::new(&options(&format!("http://127.0.0.1:{port}"))).unwrap();
        client.fetch().await.unwrap();
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /pods "), "{request}");
        assert!(!request.contains("authorization"), "{request}");
    }
}
