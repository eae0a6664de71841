//! A stand-in kubelet (and API server) for tests: serves `GET /pods` over real HTTPS (rustls, a CA and a serving
//! certificate for 127.0.0.1 generated per test with rcgen) and answers 401 unless the request
//! carries the expected bearer token, like the kubelet's webhook authentication. The pod list it
//! serves can be replaced while it runs; it counts the requests it answered with a list. As an
//! API server it answers `GET /api/v1/pods?fieldSelector=...` with the same list and
//! `...&watch=true` with a chunked stream of the lines the test sends through
//! [`Kubelet::queue_watch`] (one queued stream per watch request; dropping the sender ends it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/kubelet-pods.json");

#[derive(Debug)]
struct State {
    body: Mutex<Vec<u8>>,
    token: Mutex<String>,
    served: AtomicU64,
    watches: Mutex<VecDeque<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    requests: Mutex<Vec<String>>,
}

/// A running fake kubelet; stops when the runtime that started it stops.
#[derive(Debug, Clone)]
pub struct Kubelet {
    pub url: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    state: Arc<State>,
}

impl Kubelet {
    /// Starts on 127.0.0.1 with an ephemeral port, serving `body` to holders of `token`.
    pub async fn start(body: Vec<u8>, token: &str) -> Kubelet {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test kubelet CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            body: Mutex::new(body),
            token: Mutex::new(token.to_string()),
            served: AtomicU64::new(0),
            watches: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = serving.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = answer(tls, &state).await;
                    }
                });
            }
        });
        Kubelet {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: ca_cert.pem(),
            state,
        }
    }

    pub fn set_body(&self, body: Vec<u8>) {
        *self.state.body.lock().unwrap() = body;
    }

    pub fn set_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = token.to_string();
    }

    /// Pod lists answered so far (401s not counted).
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Queues the stream the next watch request gets: each string sent is one event line.
    pub fn queue_watch(&self) -> tokio::sync::mpsc::UnboundedSender<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state.watches.lock().unwrap().push_back(rx);
        tx
    }

    /// The request targets (path and query) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Writes the CA bundle into `dir` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

async fn answer(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    state: &State,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request).to_string();
    let target = head.split(' ').nth(1).unwrap_or_default().to_string();
    state.requests.lock().unwrap().push(target.clone());
    let api = target.starts_with("/api/v1/pods?");
    let path_ok = head.starts_with("GET /pods ") || api;
    let expected = format!("bearer {}", state.token.lock().unwrap());
    let authorized = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("authorization") && v.trim().eq_ignore_ascii_case(&expected)
        })
    });
    let (status, body) = if !path_ok {
        ("404 Not Found", b"404 page not found\n".to_vec())
    } else if !authorized {
        ("401 Unauthorized", b"Unauthorized\n".to_vec())
    } else if api && target.contains("watch=true") {
        let next = state.watches.lock().unwrap().pop_front();
        tls.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
        tls.flush().await?;
        if let Some(mut events) = next {
            while let Some(line) = events.recv().await {
                let line = format!("{line}\n");
                tls.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                    .await?;
                tls.flush().await?;
            }
        }
        tls.write_all(b"0\r\n\r\n").await?;
        return tls.shutdown().await;
    } else {
        state.served.fetch_add(1, Ordering::SeqCst);
        ("200 OK", state.body.lock().unwrap().clone())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(&body).await?;
    tls.shutdown().await
}

/// The shared fixture with one pod list item appended (a real-shaped pod JSON object).
pub fn fixture_with(extra: &[serde_json::Value], drop_pod: Option<&str>) -> Vec<u8> {
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    let items = list["items"].as_array_mut().unwrap();
    if let Some(name) = drop_pod {
        items.retain(|p| p["metadata"]["name"] != name);
    }
    items.extend(extra.iter().cloned());
    serde_json::to_vec(&list).unwrap()
}

/// A running single-container pod as the kubelet lists it.
pub fn pod(name: &str, namespace: &str, uid: &str, container: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "labels": {"app": name}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": container, "image": "app:1"}]},
        "status": {
            "phase": "Running", "qosClass": "BestEffort", "podIP": "10.244.1.40",
            "containerStatuses": [{
                "name": container, "ready": true, "restartCount": 0, "image": "app:1",
                "imageID": "docker.io/library/app@sha256:00",
                "containerID": format!("containerd://{id}"),
                "state": {"running": {"startedAt": "2026-11-25T10:00:00Z"}}
            }]
        }
    })
}
