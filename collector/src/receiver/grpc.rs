//! OTLP/gRPC: the unary `MetricsService/Export` with gzip accepted (the Collector's exporter
//! gzips by default), the request cap checked after decompression (tonic stops a gzip bomb at
//! the cap), bearer-token auth (UNAUTHENTICATED), partial success for rejected points.
//!
//! tonic answers an oversized uncompressed message with OUT_OF_RANGE, which OTLP clients
//! retry; [`size_status_layer`] rewrites that answer to RESOURCE_EXHAUSTED (without RetryInfo:
//! permanent), as the spec asks.

use super::{AuthError, Listener};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use std::future::Future;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The tonic service of one listener.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    listener: Arc<Listener>,
}

impl GrpcReceiver {
    pub fn new(listener: Arc<Listener>) -> Self {
        Self { listener }
    }

    /// The service with gzip and the size cap configured.
    pub fn into_service(self) -> MetricsServiceServer<Self> {
        let limit = self.listener.max_request_bytes;
        MetricsServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let listener = &self.listener;
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let cluster = match listener.authenticate(authorization.as_deref()) {
            Ok(cluster) => cluster,
            Err(e) => {
                listener
                    .hub
                    .metrics
                    .request(&listener.name, "unauthenticated");
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        let outcome = listener
            .hub
            .ingest(request.get_ref(), listener.labeling(cluster));
        let partial_success = if outcome.rejected > 0 {
            listener.hub.metrics.request(&listener.name, "partial");
            Some(ExportMetricsPartialSuccess {
                rejected_data_points: outcome.rejected as i64,
                error_message: outcome.message,
            })
        } else {
            listener.hub.metrics.request(&listener.name, "ok");
            None
        };
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success,
        }))
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        Status::unauthenticated(e.to_string())
    }
}

/// Rewrites tonic's OUT_OF_RANGE "message length too large" answer to RESOURCE_EXHAUSTED.
pub fn size_status_layer() -> tower::util::MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
> {
    tower::util::MapResponseLayer::new(rewrite_size_status)
}

fn rewrite_size_status(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers.get("grpc-message").is_some_and(|v| {
        v.as_bytes()
            .windows(9)
            .any(|w| w == b"too%20lar" || w == b"too large")
    });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Serves one gRPC listener on an already bound socket until `shutdown` resolves; with TLS when
/// `tls` holds a PEM certificate chain and key.
pub async fn serve(
    listener: Arc<Listener>,
    socket: tokio::net::TcpListener,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // OTLP requests are large (a 1,000-point Kepler request is about 266 kB): HTTP/2's default
    // 64 KiB windows would make each one wait for several window updates.
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20));
    if let Some((cert, key)) = tls {
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        builder = builder.tls_config(config)?;
    }
    builder
        .layer(size_status_layer())
        .add_service(GrpcReceiver::new(listener).into_service())
        .serve_with_incoming_shutdown(TcpIncoming::from(socket), shutdown)
        .await
}
