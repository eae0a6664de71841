//! A real Prometheus in the hub's namespace, scraping the hub, and PromQL asked through it.

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
            proc,
        }
    }

    /// An instant query: `Some(result array)`, `None` while Prometheus is not up.
    pub fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let url = format!("http://127.0.0.1:9090{}", promql::query_path(promql));
        let (_, body) = http_get(&self.ns, &url)?;
        Some(promql::results(promql, &body))
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

pub use kepler_test_support::promql::sample_value;
