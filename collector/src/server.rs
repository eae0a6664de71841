//! The Prometheus side: `GET /metrics` (text 0.0.4 with its exact Content-Type; OpenMetrics 1.0
//! when `exposition.enable_open_metrics` is on and the scraper's `Accept` header prefers it, as
//! the Collector's prometheus exporter negotiates; gzip when the scraper asks) and
//! `GET /healthz`. Rendering runs on the blocking pool and reads the store one shard at a time,
//! so scrapes do not stall ingestion; the answer is sent family by family as rendered.

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
use tower_http::compression::CompressionLayer;

#[derive(Debug, Clone)]
struct Exposition {
    hub: Arc<Hub>,
    open_metrics: bool,
}

/// The exposition router (tests call it without a socket); `open_metrics`: offer OpenMetrics
/// to scrapers that ask for it.
pub fn router(hub: Arc<Hub>, open_metrics: bool) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(CompressionLayer::new())
        .with_state(Exposition { hub, open_metrics })
}

async fn metrics(State(state): State<Exposition>, headers: HeaderMap) -> Response {
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
    match tokio::task::spawn_blocking(move || exposition::render_chunks(&hub, format)).await {
        // Handed out family by family, never joined into one string.
        Ok(chunks) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            )],
            Body::from_stream(futures_util::stream::iter(
                chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
            )),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render failed: {e}"),
        )
            .into_response(),
    }
}
