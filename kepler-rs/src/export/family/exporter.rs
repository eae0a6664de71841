//! The exporter's own health families (`kepler_exporter_*`: errors, OTLP exports, eBPF program
//! statistics, the sources in use, the served snapshot's time and sequence), served with every
//! schema.

use std::time::UNIX_EPOCH;

use super::{Family, MetricType, Value};
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::Snapshot;

/// The exporter's own health metrics (`kepler_exporter_*`), served with every schema.
pub fn exporter_families<'a>(
    s: &'a Snapshot,
    self_metrics: &SelfMetrics,
    out: &mut Vec<Family<'a>>,
) {
    let errors = self_metrics.errors();
    let exports = self_metrics.exports();
    let programs = self_metrics.program_stats();
    let runs = programs.clone();
    out.push(Family::new(
        "kepler_exporter_errors_total",
        "Runtime errors of the exporter since start-up, by component and reason.",
        MetricType::Counter,
        "",
        move |out| {
            for (component, reason, count) in &errors {
                let labels = [("component", *component), ("reason", *reason)];
                out(&labels, Value::Float(*count as f64));
            }
        },
    ));
    out.push(Family::new(
        "kepler_exporter_otlp_exports_total",
        "OTLP export requests since start-up, by pipeline (push: our metrics, relay: relayed \
         scrapes) and result: sent (accepted, partial success included), failed (one failed \
         attempt) or dropped (data given up: permanent error, or replaced by newer data).",
        MetricType::Counter,
        "",
        move |out| {
            for (pipeline, result, count) in &exports {
                let labels = [("pipeline", *pipeline), ("result", *result)];
                out(&labels, Value::Float(*count as f64));
            }
        },
    ));
    out.push(Family::new(
        "kepler_exporter_ebpf_program_run_seconds_total",
        "Time the kernel spent running each attached eBPF program since it was loaded, as the \
         kernel counts it: only while kernel.bpf_stats_enabled is 1 (absent until then). Divided \
         by kepler_exporter_ebpf_program_runs_total it is the cost of one run (one context switch \
         for kepler_sched_switch), including the statistics' own clock reads.",
        MetricType::Counter,
        "s",
        move |out| {
            for (program, time, _) in &programs {
                out(&[("program", *program)], Value::Float(time.as_secs_f64()));
            }
        },
    ));
    out.push(Family::new(
        "kepler_exporter_ebpf_program_runs_total",
        "Runs of each attached eBPF program since it was loaded, as the kernel counts them: only \
         while kernel.bpf_stats_enabled is 1 (absent until then).",
        MetricType::Counter,
        "",
        move |out| {
            for (program, _, count) in &runs {
                out(&[("program", *program)], Value::Float(*count as f64));
            }
        },
    ));
    out.push(Family::new(
        "kepler_exporter_cpu_time_source",
        "The CPU-time source in use (always 1; the source label names it).",
        MetricType::Gauge,
        "",
        move |out| out(&[("source", s.cpu_time_source)], Value::Float(1.0)),
    ));
    out.push(Family::new(
        "kepler_exporter_power_source",
        "The energy source in use (always 1; the source label names it).",
        MetricType::Gauge,
        "",
        move |out| out(&[("source", s.power_source)], Value::Float(1.0)),
    ));
    out.push(Family::new(
        "kepler_exporter_snapshot_timestamp_seconds",
        "When the served measurement was taken, in seconds since the Unix epoch (0: none yet).",
        MetricType::Gauge,
        "s",
        move |out| {
            let secs = s
                .taken_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            out(&[], Value::Float(secs));
        },
    ));
    out.push(Family::new(
        "kepler_exporter_snapshot_sequence",
        "Number of measurement intervals completed since start-up (the served snapshot's \
         sequence number; only grows).",
        MetricType::Gauge,
        "",
        move |out| out(&[], Value::Float(s.sequence as f64)),
    ));
}
