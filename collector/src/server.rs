//! The Prometheus side: `GET /metrics` (text 0.0.4 with its exact Content-Type, gzip when the
//! scraper asks) and `GET /healthz`. Rendering runs on the blocking pool and reads the store
//! one shard at a time, so scrapes do not stall ingestion.

use crate::exposition;
use crate::ingest::Hub;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kepler_prom_text::CONTENT_TYPE_TEXT;
use std::sync::Arc;
use tower_http::compression::CompressionLayer;

/// The exposition router (tests call it without a socket).
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(CompressionLayer::new())
        .with_state(hub)
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    match tokio::task::spawn_blocking(move || exposition::render(&hub)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_TEXT),
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render failed: {e}"),
        )
            .into_response(),
    }
}
