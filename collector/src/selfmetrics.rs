//! The hub's own metrics: points received and rejected per cluster (and reason), requests per
//! listener and outcome, active series and last-seen time per cluster. Rendered after the
//! OTLP-derived families on `/metrics`, all named `kepler_collector_*`; with a web
//! configuration, its failed reloads.
//!
//! Clusters are whatever senders write on unauthenticated listeners, so the per-cluster maps
//! are bounded: past [`MAX_CLUSTERS`] names, further clusters are counted as `cluster="_other"`.

use crate::store::Store;
use kepler_prom_text::{Encoder, MetricType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};

/// How many distinct cluster names the self-metrics track.
pub const MAX_CLUSTERS: usize = 1000;
const OTHER: &str = "_other";

#[derive(Debug, Default)]
struct Counters {
    received: HashMap<String, u64>,
    rejected: HashMap<(String, &'static str), u64>,
    last_seen_ms: HashMap<String, u64>,
    requests: HashMap<(String, &'static str), u64>,
}

/// Counters shared by all listeners.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    inner: Mutex<Counters>,
    /// The remote-write exporter's counters.
    pub remote_write: RemoteWriteStats,
    /// The exposition's web configuration (`--web.config-file`).
    pub web_config: WebConfigStats,
}

/// Failed reloads of the web configuration, shown as
/// `kepler_collector_web_config_reload_failures_total` (once `enabled`).
#[derive(Debug, Default)]
pub struct WebConfigStats {
    pub enabled: AtomicBool,
    pub reload_failures: AtomicU64,
}

/// The remote-write exporter's counters, shown as `kepler_collector_remote_write_*` (once
/// `enabled`).
#[derive(Debug, Default)]
pub struct RemoteWriteStats {
    pub enabled: AtomicBool,
    pub samples_sent: AtomicU64,
    pub samples_dropped: AtomicU64,
    pub requests_failed: AtomicU64,
    pub retries: AtomicU64,
}

fn bounded<'a, V>(map: &HashMap<String, V>, cluster: &'a str) -> &'a str {
    if map.len() >= MAX_CLUSTERS && !map.contains_key(cluster) {
        OTHER
    } else {
        cluster
    }
}

impl SelfMetrics {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Points that arrived from `cluster` (accepted or not) at `now_ms`.
    pub fn received(&self, cluster: &str, points: u64, now_ms: u64) {
        let mut c = self.lock();
        let name = bounded(&c.received, cluster).to_string();
        *c.received.entry(name.clone()).or_default() += points;
        c.last_seen_ms.insert(name, now_ms);
    }

    pub fn rejected(&self, cluster: &str, reason: &'static str, points: u64) {
        let mut c = self.lock();
        let name = bounded(&c.received, cluster).to_string();
        *c.rejected.entry((name, reason)).or_default() += points;
    }

    /// One request on `listener` that ended with `outcome` (`ok`, `partial`, `unauthenticated`,
    /// `invalid`, `too_large`, ...).
    pub fn request(&self, listener: &str, outcome: &'static str) {
        *self
            .lock()
            .requests
            .entry((listener.to_string(), outcome))
            .or_default() += 1;
    }

    /// Points received from `cluster` so far (tests).
    pub fn received_total(&self, cluster: &str) -> u64 {
        self.lock().received.get(cluster).copied().unwrap_or(0)
    }

    /// Points rejected for `cluster` and `reason` so far (tests).
    pub fn rejected_total(&self, cluster: &str, reason: &str) -> u64 {
        self.lock()
            .rejected
            .iter()
            .filter(|((c, r), _)| c == cluster && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Writes the self-metric families.
    pub fn render(&self, enc: &mut Encoder, store: &Store) {
        let c = self.lock();
        write_family(
            enc,
            "kepler_collector_points_received_total",
            "OTLP data points received, per cluster (the data-point attribute cluster).",
            MetricType::Counter,
            c.received
                .iter()
                .map(|(cluster, n)| ([("cluster", cluster.as_str())], *n as f64)),
        );
        write_family(
            enc,
            "kepler_collector_points_rejected_total",
            "OTLP data points rejected, per cluster and reason.",
            MetricType::Counter,
            c.rejected.iter().map(|((cluster, reason), n)| {
                (
                    [("cluster", cluster.as_str()), ("reason", *reason)],
                    *n as f64,
                )
            }),
        );
        write_family(
            enc,
            "kepler_collector_cluster_last_seen_timestamp_seconds",
            "When the hub last received data points from the cluster (Unix time).",
            MetricType::Gauge,
            c.last_seen_ms
                .iter()
                .map(|(cluster, ms)| ([("cluster", cluster.as_str())], *ms as f64 / 1000.0)),
        );
        write_family(
            enc,
            "kepler_collector_requests_total",
            "OTLP export requests per listener and outcome.",
            MetricType::Counter,
            c.requests.iter().map(|((listener, outcome), n)| {
                (
                    [("listener", listener.as_str()), ("outcome", *outcome)],
                    *n as f64,
                )
            }),
        );
        drop(c);
        self.render_remote_write(enc);
        self.render_web_config(enc);
        let per_cluster = store.series_per_cluster();
        write_family(
            enc,
            "kepler_collector_series_active",
            "Series held by the hub, per cluster (empty cluster: series without one).",
            MetricType::Gauge,
            per_cluster
                .iter()
                .map(|(cluster, n)| ([("cluster", &**cluster)], *n as f64)),
        );
    }
}

/// Writes family `name` with one sample per `(labels, value)`, in label order.
fn write_family<'a, const N: usize>(
    enc: &mut Encoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl Iterator<Item = ([(&'a str, &'a str); N], f64)>,
) {
    let mut samples: Vec<_> = samples.collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    enc.family(name, help, kind);
    for (labels, value) in &samples {
        enc.sample(name, labels, *value);
    }
}

impl SelfMetrics {
    fn render_web_config(&self, enc: &mut Encoder) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.web_config.enabled.load(Relaxed) {
            return;
        }
        let name = "kepler_collector_web_config_reload_failures_total";
        enc.family(
            name,
            "Reloads of the web configuration file (or its certificates) that failed; the last good configuration stayed in force.",
            MetricType::Counter,
        );
        enc.sample(
            name,
            &[],
            self.web_config.reload_failures.load(Relaxed) as f64,
        );
    }

    fn render_remote_write(&self, enc: &mut Encoder) {
        use std::sync::atomic::Ordering::Relaxed;
        let rw = &self.remote_write;
        if !rw.enabled.load(Relaxed) {
            return;
        }
        enc.family(
            "kepler_collector_remote_write_samples_total",
            "Samples given to the remote-write receiver (sent) or given up (dropped: queue full or refused).",
            MetricType::Counter,
        );
        for (outcome, n) in [("sent", &rw.samples_sent), ("dropped", &rw.samples_dropped)] {
            enc.sample(
                "kepler_collector_remote_write_samples_total",
                &[("outcome", outcome)],
                n.load(Relaxed) as f64,
            );
        }
        enc.family(
            "kepler_collector_remote_write_retries_total",
            "Remote-write sends that failed and will be retried.",
            MetricType::Counter,
        );
        enc.sample(
            "kepler_collector_remote_write_retries_total",
            &[],
            rw.retries.load(Relaxed) as f64,
        );
        enc.family(
            "kepler_collector_remote_write_requests_failed_total",
            "Remote-write requests refused permanently by the receiver (4xx other than 429).",
            MetricType::Counter,
        );
        enc.sample(
            "kepler_collector_remote_write_requests_failed_total",
            &[],
            rw.requests_failed.load(Relaxed) as f64,
        );
    }
}
