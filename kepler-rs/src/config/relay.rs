//! The relay settings (`relay.*`): what to scrape, how often, and what to keep; their types
//! and their parsing. `export::relay` scrapes and converts by them.

use std::path::PathBuf;
use std::time::Duration;

use super::kube::{kube_config, KubeConfig};
use super::parser::Parser;

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

/// The relay settings, `None` when no target is configured.
pub(super) fn relay_config(
    p: &mut Parser<'_>,
    push: bool,
    kube: Option<&KubeConfig>,
) -> Option<RelayConfig> {
    let mut targets = Vec::new();
    for item in p.list("relay.targets") {
        let (job, raw) = match item.split_once('=') {
            Some((job, url)) if !job.contains("://") => (job.trim().to_string(), url.trim()),
            _ => ("relay".to_string(), item.as_str()),
        };
        if let Some(url) = p.url("relay.targets", raw) {
            targets.push(RelayTarget::plain(job, url));
        }
    }
    // The kubelet is reached with the kube.* settings the pod-metadata poller uses.
    let kubelet = if p.bool("relay.kubelet.enabled") {
        let kube = match kube {
            Some(k) => k.clone(),
            None => kube_config(p),
        };
        Some(KubeletTarget {
            url: kube.kubelet_url,
            token_file: kube.token_file,
            ca_file: kube.ca_file,
            insecure_skip_verify: kube.insecure_skip_verify,
        })
    } else {
        None
    };
    let interval = p.duration("relay.interval", Duration::from_millis(100));
    let max_series = p.parse::<usize>("relay.maxSeries", "a whole number of series");
    if max_series == 0 {
        p.fail("relay.maxSeries", "must be > 0, got 0".to_string());
    }
    let filter = MetricFilter::new(p.list("relay.metrics"), p.list("relay.dropLabels"))
        .with_max_series(max_series);
    if targets.is_empty() && kubelet.is_none() {
        return None;
    }
    if !push {
        p.fail(
            "relay.targets",
            "relaying needs otlp.endpoint (where to send the relayed metrics)".to_string(),
        );
    }
    Some(RelayConfig {
        targets,
        kubelet,
        interval,
        filter,
    })
}
