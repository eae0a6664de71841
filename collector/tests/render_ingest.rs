//! Rendering does not block ingestion: a render of a large store on one thread while another
//! thread's ingests keep completing inside it; the store visit that rendering uses stopped in
//! the middle while ingests into other shards complete; and a `/metrics` client that stops
//! reading in the middle of a large answer while OTLP ingestion (and other scrapes) carry on.
//! The tests assert progress, never speed: they wait for conditions with generous deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kepler_collector::clock::ManualClock;
use kepler_collector::exposition::render;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gauge points `first .. first + n` of metric `name`, series `i` labelled `series="<i>"` (and
/// `pad` with `pad` bytes when `pad > 0`), all with value `value`.
fn gauges(
    name: &str,
    first: usize,
    n: usize,
    pad: usize,
    value: f64,
) -> ExportMetricsServiceRequest {
    let attributes = (first..first + n).map(|i| {
        let mut attributes = vec![string_kv("series", i.to_string())];
        if pad > 0 {
            attributes.push(string_kv("pad", "p".repeat(pad)));
        }
        attributes
    });
    gauge_request(name, attributes, value)
}

/// How many ingests must complete inside one render for the test to pass.
const INSIDE_ONE_RENDER: u64 = 10;

#[test]
fn ingests_complete_while_a_render_of_a_large_store_is_in_progress() {
    const SERIES: usize = 100_000;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let hub = Arc::new(Hub::new(Store::new(Limits::default(), 300_000, clock)));
    for first in (0..SERIES).step_by(1_000) {
        let outcome = hub.ingest(&gauges("big", first, 1_000, 0, 1.0), Labeling::default());
        assert_eq!(outcome.rejected, 0, "{outcome:?}");
    }
    // Renders run back to back on their own thread; `started` and `finished` count them, so
    // render number g is in progress while started == g and finished == g - 1.
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let renderer = {
        let (hub, started, finished, stop) =
            (hub.clone(), started.clone(), finished.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut longest = 0;
            while !stop.load(SeqCst) {
                started.fetch_add(1, SeqCst);
                let text = render(&hub);
                finished.fetch_add(1, SeqCst);
                longest = longest.max(text.len());
            }
            longest
        })
    };
    let deadline = Instant::now() + PATIENCE * 2;
    let mut best = 0;
    let mut ingests = 0u64;
    let mut value = 2.0;
    while best < INSIDE_ONE_RENDER {
        assert!(
            Instant::now() < deadline,
            "no render let {INSIDE_ONE_RENDER} ingests complete inside it (best {best}, \
             {} renders, {ingests} ingests)",
            finished.load(SeqCst)
        );
        let generation = started.load(SeqCst);
        if generation == 0 || finished.load(SeqCst) != generation - 1 {
            std::thread::yield_now();
            continue;
        }
        // Render `generation` is in progress: count the ingests that start and finish inside it.
        let mut inside = 0;
        loop {
            let series = (ingests as usize * 7_919) % SERIES;
            value += 1.0;
            let outcome = hub.ingest(&gauges("big", series, 1, 0, value), Labeling::default());
            assert_eq!((outcome.accepted, outcome.rejected), (1, 0), "{outcome:?}");
            ingests += 1;
            if finished.load(SeqCst) != generation - 1 {
                break;
            }
            inside += 1;
            if inside == INSIDE_ONE_RENDER {
                break;
            }
        }
        best = best.max(inside);
    }
    stop.store(true, SeqCst);
    let longest = renderer.join().unwrap();
    assert!(
        longest > 2_000_000,
        "the store was too small: {longest} bytes"
    );
    println!(
        "{best} ingests completed inside one render of {longest} bytes \
         ({ingests} ingests, {} renders)",
        finished.load(SeqCst)
    );
}

/// The store visit that rendering (and remote write) use holds one shard at a time: with the
/// visitor stopped in the middle of the store, ingests into the other shards complete. Sixteen
/// threads each update one series; a series lands in the visited shard with probability 1/64,
/// so at least eight of them must finish while the visitor waits (if the visit held the whole
/// store, none would).
#[test]
fn ingests_into_other_shards_complete_while_a_visit_is_stopped_midway() {
    const SERIES: usize = 10_000;
    const THREADS: usize = 16;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let hub = Arc::new(Hub::new(Store::new(Limits::default(), 300_000, clock)));
    for first in (0..SERIES).step_by(1_000) {
        hub.ingest(&gauges("big", first, 1_000, 0, 1.0), Labeling::default());
    }
    let done = Arc::new(AtomicU64::new(0));
    let mut visited = 0;
    let mut waited = false;
    let mut writers = Vec::new();
    hub.store.for_each_live(|_, _| {
        visited += 1;
        if visited != SERIES / 2 {
            return;
        }
        waited = true;
        for t in 0..THREADS {
            let (hub, done) = (hub.clone(), done.clone());
            writers.push(std::thread::spawn(move || {
                let outcome = hub.ingest(&gauges("big", t * 601, 1, 0, 2.0), Labeling::default());
                assert_eq!(outcome.accepted, 1, "{outcome:?}");
                done.fetch_add(1, SeqCst);
            }));
        }
        let deadline = Instant::now() + PATIENCE;
        while done.load(SeqCst) < THREADS as u64 / 2 {
            assert!(
                Instant::now() < deadline,
                "only {} of {THREADS} ingests completed while the visit was stopped",
                done.load(SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert!(waited && visited == SERIES, "{visited}");
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(done.load(SeqCst), THREADS as u64);
}

/// The `/metrics` answer is far larger than what the kernel buffers for a client that stops
/// reading (its receive window stays at the initial ~128 KiB when it does not read, and the
/// sender's buffer is at most `tcp_wmem` max, 4 MiB here), so the hub is in the middle of
/// writing to that client for the whole ingestion phase.
#[test]
fn a_metrics_client_that_stops_reading_does_not_stall_ingestion() {
    const SERIES: usize = 20_000;
    const PAD: usize = 1_000;
    let hub = HubProcess::start(&loopback_config("", ""));
    let otlp = hub.addr("hub-http");
    let post = |request: &ExportMetricsServiceRequest| {
        let (status, _, body) = http(
            otlp,
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/x-protobuf")],
            &request.encode_to_vec(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    };
    for first in (0..SERIES).step_by(2_000) {
        post(&gauges("big", first, 2_000, PAD, 1.0));
    }
    // The slow client: asks for /metrics, reads 1 KiB, then stops reading.
    let mut slow = TcpStream::connect(hub.addr("exposition")).unwrap();
    slow.set_read_timeout(Some(PATIENCE)).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.0\r\nHost: hub\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 1024];
    slow.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"));

    // Meanwhile: OTLP requests complete, their points are applied, and other scrapes answer.
    for round in 0..5 {
        let value = 100.0 + f64::from(round);
        post(&gauges("small", 0, 10, 0, value));
        post(&gauges("big", round as usize, 1, PAD, value));
        let text = hub.metrics();
        assert!(
            text.contains(&format!("small{{cluster=\"hub\",series=\"9\"}} {value}\n")),
            "round {round}: the new point is not exposed"
        );
        assert!(
            text.lines().any(|l| l.starts_with("big{")
                && l.contains(&format!("series=\"{round}\""))
                && l.ends_with(&format!(" {value}"))),
            "round {round}: the updated series is not exposed"
        );
    }

    // The slow client still gets its whole answer.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    let total = head.len() + rest.len();
    assert!(
        total > 16 << 20,
        "answer too small to fill the buffers: {total} bytes"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.ends_with('\n') && text.contains("kepler_collector_series_active"),
        "truncated answer"
    );
}
