//! Prometheus remote-write 1.0 exporter: every `interval` the live series become samples with
//! the names and labels of `/metrics` (plus `__name__`), sent in order as snappy-compressed
//! `WriteRequest`s of at most `max_samples_per_request` through a queue of at most `max_queue`
//! requests (the oldest dropped and counted when full). Network errors, 5xx and 429 are
//! retried after [`backoff`]; other answers drop the request.

use crate::config::RemoteWrite;
use crate::exposition;
use crate::ingest::Hub;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// `prometheus.WriteRequest` (remote write 1.0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The backoff before retry `attempt` (0-based): 0.5 s doubling, at most 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms.min(30_000))
}

/// The current samples of the hub, as remote-write requests of at most `max_samples` each.
pub fn collect(hub: &Hub, timestamp_ms: i64, max_samples: usize) -> Vec<WriteRequest> {
    let mut requests = Vec::new();
    let mut current = WriteRequest::default();
    exposition::for_each_sample(hub, |name, labels, value| {
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(Label {
            name: "__name__".into(),
            value: name.to_string(),
        });
        all.extend(labels.iter().map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        }));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        current.timeseries.push(TimeSeries {
            labels: all,
            samples: vec![Sample {
                value,
                timestamp: timestamp_ms,
            }],
        });
        if current.timeseries.len() >= max_samples.max(1) {
            requests.push(std::mem::take(&mut current));
        }
    });
    if !current.timeseries.is_empty() {
        requests.push(current);
    }
    requests
}

/// What the receiver said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Ok,
    Retry(String),
    Drop(String),
}

async fn send(client: &reqwest::Client, settings: &RemoteWrite, body: Vec<u8>) -> Sent {
    let mut request = client
        .post(&settings.url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(settings.timeout)
        .body(body);
    if let Some(token) = &settings.bearer_token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Sent::Ok
            } else if status.is_server_error() || status.as_u16() == 429 {
                Sent::Retry(format!("HTTP {status}"))
            } else {
                let text = response.text().await.unwrap_or_default();
                Sent::Drop(format!("HTTP {status}: {}", text.trim()))
            }
        }
        Err(e) => Sent::Retry(e.to_string()),
    }
}

/// Runs the exporter until `stop` turns true.
pub async fn run(
    hub: Arc<Hub>,
    settings: RemoteWrite,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stats = &hub.metrics.remote_write;
    stats.enabled.store(true, Ordering::Relaxed);
    let client = match reqwest::Client::builder().build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "remote write: cannot build the HTTP client");
            return;
        }
    };
    let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let mut tick = tokio::time::interval(settings.interval);
    let mut attempt = 0u32;
    let mut next_try: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now_ms = hub.store.clock().now_ms() as i64;
                let hub2 = hub.clone();
                let max = settings.max_samples_per_request;
                let Ok(batches) = tokio::task::spawn_blocking(move || collect(&hub2, now_ms, max)).await else {
                    continue;
                };
                for batch in batches {
                    let samples = batch.timeseries.len();
                    let encoded = prost::Message::encode_to_vec(&batch);
                    let compressed = match snap::raw::Encoder::new().compress_vec(&encoded) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "remote write: snappy failed");
                            continue;
                        }
                    };
                    if queue.len() >= settings.max_queue.max(1) {
                        if let Some((dropped, _)) = queue.pop_front() {
                            stats.samples_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                        }
                    }
                    queue.push_back((samples, compressed));
                }
            }
            () = sleep_until(next_try), if next_try.is_some() => {}
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        if next_try.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        next_try = None;
        while let Some((samples, body)) = queue.front() {
            let counted_in = match send(&client, &settings, body.clone()).await {
                Sent::Ok => &stats.samples_sent,
                Sent::Drop(why) => {
                    tracing::warn!(url = %settings.url, %why, "remote write: request refused, dropped");
                    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    &stats.samples_dropped
                }
                Sent::Retry(why) => {
                    if attempt == 0 {
                        tracing::warn!(url = %settings.url, %why, "remote write: will retry");
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    next_try = Some(tokio::time::Instant::now() + backoff(attempt));
                    attempt = attempt.saturating_add(1);
                    break;
                }
            };
            counted_in.fetch_add(*samples as u64, Ordering::Relaxed);
            queue.pop_front();
            attempt = 0;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_30s() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
