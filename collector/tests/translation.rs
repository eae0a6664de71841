//! Golden translation tests: OTLP requests with odd names, units, keys and value types go
//! through the hub's ingest and exposition (in process, with a hand-moved clock) and must
//! render exactly as `tests/golden/*.prom`, and parse with promtool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use kepler_collector::clock::{Clock, ManualClock};
use kepler_collector::exposition::render;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as Any, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point::Value as Num, summary_data_point::ValueAtQuantile,
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::Arc;

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

fn number(attrs: Vec<KeyValue>, start: u64, time: u64, value: Num) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(value),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, description: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        metadata: vec![],
        data: Some(data),
    }
}

fn sum(monotonic: bool, temporality: AggregationTemporality, points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality as i32,
        is_monotonic: monotonic,
    })
}

fn request(
    resource: Vec<KeyValue>,
    scope: &str,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: if scope.is_empty() {
                        String::new()
                    } else {
                        "0.1".into()
                    },
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn hub() -> (Hub, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::new(Limits::default(), 300_000, clock.clone());
    (Hub::new(store), clock)
}

const CUMULATIVE: AggregationTemporality = AggregationTemporality::Cumulative;
const DELTA: AggregationTemporality = AggregationTemporality::Delta;

fn odd_request() -> ExportMetricsServiceRequest {
    let resource = vec![
        kv("service.name", s("kepler")),
        kv("service.namespace", s("energy")),
        kv("service.instance.id", s("node-1:9102")),
        kv("k8s.cluster.name", s("c1")),
        kv("host.name", s("node-1")),
    ];
    let odd_attrs = vec![
        kv("k8s.pod.name", s("p\"q\\r\nnewline")),
        kv("a.b", s("dot")),
        kv("_private", s("leading underscore")),
        kv("2xx", Any::BoolValue(true)),
        kv("ünï", Any::IntValue(-7)),
        kv("", s("empty key is dropped")),
        kv("ratio", Any::DoubleValue(0.25)),
        kv(
            "list",
            Any::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(s("x")),
                    },
                    AnyValue {
                        value: Some(Any::IntValue(1)),
                    },
                ],
            }),
        ),
        kv(
            "map",
            Any::KvlistValue(KeyValueList {
                values: vec![kv("k", s("v"))],
            }),
        ),
        kv("dup", s("first")),
        kv("dup", s("second")),
    ];
    let c = |v: &str| vec![kv("cluster", s(v)), kv("mode", s("dynamic"))];
    request(
        resource,
        "kepler.io/exporter",
        vec![
            metric(
                "kepler_container_joules_total",
                "J",
                "Energy per container.",
                sum(
                    true,
                    CUMULATIVE,
                    vec![
                        number(c("c1"), 1, 10, Num::AsDouble(12.5)),
                        number(c("c2"), 1, 10, Num::AsInt(3)),
                    ],
                ),
            ),
            metric(
                "odd.metric-name/with spaces",
                "By/s",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(odd_attrs, 0, 10, Num::AsDouble(f64::NAN))],
                }),
            ),
            metric(
                "requests.total.count",
                "{request}",
                "Requests.",
                sum(true, DELTA, vec![number(vec![], 0, 10, Num::AsInt(5))]),
            ),
            metric(
                "cpu.utilization",
                "1",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(vec![], 0, 10, Num::AsDouble(0.5))],
                }),
            ),
            metric(
                "queue.depth",
                "{item}",
                "Up-down.",
                sum(
                    false,
                    CUMULATIVE,
                    vec![number(vec![], 0, 10, Num::AsInt(-2))],
                ),
            ),
            metric(
                "dropped.delta.updown",
                "",
                "",
                sum(false, DELTA, vec![number(vec![], 0, 10, Num::AsInt(1))]),
            ),
            metric(
                "9lives",
                "s",
                "Leading digit.",
                Data::Gauge(Gauge {
                    data_points: vec![number(vec![], 0, 10, Num::AsDouble(1e-9))],
                }),
            ),
            metric(
                "http.server.duration",
                "ms",
                "Latency.",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![kv("route", s("/a"))],
                        start_time_unix_nano: 1,
                        time_unix_nano: 10,
                        count: 6,
                        sum: Some(123.5),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![0.5, 10.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: CUMULATIVE as i32,
                }),
            ),
            metric(
                "rpc.latency",
                "s",
                "Summary.",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: vec![],
                        start_time_unix_nano: 1,
                        time_unix_nano: 10,
                        count: 4,
                        sum: 2.0,
                        quantile_values: vec![
                            ValueAtQuantile {
                                quantile: 0.5,
                                value: 0.4,
                            },
                            ValueAtQuantile {
                                quantile: 0.99,
                                value: 0.9,
                            },
                        ],
                        flags: 0,
                    }],
                }),
            ),
            metric(
                "exp.hist",
                "s",
                "",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        count: 1,
                        ..Default::default()
                    }],
                    aggregation_temporality: CUMULATIVE as i32,
                }),
            ),
        ],
    )
}

#[test]
fn odd_names_units_keys_and_values_render_as_the_collector_would() {
    let (hub, _clock) = hub();
    let outcome = hub.ingest(
        &odd_request(),
        Labeling {
            insert_cluster: Some("hub"),
            force_cluster: None,
        },
    );
    assert_eq!(outcome.rejected, 1, "{outcome:?}");
    assert!(
        outcome.message.contains("exponential histogram"),
        "{}",
        outcome.message
    );
    let text = render(&hub);
    common::check_golden("translation.prom", &text);
    common::assert_promtool_accepts(&text);
}

fn gauge(name: &str, attrs: Vec<KeyValue>) -> Metric {
    metric(
        name,
        "",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(attrs, 0, 10, Num::AsInt(1))],
        }),
    )
}

fn histogram(name: &str, attrs: Vec<KeyValue>) -> Metric {
    metric(
        name,
        "",
        "",
        Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs,
                time_unix_nano: 10,
                count: 1,
                sum: Some(1.0),
                bucket_counts: vec![1, 0],
                explicit_bounds: vec![5.0],
                ..Default::default()
            }],
            aggregation_temporality: CUMULATIVE as i32,
        }),
    )
}

fn summary(name: &str, attrs: Vec<KeyValue>) -> Metric {
    metric(
        name,
        "",
        "",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attrs,
                time_unix_nano: 10,
                count: 1,
                sum: 1.0,
                quantile_values: vec![ValueAtQuantile {
                    quantile: 0.5,
                    value: 1.0,
                }],
                ..Default::default()
            }],
        }),
    )
}

/// Attributes that would become labels the exposition writes itself, reserved labels, and
/// attributes that sanitize to one label. The Collector's prometheus exporter cannot expose
/// such series (it drops them, or for `le` on a histogram writes a sample Prometheus rejects);
/// the hub refuses those points with a partial success and exposes the rest.
fn collision_request() -> ExportMetricsServiceRequest {
    let with_job = vec![
        kv("service.name", s("app")),
        kv("service.instance.id", s("i-1")),
        kv("host.name", s("n1")),
        kv("host-name", s("n2")),
    ];
    let one = |k: &str| vec![kv(k, s("attribute"))];
    let mut req = request(
        with_job,
        "scope",
        vec![
            // Refused: 7 points.
            histogram("h.le", one("le")),
            summary("s.quantile", one("quantile")),
            gauge("g.job", one("job")),
            gauge("g.instance", one("instance")),
            gauge("g.scope", one("otel.scope.name")),
            gauge("g.reserved", one("__name__")),
            gauge(
                "g.collide",
                vec![kv("k8s.pod.name", s("a")), kv("k8s_pod_name", s("b"))],
            ),
            // Exposed: `le` and `quantile` only belong to their own types; `_x` -> `key_x`.
            histogram("h.quantile", one("quantile")),
            summary("s.le", one("le")),
            gauge("g.le", one("le")),
            gauge("g.underscore", one("_private")),
            // The resource's own job and instance repeated as attributes (kepler-rs sends
            // Kepler's `instance` label, the node name, beside service.instance.id).
            gauge(
                "g.same",
                vec![kv("job", s("app")), kv("instance", s("i-1"))],
            ),
        ],
    );
    // Without service.name / service.instance.id, `job` and `instance` are plain labels.
    req.resource_metrics.extend(
        request(
            vec![],
            "",
            vec![gauge(
                "g.plain",
                vec![kv("job", s("attr-job")), kv("instance", s("attr-instance"))],
            )],
        )
        .resource_metrics,
    );
    // A resource attribute with a reserved name: no target_info for that resource.
    req.resource_metrics.extend(
        request(
            vec![
                kv("service.name", s("other")),
                kv("service.instance.id", s("i-2")),
                kv("__secret", s("x")),
            ],
            "",
            vec![gauge("g.other", vec![])],
        )
        .resource_metrics,
    );
    req
}

#[test]
fn attributes_that_collide_with_labels_are_refused_as_the_collector_cannot_expose_them() {
    let (hub, _clock) = hub();
    let outcome = hub.ingest(&collision_request(), Labeling::default());
    assert_eq!(outcome.rejected, 7, "{outcome:?}");
    assert_eq!(outcome.accepted, 7, "{outcome:?}");
    assert!(
        outcome.message.contains(
            "7 points whose attributes make colliding or reserved Prometheus labels"
        ) && outcome.message.contains(
            "(first: attribute \"le\" becomes label \"le\", which the exposition writes itself)"
        ),
        "{}",
        outcome.message
    );
    assert_eq!(hub.metrics.rejected_total("", "label_conflict"), 7);
    let text = render(&hub);
    common::check_golden("collisions.prom", &text);
    common::assert_promtool_accepts(&text);
    for refused in [
        "h_le",
        "s_quantile",
        "g_job",
        "g_instance",
        "g_scope",
        "g_reserved",
        "g_collide",
    ] {
        assert!(
            !text.contains(&format!("\n{refused}")),
            "{refused} exposed:\n{text}"
        );
    }
    assert!(!text.contains("__secret"), "{text}");
}

#[test]
fn deltas_accumulate_cumulatives_keep_the_latest_and_old_points_are_ignored() {
    let (hub, _clock) = hub();
    let labeling = Labeling::default();
    let send = |points: Vec<(u64, u64, i64)>, temporality| {
        let points = points
            .into_iter()
            .map(|(st, t, v)| number(vec![], st, t, Num::AsInt(v)))
            .collect();
        hub.ingest(
            &request(
                vec![],
                "",
                vec![metric("c", "", "", sum(true, temporality, points))],
            ),
            labeling,
        )
    };
    send(vec![(0, 10, 5)], DELTA);
    send(vec![(10, 20, 7)], DELTA);
    assert!(render(&hub).contains("\nc_total 12\n"), "{}", render(&hub));
    send(vec![(20, 30, 1)], DELTA);
    assert!(render(&hub).contains("\nc_total 13\n"));
    let (hub2, _clock) = self::hub();
    let send2 = |t: u64, v: i64| {
        hub2.ingest(
            &request(
                vec![],
                "",
                vec![metric(
                    "c",
                    "",
                    "",
                    sum(true, CUMULATIVE, vec![number(vec![], 1, t, Num::AsInt(v))]),
                )],
            ),
            labeling,
        )
    };
    send2(20, 9);
    send2(10, 4);
    assert!(render(&hub2).contains("\nc_total 9\n"), "{}", render(&hub2));
    send2(30, 11);
    assert!(render(&hub2).contains("\nc_total 11\n"));
}

#[test]
fn series_and_target_info_expire_after_metric_expiration() {
    let (hub, clock) = hub();
    hub.ingest(&odd_request(), Labeling::default());
    assert!(render(&hub).contains("target_info{"));
    clock.advance_ms(299_000);
    assert!(render(&hub).contains("kepler_container_joules_total{"));
    clock.advance_ms(1_000);
    let text = render(&hub);
    assert!(!text.contains("kepler_container_joules_total"), "{text}");
    assert!(!text.contains("target_info"), "{text}");
    assert_eq!(hub.store.sweep(), 9);
    assert!(hub.store.is_empty());
    // Fresh data after expiry comes back.
    hub.ingest(&odd_request(), Labeling::default());
    assert!(render(&hub).contains("kepler_container_joules_total{"));
    assert!(clock.now_ms() > 0);
}

#[test]
fn two_metrics_that_translate_to_one_series_expose_it_once_with_the_newest_point() {
    // `queue.depth` and `queue_depth` both become `queue_depth`; with the same attributes they
    // would be one Prometheus series twice (found by the otlp_protobuf fuzzer: the exposition
    // then depended on hash order). Whatever the arrival order, the newest point is served.
    let gauge_at = |name: &str, time: u64, value: f64| {
        metric(
            name,
            "",
            if name.contains('.') {
                "depth (dotted)"
            } else {
                "depth (underscored)"
            },
            Data::Gauge(Gauge {
                data_points: vec![number(vec![kv("q", s("x"))], 0, time, Num::AsDouble(value))],
            }),
        )
    };
    let resource = vec![kv("service.name", s("app"))];
    for order in [
        [("queue.depth", 20, 2.0), ("queue_depth", 10, 1.0)],
        [("queue_depth", 10, 1.0), ("queue.depth", 20, 2.0)],
    ] {
        let (hub, _clock) = hub();
        for (name, time, value) in order {
            let outcome = hub.ingest(
                &request(resource.clone(), "", vec![gauge_at(name, time, value)]),
                Labeling::default(),
            );
            assert_eq!(outcome.rejected, 0, "{outcome:?}");
        }
        let text = render(&hub);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("queue_depth{"))
            .collect();
        assert_eq!(lines, [r#"queue_depth{job="app",q="x"} 2"#], "{text}");
        assert!(
            text.contains("# HELP queue_depth depth (dotted)\n"),
            "{text}"
        );
        common::assert_promtool_accepts(&text);
    }
}

/// A point flagged "no recorded value" (the staleness marker the Collector's Prometheus
/// receiver sends when a target or series goes away) ends its series at once, as the Collector's
/// exporter deletes it: hidden from the page, removed at the next sweep, other series untouched,
/// and a later point starts it again from that point's value.
#[test]
fn a_staleness_marker_ends_its_series_and_a_later_point_starts_it_again() {
    let (hub, _clock) = hub();
    let labeling = Labeling::default();
    let send = |target: &str, time: u64, value: f64, stale: bool| {
        let mut point = number(vec![kv("id", s(target))], 1, time, Num::AsDouble(value));
        if stale {
            point.value = None;
            point.flags = 1;
        }
        let outcome = hub.ingest(
            &request(
                vec![kv("service.name", s("cadvisor"))],
                "",
                vec![metric("cpu", "s", "", sum(true, CUMULATIVE, vec![point]))],
            ),
            labeling,
        );
        assert_eq!(outcome.rejected, 0, "{outcome:?}");
    };
    send("a", 10, 5.0, false);
    send("b", 10, 7.0, false);
    send("a", 20, 0.0, true);
    let text = render(&hub);
    assert!(!text.contains("id=\"a\""), "{text}");
    assert!(
        text.contains("cpu_seconds_total{id=\"b\",job=\"cadvisor\"} 7\n"),
        "{text}"
    );
    assert_eq!(hub.store.sweep(), 1);
    assert_eq!(hub.store.len(), 1);
    // A marker for a series that is not stored changes nothing.
    send("c", 20, 0.0, true);
    assert_eq!(hub.store.len(), 1);
    // The target comes back: the series starts again from the new point.
    send("a", 30, 1.5, false);
    let text = render(&hub);
    assert!(
        text.contains("cpu_seconds_total{id=\"a\",job=\"cadvisor\"} 1.5\n"),
        "{text}"
    );
    // Marked and revived before a sweep: the new point, not the old one.
    send("b", 40, 0.0, true);
    send("b", 5, 3.0, false);
    let text = render(&hub);
    assert!(
        text.contains("cpu_seconds_total{id=\"b\",job=\"cadvisor\"} 3\n"),
        "{text}"
    );
}
