//! OTLP receivers: [`grpc`] (tonic `MetricsService`) and [`http`] (`POST /v1/metrics`). Both
//! share a [`Listener`]: its name, how it labels `cluster`, its request cap, and its bearer
//! tokens and client-certificate names ([`client_cert`]) when auth is on. Receivers handle transport (compression, sizes, status codes) and
//! hand decoded requests to [`Hub::ingest`](crate::ingest::Hub::ingest).

pub mod client_cert;
pub mod grpc;
pub mod http;

use crate::config;
use crate::ingest::{Hub, Labeling, Outcome};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use std::sync::Arc;

/// One configured listener, shared by its connections.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub hub: Arc<Hub>,
    pub insert_cluster: Option<String>,
    /// token -> cluster; `None`: no tokens.
    pub tokens: Option<config::Tokens>,
    /// client certificate name -> cluster; `None`: no certificate names a cluster.
    pub certificates: Option<config::CertificateIdentities>,
    pub max_request_bytes: usize,
}

/// A request was refused for its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (this listener requires Authorization: Bearer <token>)")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
    #[error("the client certificate is not bound to a cluster on this listener")]
    UnknownCertificate,
    #[error("{0}")]
    Certificate(#[from] client_cert::CertificateError),
    #[error("the bearer token and the client certificate are bound to different clusters")]
    Conflict,
}

impl Listener {
    pub fn new(config: &config::Listener, hub: Arc<Hub>) -> Self {
        if config.tokens.is_none()
            && config.certificates.is_none()
            && config.insert_cluster.is_none()
        {
            tracing::warn!(
                listener = %config.name,
                address = %config.address,
                "auth is off: this listener trusts the cluster label that senders write"
            );
        }
        Self {
            name: config.name.clone(),
            hub,
            insert_cluster: config.insert_cluster.clone(),
            tokens: config.tokens.clone(),
            certificates: config.certificates.clone(),
            max_request_bytes: config.max_request_bytes,
        }
    }

    /// Checks the sender's credentials: the `Authorization` header and the client certificate
    /// (DER, already verified by TLS). Returns the cluster bound to them (auth on) or `None`
    /// (auth off). A certificate bound to a cluster needs no token; when both are given they
    /// must name the same cluster.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer_certificate: Option<&[u8]>,
    ) -> Result<Option<&str>, AuthError> {
        if self.tokens.is_none() && self.certificates.is_none() {
            return Ok(None);
        }
        let by_certificate = match (&self.certificates, peer_certificate) {
            (Some(identities), Some(der)) => client_cert::cluster_of(identities, der)?,
            _ => None,
        };
        let by_token = match (&self.tokens, authorization) {
            (Some(tokens), Some(header)) => Some(token_cluster(tokens, header)?),
            _ => None,
        };
        match (by_certificate, by_token) {
            (Some(c), Some(t)) if c != t => Err(AuthError::Conflict),
            (Some(cluster), _) | (None, Some(cluster)) => Ok(Some(cluster)),
            (None, None) if self.tokens.is_some() => Err(AuthError::Missing),
            (None, None) => Err(AuthError::UnknownCertificate),
        }
    }

    /// How this listener labels points of a sender bound to `token_cluster`.
    pub fn labeling<'a>(&'a self, token_cluster: Option<&'a str>) -> Labeling<'a> {
        Labeling {
            insert_cluster: self.insert_cluster.as_deref(),
            force_cluster: token_cluster,
        }
    }

    /// The answer to a request that was ingested: a partial success naming the rejected points
    /// when there are any. Counts the request as `partial` or `ok`.
    pub fn response(&self, outcome: Outcome) -> ExportMetricsServiceResponse {
        let partial_success = if outcome.rejected > 0 {
            self.hub.metrics.request(&self.name, "partial");
            Some(ExportMetricsPartialSuccess {
                rejected_data_points: outcome.rejected as i64,
                error_message: outcome.message,
            })
        } else {
            self.hub.metrics.request(&self.name, "ok");
            None
        };
        ExportMetricsServiceResponse { partial_success }
    }
}

/// The cluster bound to the bearer token of an `Authorization` header.
fn token_cluster<'a>(tokens: &'a config::Tokens, header: &[u8]) -> Result<&'a str, AuthError> {
    let token = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
        .ok_or(AuthError::Invalid)?;
    let token = token.trim_ascii();
    // Compare against every token in constant time per token.
    let mut found = None;
    for (candidate, cluster) in tokens {
        if constant_time_eq(candidate.as_bytes(), token) {
            found = Some(cluster.as_str());
        }
    }
    found.ok_or(AuthError::Invalid)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
