//! `-- known [requests] [rounds]`: in-process ingest (one thread, no gRPC) of requests shaped
//! as the side-by-side bench's load (`kepler_test_support::kepler_push`): one node's push
//! per request, resource with 5 attributes, scope `kepler-rs`, 250 containers x 2 metrics (a
//! monotonic sum and a gauge) x 2 modes = 1,000 points, each with 7 string attributes
//! (`container_id` of 64 random-looking hex digits, `cluster` over 10 clusters). Fills
//! `requests` x 1,000 series, then re-sends them `rounds` times (later timestamps), and prints
//! points per CPU-second of this thread for the known series.

use kepler_collector::clock::SystemClock;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use kepler_test_support::kepler_push::{push, POINTS_PER_PUSH};
use prost::Message;
use std::sync::Arc;

/// Push `r` of round `round`, every point stamped `time`.
fn request(
    r: usize,
    round: u64,
    time: u64,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    push(r, round, 1, time)
}

/// CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    super::cpu_seconds_in("/proc/thread-self/stat")
}

pub fn run(requests: usize, rounds: usize) {
    let hub = Hub::new(Store::new(
        Limits {
            max_series: 0,
            max_series_per_cluster: 0,
        },
        3_600_000,
        Arc::new(SystemClock),
    ));
    let labeling = Labeling {
        insert_cluster: Some("hub"),
        force_cluster: None,
    };
    let fill: Vec<Vec<u8>> = (0..requests)
        .map(|r| request(r, 0, 10).encode_to_vec())
        .collect();
    let cpu = thread_cpu_seconds();
    for body in &fill {
        assert_eq!(hub.ingest_protobuf(body, labeling).unwrap().rejected, 0);
    }
    let fill_cpu = thread_cpu_seconds() - cpu;
    drop(fill);
    let points = requests * POINTS_PER_PUSH;
    // Each round encoded before it is timed (one round's requests held at a time).
    let mut known_cpu = 0.0;
    for round in 1..=rounds {
        let bodies: Vec<Vec<u8>> = (0..requests)
            .map(|r| request(r, round as u64, 10 + round as u64).encode_to_vec())
            .collect();
        let cpu = thread_cpu_seconds();
        for body in &bodies {
            let outcome = hub.ingest_protobuf(body, labeling).unwrap();
            assert_eq!(
                (outcome.accepted, outcome.rejected),
                (POINTS_PER_PUSH as u64, 0)
            );
        }
        known_cpu += thread_cpu_seconds() - cpu;
    }
    assert_eq!(hub.store.len(), points);
    println!(
        "kepler-shaped requests, {points} series: new series {:.0} points per CPU-second \
         ({fill_cpu:.2} s); known series, {rounds} rounds: {:.0} points per CPU-second \
         ({known_cpu:.2} s)",
        points as f64 / fill_cpu,
        (points * rounds) as f64 / known_cpu,
    );
}
