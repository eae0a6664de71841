#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The API-server alternative (`kube.metadataSource: api-server`) against a stand-in API server
//! over real HTTPS with a bearer token: the production list + watch loop lists this node's pods
//! (field selector `spec.nodeName`), applies ADDED / DELETED events from a chunked watch stream,
//! skips a malformed event, resumes a closed watch from the last bookmark's version, and relists
//! on `410 Gone`. The index it publishes is what the monitor reads (the monitor side is covered
//! in kube_pods.rs).

mod kubelet_server;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::workload::kube::apiserver::{self, ApiServerOptions, ApiServerWatch};
use kepler_rs::workload::kube::{PodNames, SharedPods};
use kepler_rs::workload::{ContainerIdentity, Runtime};
use kubelet_server::{pod, Kubelet, FIXTURE};

fn hex(h: &str) -> String {
    h.repeat(64 / h.len())
}

fn lookup(pods: &SharedPods, id: &str) -> Option<PodNames> {
    pods.load().lookup(&ContainerIdentity {
        id: id.to_string(),
        pod_uid: None,
        runtime: Runtime::Containerd,
    })
}

/// Waits (bounded) until `cond` holds; the watch runs on its own task.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event(kind: &str, object: serde_json::Value) -> String {
    serde_json::json!({"type": kind, "object": object}).to_string()
}

fn with_version(mut object: serde_json::Value, version: &str) -> serde_json::Value {
    object["metadata"]["resourceVersion"] = version.into();
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_watch_of_this_node_keeps_the_index_current() {
    let mut list: serde_json::Value = serde_json::from_slice(&fs::read(FIXTURE).unwrap()).unwrap();
    list["metadata"]["resourceVersion"] = "100".into();
    let web = list["items"][0].clone();
    let server = Kubelet::start(serde_json::to_vec(&list).unwrap(), "api-token").await;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("token"), "api-token").unwrap();
    let options = ApiServerOptions {
        url: server.url.clone(),
        token_file: Some(dir.path().join("token")),
        ca_file: Some(server.write_ca(dir.path())),
        node_name: "worker-1".into(),
        timeout: Duration::from_secs(10),
    };
    let watch = ApiServerWatch::new(&options).unwrap();
    let pods = SharedPods::default();
    let metrics = Arc::new(SelfMetrics::new());
    let first = server.queue_watch();
    let second = server.queue_watch();
    let after_gone = server.queue_watch();
    let task = tokio::spawn(apiserver::run(watch, pods.clone(), metrics.clone()));

    until("the listed pods", || pods.load().pods() == 3).await;
    assert_eq!(lookup(&pods, &hex("9c")).unwrap().container_name, "nginx");

    // A pod scheduled here later; a malformed event in between is skipped.
    let late = with_version(
        pod(
            "late-0",
            "shop",
            "99999999-aaaa-4bbb-8ccc-dddddddddddd",
            "worker",
            &hex("cd"),
        ),
        "101",
    );
    first
        .send("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":7}}}".into())
        .unwrap();
    first.send(event("ADDED", late)).unwrap();
    until("the late pod", || lookup(&pods, &hex("cd")).is_some()).await;
    assert_eq!(lookup(&pods, &hex("cd")).unwrap().pod_name, "late-0");

    // The web pod is deleted.
    first
        .send(event("DELETED", with_version(web, "102")))
        .unwrap();
    until("the web pod to leave", || {
        lookup(&pods, &hex("9c")).is_none()
    })
    .await;
    assert_eq!(pods.load().pods(), 3);

    // A bookmark, then the server ends the watch: it resumes from the bookmark.
    first
        .send(event("BOOKMARK", serde_json::json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "150"}})))
        .unwrap();
    drop(first);
    until("a watch resumed at 150", || {
        server
            .requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.ends_with("resourceVersion=150"))
    })
    .await;
    assert!(
        metrics.errors().contains(&("kube", "bad_pod", 1)),
        "{:?}",
        metrics.errors()
    );

    // History compacted: 410 Gone makes it list again (the list has the web pod back).
    second
        .send(event("ERROR", serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired"})))
        .unwrap();
    until("a relist", || {
        server
            .requests()
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
            == 2
    })
    .await;
    until("the relisted web pod", || {
        lookup(&pods, &hex("9c")).is_some()
    })
    .await;
    assert!(
        lookup(&pods, &hex("cd")).is_none(),
        "the relist replaced the index"
    );
    drop(after_gone);

    for request in server.requests() {
        assert!(
            request.starts_with("/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1"),
            "only this node's pods: {request}"
        );
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_errors_are_counted_not_fatal() {
    let server = Kubelet::start(fs::read(FIXTURE).unwrap(), "right").await;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("token"), "wrong").unwrap();
    let options = ApiServerOptions {
        url: server.url.clone(),
        token_file: Some(dir.path().join("token")),
        ca_file: Some(server.write_ca(dir.path())),
        node_name: "worker-1".into(),
        timeout: Duration::from_secs(10),
    };
    let watch = ApiServerWatch::new(&options).unwrap();
    assert_eq!(watch.list().await.unwrap_err().reason(), "unauthorized");
    let pods = SharedPods::default();
    let metrics = Arc::new(SelfMetrics::new());
    let task = tokio::spawn(apiserver::run(watch, pods.clone(), metrics.clone()));
    until("the error counter", || {
        metrics
            .errors()
            .iter()
            .any(|(c, r, _)| *c == "kube" && *r == "unauthorized")
    })
    .await;
    // The token is fixed (rotated in): the next attempt lists.
    let _watch = server.queue_watch();
    fs::write(dir.path().join("token"), "right").unwrap();
    until("the pods after recovery", || pods.load().pods() == 3).await;
    task.abort();

    let no_node = ApiServerOptions {
        node_name: " ".into(),
        ..options
    };
    assert_eq!(ApiServerWatch::new(&no_node).unwrap_err().reason(), "url");
}
