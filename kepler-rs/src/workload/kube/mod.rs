//! Pod metadata: which pod, namespace and container name a container id belongs to.
//!
//! A [`PodIndex`] is built from a `v1.PodList` (the kubelet's `GET /pods` answer, see
//! [`kubelet`], or kept by the API-server watch of this node's pods, see [`apiserver`]) and maps every container id the pods mention (running, init, ephemeral, and the
//! previous instance of a restarted container from `lastState.terminated`) to its names, plus
//! every pod UID to its pod (for sandbox containers that appear in no status). The index is
//! replaced whole on every poll and shared through [`SharedPods`]; the monitor looks names up on
//! every interval, so a container seen before its pod resolves as soon as a later poll lists it
//! (nothing unresolved is cached), and names it resolved stay with its ledger entry, so a
//! deleted pod's containers keep them until the terminated-workload window drops them.
//! Parsing is per pod: one malformed pod is counted and skipped, never a panic.

pub mod apiserver;
pub mod kubelet;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::ContainerIdentity;

/// Most containers (and, separately, pods) one index keeps; a kubelet lists at most a few
/// hundred pods, so hitting this means garbage, and the rest is dropped and counted.
pub const MAX_ENTRIES: usize = 65_536;

/// The orchestrator's names for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNames {
    pub pod_name: String,
    pub namespace: String,
    /// Empty when only the pod is known (a sandbox container, or a container id the kubelet has
    /// not reported yet).
    pub container_name: String,
    /// The container's CPU request in millicores (`resources.requests.cpu` in its pod's spec),
    /// where one is set and parses; the `requests` idle policy splits idle energy by it.
    pub cpu_request_millicores: Option<u64>,
}

/// The pod metadata the monitor reads; replaced whole by the poller.
pub type SharedPods = Arc<ArcSwap<PodIndex>>;

/// Container id and pod UID -> names, from one pod list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIndex {
    containers: HashMap<String, PodNames>,
    pods: HashMap<String, PodNames>,
    /// Pods (or entries) that could not be used, for the error counter.
    pub skipped: usize,
}

/// The pod list could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum PodListError {
    #[error("pod list is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("pod list has no `items` array (kind {kind:?})")]
    NotAList { kind: String },
}

/// A Kubernetes CPU quantity in millicores, rounded up as the API server's `MilliValue` does:
/// `"250m"` -> 250, `"1"` -> 1000, `"0.5"` -> 500, `"1e3m"` -> 1000. `None` for what is not a
/// non-negative decimal quantity with a CPU-sized suffix (`n`, `u`, `m`, none, `k`): a
/// memory-style binary suffix or garbage counts as no request.
pub fn cpu_millicores(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let (number, millis_per_unit) = [("n", 1e-6), ("u", 1e-3), ("m", 1.0), ("k", 1e6)]
        .into_iter()
        .find_map(|(suffix, scale)| q.strip_suffix(suffix).map(|n| (n, scale)))
        .unwrap_or((q, 1e3));
    // Rust's float syntax also takes "inf" and "NaN"; a quantity is digits, a point and an
    // optional exponent.
    if number.is_empty()
        || !number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    let millis = number.parse::<f64>().ok()? * millis_per_unit;
    // Up to a million cores; anything bigger is not a request.
    (millis.is_finite() && (0.0..=1e9).contains(&millis)).then(|| millis.ceil() as u64)
}

/// `containerd://<id>` -> `<id>` (lowercase), the form the cgroup path carries.
pub fn strip_runtime(container_id: &str) -> Option<String> {
    let id = container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id);
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

impl PodIndex {
    /// Parses a `v1.PodList` body. Pods that do not parse as `v1.Pod` are skipped and counted.
    pub fn from_pod_list(body: &[u8]) -> Result<Self, PodListError> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        let Some(items) = value.get("items").and_then(|i| i.as_array()) else {
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            return Err(PodListError::NotAList { kind });
        };
        let mut index = Self::default();
        for item in items {
            match Pod::deserialize_from(item) {
                Ok(pod) => index.add(&pod),
                Err(e) => {
                    tracing::debug!("skipping a pod that does not parse: {e}");
                    index.skipped += 1;
                }
            }
        }
        Ok(index)
    }

    /// Builds an index from already-parsed pods (the API-server watch keeps a list of them).
    pub fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut index = Self::default();
        for pod in pods {
            index.add(pod);
        }
        index
    }

    fn add(&mut self, pod: &Pod) {
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            self.skipped += 1;
            return;
        };
        let requests: HashMap<&str, u64> = pod
            .spec
            .iter()
            .flat_map(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
            })
            .filter_map(|c| {
                let quantity = c.resources.as_ref()?.requests.as_ref()?.get("cpu")?;
                Some((c.name.as_str(), cpu_millicores(&quantity.0)?))
            })
            .collect();
        let names = |container: &str| PodNames {
            pod_name: name.clone(),
            namespace: namespace.clone(),
            container_name: container.to_string(),
            cpu_request_millicores: requests.get(container).copied(),
        };
        if let Some(uid) = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
            if self.pods.len() < MAX_ENTRIES {
                self.pods.insert(uid.to_ascii_lowercase(), names(""));
            } else {
                self.skipped += 1;
            }
        }
        let Some(status) = &pod.status else { return };
        let lists = [
            &status.init_container_statuses,
            &status.container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for statuses in lists.into_iter().flatten() {
            for s in statuses {
                // The request holds for the container's current instance while it has not
                // terminated; a previous instance or a finished init container reserves nothing.
                let finished = s.state.as_ref().is_some_and(|st| st.terminated.is_some());
                let current = s.container_id.as_deref().and_then(strip_runtime);
                for id in container_ids(s) {
                    if self.containers.len() >= MAX_ENTRIES {
                        self.skipped += 1;
                        continue;
                    }
                    let mut entry = names(&s.name);
                    if finished || current.as_deref() != Some(id.as_str()) {
                        entry.cpu_request_millicores = None;
                    }
                    self.containers.insert(id, entry);
                }
            }
        }
    }

    /// The names of a container: by its id, else (a sandbox, or an id not reported yet) the pod
    /// by the UID from its cgroup path with an empty container name.
    pub fn lookup(&self, identity: &ContainerIdentity) -> Option<PodNames> {
        if let Some(names) = self.containers.get(&identity.id) {
            return Some(names.clone());
        }
        let uid = identity.pod_uid.as_deref()?;
        self.pods.get(&uid.to_ascii_lowercase()).cloned()
    }

    /// Number of container ids known.
    pub fn containers(&self) -> usize {
        self.containers.len()
    }

    /// Number of pods known.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }
}

/// Every container id one status names: the current one and the previous instance of a
/// restarted container (its cgroup can outlive the restart by an interval).
fn container_ids(s: &ContainerStatus) -> impl Iterator<Item = String> + '_ {
    let current = s.container_id.as_deref();
    let previous = [&s.last_state, &s.state].into_iter().flat_map(|state| {
        state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .and_then(|t| t.container_id.as_deref())
    });
    current
        .into_iter()
        .chain(previous)
        .filter_map(strip_runtime)
}

/// `serde_json::Value` -> `Pod` without cloning the whole value first.
trait FromValue: Sized {
    fn deserialize_from(value: &serde_json::Value) -> Result<Self, serde_json::Error>;
}

impl FromValue for Pod {
    fn deserialize_from(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde::Deserialize::deserialize(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Runtime;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/kubelet-pods.json");

    fn id(hex: &str, pod_uid: Option<&str>) -> ContainerIdentity {
        ContainerIdentity {
            id: hex.repeat(64 / hex.len()),
            pod_uid: pod_uid.map(str::to_string),
            runtime: Runtime::Containerd,
        }
    }

    fn names(pod: &str, ns: &str, container: &str) -> Option<PodNames> {
        let cpu_request_millicores = match container {
            "nginx" => Some(250),
            "sidecar" => Some(50),
            "job" => Some(1000),
            _ => None,
        };
        Some(PodNames {
            pod_name: pod.into(),
            namespace: ns.into(),
            container_name: container.into(),
            cpu_request_millicores,
        })
    }

    #[test]
    fn cpu_quantities_become_millicores_rounded_up() {
        for (q, want) in [
            ("250m", Some(250)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("1.5", Some(1500)),
            (" 2 ", Some(2000)),
            ("0.0001", Some(1)),
            ("100u", Some(1)),
            ("1e3m", Some(1000)),
            ("2k", Some(2_000_000)),
            ("0", Some(0)),
            ("", None),
            ("m", None),
            ("1Gi", None),
            ("-1", None),
            ("inf", None),
            ("NaN", None),
            ("one", None),
        ] {
            assert_eq!(cpu_millicores(q), want, "{q:?}");
        }
    }

    #[test]
    fn fixture_resolves_running_restarted_init_and_sandbox_containers() {
        let body = std::fs::read(FIXTURE).unwrap();
        let index = PodIndex::from_pod_list(&body).unwrap();
        assert_eq!(index.skipped, 0);
        assert_eq!(index.pods(), 3);
        let web = "web-7d9f8b6c5d-x2k4q";
        assert_eq!(index.lookup(&id("9c", None)), names(web, "shop", "nginx"));
        assert_eq!(index.lookup(&id("1", None)), names(web, "shop", "sidecar"));
        // The sidecar's previous instance (restartCount 2, lastState.terminated): its names,
        // but not the request, which the current instance holds.
        let previous = names(web, "shop", "sidecar").map(|n| PodNames {
            cpu_request_millicores: None,
            ..n
        });
        assert_eq!(index.lookup(&id("2", None)), previous);
        // A finished init container.
        assert_eq!(
            index.lookup(&id("3", None)),
            names("etl-29400000-abcde", "batch", "fetch")
        );
        assert_eq!(
            index.lookup(&id("7e", None)),
            names("etl-29400000-abcde", "batch", "job")
        );
        // A sandbox of the pending pod: only the pod is known.
        assert_eq!(
            index.lookup(&id("ab", Some("44444444-5555-6666-7777-888888888888"))),
            names("starting-0", "shop", "")
        );
        assert_eq!(index.lookup(&id("ab", None)), None);
    }

    #[test]
    fn bad_pods_are_skipped_and_bad_lists_are_errors() {
        let body = br#"{"kind":"PodList","items":[
            {"metadata":{"name":"ok","namespace":"a","uid":"u1"},
             "status":{"containerStatuses":[{"name":"c","containerID":"docker://ABCDEF"}]}},
            {"metadata":{"name":["not","a","string"]}},
            {"metadata":{"namespace":"no-name"}},
            {"metadata":{"name":"x","namespace":"b"},"status":{"containerStatuses":[{"name":"c","containerID":"containerd://"}]}},
            7
        ]}"#;
        let index = PodIndex::from_pod_list(body).unwrap();
        assert_eq!(index.skipped, 3);
        assert_eq!(index.containers(), 1, "empty ids are not entries");
        assert_eq!(
            index.lookup(&ContainerIdentity {
                id: "abcdef".into(),
                pod_uid: None,
                runtime: Runtime::Docker
            }),
            names("ok", "a", "c")
        );
        assert!(matches!(
            PodIndex::from_pod_list(b"{\"kind\":\"Status\",\"code\":401}"),
            Err(PodListError::NotAList { kind }) if kind == "Status"
        ));
        assert!(PodIndex::from_pod_list(b"\x00garbage").is_err());
        assert!(PodIndex::from_pod_list(b"").is_err());
    }

    #[test]
    fn runtime_prefixes() {
        assert_eq!(strip_runtime("cri-o://AbC").as_deref(), Some("abc"));
        assert_eq!(strip_runtime("abc").as_deref(), Some("abc"));
        assert_eq!(strip_runtime("docker://"), None);
    }
}
