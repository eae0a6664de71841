//! The end of every page: `target_info` (one sample per job + instance, with the other
//! resource attributes as labels) and the hub's own `kepler_collector_*` metrics.

use crate::ingest::Hub;
use crate::translate;
use kepler_prom_text::{Encoder, MetricType};

/// Adds attributes (in key order) as labels; colliding sanitized names join values with `;`
/// (only resource attributes can collide: ingest refuses data points whose attributes do).
fn push_attrs<'a>(
    labels: &mut Vec<(String, String)>,
    attrs: impl Iterator<Item = (&'a str, &'a str)>,
) {
    for (key, value) in attrs {
        let Some(name) = translate::label_name(key) else {
            continue;
        };
        match labels.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => {
                entry.1.push(';');
                entry.1.push_str(value);
            }
            None => labels.push((name, value.to_string())),
        }
    }
}

/// Writes `target_info` (resource attributes that sanitize to the same label have their values
/// joined with `;` in key order, and a resource with a reserved `__*` label gets none, as in the
/// Collector) and the hub's own metrics.
pub(super) fn write_tail(hub: &Hub, enc: &mut Encoder) {
    let mut targets = hub.store.live_targets();
    targets.sort();
    enc.family("target_info", "Target metadata", MetricType::Gauge);
    for (job, instance, attrs) in &targets {
        let mut labels = Vec::with_capacity(attrs.len() + 2);
        push_attrs(
            &mut labels,
            attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if labels.iter().any(|(n, _)| n.starts_with("__")) {
            continue;
        }
        labels.retain(|(n, _)| n != "job" && n != "instance");
        labels.push(("job".to_string(), job.to_string()));
        labels.push(("instance".to_string(), instance.to_string()));
        labels.sort();
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        enc.sample("target_info", &refs, 1.0);
    }
    hub.metrics.render(enc, &hub.store);
}
