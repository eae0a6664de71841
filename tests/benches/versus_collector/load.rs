//! The load generator: OTLP/gRPC `ExportMetricsServiceRequest`s shaped like kepler-rs pushes
//! ([`kepler_test_support::kepler_push`]: request `r` is node `r`'s push of 1,000 series with
//! 7 attributes each, over 10 clusters), sent 4 in flight on one connection.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kepler_test_support::kepler_push;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

/// Points (= live series) per request.
pub const POINTS_PER_REQUEST: usize = kepler_push::POINTS_PER_PUSH;
/// Requests in flight at once on the one HTTP/2 connection.
const IN_FLIGHT: usize = 4;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_else(|e| panic!("the clock is before 1970: {e}"))
}

/// Push `r` of round `round`: every point stamped `time`, sums starting at `start`.
pub fn request(r: usize, round: u64, start: u64, time: u64) -> ExportMetricsServiceRequest {
    kepler_push::push(r, round, start, time)
}

/// What one [`send`] got acknowledged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Points in requests answered OK, less those the answers' partial success rejected.
    pub accepted: u64,
    /// Points rejected by partial success.
    pub rejected: u64,
    /// Wall time of the whole send.
    pub wall: Duration,
}

/// Sends pushes `requests` of round `round` to the OTLP/gRPC receiver at `addr`, a few at once
/// on one connection (tonic's client; gzipped when `gzip`). Panics with the status of the
/// first refused request.
pub fn send(addr: SocketAddr, requests: Range<usize>, round: u64, start: u64, gzip: bool) -> Sent {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    runtime.block_on(async move {
        let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("endpoint {addr}: {e}"))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the hub at {addr}: {e}"));
        let mut client = MetricsServiceClient::new(channel).max_encoding_message_size(64 << 20);
        if gzip {
            // A Go gRPC server answers in the request's encoding.
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let began = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..IN_FLIGHT {
            let mut client = client.clone();
            let requests = requests.clone();
            tasks.spawn(async move {
                let mut sent = Sent::default();
                for r in requests.skip(lane).step_by(IN_FLIGHT) {
                    let req = request(r, round, start, now_ns());
                    let answer = client
                        .export(req)
                        .await
                        .unwrap_or_else(|s| panic!("push {r} of round {round} refused: {s}"))
                        .into_inner();
                    let rejected = answer
                        .partial_success
                        .map_or(0, |p| p.rejected_data_points.max(0) as u64);
                    sent.accepted += POINTS_PER_REQUEST as u64 - rejected;
                    sent.rejected += rejected;
                }
                sent
            });
        }
        let mut total = Sent::default();
        while let Some(lane) = tasks.join_next().await {
            let lane = lane.unwrap_or_else(|e| panic!("a sending task failed: {e}"));
            total.accepted += lane.accepted;
            total.rejected += lane.rejected;
        }
        total.wall = began.elapsed();
        total
    })
}
