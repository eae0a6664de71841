//! The accept loop end to end on loopback, with certificates made by rcgen at test time and a
//! rustls client: basic auth (good, wrong, missing, the open /healthz), headers, client
//! certificates under RequireAndVerifyClientCert, a certificate rotated while serving, plain
//! HTTP to the TLS port, and a broken reload that keeps the last good configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use kepler_web_config::{serve, ServeOptions, WebConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "scrape-me";

/// A CA, and certificates signed by it.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// (certificate PEM, key PEM) for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str], cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` the way Kubernetes and cert-manager do: a new file renamed over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Server {
    addr: SocketAddr,
    web: Arc<WebConfig>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: &Path, open: &[&str]) -> Server {
    let web = Arc::new(WebConfig::load(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/metrics", get(|| async { "up 1\n" }))
        .route("/healthz", get(|| async { "ok" }));
    let options = ServeOptions {
        web_config: Some(web.clone()),
        open_paths: open.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, options, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        web,
        _stop: stop,
    }
}

fn client_config(ca_pem: &str, identity: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    })
}

async fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// An answer: status, lower-case headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse(raw: &[u8]) -> std::io::Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET path` over TLS with HTTP/1.1, optionally with basic auth.
async fn get_tls(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> std::io::Result<Answer> {
    let mut stream = connect(addr, config).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    parse(&raw)
}

/// `GET /metrics` over TLS as the config's user with the right password.
async fn get_metrics(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Answer {
    get_tls(addr, config, "/metrics", Some(("prometheus", PASSWORD)))
        .await
        .unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Setup {
    /// A CA, a server certificate for 127.0.0.1, and `web.yml` with `tls_extra` added to its
    /// `tls_server_config` and a user `prometheus`.
    fn new(tls_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("server");
        let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"], "127.0.0.1");
        std::fs::write(dir.path().join("server.crt"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        let setup = Self { dir, ca };
        setup.write_config(tls_extra, PASSWORD);
        setup
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("web.yml")
    }

    fn write_config(&self, tls_extra: &str, password: &str) {
        let hash = bcrypt::hash(password, 4).unwrap();
        replace(
            &self.config(),
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls_extra}\
                 http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
                 basic_auth_users:\n  prometheus: '{hash}'\n"
            ),
        );
    }
}

#[tokio::test]
async fn basic_auth_over_tls_good_wrong_and_missing() {
    let setup = Setup::new("");
    let server = start(&setup.config(), &["/healthz"]).await;
    let client = client_config(&setup.ca.pem, None);

    let ok = get_metrics(server.addr, &client).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, "up 1\n");
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));

    let wrong = get_tls(
        server.addr,
        &client,
        "/metrics",
        Some(("prometheus", "nope")),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.header("www-authenticate"), Some("Basic"));
    assert_eq!(
        wrong.header("x-content-type-options"),
        Some("nosniff"),
        "headers on every answer"
    );
    assert!(!wrong.body.contains("up 1"));

    let unknown = get_tls(server.addr, &client, "/metrics", Some(("root", PASSWORD)))
        .await
        .unwrap();
    assert_eq!(unknown.status, 401);
    let missing = get_tls(server.addr, &client, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(missing.status, 401);
    let unrouted = get_tls(server.addr, &client, "/nowhere", None)
        .await
        .unwrap();
    assert_eq!(unrouted.status, 401, "unknown paths are behind auth too");

    let health = get_tls(server.addr, &client, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "ok"),
        "open path"
    );

    // The good password was checked with bcrypt once; later scrapes come from the cache.
    let runs = server.web.authenticator().bcrypt_runs();
    for _ in 0..5 {
        let ok = get_metrics(server.addr, &client).await;
        assert_eq!(ok.status, 200);
    }
    assert_eq!(server.web.authenticator().bcrypt_runs(), runs);
}

#[tokio::test]
async fn healthz_needs_auth_unless_opened() {
    let setup = Setup::new("");
    let server = start(&setup.config(), &[]).await;
    let client = client_config(&setup.ca.pem, None);
    let health = get_tls(server.addr, &client, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(health.status, 401);
}

#[tokio::test]
async fn require_and_verify_client_cert_refuses_clients_without_a_good_one() {
    let clients = Ca::new("clients");
    let setup = Setup::new(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    );
    std::fs::write(setup.dir.path().join("clients.crt"), &clients.pem).unwrap();
    // The config was written before the CA file: load now that it exists.
    let server = start(&setup.config(), &[]).await;
    let auth = Some(("prometheus", PASSWORD));

    let anonymous = client_config(&setup.ca.pem, None);
    let refused = get_tls(server.addr, &anonymous, "/metrics", auth).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");

    let stranger = Ca::new("elsewhere").leaf(&["scraper"], "scraper");
    let refused = get_tls(
        server.addr,
        &client_config(&setup.ca.pem, Some(&stranger)),
        "/metrics",
        auth,
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    let scraper = clients.leaf(&["scraper"], "scraper");
    let ok = get_tls(
        server.addr,
        &client_config(&setup.ca.pem, Some(&scraper)),
        "/metrics",
        auth,
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let setup = Setup::new("");
    let server = start(&setup.config(), &[]).await;
    let client = client_config(&setup.ca.pem, None);
    let served = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = served(&connect(server.addr, &client).await.unwrap());
    let original = CertificateDer::from_pem_file(setup.dir.path().join("server.crt")).unwrap();
    assert_eq!(before, original.to_vec());

    let (cert, key) = setup.ca.leaf(&["127.0.0.1"], "rotated");
    replace(&setup.dir.path().join("server.key"), &key);
    replace(&setup.dir.path().join("server.crt"), &cert);
    let rotated = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let after = served(&connect(server.addr, &client).await.unwrap());
    assert_eq!(
        after,
        rotated.to_vec(),
        "the next connection gets the new certificate"
    );
    assert_ne!(after, before);
    let ok = get_metrics(server.addr, &client).await;
    assert_eq!(ok.status, 200);
    assert!(server.web.reloads() >= 1);
    assert_eq!(server.web.reload_failures(), 0);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_answered_400_and_closed() {
    let setup = Setup::new("");
    let server = start(&setup.config(), &[]).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let answer = parse(&raw).unwrap();
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("HTTP request to an HTTPS server"),
        "{answer:?}"
    );
    assert!(!answer.body.contains("up 1"));
    // The server goes on serving TLS.
    let client = client_config(&setup.ca.pem, None);
    let ok = get_metrics(server.addr, &client).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_changed_password_applies_and_a_broken_file_keeps_the_last_good_one() {
    let setup = Setup::new("");
    let server = start(&setup.config(), &[]).await;
    let client = client_config(&setup.ca.pem, None);
    setup.write_config("", "new-password");
    let old = get_metrics(server.addr, &client).await;
    assert_eq!(old.status, 401, "the old password no longer works");
    let new = get_tls(
        server.addr,
        &client,
        "/metrics",
        Some(("prometheus", "new-password")),
    )
    .await
    .unwrap();
    assert_eq!(new.status, 200);

    replace(
        &setup.config(),
        "tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS9}\n",
    );
    let still = get_tls(
        server.addr,
        &client,
        "/metrics",
        Some(("prometheus", "new-password")),
    )
    .await
    .unwrap();
    assert_eq!(still.status, 200, "the last good config stays in force");
    assert_eq!(server.web.reload_failures(), 1);
}

#[tokio::test]
async fn without_a_web_config_it_is_plain_http() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/metrics", get(|| async { "up 1\n" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        router,
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    plain.read_to_end(&mut raw).await.unwrap();
    let answer = parse(&raw).unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "up 1\n"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_tls_loop() {
    let setup = Setup::new("");
    let web = Arc::new(WebConfig::load(&setup.config()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        web_config: Some(web),
        open_paths: BTreeSet::new(),
    };
    let served = tokio::spawn(serve(listener, Router::new(), options, async move {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A client limited to `versions`, offering ALPN h2 and http/1.1.
fn client_with(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&(String, String)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn versions_suites_curves_and_http2_reach_the_handshake() {
    const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    const BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];

    // Defaults: TLS 1.3 is chosen, h2 offered.
    let setup = Setup::new("");
    let server = start(&setup.config(), &[]).await;
    let stream = connect(server.addr, &client_with(&setup.ca.pem, BOTH, None))
        .await
        .unwrap();
    let session = stream.get_ref().1;
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    // HTTP/2 is spoken: the connection preface and an empty SETTINGS frame are answered with
    // the server's SETTINGS frame (type 4 on stream 0).
    let mut stream = stream;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame: {frame:?}");
    assert_eq!(&frame[5..9], &[0, 0, 0, 0], "on stream 0");

    // min_version TLS13 refuses a TLS 1.2 client.
    let setup = Setup::new("  min_version: TLS13\n");
    let server = start(&setup.config(), &[]).await;
    assert!(
        connect(server.addr, &client_with(&setup.ca.pem, TLS12, None))
            .await
            .is_err()
    );

    // max_version TLS12 with one suite and one curve, http2 off: exactly those are used.
    let setup = Setup::new(
        "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  \
         curve_preferences: [CurveP384]\n",
    );
    let text = std::fs::read_to_string(setup.config()).unwrap();
    std::fs::write(
        setup.config(),
        text.replace(
            "http_server_config:\n",
            "http_server_config:\n  http2: false\n",
        ),
    )
    .unwrap();
    let server = start(&setup.config(), &[]).await;
    let stream = connect(server.addr, &client_with(&setup.ca.pem, BOTH, None))
        .await
        .unwrap();
    let session = stream.get_ref().1;
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        session.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    assert_eq!(
        session.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::secp384r1)
    );
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn request_and_require_any_client_cert_do_not_verify_but_may_require() {
    const BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    let stranger = Ca::new("anyone").leaf(&["scraper"], "scraper");
    let auth = Some(("prometheus", PASSWORD));

    let setup = Setup::new("  client_auth_type: RequestClientCert\n");
    let server = start(&setup.config(), &[]).await;
    for identity in [None, Some(&stranger)] {
        let client = client_with(&setup.ca.pem, BOTH, identity);
        let ok = get_tls(server.addr, &client, "/metrics", auth)
            .await
            .unwrap();
        assert_eq!(ok.status, 200, "RequestClientCert, {identity:?}");
    }

    let setup = Setup::new("  client_auth_type: RequireAnyClientCert\n");
    let server = start(&setup.config(), &[]).await;
    let refused = get_tls(
        server.addr,
        &client_with(&setup.ca.pem, BOTH, None),
        "/metrics",
        auth,
    )
    .await;
    assert!(
        refused.is_err(),
        "RequireAnyClientCert without one: {refused:?}"
    );
    let ok = get_tls(
        server.addr,
        &client_with(&setup.ca.pem, BOTH, Some(&stranger)),
        "/metrics",
        auth,
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "any certificate will do");
}
