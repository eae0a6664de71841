#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hub load test across a namespace link: simulated spokes in `cluster1`'s namespace send
//! OTLP/HTTP JSON (`curl`, one process per spoke and round, all in parallel) to the real
//! `kepler-collector` in the hub namespace, each spoke a cluster of its own (`cluster` attribute
//! on the hub listener) with a fixed set of cumulative counter series updated every interval.
//! Reports points/s, hub CPU seconds and RSS, and the time of one full exposition; asserts that
//! every request was accepted and no point within the limits was rejected. CI runs a tiny size;
//! the issue's size (50 spokes x 10,000 series every 5 s for 2 minutes) by hand:
//!
//! ```sh
//! cargo build --release -p kepler-rs -p kepler-collector --bins
//! KEPLER_E2E_BIN_DIR=target/release KEPLER_E2E_LOAD=50,10000,5,120 \
//!   cargo test --release -p kepler-e2e --test load -- --nocapture
//! ```
//!
//! (`KEPLER_E2E_LOAD=spokes,series,interval_s,duration_s`). Root only; skips otherwise.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{in_ns, start_collector, Topology, HUB_IP};

fn body(spoke: usize, series: usize, round: u64, start_ns: u128) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut s = String::with_capacity(series * 160);
    s.push_str(
        "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"load\"}}]},\"scopeMetrics\":[{\"metrics\":[{\"name\":\"load_energy\",\"unit\":\"J\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[",
    );
    for i in 0..series {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"asDouble\":{},\"startTimeUnixNano\":\"{start_ns}\",\"timeUnixNano\":\"{now}\",\"attributes\":[{{\"key\":\"cluster\",\"value\":{{\"stringValue\":\"load-{spoke:03}\"}}}},{{\"key\":\"series\",\"value\":{{\"stringValue\":\"{i}\"}}}}]}}",
            round * 10 + (i % 7) as u64
        );
    }
    s.push_str("]}}]}]}]}");
    s
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the state).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf(3) has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn simulated_spokes_load_the_hub_and_no_point_within_limits_is_rejected() {
    let _serial = common::serial();
    let size: Vec<u64> = std::env::var("KEPLER_E2E_LOAD")
        .unwrap_or_else(|_| "3,500,1,4".to_string())
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    let (spokes, series, interval, duration) = (
        size[0] as usize,
        size[1] as usize,
        Duration::from_secs(size[2]),
        Duration::from_secs(size[3]),
    );
    if !common::require_netns("the hub load test") {
        return;
    }
    let Some((_, collector_bin)) = common::binaries() else {
        return;
    };
    let topo = Topology::create();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hub.yaml"), common::hub_config("5m", "")).unwrap();
    let collector = start_collector(&collector_bin, &topo.hub, dir.path());
    let pid = collector.pid();
    let cpu0 = cpu_seconds(pid);
    let start_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("http://{HUB_IP}:4318/v1/metrics");
    let sender = &topo.spokes[0];

    let began = Instant::now();
    let mut round = 0u64;
    let mut overran = 0;
    let mut sent_points = 0u64;
    while began.elapsed() < duration {
        let due = began + interval * round as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else if round > 0 {
            overran += 1;
        }
        let mut children = Vec::new();
        for spoke in 0..spokes {
            let file = dir.path().join(format!("spoke-{spoke}.json"));
            std::fs::write(&file, body(spoke, series, round, start_ns)).unwrap();
            let child = in_ns(sender, Path::new("curl"))
                .args(["-s", "--max-time", "60", "-w", "\n%{http_code}"])
                .args(["-H", "content-type: application/json"])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()))
                .arg(&url)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            children.push(child);
        }
        for (spoke, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            assert_eq!(code.trim(), "200", "spoke {spoke} round {round}: {answer}");
            assert!(
                !answer.contains("rejectedDataPoints"),
                "spoke {spoke} round {round}: {answer}"
            );
        }
        sent_points += (spokes * series) as u64;
        round += 1;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;

    let t = Instant::now();
    let (code, text) = common::http_get(&topo.hub, "http://127.0.0.1:9464/metrics").unwrap();
    let render = t.elapsed();
    assert_eq!(code, 200);
    let metrics = common::parse_text(&text);
    let load_series = metrics
        .keys()
        .filter(|(n, _)| n == "load_energy_joules_total")
        .count();
    assert_eq!(load_series, spokes * series, "series at the hub");
    let received: f64 = metrics
        .iter()
        .filter(|((n, _), _)| n == "kepler_collector_points_received_total")
        .map(|(_, v)| *v)
        .sum();
    let rejected: f64 = metrics
        .iter()
        .filter(|((n, _), _)| n == "kepler_collector_points_rejected_total")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(rejected, 0.0, "points rejected within the limits");
    assert!(received >= sent_points as f64, "{received} < {sent_points}");
    println!(
        "load: {spokes} spokes x {series} series every {interval:?} for {elapsed:.0} s: {round} rounds ({overran} overran), {sent_points} points, {:.0} points/s; hub CPU {cpu:.1} s ({:.0} % of one core), RSS {} MiB (peak {} MiB); exposition of {} series ({} MiB) in {:.2} s; rejected {}",
        sent_points as f64 / elapsed,
        100.0 * cpu / elapsed,
        status_kib(pid, "VmRSS:") / 1024,
        status_kib(pid, "VmHWM:") / 1024,
        metrics.len(),
        text.len() / (1024 * 1024),
        render.as_secs_f64(),
        rejected as u64,
    );
    drop(collector);
}
