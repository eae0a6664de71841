//! OTLP/HTTP: `POST /v1/metrics` with protobuf or JSON bodies, gzip, the request cap checked
//! before and after decompression (413), 415 for other content types or encodings, 405 for
//! other methods, 401 without a valid bearer token when auth is on, 400 for bodies that do not
//! decode. Every answer, errors included, is written in the request's content type.

use super::Listener;
use crate::decode::{self, DecodeError};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use std::sync::Arc;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// The router of one HTTP listener.
pub fn router(listener: Arc<Listener>) -> Router {
    Router::new()
        .route("/v1/metrics", post(export))
        .layer(DefaultBodyLimit::disable())
        .with_state(listener)
}

fn content_type(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = value.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        PROTOBUF => Some(Encoding::Protobuf),
        JSON => Some(Encoding::Json),
        _ => None,
    }
}

/// A message the receiver answers with, in either encoding: an `ExportMetricsServiceResponse`
/// on success, a `google.rpc.Status` otherwise.
trait Answer: Message {
    /// The proto3 JSON form: lowerCamelCase names, fields at their default value left out,
    /// 64-bit integers (`rejectedDataPoints`) written as decimal strings.
    fn to_json(&self) -> serde_json::Value;
}

impl Answer for RpcStatus {
    fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        if self.code != 0 {
            object.insert("code".into(), self.code.into());
        }
        if !self.message.is_empty() {
            object.insert("message".into(), self.message.clone().into());
        }
        object.into()
    }
}

impl Answer for ExportMetricsServiceResponse {
    fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        if let Some(partial) = &self.partial_success {
            let mut inner = serde_json::Map::new();
            if partial.rejected_data_points != 0 {
                // int64: a JSON string in the proto3 mapping.
                inner.insert(
                    "rejectedDataPoints".into(),
                    partial.rejected_data_points.to_string().into(),
                );
            }
            if !partial.error_message.is_empty() {
                inner.insert("errorMessage".into(), partial.error_message.clone().into());
            }
            object.insert("partialSuccess".into(), inner.into());
        }
        object.into()
    }
}

fn respond(status: StatusCode, encoding: Encoding, message: &impl Answer) -> Response {
    let (body, ct) = match encoding {
        Encoding::Protobuf => (message.encode_to_vec(), PROTOBUF),
        Encoding::Json => (message.to_json().to_string().into_bytes(), JSON),
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
        body,
    )
        .into_response()
}

/// An error answer: HTTP status + `google.rpc.Status` with the matching gRPC code.
fn error(status: StatusCode, encoding: Encoding, message: String) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => 3,            // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => 16,          // UNAUTHENTICATED
        StatusCode::PAYLOAD_TOO_LARGE => 8,      // RESOURCE_EXHAUSTED
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        _ => 2,                                  // UNKNOWN
    };
    respond(status, encoding, &RpcStatus { code, message })
}

async fn export(State(listener): State<Arc<Listener>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(encoding) = content_type(&parts.headers) else {
        listener
            .hub
            .metrics
            .request(&listener.name, "unsupported_media_type");
        let got = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {got:?}: use {PROTOBUF} or {JSON}"),
        )
            .into_response();
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let leaf = parts
        .extensions
        .get::<PeerCertificate>()
        .map(|PeerCertificate(der)| &der[..]);
    let cluster = match listener.authenticate(authorization, leaf) {
        Ok(cluster) => cluster.map(str::to_string),
        Err(e) => {
            listener
                .hub
                .metrics
                .request(&listener.name, "unauthenticated");
            let mut response = error(StatusCode::UNAUTHORIZED, encoding, e.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let gzip = match parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(HeaderValue::as_bytes)
    {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            listener
                .hub
                .metrics
                .request(&listener.name, "unsupported_media_type");
            let message = format!(
                "unsupported content encoding {:?}: use gzip or none",
                String::from_utf8_lossy(other)
            );
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, encoding, message);
        }
    };
    let limit = listener.max_request_bytes;
    let raw = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(raw) => raw,
        Err(_) => {
            listener.hub.metrics.request(&listener.name, "too_large");
            let e = DecodeError::TooLarge { limit };
            return error(StatusCode::PAYLOAD_TOO_LARGE, encoding, e.to_string());
        }
    };
    let labeling = listener.labeling(cluster.as_deref());
    let ingested = (|| {
        let plain;
        let bytes: &[u8] = if gzip {
            plain = decode::gunzip(&raw, limit)?;
            &plain
        } else {
            &raw
        };
        match encoding {
            Encoding::Protobuf => listener.hub.ingest_protobuf(bytes, labeling),
            Encoding::Json => Ok(listener.hub.ingest(&decode::json(bytes)?, labeling)),
        }
    })();
    let outcome = match ingested {
        Ok(outcome) => outcome,
        Err(e @ DecodeError::TooLarge { .. }) => {
            listener.hub.metrics.request(&listener.name, "too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, encoding, e.to_string());
        }
        Err(e) => {
            listener.hub.metrics.request(&listener.name, "invalid");
            return error(StatusCode::BAD_REQUEST, encoding, e.to_string());
        }
    };
    respond(StatusCode::OK, encoding, &listener.response(outcome))
}

/// The client certificate (DER leaf) of the connection a request came on, when it sent one.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Serves `router` over TLS on an already bound socket until `shutdown` resolves. Each
/// connection gets 10 s for its handshake; the client's certificate, when it sent one, goes
/// with each of its requests as a [`PeerCertificate`].
pub async fn serve_tls(
    router: Router,
    socket: tokio::net::TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| PeerCertificate(Arc::new(der.to_vec())));
            let service = tower::ServiceExt::map_request(
                router,
                move |mut request: http::Request<hyper::body::Incoming>| {
                    if let Some(peer) = &peer {
                        request.extensions_mut().insert(peer.clone());
                    }
                    request
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}
