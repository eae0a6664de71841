#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! kepler-collector against the real OpenTelemetry Collector, side by side (a benchmark run by
//! hand, not a test).
//!
//! **Hubs.** Each hub runs alone as a child process configured as the reference deployment's
//! hub (`versus_collector/configs.rs`) on free loopback ports, and the same load generator
//! (`versus_collector/load.rs`: tonic OTLP/gRPC pushes of kepler-rs-shaped points, 1,000 per
//! request, 4 requests in flight, uncompressed unless said) sends to its hub gRPC listener
//! (4317's role):
//! 1. fills N/10 series, then re-sends them 10 rounds with grown values (known series), then
//!    10 rounds more gzipped (as kepler-rs and the Collector's otlp exporter send by default);
//! 2. reads VmRSS / VmHWM, then `GET /metrics` and checks that all N/10 series are on the page;
//! 3. fills the rest up to N series, reads memory, `GET /metrics` twice (wall time, size, the
//!    hub's CPU meanwhile, series counted; the first after the new series, the second with
//!    none new), then re-sends all N once.
//!
//! CPU is the hub process's own (`/proc/<pid>/stat` utime + stime, all threads), read before a
//! phase and 0.5 s after its last answer, so other work on the host does not count; points are
//! those acknowledged (answered OK, less any partial-success rejections).
//!
//! **Spokes.** kepler-rs (`--fake-rapl --ebpf.enabled=false --metrics.processes`, measuring
//! every second) either scraped every second by the real Collector as the reference spoke
//! (prometheus receiver, attributes, otlp exporter to a sink) or pushing its own OTLP/gRPC every
//! second to the sink; CPU of kepler-rs and of the Collector over 30 s. The sink is a
//! kepler-collector whose CPU is shown but belongs to neither side.
//!
//! It lives in `kepler-e2e` (not `collector/benches`) because it runs two workspace binaries,
//! kepler-rs and kepler-collector, and a peer program, as the end-to-end tests do: a bench of
//! `kepler-collector` could only name its own binary. Needs them built:
//!   cargo build --release -p kepler-rs -p kepler-collector   (scripts/peers.sh: the Collector)
//!   cargo bench -p kepler-e2e --bench versus_collector             (N = 1,000,000)
//!   cargo bench -p kepler-e2e --bench versus_collector -- 100000   (N = 100,000)
//!   cargo bench -p kepler-e2e --bench versus_collector -- hubs     (or `spoke`: one part)

#[path = "versus_collector/configs.rs"]
mod configs;
#[path = "versus_collector/load.rs"]
mod load;
#[path = "versus_collector/proc.rs"]
mod proc;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use configs::HubPorts;
use kepler_test_support::peers::require_peer;
use kepler_test_support::require::require_binary;
use load::{now_ns, POINTS_PER_REQUEST};
use proc::{get_metrics, Memory, Page, Proc};

/// Rounds of re-sending the N/10 known series (uncompressed; as many again gzipped).
const KNOWN_ROUNDS: u64 = 10;
/// Wait after a phase's last answer before reading the hub's CPU (work it finishes late, such
/// as a garbage collection, still counts).
const SETTLE_CPU: Duration = Duration::from_millis(500);
/// Further wait before reading memory.
const SETTLE_MEMORY: Duration = Duration::from_millis(1500);
/// The spoke measurement window.
const SPOKE_WINDOW: Duration = Duration::from_secs(30);
/// The two families of the load, as their series start on the page.
const FAMILIES: [&str; 2] = [
    "kepler_container_joules_total{",
    "kepler_container_cpu_watts{",
];

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "versus_collector benchmark: not run (use `cargo bench -p kepler-e2e --bench versus_collector`)"
        );
        return;
    }
    let large = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    let unit = 10 * POINTS_PER_REQUEST;
    assert!(
        large >= unit && large % unit == 0 && large <= 2_000_000,
        "N must be a multiple of {unit} up to 2,000,000 (kepler-collector's default series limit)"
    );
    let hubs_asked = std::env::args().any(|a| a == "hubs");
    let spoke_asked = std::env::args().any(|a| a == "spoke");
    let (hubs, spoke) = (hubs_asked || !spoke_asked, spoke_asked || !hubs_asked);
    let (Some(collector), Some(exporter), Some(otelcol)) = (
        require_binary("kepler-collector"),
        require_binary("kepler-rs"),
        require_peer("otelcol"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    print_setting(&collector, &exporter, &otelcol);

    if hubs {
        let ours = run_hub(Hub::Kepler, &collector, large, dir.path());
        let theirs = run_hub(Hub::Otel, &otelcol, large, dir.path());
        print_hubs(&ours, &theirs, large);
    }
    if spoke {
        let scraped = run_spoke(Spoke::Scraped, &exporter, &otelcol, &collector, dir.path());
        let pushed = run_spoke(Spoke::Pushing, &exporter, &otelcol, &collector, dir.path());
        print_spokes(&scraped, &pushed);
    }
}

// The setting

fn first_line(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_setting(collector: &Path, exporter: &Path, otelcol: &Path) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let revision = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "host: {cpu}, {cores} cores, kernel {}; load {}; tree at {revision}",
        kernel.trim(),
        loadavg()
    );
    println!("kepler-collector: {}", collector.display());
    println!(
        "kepler-rs: {} ({})",
        exporter.display(),
        first_line(exporter, "--version")
    );
    println!(
        "Collector: {} ({})",
        otelcol.display(),
        first_line(otelcol, "--version")
    );
    println!("CPU figures are CPU time of the processes (/proc/<pid>/stat), not wall time.\n");
}

// Hubs

#[derive(Debug, Clone, Copy, PartialEq)]
enum Hub {
    Kepler,
    Otel,
}

impl Hub {
    fn name(self) -> &'static str {
        match self {
            Hub::Kepler => "kepler-collector",
            Hub::Otel => "OpenTelemetry Collector",
        }
    }
}

/// Points acknowledged and the hub's CPU over one phase.
#[derive(Debug, Default, Clone, Copy)]
struct Phase {
    points: u64,
    cpu: f64,
    wall: Duration,
}

impl Phase {
    fn add(&mut self, other: Phase) {
        self.points += other.points;
        self.cpu += other.cpu;
        self.wall += other.wall;
    }

    fn per_cpu_second(&self) -> f64 {
        self.points as f64 / self.cpu.max(0.01)
    }
}

#[derive(Debug, Default)]
struct HubRun {
    started: Memory,
    fill_small: Phase,
    known_small: Phase,
    known_small_gzip: Phase,
    fill_large: Phase,
    known_large: Phase,
    at_small: Memory,
    page_small: Page,
    at_large: Memory,
    page_large: Page,
    render_cpu: f64,
    /// The same page again: no new series since the first.
    page_again: Page,
    render_again_cpu: f64,
    after_render: Memory,
    load: String,
}

/// One phase: pushes `requests` of `round`; the hub's CPU from before the first to
/// [`SETTLE_CPU`] after the last answer.
fn phase(
    hub: &mut Proc,
    addr: SocketAddr,
    requests: std::ops::Range<usize>,
    round: u64,
    start: u64,
    gzip: bool,
) -> Phase {
    let cpu = hub.cpu_seconds();
    let sent = load::send(addr, requests, round, start, gzip);
    std::thread::sleep(SETTLE_CPU);
    let cpu = hub.cpu_seconds() - cpu;
    assert_eq!(
        sent.rejected, 0,
        "{}: the hub rejected points (partial success)",
        hub.name
    );
    Phase {
        points: sent.accepted,
        cpu,
        wall: sent.wall,
    }
}

/// The hub's page with every series of the load checked present: `series` in all.
fn checked_page(hub: &mut Proc, port: u16, series: usize) -> (Page, f64) {
    let cpu = hub.cpu_seconds();
    let page = get_metrics(port, &FAMILIES);
    let cpu = hub.cpu_seconds() - cpu;
    for (family, count) in FAMILIES.iter().zip(&page.counts) {
        assert_eq!(
            *count as usize,
            series / 2,
            "{}: {count} series of {family}...}} on the page, {} sent",
            hub.name,
            series / 2
        );
    }
    (page, cpu)
}

fn run_hub(hub: Hub, bin: &Path, large: usize, dir: &Path) -> HubRun {
    let small = large / 10;
    let ports = HubPorts::pick();
    let (config, args) = match hub {
        Hub::Kepler => {
            let config = dir.join("kepler-hub.yaml");
            fs::write(&config, configs::kepler_hub(&ports))
                .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            let args = vec![
                format!("--config.file={}", config.display()),
                "--log.level=warn".to_string(),
            ];
            (config, args)
        }
        Hub::Otel => {
            let config = dir.join("otelcol-hub.yaml");
            fs::write(&config, configs::otelcol_hub(&ports))
                .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            (
                config.clone(),
                vec![format!("--config={}", config.display())],
            )
        }
    };
    eprintln!("{}: {} ({})", hub.name(), bin.display(), config.display());
    let log = dir.join(format!("{}.log", hub.name().replace(' ', "-")));
    let mut proc = Proc::spawn(hub.name(), bin, &args, &log);
    proc.wait_serving(ports.exposition, "metrics");
    let addr: SocketAddr = ([127, 0, 0, 1], ports.hub_grpc).into();
    let mut run = HubRun {
        load: loadavg(),
        ..HubRun::default()
    };
    std::thread::sleep(Duration::from_secs(1));
    run.started = proc.memory();

    let start = now_ns() - 1_000_000_000;
    let small_requests = small / POINTS_PER_REQUEST;
    let large_requests = large / POINTS_PER_REQUEST;
    let t = Instant::now();
    run.fill_small = phase(&mut proc, addr, 0..small_requests, 0, start, false);
    for round in 1..=KNOWN_ROUNDS {
        let p = phase(&mut proc, addr, 0..small_requests, round, start, false);
        run.known_small.add(p);
    }
    for round in KNOWN_ROUNDS + 1..=2 * KNOWN_ROUNDS {
        let p = phase(&mut proc, addr, 0..small_requests, round, start, true);
        run.known_small_gzip.add(p);
    }
    std::thread::sleep(SETTLE_MEMORY);
    run.at_small = proc.memory();
    (run.page_small, _) = checked_page(&mut proc, ports.exposition, small);
    eprintln!("{}: {small} series in {:.0?}", hub.name(), t.elapsed());

    run.fill_large = phase(
        &mut proc,
        addr,
        small_requests..large_requests,
        0,
        start,
        false,
    );
    std::thread::sleep(SETTLE_MEMORY);
    run.at_large = proc.memory();
    (run.page_large, run.render_cpu) = checked_page(&mut proc, ports.exposition, large);
    (run.page_again, run.render_again_cpu) = checked_page(&mut proc, ports.exposition, large);
    run.after_render = proc.memory();
    run.known_large = phase(
        &mut proc,
        addr,
        0..large_requests,
        2 * KNOWN_ROUNDS + 1,
        start,
        false,
    );
    eprintln!("{}: done in {:.0?}", hub.name(), t.elapsed());
    run
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(p: &Phase) -> String {
    format!(
        "{} ({} pts, {:.2} CPU-s, {:.1} s wall)",
        thousands(p.per_cpu_second() as u64),
        thousands(p.points),
        p.cpu,
        p.wall.as_secs_f64()
    )
}

/// RSS growth per series from `from` to `to` (bytes).
fn growth(from: Memory, to: Memory, series: usize) -> f64 {
    (to.rss as f64 - from.rss as f64) / series as f64
}

fn print_hubs(ours: &HubRun, theirs: &HubRun, large: usize) {
    let small = large / 10;
    let s = thousands(small as u64);
    let l = thousands(large as u64);
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    println!(
        "| hub, {l} series (load avg at start: ours {}, Collector {}) | kepler-collector | OpenTelemetry Collector | ours / Collector |",
        ours.load, theirs.load
    );
    println!("|---|---:|---:|---:|");
    let rows: [(String, &Phase, &Phase); 5] = [
        (
            format!("**points per hub CPU-second, known series ({KNOWN_ROUNDS} rounds of {s})**"),
            &ours.known_small,
            &theirs.known_small,
        ),
        (
            format!(
                "points per hub CPU-second, known series, gzipped ({KNOWN_ROUNDS} rounds of {s})"
            ),
            &ours.known_small_gzip,
            &theirs.known_small_gzip,
        ),
        (
            format!("points per hub CPU-second, new series (0 -> {s})"),
            &ours.fill_small,
            &theirs.fill_small,
        ),
        (
            format!("points per hub CPU-second, new series ({s} -> {l})"),
            &ours.fill_large,
            &theirs.fill_large,
        ),
        (
            format!("points per hub CPU-second, known series (1 round of {l})"),
            &ours.known_large,
            &theirs.known_large,
        ),
    ];
    for (what, a, b) in rows {
        println!(
            "| {what} | {} | {} | {} |",
            per_second(a),
            per_second(b),
            ratio(a.per_cpu_second(), b.per_cpu_second())
        );
    }
    let memory_row = |what: String, a: Memory, b: Memory| {
        println!(
            "| {what} | {} / {} | {} / {} | {} |",
            mib(a.rss),
            mib(a.hwm),
            mib(b.rss),
            mib(b.hwm),
            ratio(a.rss as f64, b.rss as f64)
        );
    };
    memory_row(
        "VmRSS / VmHWM at start".into(),
        ours.started,
        theirs.started,
    );
    memory_row(
        format!("VmRSS / VmHWM at {s} series"),
        ours.at_small,
        theirs.at_small,
    );
    memory_row(
        format!("VmRSS / VmHWM at {l} series"),
        ours.at_large,
        theirs.at_large,
    );
    memory_row(
        format!("VmRSS / VmHWM after the two GETs at {l} series"),
        ours.after_render,
        theirs.after_render,
    );
    for (what, from_ours, from_theirs, series) in [
        (format!("start -> {l}"), ours.started, theirs.started, large),
        (
            format!("{s} -> {l}"),
            ours.at_small,
            theirs.at_small,
            large - small,
        ),
    ] {
        let a = growth(from_ours, ours.at_large, series);
        let b = growth(from_theirs, theirs.at_large, series);
        println!(
            "| RSS growth per series, {what} | {a:.0} B | {b:.0} B | {} |",
            ratio(a, b)
        );
    }
    for (what, a, b) in [
        (
            format!("GET /metrics at {s} series (first after the new series)"),
            &ours.page_small,
            &theirs.page_small,
        ),
        (
            format!("**GET /metrics at {l} series** (first after the new series)"),
            &ours.page_large,
            &theirs.page_large,
        ),
        (
            format!("GET /metrics at {l} series, again (no new series)"),
            &ours.page_again,
            &theirs.page_again,
        ),
    ] {
        println!(
            "| {what}: wall, size | {:.2} s, {} | {:.2} s, {} | {} |",
            a.wall.as_secs_f64(),
            mib(a.bytes),
            b.wall.as_secs_f64(),
            mib(b.bytes),
            ratio(a.wall.as_secs_f64(), b.wall.as_secs_f64())
        );
    }
    println!(
        "| hub CPU during the GET at {l} series, first / again | {:.2} s / {:.2} s | {:.2} s / {:.2} s | {} / {} |",
        ours.render_cpu,
        ours.render_again_cpu,
        theirs.render_cpu,
        theirs.render_again_cpu,
        ratio(ours.render_cpu, theirs.render_cpu),
        ratio(ours.render_again_cpu, theirs.render_again_cpu)
    );
    let default_timeout = 30.0;
    if theirs
        .page_large
        .wall
        .max(theirs.page_again.wall)
        .as_secs_f64()
        > default_timeout
    {
        println!(
            "| the Collector's GET at {l} series within confighttp's default write_timeout (30 s; this run: {}) | | **no: the reference config's scrape fails** | |",
            configs::OTELCOL_WRITE_TIMEOUT
        );
    }
    println!(
        "| samples on the page at {l} series (all lines that are not comments) | {} | {} | |",
        thousands(ours.page_large.samples),
        thousands(theirs.page_large.samples)
    );
    println!();
    for (name, run) in [("kepler-collector", ours), ("Collector", theirs)] {
        for example in &run.page_large.examples {
            println!("{name}: {example}");
        }
    }
    println!();
    let speed = ours.known_small.per_cpu_second() / theirs.known_small.per_cpu_second();
    let speed_gzip =
        ours.known_small_gzip.per_cpu_second() / theirs.known_small_gzip.per_cpu_second();
    let bytes =
        growth(ours.started, ours.at_large, large) / growth(theirs.started, theirs.at_large, large);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target points per CPU-second >= 10x the Collector's (known series): {speed:.1}x, {}; gzipped {speed_gzip:.1}x, {}",
        verdict(speed >= 10.0),
        verdict(speed_gzip >= 10.0)
    );
    println!(
        "target bytes per series <= 1/4 of the Collector's (RSS growth start -> {l}): {bytes:.3} (1/{:.1}), {}",
        1.0 / bytes,
        verdict(bytes <= 0.25)
    );
    println!();
}

// Spokes

#[derive(Debug, Clone, Copy, PartialEq)]
enum Spoke {
    /// kepler-rs scraped every second by the Collector, which pushes to the sink.
    Scraped,
    /// kepler-rs pushing its own OTLP every second to the sink.
    Pushing,
}

#[derive(Debug, Default)]
struct SpokeRun {
    /// Sample lines of kepler-rs's page.
    exporter_series: u64,
    /// `kepler_*` sample lines at the sink (its own `kepler_collector_*` left out).
    sink_series: u64,
    exporter_cpu: f64,
    collector_cpu: f64,
    sink_cpu: f64,
    window: f64,
    load: String,
}

fn run_spoke(
    spoke: Spoke,
    exporter: &Path,
    otelcol: &Path,
    collector: &Path,
    dir: &Path,
) -> SpokeRun {
    let tag = match spoke {
        Spoke::Scraped => "scraped",
        Spoke::Pushing => "pushing",
    };
    let free = kepler_test_support::net::free_port;
    let (sink_grpc, sink_exposition) = (free(), free());
    let sink_config = dir.join(format!("sink-{tag}.yaml"));
    fs::write(&sink_config, configs::sink(sink_grpc, sink_exposition))
        .unwrap_or_else(|e| panic!("write {}: {e}", sink_config.display()));
    let mut sink = Proc::spawn(
        "sink (kepler-collector)",
        &PathBuf::from(collector),
        &[
            format!("--config.file={}", sink_config.display()),
            "--log.level=warn".into(),
        ],
        &dir.join(format!("sink-{tag}.log")),
    );
    sink.wait_serving(sink_exposition, "healthz");

    let web = free();
    let mut args = vec![
        "--fake-rapl".to_string(),
        format!(
            "--fake-rapl.dir={}",
            dir.join(format!("rapl-{tag}")).display()
        ),
        "--ebpf.enabled=false".into(),
        "--metrics.processes".into(),
        "--monitor.interval=1s".into(),
        "--log.level=warn".into(),
        "--kube.node-name=bench-node".into(),
        format!("--web.listen-address=127.0.0.1:{web}"),
    ];
    if spoke == Spoke::Pushing {
        args.extend([
            format!("--otlp.endpoint=http://127.0.0.1:{sink_grpc}"),
            "--otlp.interval=1s".into(),
            "--cluster=cluster1".into(),
        ]);
    }
    let mut kepler = Proc::spawn(
        "kepler-rs",
        exporter,
        &args,
        &dir.join(format!("kepler-rs-{tag}.log")),
    );
    kepler.wait_serving(web, "healthz");
    let mut otel = (spoke == Spoke::Scraped).then(|| {
        let config = dir.join("otelcol-spoke.yaml");
        fs::write(
            &config,
            configs::otelcol_spoke(web, free(), free(), sink_grpc),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        Proc::spawn(
            "OpenTelemetry Collector (spoke)",
            otelcol,
            &[format!("--config={}", config.display())],
            &dir.join("otelcol-spoke.log"),
        )
    });

    // Until the sink holds the spoke's series, then a few more pushes or scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_metrics(sink_exposition, &["kepler_container_joules_total{"]).counts[0] == 0 {
        kepler.assert_running();
        if let Some(o) = otel.as_mut() {
            o.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "{tag}: the sink never got kepler-rs's series; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));

    let load = loadavg();
    let began = Instant::now();
    let e0 = kepler.cpu_seconds();
    let c0 = otel.as_mut().map_or(0.0, Proc::cpu_seconds);
    let s0 = sink.cpu_seconds();
    std::thread::sleep(SPOKE_WINDOW);
    let exporter_cpu = kepler.cpu_seconds() - e0;
    let collector_cpu = otel.as_mut().map_or(0.0, Proc::cpu_seconds) - c0;
    let sink_cpu = sink.cpu_seconds() - s0;
    let window = began.elapsed().as_secs_f64();

    let exporter_series = get_metrics(web, &[]).samples;
    let at_sink = get_metrics(sink_exposition, &["kepler_", "kepler_collector_"]);
    SpokeRun {
        exporter_series,
        sink_series: at_sink.counts[0] - at_sink.counts[1],
        exporter_cpu,
        collector_cpu,
        sink_cpu,
        window,
        load,
    }
}

fn print_spokes(scraped: &SpokeRun, pushed: &SpokeRun) {
    let mc = |cpu: f64, window: f64| format!("{:.1}", cpu / window * 1000.0);
    println!(
        "| spoke, {} s each, measuring every 1 s | load avg | series on kepler-rs's page | kepler-rs CPU (millicores) | Collector CPU (millicores) | **spoke total (millicores)** | kepler_* series at the sink | sink CPU (millicores, not counted) |",
        SPOKE_WINDOW.as_secs()
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (what, r) in [
        (
            "kepler-rs scraped every 1 s by the Collector, which pushes OTLP/gRPC",
            scraped,
        ),
        ("kepler-rs pushing OTLP/gRPC every 1 s itself", pushed),
    ] {
        println!(
            "| {what} | {} | {} | {} | {} | **{}** | {} | {} |",
            r.load,
            thousands(r.exporter_series),
            mc(r.exporter_cpu, r.window),
            mc(r.collector_cpu, r.window),
            mc(r.exporter_cpu + r.collector_cpu, r.window),
            thousands(r.sink_series),
            mc(r.sink_cpu, r.window),
        );
    }
    let total = |r: &SpokeRun| (r.exporter_cpu + r.collector_cpu) / r.window;
    println!(
        "\npushing / scraped (spoke CPU): {:.3} (1/{:.1})",
        total(pushed) / total(scraped),
        total(scraped) / total(pushed)
    );
}
