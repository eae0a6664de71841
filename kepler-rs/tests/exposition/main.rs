#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exposition tests: hand-built snapshots rendered as Kepler's classic family and compared
//! byte for byte with golden files (`UPDATE_GOLDEN=1` rewrites them), checked with the real
//! `promtool check metrics`, checked against the metric names and label sets of
//! docs/metrics.md, and served through the axum router without a socket.

#[path = "../common/mod.rs"]
mod common;
mod contract;
mod events;
mod http;
mod reference;
mod snapshots;
mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use kepler_rs::export::prometheus::{
    render_classic, BuildInfo, Format, RenderOptions, CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT,
    PIECE_BYTES,
};
use kepler_rs::power::units::{CpuNanos, Microjoules, Watts};
use kepler_rs::power::{ZoneId, ZoneKind};
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::server::{router, serve, AppState, MAX_PARALLEL_SCRAPES};
use kepler_rs::snapshot::{
    EnergyByKind, ModeSplit, NodeInfo, NodeZone, ProcessEnergy, Snapshot, State, VmEnergy,
    WorkloadEnergy,
};
use kepler_rs::workload::vm::VmIdentity;
use kepler_rs::workload::{ContainerIdentity, Runtime, WorkloadKey};
use tower::ServiceExt;

use snapshots::*;

// Golden files and promtool

#[test]
fn golden_outputs() {
    for (name, output, _) in cases() {
        common::check_golden(name, &output);
    }
}

#[test]
fn rendering_is_deterministic() {
    for ((name, a, _), (_, b, _)) in cases().into_iter().zip(cases()) {
        assert_eq!(a, b, "{name} changed between two renders");
    }
}

#[test]
fn promtool_accepts_text_outputs() {
    for (name, output, format) in cases() {
        // promtool 2.42 `check metrics` parses only the 0.0.4 text format.
        if format == Format::Text {
            common::assert_promtool_accepts(name, &output);
        }
    }
}

#[test]
fn promtool_catches_what_we_guard_against() {
    // The harness must fail on real problems: a bad escape and a counter without `_total`.
    let broken = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"\\q\"} 1\n";
    let Some((code, _)) = common::promtool_check(broken) else {
        return;
    };
    assert_eq!(code, 1, "a parse error must fail");
    let lint = "# HELP x X.\n# TYPE x counter\nx 1\n";
    let (code, printed) = common::promtool_check(lint).unwrap();
    assert_eq!(code, 3, "{printed}");
    assert!(!printed.lines().all(common::is_accepted_lint));
}
