//! What every fuzz target checks once a body decoded: the hub applies it (every data point
//! either accepted, rejected or skipped, never more) and renders a well-formed exposition,
//! whatever the request held. A decoding failure is fine (the client gets a 400); a panic is a
//! bug.

use kepler_collector::clock::ManualClock;
use kepler_collector::exposition::render;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::sync::Arc;

/// How the spoke listeners label what they receive (the cluster bound to the token).
pub const SPOKE: Labeling<'static> = Labeling {
    insert_cluster: None,
    force_cluster: Some("cluster1"),
};

/// A small hub: limits low enough that a fuzz input reaches them.
pub fn hub() -> Hub {
    Hub::new(Store::new(
        Limits {
            max_series: 2_000,
            max_series_per_cluster: 500,
        },
        300_000,
        Arc::new(ManualClock::new(1_000)),
    ))
}

/// Data points in a request, of every kind.
fn points(request: &ExportMetricsServiceRequest) -> u64 {
    let mut n = 0;
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                } as u64;
            }
        }
    }
    n
}

/// Ingests a decoded request through the hub listener's labeling, then again (known series)
/// through a spoke's, and renders the result.
pub fn ingest_and_render(request: &ExportMetricsServiceRequest) {
    let hub = hub();
    let total = points(request);
    for labeling in [
        Labeling {
            insert_cluster: Some("hub"),
            force_cluster: None,
        },
        SPOKE,
    ] {
        let outcome = hub.ingest(request, labeling);
        assert!(
            outcome.accepted + outcome.rejected <= total,
            "{outcome:?} for {total} points"
        );
        assert_eq!(
            outcome.rejected == 0,
            outcome.message.is_empty(),
            "{outcome:?}"
        );
    }
    let text = render(&hub);
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad value in {line:?}"
        );
    }
}
