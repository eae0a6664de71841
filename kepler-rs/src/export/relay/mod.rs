//! The relay: scrapes local Prometheus endpoints (static URLs, the kubelet's cAdvisor) and
//! pushes what they serve over OTLP with the node's cluster identity, so a spoke needs no
//! OpenTelemetry Collector.
//!
//! [`RelayConfig`] says what to scrape and what to keep ([`MetricFilter`]: a metric allow-list
//! and labels to drop, to keep cardinality in hand). [`RelaySource`] scrapes every target each
//! interval ([`scrape`]), parses the text format ([`parse`]), converts it with counter
//! semantics ([`convert`]) and hands one request to the OTLP pipeline (`pipeline="relay"`). A
//! target that is unreachable, slow (timeout), answers an error or garbage is skipped for that
//! interval with a rate-limited log line and `kepler_exporter_errors_total{component="relay"}`;
//! the others are still relayed, and the exporter keeps serving `/metrics`.

pub mod convert;
pub mod parse;
pub mod scrape;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::export::otlp::convert::{kv, scope};
use crate::export::otlp::Source;
use crate::report_error;
use crate::selfmetrics::SelfMetrics;
use scrape::Scraper;

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// The hub's `job` label for what this target serves (`service.name`).
    pub job: String,
    pub url: reqwest::Url,
    /// Read before every scrape (service-account tokens rotate) and sent as a bearer token.
    pub token_file: Option<PathBuf>,
    /// Trust only this CA (PEM) for an `https://` target.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (self-signed kubelets, `kube.kubeletInsecureSkipVerify`).
    pub insecure_skip_verify: bool,
}

impl RelayTarget {
    /// A target without credentials.
    pub fn plain(job: String, url: reqwest::Url) -> Self {
        Self {
            job,
            url,
            token_file: None,
            ca_file: None,
            insecure_skip_verify: false,
        }
    }
}

/// The local kubelet's cAdvisor endpoint, reached as the pod-metadata poller reaches the
/// kubelet (the `kube.*` URL, token, CA and skip-verify settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTarget {
    /// Kubelet base URL; empty: `https://$NODE_IP:10250`.
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

impl KubeletTarget {
    /// The scrape target `<base>/metrics/cadvisor`, job `kubelet`.
    pub fn target(&self, base: &str) -> Result<RelayTarget, String> {
        let url = format!("{}/metrics/cadvisor", base.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
        Ok(RelayTarget {
            job: "kubelet".to_string(),
            url,
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        })
    }
}

/// Which metrics and labels the relay keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFilter {
    /// Names, or prefixes ending in `*`; `*` alone keeps everything.
    pub allow: Vec<String>,
    pub drop_labels: Vec<String>,
    /// Most series relayed from one target per scrape; a page with more is skipped (logged).
    pub max_series: usize,
}

impl MetricFilter {
    pub fn new(allow: Vec<String>, drop_labels: Vec<String>) -> Self {
        Self {
            allow,
            drop_labels,
            max_series: usize::MAX,
        }
    }

    /// The same filter with a series cap per target.
    pub fn with_max_series(self, max_series: usize) -> Self {
        Self { max_series, ..self }
    }

    /// Whether the family `name` is relayed.
    pub fn allows(&self, name: &str) -> bool {
        self.allow
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }

    /// Whether the label `name` is kept.
    pub fn keeps_label(&self, name: &str) -> bool {
        !self.drop_labels.iter().any(|l| l == name)
    }
}

/// What the relay scrapes, how often, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub targets: Vec<RelayTarget>,
    pub kubelet: Option<KubeletTarget>,
    pub interval: Duration,
    pub filter: MetricFilter,
}

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
