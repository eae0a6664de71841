//! The HTTP server: `/metrics`, `/healthz` and a tiny index page.
//!
//! [`router`] builds the axum [`Router`] (tests call it without a socket); [`serve`] runs it on a
//! listener until a shutdown future completes. A scrape renders the latest published
//! [`Snapshot`] (one `ArcSwap` load) and never measures, so scrapers cannot change what is
//! measured. `/metrics` answers the Prometheus text format 0.0.4 unless the `Accept` header
//! prefers OpenMetrics, and is gzip-compressed when the client accepts it.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;

use crate::export::prometheus::{render, BuildInfo, Format, RenderOptions};
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::Snapshot;

/// What the handlers read: the latest snapshot and how to render it.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Published by the monitor; handlers only load it.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub self_metrics: Arc<SelfMetrics>,
    pub render: RenderOptions,
    pub build: BuildInfo,
}

/// The exporter's routes: `GET /metrics`, `GET /healthz`, `GET /`; anything else is 404.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .layer(CompressionLayer::new())
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = negotiate(&headers);
    let snapshot = state.snapshot.load();
    let body = render(
        &snapshot,
        &state.self_metrics,
        &state.render,
        &state.build,
        format,
    );
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response()
}

/// Kepler's health answer: exactly `ok`. With `?verbose=1`, `ok` followed by `key value` lines
/// saying which sources measure (the CPU-time source, the power source) and how far the monitor
/// got.
async fn healthz(State(state): State<AppState>, RawQuery(query): RawQuery) -> String {
    let verbose = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "verbose" | "verbose=1" | "verbose=true"))
    });
    if !verbose {
        return "ok".to_string();
    }
    let s = state.snapshot.load();
    format!(
        "ok\ncpu_time_source {}\ncpu_time_exact {}\npower_source {}\nsnapshot_sequence {}\n",
        s.cpu_time_source, s.cpu_time_exact, s.power_source, s.sequence
    )
}

async fn index() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html>\n<html><head><title>kepler-rs</title></head><body>\n\
         <h1>kepler-rs</h1>\n<p>Kepler-compatible node energy exporter.</p>\n\
         <ul><li><a href=\"metrics\">/metrics</a></li>\
         <li><a href=\"healthz\">/healthz</a> (<a href=\"healthz?verbose=1\">verbose</a>)</li></ul>\n</body></html>\n",
    )
}

/// OpenMetrics when an `Accept` header asks for `application/openmetrics-text` (any version)
/// with a quality at least that of the text format (`text/plain`, `text/*`, `*/*`);
/// the text format otherwise, including when there is no `Accept` header.
fn negotiate(headers: &HeaderMap) -> Format {
    let mut openmetrics = 0.0_f32;
    let mut text = 0.0_f32;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Format {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Text);
        assert_eq!(accept("*/*"), Format::Text);
        assert_eq!(accept("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(accept("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus 2.x sends.
        assert_eq!(
            accept(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            accept("text/plain;version=0.0.4,application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(accept("application/openmetrics-text;q=0"), Format::Text);
    }
}
