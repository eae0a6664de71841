//! The HTTP server: `/metrics`, `/healthz` and a tiny index page.
//!
//! [`router`] builds the axum [`Router`] (tests call it without a socket); [`serve`] runs it on a
//! listener until a shutdown future completes, over TLS and behind basic auth when
//! `--web.config-file` says so. A scrape renders the latest published
//! [`Snapshot`] (one `ArcSwap` load) and never measures, so scrapers cannot change what is
//! measured; the page is rendered on a blocking thread a few pieces ahead of the connection.
//! `/metrics` answers the Prometheus text format 0.0.4 unless the `Accept` header prefers
//! OpenMetrics, and is gzip-compressed when the client accepts it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use kepler_web_config::ServeOptions;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;

use crate::export::family::{BuildInfo, RenderOptions};
use crate::export::prometheus::{render_each_piece, text, Format};
use crate::report_error;
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
        .layer(Extension(Arc::new(Semaphore::new(MAX_PARALLEL_SCRAPES))))
        .layer(CompressionLayer::new())
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then finishes open requests:
/// plain HTTP, or TLS, basic auth and headers from the web configuration in `web`
/// ([`kepler_web_config::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    web: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let tls = web.web_config.as_ref().is_some_and(|w| w.tls_enabled());
        tracing::info!(%addr, tls, "serving /metrics");
    }
    kepler_web_config::serve(listener, router(state), web, shutdown).await
}

/// Pieces of a `/metrics` page rendered ahead of the connection: the render waits while this
/// many are queued, so a scrape holds a few pieces of the page at a time, not the whole page.
const PIECES_AHEAD: usize = 2;

/// Scrapes rendered at once (each on a blocking thread while its client reads); more are
/// answered 503 at once, as node_exporter's `--web.max-requests` does (its default is 40 too).
pub const MAX_PARALLEL_SCRAPES: usize = 40;

/// How long a render waits for its client to take the next piece before it cuts the scrape
/// off, so that clients that stop reading do not hold render threads for ever.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

async fn metrics(
    State(state): State<AppState>,
    Extension(scrapes): Extension<Arc<Semaphore>>,
    headers: HeaderMap,
) -> Response {
    let Ok(permit) = scrapes.try_acquire_owned() else {
        report_error!(
            state.self_metrics,
            "server",
            "too_many_scrapes",
            limit = MAX_PARALLEL_SCRAPES,
            "more parallel /metrics requests than allowed: answered 503"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_PARALLEL_SCRAPES} parallel scrapes\n"),
        )
            .into_response();
    };
    let format = negotiate(&headers);
    let snapshot = state.snapshot.load_full();
    // Rendered on a blocking thread while the body is sent, piece by piece, never joined into
    // one string; a client that goes away, or takes nothing for PIECE_TIMEOUT, stops the render.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(PIECES_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let metrics = &state.self_metrics;
        render_each_piece(
            &snapshot,
            metrics,
            &state.render,
            &state.build,
            format,
            |piece| match runtime.block_on(tokio::time::timeout(PIECE_TIMEOUT, tx.send(piece))) {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    report_error!(
                        metrics,
                        "server",
                        "scrape_stalled",
                        "a /metrics client took nothing for {PIECE_TIMEOUT:?}: its scrape is cut off"
                    );
                    false
                }
            },
        )
    });
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|piece| (Ok::<_, std::convert::Infallible>(piece), rx))
    });
    // Fused: the compression layer may poll again after the end.
    let body = Body::from_stream(futures_util::StreamExt::fuse(pieces));
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

/// The format the `Accept` header asks for ([`text::negotiate`]).
fn negotiate(headers: &HeaderMap) -> Format {
    text::negotiate(
        headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
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
