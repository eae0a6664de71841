//! Relayed families -> OTLP metrics, keeping counter semantics across scrapes.
//!
//! A [`Tracker`] remembers, per series of one target, when it was first seen and its last
//! value: counters become cumulative monotonic Sums whose `start_time_unix_nano` is the first
//! scrape that saw the series, and a value that goes down (a restarted container, a restarted
//! kubelet) is a reset that moves the start to the previous scrape, as the OTLP data model
//! marks resets. Histograms (bucket counts de-cumulated, `+Inf` last) and summaries keep their
//! shape and are tracked by their count the same way; gauges and untyped samples are Gauges.
//! The tracker forgets series a scrape no longer shows, so its memory follows the target.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, Summary, SummaryDataPoint,
};
use prometheus_parse::SampleType;

use super::parse::{Family, Labels, SeriesValue};
use crate::config::relay::MetricFilter;
use crate::export::otlp::convert::{kv, unix_nanos, CLUSTER_ATTRIBUTE};

#[derive(Debug, Clone, Copy)]
struct SeriesState {
    start: u64,
    last_total: f64,
    last_time: u64,
    generation: u64,
}

/// Counter state of one target's series.
#[derive(Debug, Default)]
pub struct Tracker {
    series: HashMap<(String, Labels), SeriesState>,
    generation: u64,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series remembered (the last scrape's).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Start time of a cumulative series whose running total is `total` at `now`.
    fn start(&mut self, name: &str, labels: &Labels, total: f64, now: u64) -> u64 {
        let generation = self.generation;
        let state = self
            .series
            .entry((name.to_string(), labels.clone()))
            .or_insert(SeriesState {
                start: now,
                last_total: total,
                last_time: now,
                generation,
            });
        if total < state.last_total {
            // Reset: the counter restarted after the previous scrape.
            state.start = state.last_time;
        }
        state.last_total = total;
        state.last_time = now;
        state.generation = generation;
        state.start
    }

    /// Converts one scrape taken at `now`.
    pub fn convert(
        &mut self,
        families: &[Family],
        now: SystemTime,
        filter: &MetricFilter,
        cluster: Option<&str>,
    ) -> Vec<Metric> {
        self.generation += 1;
        let time = unix_nanos(now);
        let mut out = Vec::with_capacity(families.len());
        for family in families {
            let attributes = |labels: &Labels| -> Vec<KeyValue> {
                let mut attrs: Vec<KeyValue> = labels
                    .iter()
                    .filter(|(k, _)| filter.keeps_label(k) && k != CLUSTER_ATTRIBUTE)
                    .map(|(k, v)| kv(k, v))
                    .collect();
                if let Some(cluster) = cluster {
                    attrs.push(kv(CLUSTER_ATTRIBUTE, cluster));
                }
                attrs
            };
            let data = match family.kind {
                SampleType::Counter => {
                    let mut points = Vec::new();
                    for (labels, value) in &family.series {
                        if let SeriesValue::Number(v) = value {
                            points.push(NumberDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: self.start(&family.name, labels, *v, time),
                                time_unix_nano: time,
                                value: Some(number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            });
                        }
                    }
                    metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                }
                SampleType::Histogram => {
                    let mut points = Vec::new();
                    for (labels, value) in &family.series {
                        if let SeriesValue::Histogram {
                            buckets,
                            sum,
                            count,
                        } = value
                        {
                            let total =
                                count.or_else(|| buckets.last().map(|b| b.1)).unwrap_or(0.0);
                            let start = self.start(&family.name, labels, total, time);
                            points.push(histogram_point(
                                attributes(labels),
                                start,
                                time,
                                buckets,
                                *sum,
                                total,
                            ));
                        }
                    }
                    metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })
                }
                SampleType::Summary => {
                    let mut points = Vec::new();
                    for (labels, value) in &family.series {
                        if let SeriesValue::Summary {
                            quantiles,
                            sum,
                            count,
                        } = value
                        {
                            let total = count.unwrap_or(0.0);
                            points.push(SummaryDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: self.start(&family.name, labels, total, time),
                                time_unix_nano: time,
                                count: total.max(0.0) as u64,
                                sum: sum.unwrap_or(0.0),
                                quantile_values: quantiles
                                    .iter()
                                    .map(|(q, v)| ValueAtQuantile {
                                        quantile: *q,
                                        value: *v,
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                        }
                    }
                    metric::Data::Summary(Summary {
                        data_points: points,
                    })
                }
                SampleType::Gauge | SampleType::Untyped => {
                    let points = family
                        .series
                        .iter()
                        .filter_map(|(labels, value)| match value {
                            SeriesValue::Number(v) => Some(NumberDataPoint {
                                attributes: attributes(labels),
                                time_unix_nano: time,
                                value: Some(number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            }),
                            _ => None,
                        })
                        .collect();
                    metric::Data::Gauge(Gauge {
                        data_points: points,
                    })
                }
            };
            out.push(Metric {
                name: family.name.clone(),
                description: family.help.clone(),
                data: Some(data),
                ..Default::default()
            });
        }
        let generation = self.generation;
        self.series.retain(|_, s| s.generation == generation);
        out
    }
}

/// An OTLP histogram point from Prometheus cumulative buckets: explicit bounds are the finite
/// `le` values, bucket counts the per-bucket (non-cumulative) counts, the last one above the
/// largest bound (from `+Inf`, or from the count when `+Inf` is missing).
fn histogram_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    buckets: &[(f64, f64)],
    sum: Option<f64>,
    count: f64,
) -> HistogramDataPoint {
    let mut explicit_bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut previous = 0.0_f64;
    for (le, cumulative) in buckets.iter().filter(|(le, _)| le.is_finite()) {
        explicit_bounds.push(*le);
        bucket_counts.push((cumulative - previous).max(0.0) as u64);
        previous = previous.max(*cumulative);
    }
    bucket_counts.push((count - previous).max(0.0) as u64);
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: count.max(0.0) as u64,
        sum,
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::relay::parse::parse;
    use std::time::{Duration, UNIX_EPOCH};

    fn page(cpu: f64, count: u64) -> String {
        format!(
            "# TYPE c_total counter\nc_total{{pod=\"p\",id=\"/x\"}} {cpu}\n\
             # TYPE g gauge\ng 7\n\
             # TYPE h histogram\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"2\"}} 3\n\
             h_bucket{{le=\"+Inf\"}} {count}\nh_sum 9\nh_count {count}\n"
        )
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn filter() -> MetricFilter {
        MetricFilter::new(vec!["*".into()], vec!["id".into()])
    }

    fn sum_point(metrics: &[Metric]) -> &NumberDataPoint {
        metrics
            .iter()
            .find_map(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.first(),
                _ => None,
            })
            .unwrap()
    }

    fn hist_point(metrics: &[Metric]) -> &HistogramDataPoint {
        metrics
            .iter()
            .find_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.first(),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn counters_keep_their_start_until_a_reset() {
        let mut t = Tracker::new();
        let one = t.convert(
            &parse(&page(10.0, 4), |_| true).unwrap(),
            at(100),
            &filter(),
            Some("c1"),
        );
        let p = sum_point(&one);
        assert_eq!(
            p.start_time_unix_nano,
            unix_nanos(at(100)),
            "start = first seen"
        );
        assert_eq!(
            p.attributes,
            vec![kv("pod", "p"), kv("cluster", "c1")],
            "id dropped, cluster added"
        );
        let two = t.convert(
            &parse(&page(15.0, 6), |_| true).unwrap(),
            at(130),
            &filter(),
            Some("c1"),
        );
        assert_eq!(sum_point(&two).start_time_unix_nano, unix_nanos(at(100)));
        assert_eq!(hist_point(&two).start_time_unix_nano, unix_nanos(at(100)));
        // The counter and the histogram restart: new start = the previous scrape.
        let three = t.convert(
            &parse(&page(2.0, 3), |_| true).unwrap(),
            at(160),
            &filter(),
            Some("c1"),
        );
        assert_eq!(sum_point(&three).start_time_unix_nano, unix_nanos(at(130)));
        assert_eq!(hist_point(&three).start_time_unix_nano, unix_nanos(at(130)));
        let four = t.convert(
            &parse(&page(3.0, 4), |_| true).unwrap(),
            at(190),
            &filter(),
            None,
        );
        assert_eq!(sum_point(&four).start_time_unix_nano, unix_nanos(at(130)));
        assert_eq!(sum_point(&four).attributes, vec![kv("pod", "p")]);
        assert_eq!(t.len(), 2);
        // Series that disappear are forgotten.
        t.convert(&[], at(220), &filter(), None);
        assert!(t.is_empty());
    }

    #[test]
    fn histograms_are_decumulated() {
        let mut t = Tracker::new();
        let m = t.convert(
            &parse(&page(1.0, 4), |_| true).unwrap(),
            at(1),
            &filter(),
            None,
        );
        let h = hist_point(&m);
        assert_eq!(h.explicit_bounds, vec![1.0, 2.0]);
        assert_eq!(h.bucket_counts, vec![1, 2, 1]);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum, Some(9.0));
        let gauge = m.iter().find(|m| m.name == "g").unwrap();
        assert!(matches!(gauge.data, Some(metric::Data::Gauge(_))));
    }
}
