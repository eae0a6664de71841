//! Raw HTTP(S) clients for tests of the web servers behind `--web.config-file`: a rustls client
//! configuration (ring provider) trusting a test CA, with or without a client certificate; one
//! `GET` over TLS with optional basic auth, answering the status line, the raw head and the body;
//! one plain HTTP/1.0 `GET` (Prometheus's API, or plain HTTP sent to a TLS port). Each exchange
//! answers `None` when it failed (refused handshake, closed connection, no HTTP answer).

use crate::pki::CertFiles;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long one exchange may wait for the server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls client (ring provider) trusting the certificates of `ca_file`; it presents
/// `client_cert` when given, none otherwise.
pub fn tls_client(ca_file: &Path, client_cert: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .unwrap_or_else(|e| panic!("{}: {e}", ca_file.display()))
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match client_cert {
        Some(files) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&files.cert)
                    .unwrap_or_else(|e| panic!("{}: {e}", files.cert.display()))
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&files.key)
                    .unwrap_or_else(|e| panic!("{}: {e}", files.key.display())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// (status, raw head, body) of `GET path` over TLS to `addr` (server name `127.0.0.1`), with
/// basic auth when `auth` is given, or `None` when the exchange failed.
pub fn get_tls(
    addr: impl ToSocketAddrs,
    client: &Arc<rustls::ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Option<(u16, String, String)> {
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let connection =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.1").unwrap())
            .ok()?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// (status, body) of a plain HTTP/1.0 `GET path` to `addr`, or `None` when the exchange failed.
pub fn get_plain(addr: impl ToSocketAddrs, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}
