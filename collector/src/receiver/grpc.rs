//! OTLP/gRPC: the unary `MetricsService/Export` with gzip accepted, the request cap checked
//! after decompression, bearer-token auth (UNAUTHENTICATED) and partial success for rejected
//! points, with the status codes OTLP clients expect for oversized and undecodable messages.
//! The request reaches the hub still encoded and is read in place (see [`crate::wire`]).

use super::{AuthError, Listener};
use crate::decode::DecodeError;
use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The gRPC service name of OTLP metrics.
const SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
/// The path of its one method.
const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The `MetricsService` of one listener. Unlike the generated server it leaves the request
/// encoded, so that [`Hub::ingest_protobuf`](crate::ingest::Hub::ingest_protobuf) reads it in
/// place; gzip, the size cap and the answers are tonic's, as with the generated server.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    listener: Arc<Listener>,
}

/// Hands the (decompressed, size-checked) request bytes over as they are. A message that then
/// does not decode (garbage, truncated) is answered INVALID_ARGUMENT (bad data from the client:
/// permanent, like HTTP's 400), not the INTERNAL that tonic's prost codec would answer.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportMetricsServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl GrpcReceiver {
    pub fn new(listener: Arc<Listener>) -> Self {
        Self { listener }
    }

    /// The service (gzip accepted and sent, the size cap applied by tonic).
    pub fn into_service(self) -> Self {
        self
    }

    /// One `Export` call; a request without a valid token is UNAUTHENTICATED before its
    /// message is decoded.
    fn export(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let listener = &self.listener;
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let peer_certificates = request.peer_certs();
        let leaf = peer_certificates
            .as_deref()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref());
        let cluster = match listener.authenticate(authorization.as_deref(), leaf) {
            Ok(cluster) => cluster,
            Err(e) => {
                listener
                    .hub
                    .metrics
                    .request(&listener.name, "unauthenticated");
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        let outcome = match listener
            .hub
            .ingest_protobuf(request.get_ref(), listener.labeling(cluster))
        {
            Ok(outcome) => outcome,
            Err(e) => {
                listener.hub.metrics.request(&listener.name, "invalid");
                let message = match e {
                    DecodeError::Protobuf(m) => m,
                    other => other.to_string(),
                };
                return Err(Status::invalid_argument(message));
            }
        };
        Ok(Response::new(listener.response(outcome)))
    }
}

/// The unary method handed to tonic's server machinery.
struct ExportMethod(GrpcReceiver);

impl tonic::server::UnaryService<Bytes> for ExportMethod {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<Result<Response<ExportMetricsServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { receiver.export(request) })
    }
}

impl tonic::server::NamedService for GrpcReceiver {
    const NAME: &'static str = SERVICE;
}

impl<B> tower::Service<http::Request<B>> for GrpcReceiver
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT {
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let receiver = self.clone();
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let limit = receiver.listener.max_request_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(ExportMethod(receiver), request).await)
        })
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        Status::unauthenticated(e.to_string())
    }
}

/// Rewrites tonic's OUT_OF_RANGE "message length too large" answer (which OTLP clients retry)
/// to RESOURCE_EXHAUSTED without RetryInfo (permanent), as the OTLP specification asks.
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
/// `tls` is given (requiring client certificates signed by its client CA when it has one).
pub async fn serve(
    listener: Arc<Listener>,
    socket: tokio::net::TcpListener,
    tls: Option<crate::tls::PemTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // OTLP requests are large (a 1,000-point Kepler request is about 266 kB): HTTP/2's default
    // 64 KiB windows would make each one wait for several window updates, and its default
    // 16 KiB frames cut it into 17 frames, each read, woken for and copied on its own (1 MiB
    // frames: known series ingested over gRPC with about a fifth less CPU, see
    // docs/benchmarks.md).
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .max_frame_size(Some(1 << 20));
    if let Some(tls) = tls {
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(tls.cert, tls.key));
        if let Some(ca) = tls.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config)?;
    }
    builder
        .layer(size_status_layer())
        .add_service(GrpcReceiver::new(listener).into_service())
        .serve_with_incoming_shutdown(TcpIncoming::from(socket), shutdown)
        .await
}
