//! The rustls server configuration of a `tls_server_config` (ring; no OpenSSL): the PEM
//! certificate chain and key, the TLS versions, the TLS 1.2 suites and key-exchange groups in
//! the configured order, and Go's client-certificate policies: none, requested or required
//! without verification ([`AnyClientCert`]), or verified against the client CA with rustls's
//! [`WebPkiClientVerifier`] (optional or mandatory).

use std::sync::Arc;

use kepler_config_errors::ConfigError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::file::{ClientAuth, Pem, TlsSettings, TlsVersion};

const P: &str = "tls_server_config";

fn read(pem: &Pem, field: &str) -> Result<Vec<u8>, ConfigError> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            ConfigError::new(
                &format!("{P}.{field}_file"),
                format!("{}: {e}", path.display()),
            )
        }),
    }
}

fn where_(pem: &Pem, field: &str) -> (String, String) {
    match pem {
        Pem::Inline(_) => (format!("{P}.{field}"), String::new()),
        Pem::File(path) => (format!("{P}.{field}_file"), format!("{}: ", path.display())),
    }
}

fn certificates(pem: &Pem, field: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(pem, field)?;
    let (path, prefix) = where_(pem, field);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(&path, format!("{prefix}bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            &path,
            format!("{prefix}no certificate in PEM"),
        ));
    }
    Ok(certs)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(pem, "key")?;
    let (path, prefix) = where_(pem, "key");
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| ConfigError::new(&path, format!("{prefix}no private key in PEM ({e})")))
}

/// The crypto provider: ring, narrowed to the configured TLS 1.2 suites and curves.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let tls13 = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied();
        provider.cipher_suites = tls13
            .chain(settings.cipher_suites.iter().copied())
            .collect();
    }
    if !settings.curves.is_empty() {
        provider.kx_groups = settings.curves.clone();
    }
    provider
}

/// Builds the server configuration, reading the certificate, key and client CA. `http2`
/// offers `h2` by ALPN (besides `http/1.1`).
pub fn server_config(
    settings: &TlsSettings,
    http2: bool,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = certificates(&settings.cert, "cert")?;
    let key = private_key(&settings.key)?;
    let provider = Arc::new(provider(settings));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ConfigError::new(P, format!("TLS versions and suites: {e}")))?;
    let roots = || -> Result<Arc<RootCertStore>, ConfigError> {
        let Some(ca) = &settings.client_ca else {
            return Err(ConfigError::new(
                &format!("{P}.client_ca_file"),
                "the client auth policy verifies certificates: a client CA is needed".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        let (path, prefix) = where_(ca, "client_ca");
        for cert in certificates(ca, "client_ca")? {
            roots
                .add(cert)
                .map_err(|e| ConfigError::new(&path, format!("{prefix}bad CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    };
    let verifier_error = |e: rustls::server::VerifierBuilderError| {
        ConfigError::new(&format!("{P}.client_ca_file"), e.to_string())
    };
    let builder = match settings.client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: settings.client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })),
        ClientAuth::VerifyClientCertIfGiven => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(verifier_error)?,
        ),
        ClientAuth::RequireAndVerifyClientCert => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .build()
                .map_err(verifier_error)?,
        ),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let (path, prefix) = where_(&settings.key, "key");
        ConfigError::new(&path, format!("{prefix}does not fit the certificate: {e}"))
    })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: the client's certificate is asked for
/// (and, when mandatory, required) but not verified against a CA; its handshake signature is
/// still checked, so the client holds the certificate's key.
#[derive(Debug)]
pub struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
