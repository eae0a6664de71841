//! The accept loop both binaries serve their axum router with.
//!
//! Without a web configuration: `axum::serve`, plain HTTP/1.1, unchanged. With one, every
//! response gets the configured headers and, when `basic_auth_users` is set, every request
//! outside [`ServeOptions::open_paths`] needs a good `Authorization: Basic` header (else 401
//! with `WWW-Authenticate: Basic`). With TLS, each connection is accepted with the rustls
//! configuration in force at that moment (so a rotated certificate is served to the next
//! connection) and then served by hyper (HTTP/1.1, and HTTP/2 when `http2` is on). A client
//! that speaks plain HTTP to the TLS port gets Go's answer (400, "Client sent an HTTP request to
//! an HTTPS server.") and the connection is closed; a failed handshake is a debug log line.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::Lookup;
use crate::reload::WebConfig;

/// How long a client has to send its first bytes and finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a plain-HTTP client on the TLS port gets to take its 400 and close.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(2);

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Go's answer to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How to serve: the web configuration, if any, and the paths that need no basic auth.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `None`: plain HTTP without auth, as before there was a web configuration.
    pub web_config: Option<Arc<WebConfig>>,
    /// Paths served without basic auth (TLS and client certificates still apply), e.g.
    /// `/healthz` for Kubernetes probes.
    pub open_paths: BTreeSet<String>,
}

impl ServeOptions {
    /// Serving with `web` (loaded and checked), `/healthz` open to probes without basic auth when
    /// `healthz_without_auth`; logs what was loaded, naming the `server` it is for.
    pub fn with_web_config(web: WebConfig, healthz_without_auth: bool, server: &str) -> Self {
        tracing::info!(
            server,
            file = %web.path().display(),
            tls = web.tls_enabled(),
            basic_auth = !web.current().settings.users.is_empty(),
            "web config loaded"
        );
        let open_paths = if healthz_without_auth {
            ["/healthz".to_string()].into()
        } else {
            BTreeSet::new()
        };
        Self {
            web_config: Some(Arc::new(web)),
            open_paths,
        }
    }
}

#[derive(Debug)]
struct Guard {
    web: Arc<WebConfig>,
    open_paths: BTreeSet<String>,
}

/// `router` wrapped in the headers and basic-auth check of `web` (the fallback included).
pub fn guarded(router: Router, web: Arc<WebConfig>, open_paths: BTreeSet<String>) -> Router {
    let guard = Arc::new(Guard { web, open_paths });
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn_with_state(guard, check))
}

fn unauthorized() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    guard.web.refresh();
    let active = guard.web.current();
    let users = &active.settings.users;
    let open = users.is_empty() || guard.open_paths.contains(request.uri().path());
    let allowed = open || {
        let credentials = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::basic_credentials);
        match credentials {
            None => false,
            Some((user, password)) => {
                match guard.web.authenticator().lookup(users, &user, &password) {
                    Lookup::Allowed => true,
                    Lookup::Verify(pending) => {
                        let web = guard.web.clone();
                        tokio::task::spawn_blocking(move || {
                            web.authenticator().verify_slow(pending)
                        })
                        .await
                        .unwrap_or(false)
                    }
                }
            }
        }
    };
    let mut response = if allowed {
        next.run(request).await
    } else {
        unauthorized()
    };
    for (name, value) in &active.settings.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(web) = options.web_config else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let app = guarded(router, web.clone(), options.open_paths);
    if !web.tls_enabled() {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum::serve does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        web.refresh();
        let active = web.current();
        let Some(tls) = active.tls.clone() else {
            continue; // Cannot happen: TLS is fixed at start.
        };
        let http2 = active.settings.http2;
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(stream) = handshake(stream, peer, tls).await else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if !http2 {
                builder = builder.http1_only();
            }
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after {SHUTDOWN_GRACE:?}: closed");
    }
    Ok(())
}

/// The TLS handshake of one connection, or `None` (logged at debug level) when the client
/// spoke plain HTTP, went away, was too slow or failed the handshake.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        Ok(Ok(_)) | Ok(Err(_)) => return None,
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}: closed");
            return None;
        }
    }
    // A TLS connection starts with a handshake record (content type 22).
    if first[0] != 0x16 {
        tracing::debug!(%peer, "plain HTTP (or other non-TLS data) on the TLS port: answered 400 and closed");
        let mut stream = stream;
        let _ = tokio::time::timeout(PLAIN_HTTP_LINGER, async {
            let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.shutdown().await;
            // Take what the client sent before closing: a socket closed with unread bytes
            // answers with a reset, and the client might lose the 400 to it.
            let mut sink = [0u8; 4096];
            let mut left = 64 * 1024usize;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}: closed");
            None
        }
    }
}
