//! The Prometheus side: `GET /metrics` (text 0.0.4 with its exact Content-Type; OpenMetrics 1.0
//! when `exposition.enable_open_metrics` is on and the scraper's `Accept` header prefers it, as
//! the Collector's prometheus exporter negotiates; gzip when the scraper asks) and
//! `GET /healthz`. The page is rendered on the blocking pool while it is sent: the render hands
//! pieces of about 64 KiB through a channel of [`PIECES_AHEAD`] to the body, so a scrape holds a
//! few pieces, not the page, and it locks the store one shard at a time, never while it waits
//! for its client. At most [`MAX_PARALLEL_SCRAPES`] render at once (more get 503), and a client
//! that takes nothing for [`PIECE_TIMEOUT`] is cut off.

use crate::exposition;
use crate::ingest::Hub;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kepler_prom_text::Format;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;

/// Pieces rendered ahead of the connection: the render waits while this many are queued.
const PIECES_AHEAD: usize = 2;

/// Scrapes rendered at once (each on a blocking thread while its client reads); more are
/// answered 503 at once, as node_exporter's `--web.max-requests` (and the exporter) do.
pub const MAX_PARALLEL_SCRAPES: usize = 40;

/// How long a render waits for its client to take the next piece before it gives up, so that
/// clients that stop reading do not hold render threads for ever.
pub const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Exposition {
    hub: Arc<Hub>,
    open_metrics: bool,
    scrapes: Arc<Semaphore>,
}

/// The exposition router (tests call it without a socket); `open_metrics`: offer OpenMetrics
/// to scrapers that ask for it.
pub fn router(hub: Arc<Hub>, open_metrics: bool) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(CompressionLayer::new())
        .with_state(Exposition {
            hub,
            open_metrics,
            scrapes: Arc::new(Semaphore::new(MAX_PARALLEL_SCRAPES)),
        })
}

async fn metrics(State(state): State<Exposition>, headers: HeaderMap) -> Response {
    let Ok(permit) = state.scrapes.clone().try_acquire_owned() else {
        tracing::warn!(
            limit = MAX_PARALLEL_SCRAPES,
            "more parallel /metrics requests than allowed: answered 503"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_PARALLEL_SCRAPES} parallel scrapes\n"),
        )
            .into_response();
    };
    let format = if state.open_metrics {
        kepler_prom_text::negotiate(
            headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    } else {
        Format::Text
    };
    let hub = state.hub;
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(PIECES_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    // A client that goes away closes the channel; the render stops at its next piece.
    let render = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        exposition::render_each(&hub, format, |piece| {
            match runtime.block_on(tokio::time::timeout(PIECE_TIMEOUT, tx.send(piece))) {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    tracing::warn!(
                        "a /metrics client took nothing for {PIECE_TIMEOUT:?}: its scrape is cut off"
                    );
                    false
                }
            }
        })
    });
    // After the last piece: a render that did not reach the end of the page (cut off, or
    // failed) makes the body fail, so the client sees a broken transfer, not a short page.
    let pieces = futures_util::stream::unfold((rx, Some(render)), |(mut rx, render)| async move {
        if let Some(piece) = rx.recv().await {
            return Some((Ok(piece), (rx, render)));
        }
        match render?.await {
            Ok(true) => None,
            Ok(false) => Some((
                Err(std::io::Error::other("the page was cut off")),
                (rx, None),
            )),
            Err(e) => {
                tracing::error!("a /metrics render failed: {e}");
                Some((Err(std::io::Error::other("the render failed")), (rx, None)))
            }
        }
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        // Fused: the compression layer may poll again after the end.
        Body::from_stream(futures_util::StreamExt::fuse(pieces)),
    )
        .into_response()
}
