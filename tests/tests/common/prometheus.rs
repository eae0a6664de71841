//! A real Prometheus in the hub's namespace, scraping the hub, and PromQL asked through it; the
//! time-series databases that receive pushes (Prometheus 3's OTLP and remote-write receivers,
//! VictoriaMetrics), asked the same way.

use super::*;

/// The scrape job of the hub's Prometheus.
pub const SCRAPE_JOB: &str = "kepler-hub";

/// A real Prometheus in the hub namespace (127.0.0.1:9090 there) scraping the hub's exposition
/// every 2 s (timeout 2 s) as job `kepler-hub`; temporary config and data directory. With
/// `honor_labels: false` (a ServiceMonitor's default) the pushed `job` and `instance` labels
/// become `exported_job` and `exported_instance`.
#[derive(Debug)]
pub struct Prometheus {
    pub ns: String,
    /// The query API's port on 127.0.0.1 in `ns`.
    pub port: u16,
    pub proc: Proc,
}

impl Prometheus {
    pub fn start(bin: &Path, ns: &str, dir: &Path, honor_labels: bool) -> Prometheus {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!("global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\nscrape_configs:\n  - job_name: {SCRAPE_JOB}\n    honor_labels: {honor_labels}\n    static_configs:\n      - targets: [\"127.0.0.1:9464\"]\n"),
        )
        .unwrap();
        let proc = Proc::spawn(
            "prometheus",
            in_ns(ns, bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prom-data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .arg("--log.level=warn"),
            &dir.join("prometheus.log"),
        );
        Prometheus {
            ns: ns.to_string(),
            port: 9090,
            proc,
        }
    }

    /// Prometheus 3 (a peer built from its Go module) in `ns` on 0.0.0.0:`port`, scraping
    /// nothing, with its OTLP receiver (`/api/v1/otlp/v1/metrics`, the default translation
    /// `UnderscoreEscapingWithSuffixes`) and remote-write receiver (`/api/v1/write`) on; waits
    /// (bounded) until it is ready.
    pub fn start_receiver(bin: &Path, ns: &str, dir: &Path, port: u16) -> Prometheus {
        let config = dir.join(format!("prometheus3-{port}.yml"));
        fs::write(
            &config,
            "global:\n  evaluation_interval: 1s\notlp:\n  translation_strategy: UnderscoreEscapingWithSuffixes\n",
        )
        .unwrap();
        let proc = Proc::spawn(
            "prometheus 3",
            in_ns(ns, bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("prom3-data-{port}")).display()
                ))
                .arg(format!("--web.listen-address=0.0.0.0:{port}"))
                .args([
                    "--web.enable-otlp-receiver",
                    "--web.enable-remote-write-receiver",
                    "--log.level=warn",
                ]),
            &dir.join(format!("prometheus3-{port}.log")),
        );
        Self::ready(ns, port, "/-/ready", proc)
    }

    /// VictoriaMetrics single-node (a peer built from its Go module) in `ns` on
    /// 0.0.0.0:`port`: remote write at `/api/v1/write`, OTLP at `/opentelemetry/v1/metrics`,
    /// PromQL at `/api/v1/query`. Queries see samples at once (`-search.latencyOffset=0s`;
    /// the default hides the last 30 s). Waits (bounded) until it is healthy.
    pub fn start_victoria_metrics(bin: &Path, ns: &str, dir: &Path, port: u16) -> Prometheus {
        let proc = Proc::spawn(
            "victoria-metrics",
            in_ns(ns, bin)
                .arg(format!(
                    "-storageDataPath={}",
                    dir.join(format!("vm-data-{port}")).display()
                ))
                .arg(format!("-httpListenAddr=0.0.0.0:{port}"))
                .args([
                    "-search.latencyOffset=0s",
                    "-search.disableCache",
                    "-loggerLevel=WARN",
                ]),
            &dir.join(format!("victoria-metrics-{port}.log")),
        );
        Self::ready(ns, port, "/health", proc)
    }

    fn ready(ns: &str, port: u16, path: &str, mut proc: Proc) -> Prometheus {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{port}{path}");
        while http_get(ns, &url).is_none_or(|(c, _)| c != 200) {
            proc.assert_running();
            assert!(Instant::now() < deadline, "{} never got ready", proc.name);
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            ns: ns.to_string(),
            port,
            proc,
        }
    }

    /// An instant query: `Some(result array)`, `None` while Prometheus is not up or not ready.
    pub fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let url = format!(
            "http://127.0.0.1:{}{}",
            self.port,
            promql::query_path(promql)
        );
        let (code, body) = http_get(&self.ns, &url)?;
        // 503: Prometheus is up but its storage is still starting.
        (code != 503).then(|| promql::results(promql, &body))
    }

    /// An instant query at Unix time `at` (seconds).
    pub fn query_at(&self, promql: &str, at: f64) -> Option<Vec<serde_json::Value>> {
        let url = format!(
            "http://127.0.0.1:{}{}&time={at:.3}",
            self.port,
            promql::query_path(promql)
        );
        let (code, body) = http_get(&self.ns, &url)?;
        // 503: Prometheus is up but its storage is still starting.
        (code != 503).then(|| promql::results(promql, &body))
    }

    /// Polls `promql` until `accept` holds for its result (deadline `secs`); the last result.
    pub fn wait_for(
        &self,
        promql: &str,
        secs: u64,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Vec::new();
        loop {
            if let Some(result) = self.query(promql) {
                if accept(&result) {
                    return result;
                }
                last = result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: not answered as expected within {secs} s; last answer: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Prometheus {
    /// The reference deployment's verification: every cluster's container power
    /// (`rate(kepler_container_joules_total{cluster="..."}[1m])`) above zero with no negative
    /// rate, and `sum by (cluster)` over them naming exactly the three clusters.
    pub fn assert_reference_queries(&self) {
        for cluster in CLUSTERS {
            let q = format!("rate(kepler_container_joules_total{{cluster=\"{cluster}\"}}[1m])");
            let result = self.wait_for(&q, 120, |r| r.iter().any(|s| sample_value(s) > 0.0));
            for s in &result {
                assert_eq!(s["metric"]["cluster"], cluster, "{q}: {s}");
                assert!(sample_value(s) >= 0.0, "{q}: negative rate {s}");
            }
        }
        let q = "sum by (cluster) (rate(kepler_container_joules_total[1m]))";
        let result = self.wait_for(q, 60, |r| r.len() == 3);
        let mut clusters: Vec<&str> = result
            .iter()
            .map(|s| s["metric"]["cluster"].as_str().unwrap_or(""))
            .collect();
        clusters.sort_unstable();
        assert_eq!(clusters, ["cluster1", "cluster2", "hub"], "{q}: {result:?}");
    }
}

pub use kepler_test_support::promql::sample_value;
