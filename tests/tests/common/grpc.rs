//! A real gRPC client for the attacks: tonic's own client (HTTP/2, gRPC framing, optional gzip)
//! calling the OTLP `MetricsService/Export` with a message of arbitrary bytes, so the hub sees
//! exactly the garbage, truncated or oversized message a test chooses, framed as any gRPC
//! client frames it. Runs on a thread inside a namespace ([`super::spawn_in_ns`]), so it
//! crosses the test's links like a spoke.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::bytes::BufMut;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

pub const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Sends the message bytes as they are; decodes the OTLP response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportMetricsServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("response: {e}")))
    }
}

/// One call: `message` as the Export request, with a bearer `token` when given, gzipped when
/// `gzip`.
#[derive(Debug, Clone)]
pub struct Call {
    pub what: &'static str,
    pub message: Vec<u8>,
    pub token: Option<String>,
    pub gzip: bool,
}

/// Makes each call from namespace `ns` to `http://<addr>` on a fresh connection: (what, the
/// gRPC status code of the answer (`Code::Ok` for a success), its message), in order.
pub fn export_from(ns: &str, addr: String, calls: Vec<Call>) -> Vec<(&'static str, Code, String)> {
    super::spawn_in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut out = Vec::new();
            for call in calls {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(60))
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("{}: cannot connect to {addr}: {e}", call.what));
                let mut grpc = tonic::client::Grpc::new(channel);
                if call.gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                grpc.ready().await.unwrap();
                let mut request = tonic::Request::new(call.message);
                if let Some(token) = &call.token {
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().unwrap());
                }
                let answer = grpc
                    .unary(request, PathAndQuery::from_static(EXPORT), RawCodec)
                    .await;
                out.push(match answer {
                    Ok(r) => (call.what, Code::Ok, format!("{:?}", r.into_inner())),
                    Err(status) => (call.what, status.code(), status.message().to_string()),
                });
            }
            out
        })
    })
    .join()
    .unwrap()
}
