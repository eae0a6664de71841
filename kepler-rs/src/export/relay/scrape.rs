//! One relay target: an HTTP(S) GET of its Prometheus page, with the bearer token re-read each
//! time (service-account tokens rotate), the CA (or skip-verify) of the kubelet client, a
//! timeout, and a size cap. The HTTP client is built on first use and rebuilt after a setup
//! failure, so a CA file that appears later is picked up.

use std::time::Duration;

use super::convert::Tracker;
use super::parse::{parse, Family, ParseError};
use crate::config::relay::{MetricFilter, RelayTarget};
use crate::workload::kube::kubelet::tls_config;

/// Largest page accepted (a big node's cAdvisor page is a few MiB).
pub const MAX_PAGE: usize = 64 << 20;

/// Why one scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("unreachable: {0}")]
    Request(String),
    #[error("no answer within {0:?}: {1}")]
    Timeout(Duration, String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered more than {MAX_PAGE} bytes")]
    TooLarge,
    #[error("answered something that is not UTF-8 text")]
    NotText,
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{series} series after the allow-list, more than relay.maxSeries ({max}): narrow relay.metrics")]
    TooManySeries { series: usize, max: usize },
}

impl ScrapeError {
    /// The `reason` label of `kepler_exporter_errors_total{component="relay"}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Setup(_) => "tls_setup",
            ScrapeError::Token { .. } => "token",
            ScrapeError::Request(_) => "unreachable",
            ScrapeError::Timeout(..) => "timeout",
            ScrapeError::Status(401 | 403) => "unauthorized",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge => "too_large",
            ScrapeError::NotText | ScrapeError::Parse(_) => "garbage",
            ScrapeError::TooManySeries { .. } => "too_many_series",
        }
    }
}

/// A target with its client and counter state.
#[derive(Debug)]
pub struct Scraper {
    target: RelayTarget,
    client: Option<reqwest::Client>,
    pub tracker: Tracker,
}

impl Scraper {
    pub fn new(target: RelayTarget) -> Self {
        Self {
            target,
            client: None,
            tracker: Tracker::new(),
        }
    }

    pub fn target(&self) -> &RelayTarget {
        &self.target
    }

    fn client(&mut self, timeout: Duration) -> Result<reqwest::Client, ScrapeError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
        if self.target.url.scheme() == "https"
            && (self.target.ca_file.is_some() || self.target.insecure_skip_verify)
        {
            let tls = tls_config(
                self.target.ca_file.as_deref(),
                self.target.insecure_skip_verify,
            )
            .map_err(|e| ScrapeError::Setup(e.to_string()))?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder
            .build()
            .map_err(|e| ScrapeError::Setup(crate::export::otlp::transport::error_chain(&e)))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// GETs and parses the page, keeping the families `filter` allows.
    pub async fn scrape(
        &mut self,
        timeout: Duration,
        filter: &MetricFilter,
    ) -> Result<Vec<Family>, ScrapeError> {
        let client = self.client(timeout)?;
        let mut request = client
            .get(self.target.url.clone())
            .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4");
        if let Some(path) = &self.target.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| ScrapeError::Token {
                path: path.clone(),
                source,
            })?;
            request = request.bearer_auth(token.trim());
        }
        let request_error = |e: reqwest::Error| {
            let text = crate::export::otlp::transport::error_chain(&e);
            if e.is_timeout() {
                ScrapeError::Timeout(timeout, text)
            } else {
                ScrapeError::Request(text)
            }
        };
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ScrapeError::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_PAGE {
                return Err(ScrapeError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| ScrapeError::NotText)?;
        let families = parse(&text, |name| filter.allows(name))?;
        let series = families.iter().map(|f| f.series.len()).sum();
        if series > filter.max_series {
            return Err(ScrapeError::TooManySeries {
                series,
                max: filter.max_series,
            });
        }
        Ok(families)
    }
}
