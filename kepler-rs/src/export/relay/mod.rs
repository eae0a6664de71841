//! The relay: scrapes local Prometheus endpoints (static URLs, the kubelet's cAdvisor) and
//! pushes what they serve over OTLP with the node's cluster identity, so a spoke needs no
//! OpenTelemetry Collector.
//!
//! [`RelayConfig`](crate::config::RelayConfig) says what to scrape and what to keep
//! ([`MetricFilter`]: a metric allow-list and labels to drop, to keep cardinality in hand).
//! [`RelaySource`] scrapes every target each interval ([`scrape`]), parses the text format
//! ([`parse`]), converts it with counter semantics ([`convert`]) and hands one request to the
//! OTLP pipeline (`pipeline="relay"`). A target that is unreachable, slow (timeout), answers an error or garbage is skipped for that
//! interval with a rate-limited log line and `kepler_exporter_errors_total{component="relay"}`;
//! the others are still relayed, and the exporter keeps serving `/metrics`.

pub mod convert;
pub mod parse;
pub mod scrape;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::config::relay::{MetricFilter, RelayTarget};
use crate::export::otlp::convert::{kv, scope};
use crate::export::otlp::Source;
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use scrape::Scraper;

/// Who relays: the node and cluster identity added to every relayed resource and point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayIdentity {
    pub node_name: String,
    pub cluster: Option<String>,
}

/// The relay as an OTLP pipeline source: one request per interval with every target that
/// answered.
#[derive(Debug)]
pub struct RelaySource {
    scrapers: Vec<Scraper>,
    filter: MetricFilter,
    identity: RelayIdentity,
    metrics: Arc<SelfMetrics>,
    timeout: Duration,
}

impl RelaySource {
    pub fn new(
        targets: Vec<RelayTarget>,
        filter: MetricFilter,
        identity: RelayIdentity,
        timeout: Duration,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        Self {
            scrapers: targets.into_iter().map(Scraper::new).collect(),
            filter,
            identity,
            metrics,
            timeout,
        }
    }

    /// Scrapes every target once and builds the request (`None`: no target answered).
    pub async fn scrape_all(&mut self) -> Option<ExportMetricsServiceRequest> {
        let mut resource_metrics = Vec::new();
        for scraper in &mut self.scrapers {
            let now = SystemTime::now();
            let families = match scraper.scrape(self.timeout, &self.filter).await {
                Ok(f) => f,
                Err(e) => {
                    report_error!(self.metrics, "relay", e.reason(), target = %scraper.target().url, error = %e, "relay target skipped this interval");
                    continue;
                }
            };
            let metrics = scraper.tracker.convert(
                &families,
                now,
                &self.filter,
                self.identity.cluster.as_deref(),
            );
            resource_metrics.push(ResourceMetrics {
                resource: Some(target_resource(&self.identity, scraper.target())),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        (!resource_metrics.is_empty()).then_some(ExportMetricsServiceRequest { resource_metrics })
    }
}

/// The resource of one target, as the Collector's Prometheus receiver names it: job and
/// `host:port`, plus this node and cluster.
fn target_resource(identity: &RelayIdentity, target: &RelayTarget) -> Resource {
    let instance = match (target.url.host_str(), target.url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => target.url.to_string(),
    };
    let mut attributes = vec![
        kv("service.name", &target.job),
        kv("service.instance.id", &instance),
        kv("host.name", &identity.node_name),
        kv("k8s.node.name", &identity.node_name),
    ];
    if let Some(cluster) = &identity.cluster {
        attributes.push(kv("k8s.cluster.name", cluster));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

impl Source for RelaySource {
    type Batch = ExportMetricsServiceRequest;

    fn collect(&mut self) -> impl Future<Output = Option<ExportMetricsServiceRequest>> + Send {
        self.scrape_all()
    }

    fn request(&self, batch: &ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
        batch.clone()
    }
}
