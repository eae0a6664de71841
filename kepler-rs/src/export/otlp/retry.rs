//! The OTLP retry rules and the bounded send queue, with the clock and randomness injected.
//!
//! [`classify_grpc`] and [`classify_http`] turn a response into an [`Outcome`] exactly as the
//! OTLP specification says: gRPC CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
//! UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED only with `RetryInfo`, are retryable; HTTP
//! 429, 502, 503 and 504 are retryable and `Retry-After` is honoured; everything else is
//! permanent; a partial success is a success whose rejections are logged, never retried.
//! [`Backoff`] is the Collector's exponential backoff (multiplier 1.5, ±50 % jitter, capped).
//! [`Queue`] holds at most one batch, the latest: new data replaces data still waiting for a
//! retry (cumulative counters make the newer batch carry everything the older one had), so
//! memory stays bounded however long the hub is down.

use std::time::{Duration, Instant, SystemTime};

use prost::Message;

use crate::config::otlp::RetryPolicy;

/// The most a server's `Retry-After` / `RetryInfo` may make us wait.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// What became of one export attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted. `rejected` > 0: a partial success (logged, not retried).
    Sent { rejected: i64, message: String },
    /// Try again later; `after`: the delay the server asked for.
    Retryable {
        reason: String,
        after: Option<Duration>,
    },
    /// Do not retry this data.
    Permanent { reason: String },
}

/// The gRPC codes the OTLP specification calls retryable (RESOURCE_EXHAUSTED needs RetryInfo).
pub fn classify_grpc(code: tonic::Code, message: &str, details: &[u8]) -> Outcome {
    use tonic::Code;
    let retry_info = retry_info_delay(details);
    let reason = format!("gRPC {code:?}: {message}");
    match code {
        Code::Ok => Outcome::Sent {
            rejected: 0,
            message: String::new(),
        },
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retryable {
            reason,
            after: retry_info,
        },
        Code::ResourceExhausted if retry_info.is_some() => Outcome::Retryable {
            reason,
            after: retry_info,
        },
        Code::Unimplemented => Outcome::Permanent {
            reason: format!(
                "{reason} (the endpoint does not serve OTLP metrics over gRPC: wrong port, or \
                 set otlp.protocol=http/protobuf)"
            ),
        },
        Code::ResourceExhausted => Outcome::Permanent {
            reason: format!("{reason} (request too large for the hub, or quota without RetryInfo)"),
        },
        _ => Outcome::Permanent { reason },
    }
}

/// HTTP status -> outcome. `retry_after`: the raw `Retry-After` header; `body`: the response
/// body (a protobuf `google.rpc.Status` on errors, whose message is quoted).
pub fn classify_http(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Outcome {
    let detail = rpc_status_message(body).unwrap_or_else(|| {
        String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string()
    });
    let reason = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    match status {
        200..=299 => Outcome::Sent {
            rejected: 0,
            message: String::new(),
        },
        429 | 502 | 503 | 504 => Outcome::Retryable {
            reason,
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        400 => Outcome::Permanent {
            reason: format!("{reason} (the hub rejected the data as malformed)"),
        },
        404 | 405 | 415 => Outcome::Permanent {
            reason: format!(
                "{reason} (the endpoint does not serve OTLP/HTTP metrics: check the URL path \
                 (/v1/metrics) and otlp.protocol)"
            ),
        },
        413 => Outcome::Permanent {
            reason: format!(
                "{reason} (request too large for the hub: raise its limit, or send fewer \
                 series, e.g. without metrics.processes)"
            ),
        },
        _ => Outcome::Permanent { reason },
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110), capped at [`MAX_SERVER_DELAY`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_SERVER_DELAY))
}

/// `google.rpc.Status`, as OTLP servers return it in error bodies and gRPC status details.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo` delay in encoded `google.rpc.Status` details (gRPC `grpc-status-details-bin`).
fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(secs, nanos).min(MAX_SERVER_DELAY))
}

fn rpc_status_message(body: &[u8]) -> Option<String> {
    let status = RpcStatus::decode(body).ok()?;
    (!status.message.is_empty()).then_some(status.message)
}

/// Encodes a `google.rpc.Status` with a `RetryInfo` detail (what a server sends; for tests and
/// for the fake hubs in them).
pub fn encode_status_with_retry_info(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// Exponential backoff with jitter: the n-th delay is drawn uniformly from
/// `[0.5, 1.5] × min(initial × 1.5^n, max)`.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    current: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(policy: RetryPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy,
            current: policy.initial,
            rng,
        }
    }

    /// The next delay; grows the interval for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current.min(self.policy.max);
        let jittered = base.mul_f64(0.5 + self.rng.f64());
        self.current = base.mul_f64(1.5).min(self.policy.max);
        jittered
    }

    pub fn reset(&mut self) {
        self.current = self.policy.initial;
    }
}

/// A batch waiting to be sent, with when it was first tried.
#[derive(Debug)]
pub struct Pending<T> {
    pub batch: T,
    pub first_attempt: Option<Instant>,
}

/// What the queue decided after an attempt; the caller logs and counts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Sent {
        rejected: i64,
        message: String,
    },
    /// Kept for a retry at `at`; `superseded`: newer data arrived meanwhile and replaced the
    /// failed batch (which counts as dropped).
    RetryAt {
        reason: String,
        at: Instant,
        superseded: bool,
    },
    /// Given up: permanent error, or retried past the policy's `max_elapsed`.
    Dropped {
        reason: String,
    },
}

/// At most one batch to send, the latest, and when it may next be tried.
#[derive(Debug)]
pub struct Queue<T> {
    pending: Option<Pending<T>>,
    not_before: Option<Instant>,
    backoff: Backoff,
    max_elapsed: Duration,
}

impl<T> Queue<T> {
    pub fn new(policy: RetryPolicy, rng: fastrand::Rng) -> Self {
        Self {
            pending: None,
            not_before: None,
            backoff: Backoff::new(policy, rng),
            max_elapsed: policy.max_elapsed,
        }
    }

    /// New data: replaces what waits. Returns true when older data was dropped for it.
    pub fn offer(&mut self, batch: T) -> bool {
        let replaced = self.pending.is_some();
        self.pending = Some(Pending {
            batch,
            first_attempt: None,
        });
        replaced
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// When the waiting batch may be sent (`None`: nothing waits).
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(self.not_before.map_or(now, |t| t.max(now)))
    }

    /// Takes the batch if it may be sent at `now`.
    pub fn take_ready(&mut self, now: Instant) -> Option<Pending<T>> {
        if self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        self.pending.take()
    }

    /// Records the outcome of sending `taken` (taken by [`take_ready`](Self::take_ready)).
    pub fn complete(&mut self, mut taken: Pending<T>, outcome: Outcome, now: Instant) -> Decision {
        match outcome {
            Outcome::Sent { rejected, message } => {
                self.backoff.reset();
                self.not_before = None;
                Decision::Sent { rejected, message }
            }
            Outcome::Permanent { reason } => {
                self.backoff.reset();
                self.not_before = None;
                Decision::Dropped { reason }
            }
            Outcome::Retryable { reason, after } => {
                let first = *taken.first_attempt.get_or_insert(now);
                let at = now + after.unwrap_or_else(|| self.backoff.next_delay());
                self.not_before = Some(at);
                if at.duration_since(first) > self.max_elapsed {
                    return Decision::Dropped {
                        reason: format!(
                            "{reason}; retried for more than {}",
                            humantime::format_duration(self.max_elapsed)
                        ),
                    };
                }
                // Newer data that arrived while sending supersedes the failed batch.
                let superseded = self.pending.is_some();
                if !superseded {
                    self.pending = Some(taken);
                }
                Decision::RetryAt {
                    reason,
                    at,
                    superseded,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
