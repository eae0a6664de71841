//! Property tests over the decoders: proptest drives the protobuf and JSON decoders and the
//! whole ingest + render path with random and mutated inputs, on every `cargo test` (a few
//! hundred cases each; `PROPTEST_CASES=100000 cargo test -p kepler-collector --test fuzz
//! --release` for a longer run), with shrinking. The coverage-guided fuzzers (cargo-fuzz) are in
//! `collector/fuzz/`, run by `scripts/fuzz.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use kepler_collector::clock::ManualClock;
use kepler_collector::decode;
use kepler_collector::exposition::render;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;
use std::sync::Arc;

fn hub() -> Hub {
    let clock = Arc::new(ManualClock::new(1_000));
    Hub::new(Store::new(
        Limits {
            max_series: 10_000,
            max_series_per_cluster: 1_000,
        },
        300_000,
        clock,
    ))
}

/// Every sample line of the exposition is `name{labels} value` with a valid name.
fn assert_well_formed(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(!name.is_empty(), "{line:?}");
        assert!(!name.starts_with(|c: char| c.is_ascii_digit()), "{line:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "{line:?}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "{line:?}"
        );
    }
}

fn ingest_and_render(request: &ExportMetricsServiceRequest) {
    let hub = hub();
    let outcome = hub.ingest(
        request,
        Labeling {
            insert_cluster: Some("hub"),
            force_cluster: None,
        },
    );
    assert!(outcome.accepted + outcome.rejected <= 1_000_000);
    assert_well_formed(&render(&hub));
}

fn any_value() -> impl Strategy<Value = any_value::Value> {
    prop_oneof![
        any::<String>().prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<f64>().prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
    ]
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        prop_oneof!["[a-z.]{0,6}", any::<String>(), Just("cluster".to_string())],
        any_value(),
    )
        .prop_map(|(key, v)| KeyValue {
            key,
            key_strindex: 0,
            value: Some(AnyValue { value: Some(v) }),
        })
}

fn metric() -> impl Strategy<Value = Metric> {
    let points = proptest::collection::vec(
        (
            proptest::collection::vec(key_value(), 0..4),
            any::<u64>(),
            any::<f64>(),
        ),
        0..4,
    );
    (
        any::<String>(),
        prop::sample::select(vec!["", "1", "s", "By/s", "{x}", ".*", "ms"]).prop_map(String::from),
        any::<u8>(),
        points,
    )
        .prop_map(|(name, unit, kind, points)| {
            let number = points
                .iter()
                .map(|(attributes, time, v)| NumberDataPoint {
                    attributes: attributes.clone(),
                    time_unix_nano: *time,
                    start_time_unix_nano: time / 2,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            let data = match kind % 4 {
                0 => Data::Gauge(Gauge {
                    data_points: number,
                }),
                1 | 2 => Data::Sum(Sum {
                    data_points: number,
                    aggregation_temporality: i32::from(kind % 3),
                    is_monotonic: kind % 4 == 1,
                }),
                _ => Data::Histogram(Histogram {
                    data_points: points
                        .iter()
                        .map(|(attributes, time, v)| HistogramDataPoint {
                            attributes: attributes.clone(),
                            time_unix_nano: *time,
                            count: 3,
                            sum: Some(*v),
                            bucket_counts: vec![1, 2, 0][..usize::from(kind % 3) + 1].to_vec(),
                            explicit_bounds: vec![*v, 1.0][..usize::from(kind % 3)].to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: 2,
                }),
            };
            Metric {
                name,
                unit,
                data: Some(data),
                ..Default::default()
            }
        })
}

fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    (
        proptest::collection::vec(key_value(), 0..4),
        proptest::collection::vec(metric(), 0..6),
    )
        .prop_map(|(resource, metrics)| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn random_bytes_never_panic_the_protobuf_path(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = decode::protobuf(&bytes) {
            ingest_and_render(&request);
        }
        let _ = decode::gunzip(&bytes, 1 << 16);
    }

    #[test]
    fn mutated_valid_requests_never_panic(
        request in request(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut bytes = request.encode_to_vec();
        if !bytes.is_empty() {
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(request) = decode::protobuf(&bytes) {
            ingest_and_render(&request);
        }
    }

    #[test]
    fn structured_requests_always_render_well_formed(request in request()) {
        ingest_and_render(&request);
        // The same request decodes back from protobuf and JSON alike.
        let again = decode::protobuf(&request.encode_to_vec()).unwrap();
        prop_assert_eq!(again.resource_metrics.len(), 1);
    }

    #[test]
    fn random_and_mutated_json_never_panic(
        text in any::<String>(),
        request in request(),
        cut in any::<prop::sample::Index>(),
    ) {
        let _ = decode::json(text.as_bytes());
        let json = serde_json::to_vec(&request).unwrap();
        let cut = &json[..cut.index(json.len() + 1)];
        if let Ok(request) = decode::json(cut) {
            ingest_and_render(&request);
        }
        if let Ok(request) = decode::json(&json) {
            ingest_and_render(&request);
        }
    }
}
