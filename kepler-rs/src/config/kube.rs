//! The pod-metadata settings (`kube.*`): where pod metadata comes from and how the kubelet or
//! the API server is reached.

use std::path::PathBuf;
use std::time::Duration;

use super::parser::Parser;

/// Where pod metadata comes from (`kube.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// Empty: decided at start-up from $NODE_IP.
    pub kubelet_url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub poll_interval: Duration,
    pub source: MetadataSource,
    /// Empty: from $KUBERNETES_SERVICE_HOST and $KUBERNETES_SERVICE_PORT.
    pub api_server_url: String,
}

/// `kube.metadataSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    /// Poll the local kubelet's `/pods` (default).
    Kubelet,
    /// List and watch this node's pods on the API server.
    ApiServer,
}

/// The `kube.*` settings.
pub(super) fn kube_config(p: &mut Parser<'_>) -> KubeConfig {
    let kubelet_url = p.raw("kube.kubeletUrl").trim().to_string();
    if !kubelet_url.is_empty()
        && !kubelet_url.starts_with("https://")
        && !kubelet_url.starts_with("http://")
    {
        p.fail(
            "kube.kubeletUrl",
            format!("must start with https:// (or http://), got {kubelet_url:?}"),
        );
    }
    let source = match p.raw("kube.metadataSource").trim() {
        "kubelet" => MetadataSource::Kubelet,
        "api-server" => MetadataSource::ApiServer,
        other => {
            let other = other.to_string();
            p.fail(
                "kube.metadataSource",
                format!("must be kubelet or api-server, got {other:?}"),
            );
            MetadataSource::Kubelet
        }
    };
    let api_server_url = p.raw("kube.apiServerUrl").trim().to_string();
    KubeConfig {
        source,
        api_server_url,
        kubelet_url,
        token_file: p.optional_path("kube.tokenFile"),
        ca_file: p.optional_path("kube.caFile"),
        insecure_skip_verify: p.bool("kube.kubeletInsecureSkipVerify"),
        poll_interval: p.duration("kube.pollInterval", Duration::from_millis(100)),
    }
}
