//! OTLP push: sends what `/metrics` serves to a hub, with the cluster identity on every point.
//!
//! A [`Source`] produces one request per interval: [`SnapshotSource`] reads the latest published
//! snapshot (the very one `/metrics` renders; pushing never measures) and maps the classic
//! families with [`convert`]; the relay is another source. [`run_pipeline`] sends them through
//! a [`Transport`] under the OTLP retry rules of [`retry`], keeping at most the latest request
//! while the hub is down, and counts every outcome in
//! `kepler_exporter_otlp_exports_total{pipeline,result}`.

pub mod convert;
pub mod retry;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

use crate::config::otlp::RetryPolicy;
use crate::export::family::{families, BuildInfo, RenderOptions};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::Snapshot;

pub use convert::Identity;
pub use retry::{Decision, Queue};
pub use transport::{Transport, TransportError};

/// Produces what to send: a batch per interval (`None`: nothing new), turned into a request
/// only when it is sent, so a batch waiting for the hub can be small (a shared snapshot).
pub trait Source: Send {
    type Batch: Send + Sync;
    fn collect(&mut self) -> impl Future<Output = Option<Self::Batch>> + Send;
    fn request(&self, batch: &Self::Batch) -> ExportMetricsServiceRequest;
}

/// Our own metrics, from the published snapshots.
#[derive(Debug)]
pub struct SnapshotSource {
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub self_metrics: Arc<SelfMetrics>,
    pub render: RenderOptions,
    pub build: BuildInfo,
    pub identity: Identity,
    /// When the counters started (exporter start): every Sum's `start_time_unix_nano`.
    pub start: SystemTime,
    last_taken: Option<SystemTime>,
}

impl SnapshotSource {
    pub fn new(
        snapshots: Arc<ArcSwap<Snapshot>>,
        self_metrics: Arc<SelfMetrics>,
        render: RenderOptions,
        build: BuildInfo,
        identity: Identity,
        start: SystemTime,
    ) -> Self {
        Self {
            snapshots,
            self_metrics,
            render,
            build,
            identity,
            start,
            last_taken: None,
        }
    }

    /// The latest snapshot, or `None` before the first measurement and when that snapshot
    /// was already produced. Waiting for the hub, it shares memory with `/metrics`.
    pub fn latest(&mut self) -> Option<Arc<Snapshot>> {
        let snapshot = self.snapshots.load_full();
        if snapshot.taken_at == SystemTime::UNIX_EPOCH || self.last_taken == Some(snapshot.taken_at)
        {
            return None;
        }
        self.last_taken = Some(snapshot.taken_at);
        Some(snapshot)
    }

    /// The OTLP request for `snapshot`: the classic families, as `/metrics` renders them.
    pub fn to_request(&self, snapshot: &Snapshot) -> ExportMetricsServiceRequest {
        let families = families(snapshot, &self.self_metrics, &self.render, &self.build);
        let metrics = convert::families_to_metrics(
            &families,
            self.start.min(snapshot.taken_at),
            snapshot.taken_at,
            &self.identity,
        );
        convert::request(self.identity.resource(), metrics)
    }
}

impl Source for SnapshotSource {
    type Batch = Arc<Snapshot>;

    fn collect(&mut self) -> impl Future<Output = Option<Arc<Snapshot>>> + Send {
        std::future::ready(self.latest())
    }

    fn request(&self, batch: &Arc<Snapshot>) -> ExportMetricsServiceRequest {
        self.to_request(batch)
    }
}

/// Runs one export pipeline forever: every `interval` ask `source` for a request, and send the
/// latest one under the retry rules. `pipeline` names it in logs and self-metrics (`push`,
/// `relay`). Stop it by dropping (aborting) its task.
pub async fn run_pipeline<S: Source>(
    pipeline: &'static str,
    mut source: S,
    transport: Transport,
    interval: Duration,
    policy: RetryPolicy,
    metrics: Arc<SelfMetrics>,
) {
    let mut queue: Queue<S::Batch> = Queue::new(policy, fastrand::Rng::new());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let wake = queue
            .ready_at(std::time::Instant::now())
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(batch) = source.collect().await {
                    if queue.offer(batch) {
                        metrics.record_export(pipeline, "dropped", 1);
                    }
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
        let Some(taken) = queue.take_ready(std::time::Instant::now()) else {
            continue;
        };
        let outcome = transport.send(source.request(&taken.batch)).await;
        let decision = queue.complete(taken, outcome, std::time::Instant::now());
        failing = report(pipeline, &decision, failing, &metrics);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Counts and logs one decision; returns whether the pipeline is now failing.
fn report(
    pipeline: &'static str,
    decision: &Decision,
    failing: bool,
    metrics: &SelfMetrics,
) -> bool {
    let component = match pipeline {
        "push" => "otlp-push",
        "relay" => "otlp-relay",
        _ => "otlp",
    };
    match decision {
        Decision::Sent { rejected, message } => {
            metrics.record_export(pipeline, "sent", 1);
            if failing {
                tracing::info!(pipeline, "OTLP export succeeded again");
            }
            if *rejected > 0 || !message.is_empty() {
                report_error!(metrics, component, "partial_success", rejected_data_points = *rejected, error_message = %message, "the hub accepted the export only partly (not retried)");
            }
            false
        }
        Decision::RetryAt {
            reason,
            at,
            superseded,
        } => {
            metrics.record_export(pipeline, "failed", 1);
            if *superseded {
                metrics.record_export(pipeline, "dropped", 1);
            }
            let retry_in = at.saturating_duration_since(std::time::Instant::now());
            report_error!(metrics, component, "retryable", error = %reason, retry_in = %humantime::format_duration(round_ms(retry_in)), "OTLP export failed; will retry with the latest data");
            true
        }
        Decision::Dropped { reason } => {
            metrics.record_export(pipeline, "failed", 1);
            metrics.record_export(pipeline, "dropped", 1);
            report_error!(metrics, component, "permanent", error = %reason, "OTLP export failed permanently; data dropped (not retried), next interval sends new data");
            true
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
