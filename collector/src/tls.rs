//! TLS for the listeners (rustls with ring; no OpenSSL): PEM certificate chain, private key and
//! client CA read at start, so a bad file fails the start with the listener's name instead of
//! failing every handshake later.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::config::RawTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The PEM certificate chain and key, checked to parse.
pub fn load_pem(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert = read(cert_file)?;
    let key = read(key_file)?;
    let bad = |path: &Path, what: &str| TlsError::File {
        path: path.display().to_string(),
        message: format!("no {what} in PEM"),
    };
    let certs = CertificateDer::pem_slice_iter(&cert)
        .filter_map(Result::ok)
        .count();
    if certs == 0 {
        return Err(bad(cert_file, "certificate"));
    }
    PrivateKeyDer::from_pem_slice(&key).map_err(|_| bad(key_file, "private key"))?;
    Ok((cert, key))
}

/// A listener's TLS material as PEM: certificate chain, key, and the CAs that sign the client
/// certificates it requires (none: no client certificate asked for).
#[derive(Debug, Clone)]
pub struct PemTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// Reads and checks a listener's `tls` files.
pub fn load(tls: &RawTls) -> Result<PemTls, TlsError> {
    let (cert, key) = load_pem(&tls.cert_file, &tls.key_file)?;
    let client_ca = match &tls.client_ca_file {
        Some(path) => {
            let pem = read(path)?;
            if client_roots(&pem)?.is_empty() {
                return Err(TlsError::File {
                    path: path.display().to_string(),
                    message: "no certificate in PEM".into(),
                });
            }
            Some(pem)
        }
        None => None,
    };
    Ok(PemTls {
        cert,
        key,
        client_ca,
    })
}

/// The CA certificates of a PEM bundle as a root store.
fn client_roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::Config(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
    }
    Ok(roots)
}

/// A rustls server config for HTTP/1.1 (and h2) listeners; with a client CA, every client
/// must present a certificate that it signed.
pub fn server_config(tls: &RawTls) -> Result<Arc<ServerConfig>, TlsError> {
    let PemTls {
        cert,
        key,
        client_ca,
    } = load(tls)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Config(e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(pem) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_roots(&pem)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
