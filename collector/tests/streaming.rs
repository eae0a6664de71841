//! The page rendered while it is sent (`render_each`) is the page the former render collected
//! in memory (`whole::render_collected`), byte for byte, for a store with many families, series
//! of several kinds sharing a name, two OTel metrics translating to one series, translated
//! keys, odd label values and expired series; it comes in pieces of bounded size; and points
//! applied between its pieces leave it well-formed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kepler_collector::clock::ManualClock;
use kepler_collector::exposition::whole::render_collected;
use kepler_collector::exposition::{render_as, render_each, render_each_sized, PIECE};
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Attr, Hint, KeyRef, Limits, Lookup, Meta, Point, Store, Value};
use kepler_collector::translate::Kind;
use kepler_prom_text::Format;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, summary_data_point::ValueAtQuantile, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

const START: u64 = 1_700_000_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// A small deterministic generator (no seed files, the same store every run).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// One metric with one point per attribute set, at `time`, values from `value(i)`.
fn metric(
    name: &str,
    unit: &str,
    help: &str,
    shape: Shape,
    attrs: Vec<Vec<KeyValue>>,
    time: u64,
    value: impl Fn(usize) -> f64,
) -> Metric {
    let numbers = || {
        attrs
            .iter()
            .enumerate()
            .map(|(i, a)| NumberDataPoint {
                attributes: a.clone(),
                start_time_unix_nano: 1,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(value(i))),
                ..Default::default()
            })
            .collect()
    };
    let data = match shape {
        Shape::Counter => Data::Sum(Sum {
            data_points: numbers(),
            aggregation_temporality: 2,
            is_monotonic: true,
        }),
        Shape::Gauge => Data::Gauge(Gauge {
            data_points: numbers(),
        }),
        Shape::Histogram => Data::Histogram(Histogram {
            data_points: attrs
                .iter()
                .enumerate()
                .map(|(i, a)| HistogramDataPoint {
                    attributes: a.clone(),
                    start_time_unix_nano: 1,
                    time_unix_nano: time,
                    count: 3 + i as u64,
                    sum: Some(value(i)),
                    bucket_counts: vec![1, 2, i as u64],
                    explicit_bounds: vec![0.5, 2.5],
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: 2,
        }),
        Shape::Summary => Data::Summary(Summary {
            data_points: attrs
                .iter()
                .enumerate()
                .map(|(i, a)| SummaryDataPoint {
                    attributes: a.clone(),
                    start_time_unix_nano: 1,
                    time_unix_nano: time,
                    count: 2,
                    sum: value(i),
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.9,
                        value: value(i) / 2.0,
                    }],
                    ..Default::default()
                })
                .collect(),
        }),
    };
    Metric {
        name: name.into(),
        description: help.into(),
        unit: unit.into(),
        metadata: vec![],
        data: Some(data),
    }
}

/// A request from `job`/`instance` (none when empty), scope `scope`, with `metrics`.
fn request(
    job: &str,
    instance: &str,
    scope: &str,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    let mut resource = vec![kv("host.name", "n1"), kv("k8s.pod.name", "p")];
    if !job.is_empty() {
        resource.push(kv("service.name", job));
    }
    if !instance.is_empty() {
        resource.push(kv("service.instance.id", instance));
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: if scope.is_empty() { "" } else { "1.2" }.into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn ingest(hub: &Hub, request: &ExportMetricsServiceRequest) {
    let outcome = hub.ingest(
        request,
        Labeling {
            insert_cluster: Some("hub"),
            force_cluster: None,
        },
    );
    assert_eq!(outcome.rejected, 0, "{outcome:?}");
}

/// Label values that sort in odd ways: a NUL (which the sort key also uses), an escape, a
/// prefix of another value, non-ASCII text, nothing.
const ODD: [&str; 7] = ["a\0b", "a", "a\"b", "ab", "é", "", "a\\n"];

/// A store with everything the page's order and choices depend on.
fn mixed_store() -> (Hub, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let hub = Hub::new(Store::new(Limits::default(), 300_000, clock.clone()));
    let mut rng = Rng(7);
    let shapes = [
        Shape::Counter,
        Shape::Gauge,
        Shape::Histogram,
        Shape::Summary,
    ];
    // 300 small families, inserted in no particular order, from 3 jobs and 2 scopes.
    for n in 0..300u64 {
        let k = (n * 7_919) % 300;
        let shape = shapes[(k % 4) as usize];
        let attrs = (0..1 + rng.below(12))
            .map(|i| {
                vec![
                    kv("series", &format!("{}", rng.below(1_000) * 10 + i)),
                    kv("odd", ODD[rng.below(ODD.len() as u64) as usize]),
                    kv("k8s.node.name", &format!("node-{}", rng.below(3))),
                ]
            })
            .collect();
        let help = if k % 5 == 0 { "" } else { "a family" };
        let job = ["app", "", "kepler"][(k % 3) as usize];
        let scope = ["", "lib"][(k % 2) as usize];
        let m = metric(&format!("fam.{k:03}"), "", help, shape, attrs, 10, |i| {
            i as f64 + 0.5
        });
        ingest(&hub, &request(job, "i-1", scope, vec![m]));
    }
    // Several kinds under one name: counter `mixed_N` is `mixed_N_total`, like the gauge,
    // histogram and summary called `mixed_N_total`; the counter keeps the family, the smallest
    // non-empty HELP of the counters is shown. And a gauge with a summary: the gauge keeps it.
    for k in 0..20 {
        let attrs = |n: u64| (0..n).map(|i| vec![kv("x", &i.to_string())]).collect();
        let name = format!("mixed_{k:02}");
        let total = format!("{name}_total");
        let mut metrics = vec![
            metric(&total, "", "gauge help", Shape::Gauge, attrs(5), 10, |i| {
                i as f64
            }),
            metric(&total, "", "", Shape::Histogram, attrs(3), 10, |i| i as f64),
            metric(&total, "", "summary", Shape::Summary, attrs(2), 10, |i| {
                i as f64
            }),
        ];
        if k % 2 == 0 {
            metrics.push(metric(
                &name,
                "",
                ["zz", "", "b"][k % 3],
                Shape::Counter,
                attrs(4),
                10,
                |i| i as f64,
            ));
        }
        ingest(&hub, &request("app", "i-2", "", metrics));
        let other = vec![metric(
            &name,
            "",
            "counter",
            Shape::Counter,
            attrs(2),
            10,
            |i| i as f64,
        )];
        ingest(&hub, &request("other", "i-3", "", other));
    }
    // Two OTel metrics that translate to one series (`dup.N` and `dup_N`): the newer point
    // wins, then the larger value; in a big family (several batches per shard, and the two
    // copies of a series in different shards) and in small ones.
    let pad = "p".repeat(100);
    let big = |first: u64, n: u64| -> Vec<Vec<KeyValue>> {
        (first..first + n)
            .map(|i| vec![kv("series", &format!("{i:06}")), kv("pad", &pad)])
            .collect()
    };
    for (name, time, value) in [
        ("big.dup", 20, 1.0),
        ("big_dup", 10, 2.0),
        ("big:dup", 20, 3.0),
    ] {
        let m = metric(name, "", name, Shape::Gauge, big(0, 6_000), time, |i| {
            value + i as f64
        });
        ingest(&hub, &request("app", "i-4", "", vec![m]));
    }
    let m = metric(
        "big_dup",
        "",
        "",
        Shape::Gauge,
        big(6_000, 14_000),
        5,
        |i| i as f64,
    );
    ingest(&hub, &request("app", "i-4", "", vec![m]));
    for k in 0..10 {
        let a = vec![vec![kv("q", "x")], vec![kv("q", "y")]];
        let m1 = metric(
            &format!("dup.{k}"),
            "",
            "",
            Shape::Gauge,
            a.clone(),
            10 + k,
            |i| i as f64,
        );
        let m2 = metric(&format!("dup_{k}"), "", "", Shape::Gauge, a, 15, |i| {
            5.0 - i as f64
        });
        ingest(&hub, &request("app", "i-5", "", vec![m1, m2]));
    }
    // `job` as an attribute with the resource's value (exposed once) and without a resource
    // job (a plain label).
    let a = vec![vec![kv("job", "app"), kv("z", "1")]];
    ingest(
        &hub,
        &request(
            "app",
            "i-6",
            "",
            vec![metric("with_job", "", "", Shape::Gauge, a, 10, |_| 1.0)],
        ),
    );
    let a = vec![vec![kv("job", "mine"), kv("z", "2")]];
    ingest(
        &hub,
        &request(
            "",
            "",
            "",
            vec![metric("with_job", "", "", Shape::Gauge, a, 10, |_| 2.0)],
        ),
    );
    // Series that expire (not swept yet) beside live ones of the same families, and a family
    // that expires whole.
    let a = (0..50).map(|i| vec![kv("old", &i.to_string())]).collect();
    ingest(
        &hub,
        &request(
            "app",
            "i-7",
            "",
            vec![metric("fam.001", "", "", Shape::Counter, a, 10, |_| 1.0)],
        ),
    );
    let a = vec![vec![kv("gone", "1")]];
    ingest(
        &hub,
        &request(
            "app",
            "i-7",
            "",
            vec![metric("aaa.gone", "", "", Shape::Summary, a, 10, |_| 1.0)],
        ),
    );
    let a = vec![vec![kv("x", "0")]];
    ingest(
        &hub,
        &request(
            "app",
            "i-7",
            "",
            vec![metric("mixed_00", "", "", Shape::Counter, a, 10, |_| 1.0)],
        ),
    );
    clock.advance_ms(200_000);
    // Refresh everything but the `i-7` points.
    let refreshed = hub.store.len();
    assert!(refreshed > 20_000, "{refreshed}");
    (hub, clock)
}

fn assert_same_page(hub: &Hub, what: &str) {
    for format in [Format::Text, Format::OpenMetrics] {
        let streamed = render_as(hub, format);
        let collected = render_collected(hub, format).concat();
        if streamed != collected {
            let at = streamed
                .bytes()
                .zip(collected.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(streamed.len().min(collected.len()));
            let from = at.saturating_sub(300);
            panic!(
                "{what} ({format:?}): pages differ at byte {at} (lengths {} and {}):\n\
                 streamed:  {:?}\ncollected: {:?}",
                streamed.len(),
                collected.len(),
                &streamed[from..(at + 300).min(streamed.len())],
                &collected[from..(at + 300).min(collected.len())],
            );
        }
    }
}

#[test]
fn the_streamed_page_is_the_collected_page() {
    let (hub, clock) = mixed_store();
    assert_same_page(&hub, "all live");
    let text = render_as(&hub, Format::Text);
    // The choices the page depends on are really in the store.
    assert!(
        text.contains("# TYPE mixed_00_total counter\n"),
        "mixed kinds"
    );
    assert!(
        text.contains("# HELP mixed_00_total counter\n"),
        "smallest HELP"
    );
    assert!(text.contains("# TYPE mixed_01_total counter\n"));
    assert!(text.contains(r#"big_dup{cluster="hub",instance="i-4",job="app",pad=""#));
    assert!(text.contains("a\\\"b"), "escaped values");
    // One copy of each duplicated series: the newer point, then the larger value.
    let big = r#"big_dup{cluster="hub",instance="i-4",job="app",pad=""#;
    let first: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(big) && l.contains(r#"series="000000""#))
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].ends_with(" 1"), "{first:?}");
    for (k, x) in [(2, "5"), (5, "5"), (7, "0")] {
        let line = format!("dup_{k}{{cluster=\"hub\",instance=\"i-5\",job=\"app\",q=\"x\"}} {x}\n");
        assert!(text.contains(&line), "{line}");
    }
    // Some series expire (not swept yet): the pages still agree, then again after the sweep.
    clock.advance_ms(150_000);
    assert_same_page(&hub, "expired, not swept");
    assert!(hub.store.sweep() > 0);
    assert_same_page(&hub, "swept");
    // A metric whose unit changes moves its series to another family.
    let attrs = vec![vec![kv("a", "1")], vec![kv("a", "2")]];
    let joules = metric("energy", "J", "", Shape::Counter, attrs.clone(), 50, |_| {
        1.0
    });
    ingest(&hub, &request("app", "i-8", "", vec![joules]));
    assert_same_page(&hub, "joules");
    let ms = metric(
        "energy",
        "ms",
        "",
        Shape::Counter,
        attrs[..1].to_vec(),
        60,
        |_| 2.0,
    );
    ingest(&hub, &request("app", "i-8", "", vec![ms]));
    let text = render_as(&hub, Format::Text);
    assert!(text.contains("energy_milliseconds_total{"), "{text}");
    assert!(text.contains("energy_joules_total{"), "{text}");
    assert_same_page(&hub, "after a unit change");
}

/// Attributes that translate to one label name (ingest refuses them; the store itself takes
/// them): the label with the smallest value is kept, as the collected render keeps it.
#[test]
fn labels_that_collide_in_the_store_render_as_before() {
    let clock = Arc::new(ManualClock::new(START));
    let hub = Hub::new(Store::new(Limits::default(), 300_000, clock));
    let meta = Arc::new(Meta {
        prom_name: "clash".into(),
        kind: Kind::Gauge,
        help: String::new(),
    });
    let sets: [&[(&str, &str)]; 4] = [
        &[("a.b", "2"), ("a_b", "1")],
        &[("a.b", "0"), ("a_b", "3")],
        &[("job", "x"), ("k.job", "y")],
        &[("", "empty key"), ("z", "1")],
    ];
    for (i, set) in sets.iter().enumerate() {
        let attrs: Vec<Attr<'_>> = set.iter().map(|(k, v)| (*k, Cow::Borrowed(*v))).collect();
        let key = KeyRef {
            metric: "clash",
            kind: Kind::Gauge,
            scope_name: "s",
            scope_version: "",
            job: if i == 2 { "j" } else { "" },
            instance: "",
            attrs: &attrs,
        };
        let point = Point {
            start_unix_nano: 0,
            time_unix_nano: 1,
            value: Value::Number(i as f64),
            delta: false,
        };
        hub.store
            .apply(
                &key,
                &meta,
                point,
                START,
                &mut Lookup::default(),
                Hint::default(),
            )
            .unwrap();
    }
    assert_same_page(&hub, "colliding labels");
    let text = render_as(&hub, Format::Text);
    assert!(
        text.contains(r#"clash{a_b="0",otel_scope_name="s"} 1"#),
        "{text}"
    );
}

#[test]
fn pieces_are_about_the_piece_size() {
    let (hub, _clock) = mixed_store();
    let whole = render_as(&hub, Format::Text);
    let longest_series = 2_000;
    for piece in [1, 1_000, 16 << 10, PIECE] {
        let mut pieces = Vec::new();
        assert!(render_each_sized(&hub, Format::Text, piece, |p| {
            pieces.push(p);
            true
        }));
        assert_eq!(pieces.concat(), whole, "piece size {piece}");
        let (last, full) = pieces.split_last().unwrap();
        assert!(last.len() < piece + 8 * 1024 + longest_series);
        for p in full {
            assert!(
                p.len() >= piece,
                "a piece of {} bytes (size {piece})",
                p.len()
            );
            assert!(
                p.len() < piece + 4 * 1024 + 2 * longest_series,
                "a piece of {} bytes (size {piece})",
                p.len()
            );
            assert!(p.ends_with('\n'));
        }
        if piece == PIECE {
            assert!(pieces.len() > 20, "{} pieces", pieces.len());
        }
    }
}

#[test]
fn a_render_stops_when_its_receiver_goes() {
    let (hub, _clock) = mixed_store();
    let mut handed = 0;
    assert!(!render_each(&hub, Format::Text, |_| {
        handed += 1;
        handed < 3
    }));
    assert_eq!(handed, 3);
}

/// Points applied between the pieces of a page (updates, new series before and after the
/// render's position, new families, a family moved by a unit change, a sweep) leave the page
/// well-formed: every family once, in name order, no series twice.
#[test]
fn points_applied_while_a_page_is_sent_leave_it_well_formed() {
    let (hub, clock) = mixed_store();
    let mut round = 0u64;
    let mut pieces = Vec::new();
    assert!(render_each_sized(&hub, Format::Text, 4_096, |p| {
        pieces.push(p);
        round += 1;
        let a: Vec<Vec<KeyValue>> = (0..20)
            .map(|i| {
                vec![
                    kv("series", &format!("{:06}", (round * 7 + i) % 30_000)),
                    kv("pad", "n"),
                ]
            })
            .collect();
        let m = metric("big_dup", "", "", Shape::Gauge, a, 100 + round, |i| {
            i as f64
        });
        let fresh = metric(
            &format!("fam.{:03}x", round % 400),
            "",
            "",
            Shape::Gauge,
            vec![vec![kv("r", "1")]],
            10,
            |_| 1.0,
        );
        let unit = ["J", "ms"][(round % 2) as usize];
        let moved = metric(
            "energy",
            unit,
            "",
            Shape::Counter,
            vec![vec![kv("a", "1")]],
            100 + round,
            |_| 1.0,
        );
        ingest(&hub, &request("app", "i-4", "", vec![m, fresh, moved]));
        if round % 50 == 0 {
            clock.advance_ms(1_000);
            hub.store.sweep();
        }
        true
    }));
    let text = pieces.concat();
    let mut families = Vec::new();
    let mut series = HashSet::new();
    let mut family = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
            families.push(family.to_string());
        } else if !line.starts_with('#') {
            let (name_labels, _) = line.rsplit_once(' ').unwrap();
            assert!(name_labels.starts_with(family), "{line} outside {family}");
            assert!(series.insert(name_labels.to_string()), "twice: {line}");
        }
    }
    let store_families: Vec<&String> = families
        .iter()
        .take_while(|f| *f != "target_info")
        .collect();
    assert!(
        store_families.windows(2).all(|w| w[0] < w[1]),
        "families out of order"
    );
    assert!(round > 100, "{round} pieces");
}
