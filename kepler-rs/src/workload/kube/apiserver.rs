//! The API-server alternative to the kubelet poll: list and watch the pods of this node only
//! (`fieldSelector=spec.nodeName=<node>`), selected with `kube.metadataSource: api-server`.
//!
//! For clusters whose kubelets cannot be reached or authorized. It costs the API server one
//! watch per node, which is why the kubelet poll is the default (see ADR 0004). The protocol is
//! the plain Kubernetes list + watch: list with the field selector, then watch from the list's
//! `resourceVersion` with bookmarks; `ADDED`/`MODIFIED`/`DELETED` keep a map of this node's
//! pods and every change republishes the [`PodIndex`]; a watch that the server ends is resumed
//! from the last version seen; `410 Gone` (history compacted) or any error relists, with a
//! backoff after errors. Like the kubelet client it is `reqwest` on rustls with `k8s-openapi`
//! types, not `kube`'s watcher (whose client and runtime stack this one loop does not need).
//! A malformed event is counted and skipped; a line longer than [`MAX_BODY`] ends the watch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent;

use super::kubelet::{tls_config, KubeletError, MAX_BODY};
use super::{PodIndex, SharedPods};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;

/// How long the server keeps one watch open before we resume it.
const WATCH_SECONDS: u64 = 300;
/// Longest wait between attempts after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the API server is and which node's pods to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerOptions {
    /// `https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`.
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub node_name: String,
    /// Timeout of a list request (a watch waits up to its own server-side timeout).
    pub timeout: Duration,
}

/// This node's pods, by UID (namespace/name when a pod has none).
pub type NodePods = BTreeMap<String, Pod>;

/// How one watch ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The server closed the stream (its timeout); resume from this version.
    Closed { resource_version: String },
    /// `410 Gone`: the version is too old, relist.
    Gone,
}

/// A list + watch client for one node's pods.
#[derive(Debug, Clone)]
pub struct ApiServerWatch {
    http: reqwest::Client,
    pods_url: String,
    token_file: Option<PathBuf>,
    timeout: Duration,
}

fn key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => uid.to_string(),
        None => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

impl ApiServerWatch {
    pub fn new(options: &ApiServerOptions) -> Result<Self, KubeletError> {
        let base = options.url.trim_end_matches('/');
        let url_error = |message: String| KubeletError::Url {
            url: options.url.clone(),
            message,
        };
        if options.node_name.trim().is_empty() {
            return Err(url_error(
                "the node name is unknown (set kube.nodeName or $NODE_NAME)".into(),
            ));
        }
        let mut pods_url = reqwest::Url::parse(&format!("{base}/api/v1/pods"))
            .map_err(|e| url_error(e.to_string()))?;
        if pods_url.scheme() != "https" && pods_url.scheme() != "http" {
            return Err(url_error("scheme must be https://".into()));
        }
        pods_url.query_pairs_mut().append_pair(
            "fieldSelector",
            &format!("spec.nodeName={}", options.node_name.trim()),
        );
        let tls = tls_config(options.ca_file.as_deref(), false)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(options.timeout)
            // A watch is silent between events; bookmarks arrive about once a minute.
            .read_timeout(Duration::from_secs(WATCH_SECONDS + 60))
            .build()
            .map_err(|source| KubeletError::Request {
                url: base.to_string(),
                source,
            })?;
        Ok(Self {
            http,
            pods_url: pods_url.to_string(),
            token_file: options.token_file.clone(),
            timeout: options.timeout,
        })
    }

    /// The list URL (with the field selector).
    pub fn url(&self) -> &str {
        &self.pods_url
    }

    async fn get(
        &self,
        url: String,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, KubeletError> {
        let mut request = self.http.get(&url);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| KubeletError::Token {
                path: path.clone(),
                source,
            })?;
            request = request.bearer_auth(token.trim());
        }
        let response = request
            .send()
            .await
            .map_err(|source| KubeletError::Request {
                url: url.clone(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(KubeletError::Status {
                url,
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// Lists this node's pods: the pods, the list's resourceVersion, and how many items were
    /// skipped as malformed.
    pub async fn list(&self) -> Result<(NodePods, String, usize), KubeletError> {
        let url = self.pods_url.clone();
        let mut response = self.get(url.clone(), Some(self.timeout)).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| KubeletError::Request {
                url: url.clone(),
                source,
            })?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(KubeletError::TooLarge { url });
            }
            body.extend_from_slice(&chunk);
        }
        let bad_list = |message: String| KubeletError::PodList {
            url: url.clone(),
            source: super::PodListError::NotAList { kind: message },
        };
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| KubeletError::PodList {
                url: url.clone(),
                source: e.into(),
            })?;
        let items = value["items"]
            .as_array()
            .ok_or_else(|| bad_list(value["kind"].as_str().unwrap_or_default().to_string()))?;
        let version = value["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut pods = NodePods::new();
        let mut skipped = 0;
        for item in items {
            match serde::Deserialize::deserialize(item) {
                Ok(pod) => {
                    let pod: Pod = pod;
                    pods.insert(key(&pod), pod);
                }
                Err(_) => skipped += 1,
            }
        }
        Ok((pods, version, skipped))
    }

    /// Watches from `version`, applying every event to `pods` and calling `changed` after each
    /// change. Returns how the watch ended; malformed events are counted in `skipped`.
    pub async fn watch(
        &self,
        version: &str,
        pods: &mut NodePods,
        skipped: &mut usize,
        mut changed: impl FnMut(&NodePods),
    ) -> Result<WatchEnd, KubeletError> {
        let url = format!(
            "{}&watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={}",
            self.pods_url,
            encode(version)
        );
        let mut response = self.get(url.clone(), None).await?;
        let mut version = version.to_string();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|source| KubeletError::Request {
                    url: url.clone(),
                    source,
                })?;
            let Some(chunk) = chunk else {
                return Ok(WatchEnd::Closed {
                    resource_version: version,
                });
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event: WatchEvent<Pod> = match serde_json::from_slice(&line) {
                    Ok(event) => event,
                    Err(_) => {
                        *skipped += 1;
                        continue;
                    }
                };
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        version = pod.metadata.resource_version.clone().unwrap_or(version);
                        pods.insert(key(&pod), pod);
                        changed(pods);
                    }
                    WatchEvent::Deleted(pod) => {
                        version = pod.metadata.resource_version.clone().unwrap_or(version);
                        pods.remove(&key(&pod));
                        changed(pods);
                    }
                    WatchEvent::Bookmark {
                        resource_version, ..
                    } => version = resource_version,
                    WatchEvent::ErrorStatus(status) if status.code == Some(410) => {
                        return Ok(WatchEnd::Gone)
                    }
                    WatchEvent::ErrorStatus(status) => {
                        return Err(KubeletError::Status {
                            url,
                            status: status
                                .code
                                .and_then(|c| u16::try_from(c).ok())
                                .unwrap_or(500),
                        })
                    }
                    WatchEvent::ErrorOther(_) => {
                        return Err(KubeletError::Status { url, status: 500 })
                    }
                }
            }
            if buffer.len() > MAX_BODY {
                return Err(KubeletError::TooLarge { url });
            }
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Lists and watches until the task is dropped or aborted, publishing into `shared`.
pub async fn run(watch: ApiServerWatch, shared: SharedPods, metrics: Arc<SelfMetrics>) {
    let publish = |pods: &NodePods| shared.store(Arc::new(PodIndex::from_pods(pods.values())));
    let mut backoff = Duration::from_secs(1);
    loop {
        let (mut pods, mut version, mut skipped) = match watch.list().await {
            Ok(listed) => listed,
            Err(e) => {
                report_error!(metrics, "kube", e.reason(), "API-server pod list: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        publish(&pods);
        loop {
            let before = skipped;
            let started = std::time::Instant::now();
            let end = watch
                .watch(&version, &mut pods, &mut skipped, publish)
                .await;
            if skipped > before {
                report_error!(
                    metrics,
                    "kube",
                    "bad_pod",
                    url = watch.url(),
                    skipped = skipped - before,
                    "API server sent pod events that could not be used"
                );
            }
            match end {
                Ok(WatchEnd::Closed { resource_version }) => {
                    // A server that ends watches at once must not make this a busy loop.
                    if started.elapsed() < Duration::from_secs(1) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    } else {
                        backoff = Duration::from_secs(1);
                    }
                    version = resource_version;
                }
                Ok(WatchEnd::Gone) => break,
                Err(e) => {
                    report_error!(metrics, "kube", e.reason(), "API-server pod watch: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}
