//! The in-place protobuf path (`Hub::ingest_protobuf`, read through `wire::View` without a
//! `String` per attribute) against the reference path (prost decode, then `Hub::ingest`): for
//! random requests of the shape the in-place reader accepts, and for the same requests with
//! bytes flipped and cut, both paths give the same outcome (or the same error) and leave
//! stores that render identically, over two requests (the second updates known series).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use kepler_collector::clock::ManualClock;
use kepler_collector::decode;
use kepler_collector::exposition::render;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use kepler_collector::wire::View;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;
use std::sync::Arc;

fn hub() -> Hub {
    Hub::new(Store::new(
        Limits {
            max_series: 24,
            max_series_per_cluster: 12,
        },
        300_000,
        Arc::new(ManualClock::new(1_000)),
    ))
}

/// String attributes from a small space, so that requests share series and collide.
fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        prop_oneof![
            "[a-c._]{0,3}",
            Just("cluster".to_string()),
            Just("service.name".to_string()),
            Just("service.namespace".to_string()),
            Just("service.instance.id".to_string()),
            Just("job".to_string()),
            Just("le".to_string()),
        ],
        prop_oneof!["[xyz]{0,2}", any::<String>()],
    )
        .prop_map(|(key, value)| KeyValue {
            key,
            key_strindex: 0,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
        })
}

fn point() -> impl Strategy<Value = NumberDataPoint> {
    (
        proptest::collection::vec(key_value(), 0..4),
        0u64..4,
        0u64..6,
        prop_oneof![
            any::<f64>().prop_map(|v| Some(number_data_point::Value::AsDouble(v))),
            any::<i64>().prop_map(|v| Some(number_data_point::Value::AsInt(v))),
            Just(None),
        ],
        0u32..3,
    )
        .prop_map(|(attributes, start, time, value, flags)| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value,
            flags,
            ..Default::default()
        })
}

fn metric() -> impl Strategy<Value = Metric> {
    (
        prop::sample::select(vec!["m", "a.b", "x_total", "", "..", "ü"]),
        prop::sample::select(vec!["", "1", "s", "By/s", "{x}"]),
        prop::sample::select(vec!["", "help"]),
        0u8..7,
        proptest::collection::vec(point(), 0..4),
    )
        .prop_map(|(name, unit, description, kind, data_points)| {
            let data = match kind {
                0 => None,
                1 | 2 => Some(Data::Gauge(Gauge { data_points })),
                _ => Some(Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: i32::from(kind % 3),
                    is_monotonic: kind % 2 == 1,
                })),
            };
            Metric {
                name: name.into(),
                unit: unit.into(),
                description: description.into(),
                data,
                ..Default::default()
            }
        })
}

fn scope_metrics() -> impl Strategy<Value = ScopeMetrics> {
    (
        prop::option::of((
            prop::sample::select(vec!["", "kepler", "s"]),
            prop::sample::select(vec!["", "1.0"]),
            proptest::collection::vec(key_value(), 0..2),
        )),
        proptest::collection::vec(metric(), 0..4),
    )
        .prop_map(|(scope, metrics)| ScopeMetrics {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name: name.into(),
                version: version.into(),
                attributes,
                dropped_attributes_count: 0,
            }),
            metrics,
            schema_url: String::new(),
        })
}

fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    proptest::collection::vec(
        (
            prop::option::of(proptest::collection::vec(key_value(), 0..4)),
            proptest::collection::vec(scope_metrics(), 0..3),
        ),
        0..3,
    )
    .prop_map(|resources| ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .map(|(attributes, scope_metrics)| ResourceMetrics {
                resource: attributes.map(|attributes| Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics,
                ..Default::default()
            })
            .collect(),
    })
}

fn labeling(which: u8) -> Labeling<'static> {
    match which % 3 {
        0 => Labeling::default(),
        1 => Labeling {
            insert_cluster: Some("hub"),
            force_cluster: None,
        },
        _ => Labeling {
            insert_cluster: None,
            force_cluster: Some("c1"),
        },
    }
}

/// Ingests the bodies into one hub through each path: same outcomes, same stores.
fn both_paths(bodies: &[Vec<u8>], labeling: Labeling<'_>) -> Result<(), TestCaseError> {
    let (fast, reference) = (hub(), hub());
    for body in bodies {
        let a = fast.ingest_protobuf(body, labeling);
        let b = decode::protobuf(body).map(|request| reference.ingest(&request, labeling));
        prop_assert_eq!(a, b);
    }
    prop_assert_eq!(dump(&fast), dump(&reference));
    prop_assert_eq!(fast.store.len(), reference.store.len());
    prop_assert_eq!(
        fast.store.series_per_cluster(),
        reference.store.series_per_cluster()
    );
    prop_assert_eq!(fast.store.interned(), reference.store.interned());
    Ok(())
}

/// Everything the store holds, in a canonical order: each series' key, metadata, point and
/// arrival time, then the target_info entries and the hub's own counters. (The text of a render
/// is not compared as is: samples with equal labels, and the type of two metrics that translate
/// to one name, follow the store's iteration order, which differs between two stores.)
fn dump(hub: &Hub) -> Vec<String> {
    let mut out = series_lines(hub, true);
    let mut targets = hub.store.live_targets();
    targets.sort();
    out.extend(targets.iter().map(|t| format!("{t:?}")));
    out.extend(
        render(hub)
            .lines()
            .filter(|l| l.starts_with("kepler_collector_"))
            .map(String::from),
    );
    out
}

fn mutate(
    mut bytes: Vec<u8>,
    flips: &[(prop::sample::Index, u8)],
    cut: prop::sample::Index,
) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn in_place_and_prost_paths_agree(first in request(), second in request(), which in any::<u8>()) {
        let bodies = [first.encode_to_vec(), second.encode_to_vec()];
        for body in &bodies {
            // The generated shape is the one the in-place reader takes: the test covers it.
            prop_assert!(View::of_protobuf(body).is_some());
        }
        both_paths(&bodies, labeling(which))?;
        // The same request again: every series is known now.
        both_paths(&[bodies[0].clone(), bodies[0].clone()], labeling(which))?;
    }

    #[test]
    fn in_place_and_prost_paths_agree_on_mutated_bytes(
        first in request(),
        second in request(),
        which in any::<u8>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let bodies = [first.encode_to_vec(), mutate(second.encode_to_vec(), &flips, cut)];
        both_paths(&bodies, labeling(which))?;
    }

    #[test]
    fn random_bytes_agree(first in request(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        both_paths(&[first.encode_to_vec(), bytes], Labeling::default())?;
    }
}

/// A request with an exemplar, a histogram or an int attribute is not read in place, and still
/// ingested (by prost) with the same result.
#[test]
fn other_shapes_fall_back_to_prost() {
    let int_attr = KeyValue {
        key: "n".into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(5)),
        }),
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![int_attr],
                            time_unix_nano: 5,
                            value: Some(number_data_point::Value::AsInt(3)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    assert!(View::of_protobuf(&body).is_none());
    let hub = hub();
    let outcome = hub.ingest_protobuf(&body, Labeling::default()).unwrap();
    assert_eq!((outcome.accepted, outcome.rejected), (1, 0));
    assert!(
        render(&hub).contains("\ng{n=\"5\"} 3\n"),
        "{}",
        render(&hub)
    );
    // Truncated: prost's error, nothing applied.
    let hub = self::hub();
    let err = hub.ingest_protobuf(&body[..body.len() - 1], Labeling::default());
    assert!(
        matches!(err, Err(decode::DecodeError::Protobuf(_))),
        "{err:?}"
    );
    assert!(hub.store.is_empty());
}

/// Points of one metric sharing their attribute keys (in one order), with values from a small
/// space: consecutive points repeat keys and values, which ingest reuses from point to point.
fn repetitive_metric() -> impl Strategy<Value = Metric> {
    (
        prop::sample::select(vec!["m", "x_total"]),
        proptest::collection::vec(
            prop::sample::select(vec!["cluster", "a", "b.c", "b_c", "job", "le", "mode"]),
            0..4,
        ),
        proptest::collection::vec(
            (
                proptest::collection::vec("[xy]{0,1}", 4),
                0u64..4,
                prop::option::of(any::<i64>()),
            ),
            1..12,
        ),
        0u8..4,
    )
        .prop_map(|(name, keys, points, kind)| {
            let data_points = points
                .into_iter()
                .map(|(values, time, value)| NumberDataPoint {
                    attributes: keys
                        .iter()
                        .zip(values)
                        .map(|(key, value)| KeyValue {
                            key: (*key).into(),
                            key_strindex: 0,
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(value)),
                            }),
                        })
                        .collect(),
                    time_unix_nano: time,
                    value: value.map(number_data_point::Value::AsInt),
                    ..Default::default()
                })
                .collect();
            let data = match kind {
                0 => Data::Gauge(Gauge { data_points }),
                _ => Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: i32::from(kind % 3),
                    is_monotonic: kind % 2 == 1,
                }),
            };
            Metric {
                name: name.into(),
                data: Some(data),
                ..Default::default()
            }
        })
}

/// Every data point of `request` as a request of its own (same resource, scope and metric).
fn one_request_per_point(request: &ExportMetricsServiceRequest) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let points = match &metric.data {
                    Some(Data::Gauge(g)) => g.data_points.clone(),
                    Some(Data::Sum(s)) => s.data_points.clone(),
                    _ => Vec::new(),
                };
                for p in points {
                    let data = match &metric.data {
                        Some(Data::Gauge(_)) => Data::Gauge(Gauge {
                            data_points: vec![p],
                        }),
                        Some(Data::Sum(s)) => Data::Sum(Sum {
                            data_points: vec![p],
                            ..s.clone()
                        }),
                        _ => continue,
                    };
                    let one = ExportMetricsServiceRequest {
                        resource_metrics: vec![ResourceMetrics {
                            scope_metrics: vec![ScopeMetrics {
                                metrics: vec![Metric {
                                    data: Some(data),
                                    ..metric.clone()
                                }],
                                ..sm.clone()
                            }],
                            ..rm.clone()
                        }],
                    };
                    out.push(one.encode_to_vec());
                }
            }
        }
    }
    out
}

/// The stored series alone (no target_info, no request counters), in a canonical order.
fn series(hub: &Hub) -> Vec<String> {
    series_lines(hub, false)
}

/// One line per stored series (key, metadata, point, and with `arrival` its arrival time),
/// sorted.
fn series_lines(hub: &Hub, arrival: bool) -> Vec<String> {
    let mut out = Vec::new();
    hub.store.for_each_live(|key, series| {
        let mut line = format!(
            "{} {:?} {:?} {} {} {:?} {:?} {:?}",
            key.metric,
            key.kind,
            key.scope,
            key.job,
            key.instance,
            key.attrs.iter().collect::<Vec<_>>(),
            series.meta,
            series.point,
        );
        if arrival {
            line.push_str(&format!(" {}", series.updated_ms));
        }
        out.push(line);
    });
    out.sort();
    out
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// What ingest carries from one point to the next within a request (the key layout, the
    /// series group, the ids of repeated values) changes nothing: a request ingested whole
    /// and its points ingested one request each give the same counts and the same store.
    #[test]
    fn points_ingested_together_or_alone_agree(
        metrics in proptest::collection::vec(repetitive_metric(), 1..4),
        other in request(),
        which in any::<u8>(),
    ) {
        let mut request = other;
        request.resource_metrics.push(ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    key_strindex: 0,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".into())),
                    }),
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        });
        let labeling = labeling(which);
        let body = request.encode_to_vec();
        let (whole, alone) = (hub(), hub());
        // Twice: the second time the series are known.
        for _ in 0..2 {
            let a = whole.ingest_protobuf(&body, labeling).unwrap();
            let (mut accepted, mut rejected) = (0, 0);
            for one in one_request_per_point(&request) {
                let b = alone.ingest_protobuf(&one, labeling).unwrap();
                accepted += b.accepted;
                rejected += b.rejected;
            }
            prop_assert_eq!((a.accepted, a.rejected), (accepted, rejected));
            prop_assert_eq!(series(&whole), series(&alone));
            prop_assert_eq!(whole.store.series_per_cluster(), alone.store.series_per_cluster());
            prop_assert_eq!(whole.store.interned(), alone.store.interned());
        }
    }
}
