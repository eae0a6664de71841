use super::*;
use tonic::Code;

fn retryable_after(o: &Outcome) -> Option<Option<Duration>> {
    match o {
        Outcome::Retryable { after, .. } => Some(*after),
        _ => None,
    }
}

#[test]
fn grpc_codes_follow_the_otlp_rules() {
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        assert_eq!(
            retryable_after(&classify_grpc(code, "x", &[])),
            Some(None),
            "{code:?}"
        );
    }
    for code in [
        Code::Unknown,
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::FailedPrecondition,
        Code::Unimplemented,
        Code::Internal,
        Code::Unauthenticated,
        Code::ResourceExhausted,
    ] {
        assert!(
            matches!(classify_grpc(code, "x", &[]), Outcome::Permanent { .. }),
            "{code:?}"
        );
    }
    // RESOURCE_EXHAUSTED is retryable only with RetryInfo, whose delay is honoured.
    let details = encode_status_with_retry_info(8, "slow down", Duration::from_millis(1500));
    assert_eq!(
        retryable_after(&classify_grpc(Code::ResourceExhausted, "x", &details)),
        Some(Some(Duration::from_millis(1500)))
    );
    assert_eq!(
        retryable_after(&classify_grpc(Code::Unavailable, "x", &details)),
        Some(Some(Duration::from_millis(1500)))
    );
    let Outcome::Permanent { reason } = classify_grpc(Code::Unimplemented, "unknown service", &[])
    else {
        panic!()
    };
    assert!(reason.contains("otlp.protocol"), "{reason}");
}

#[test]
fn http_statuses_follow_the_otlp_rules() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for status in [429, 502, 503, 504] {
        assert_eq!(
            retryable_after(&classify_http(status, None, b"", now)),
            Some(None),
            "{status}"
        );
    }
    assert_eq!(
        retryable_after(&classify_http(429, Some("7"), b"", now)),
        Some(Some(Duration::from_secs(7)))
    );
    // An HTTP date 30 s ahead; a huge delay is capped.
    let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        retryable_after(&classify_http(503, Some(&date), b"", now)),
        Some(Some(Duration::from_secs(30)))
    );
    assert_eq!(
        retryable_after(&classify_http(503, Some("99999"), b"", now)),
        Some(Some(MAX_SERVER_DELAY))
    );
    assert_eq!(
        retryable_after(&classify_http(503, Some("soon"), b"", now)),
        Some(None)
    );
    for status in [400, 401, 403, 404, 413, 500, 501] {
        assert!(
            matches!(
                classify_http(status, Some("1"), b"", now),
                Outcome::Permanent { .. }
            ),
            "{status}"
        );
    }
    // The body's google.rpc.Status message is quoted.
    let body = encode_status_with_retry_info(3, "metric name missing", Duration::ZERO);
    let Outcome::Permanent { reason } = classify_http(400, None, &body, now) else {
        panic!()
    };
    assert!(reason.contains("HTTP 400: metric name missing"), "{reason}");
    let Outcome::Permanent { reason } = classify_http(413, None, b"", now) else {
        panic!()
    };
    assert!(reason.contains("too large"), "{reason}");
    assert!(matches!(
        classify_http(200, None, b"", now),
        Outcome::Sent { .. }
    ));
}

#[test]
fn backoff_grows_by_half_with_jitter_and_caps() {
    let policy = RetryPolicy {
        initial: Duration::from_secs(5),
        max: Duration::from_secs(30),
        max_elapsed: Duration::from_secs(300),
    };
    let mut b = Backoff::new(policy, fastrand::Rng::with_seed(7));
    let mut base = 5.0_f64;
    for _ in 0..10 {
        let d = b.next_delay().as_secs_f64();
        assert!(
            d >= 0.5 * base - 1e-9 && d <= 1.5 * base + 1e-9,
            "{d} vs {base}"
        );
        base = (base * 1.5).min(30.0);
    }
    b.reset();
    let d = b.next_delay().as_secs_f64();
    assert!((2.5..=7.5).contains(&d), "{d}");
    // Jitter: two generators do not march in lockstep.
    let mut other = Backoff::new(policy, fastrand::Rng::with_seed(8));
    let mut b = Backoff::new(policy, fastrand::Rng::with_seed(7));
    assert_ne!(b.next_delay(), other.next_delay());
}

fn queue() -> Queue<u32> {
    Queue::new(
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            max_elapsed: Duration::from_secs(20),
        },
        fastrand::Rng::with_seed(1),
    )
}

fn unavailable() -> Outcome {
    Outcome::Retryable {
        reason: "down".into(),
        after: None,
    }
}

#[test]
fn queue_keeps_only_the_latest_batch() {
    let t0 = Instant::now();
    let mut q = queue();
    assert!(q.ready_at(t0).is_none());
    assert!(!q.offer(1));
    assert!(q.offer(2), "replacing waiting data drops it");
    let taken = q.take_ready(t0).unwrap();
    assert_eq!(taken.batch, 2);
    assert!(q.is_empty());
    // Fails: kept for a retry after a backoff delay, not before.
    let Decision::RetryAt { at, superseded, .. } = q.complete(taken, unavailable(), t0) else {
        panic!()
    };
    assert!(!superseded);
    assert!(at >= t0 + Duration::from_millis(500) && at <= t0 + Duration::from_millis(1500));
    assert!(q.take_ready(t0).is_none());
    assert_eq!(q.ready_at(t0), Some(at));
    // New data while waiting replaces the failed batch: memory stays one batch.
    for n in 3..1000 {
        q.offer(n);
    }
    let taken = q.take_ready(at).unwrap();
    assert_eq!(taken.batch, 999);
    assert!(q.is_empty());
    // New data arriving during a failed send supersedes the failed batch.
    q.offer(1000);
    let Decision::RetryAt { superseded, .. } = q.complete(taken, unavailable(), at) else {
        panic!()
    };
    assert!(superseded);
    let t = at + Duration::from_secs(10);
    assert_eq!(q.take_ready(t).unwrap().batch, 1000);
}

#[test]
fn queue_honours_retry_after_and_gives_up_after_max_elapsed() {
    let t0 = Instant::now();
    let mut q = queue();
    q.offer(1);
    let taken = q.take_ready(t0).unwrap();
    let after = Outcome::Retryable {
        reason: "429".into(),
        after: Some(Duration::from_secs(3)),
    };
    let Decision::RetryAt { at, .. } = q.complete(taken, after, t0) else {
        panic!()
    };
    assert_eq!(at, t0 + Duration::from_secs(3));
    // The same batch keeps failing: dropped once retrying would pass max_elapsed (20 s).
    let mut now = at;
    let mut dropped = false;
    for _ in 0..50 {
        let taken = q.take_ready(now).unwrap();
        match q.complete(taken, unavailable(), now) {
            Decision::RetryAt { at, .. } => now = at,
            Decision::Dropped { reason } => {
                assert!(reason.contains("retried for more than 20s"), "{reason}");
                dropped = true;
                break;
            }
            Decision::Sent { .. } => panic!(),
        }
    }
    assert!(dropped);
    assert!(now.duration_since(t0) <= Duration::from_secs(20));
    assert!(q.is_empty());
}

#[test]
fn permanent_errors_drop_and_success_resets_the_backoff() {
    let t0 = Instant::now();
    let mut q = queue();
    q.offer(1);
    let taken = q.take_ready(t0).unwrap();
    let d = q.complete(
        taken,
        Outcome::Permanent {
            reason: "HTTP 400".into(),
        },
        t0,
    );
    assert_eq!(
        d,
        Decision::Dropped {
            reason: "HTTP 400".into()
        }
    );
    assert!(q.is_empty(), "a permanent error is not retried");
    q.offer(2);
    assert_eq!(q.ready_at(t0), Some(t0), "new data goes out at once");
    let taken = q.take_ready(t0).unwrap();
    let d = q.complete(
        taken,
        Outcome::Sent {
            rejected: 3,
            message: "bad points".into(),
        },
        t0,
    );
    assert_eq!(
        d,
        Decision::Sent {
            rejected: 3,
            message: "bad points".into()
        }
    );
    assert!(q.is_empty(), "a partial success is not retried");
}
