//! TLS for the listeners (rustls with ring; no OpenSSL): PEM certificate chain and private key
//! read at start, so a bad file fails the start with the listener's name instead of failing
//! every handshake later.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

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

/// A rustls server config for HTTP/1.1 (and h2) listeners.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = load_pem(cert_file, key_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Config(e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
