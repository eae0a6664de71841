//! The relay: scrapes local Prometheus endpoints (static URLs, the kubelet's cAdvisor) and
//! pushes what they serve over OTLP with the node's cluster identity, so a spoke needs no
//! OpenTelemetry Collector.
//!
//! [`RelayConfig`] says what to scrape and what to keep ([`MetricFilter`]: a metric allow-list
//! and labels to drop, to keep cardinality in hand).

use std::path::PathBuf;
use std::time::Duration;

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
}

impl RelayTarget {
    /// A target without credentials.
    pub fn plain(job: String, url: reqwest::Url) -> Self {
        Self {
            job,
            url,
            token_file: None,
            ca_file: None,
        }
    }
}

/// The local kubelet's cAdvisor endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTarget {
    /// `HOST:PORT`; empty: `$NODE_IP:10250`.
    pub address: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

/// Which metrics and labels the relay keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFilter {
    /// Names, or prefixes ending in `*`; `*` alone keeps everything.
    pub allow: Vec<String>,
    pub drop_labels: Vec<String>,
}

impl MetricFilter {
    pub fn new(allow: Vec<String>, drop_labels: Vec<String>) -> Self {
        Self { allow, drop_labels }
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
