//! Differential exposition: the same OTLP input to the real OpenTelemetry Collector configured as
//! the reference hub (built from its Go modules, `tests/peers/otelcol`) and to kepler-collector,
//! and the two `/metrics` pages compared family by family and series by series: names, TYPE,
//! HELP, label sets and values.
//!
//! Same input: every sender pushes to a third Collector on loopback (a tee: its `otlp`
//! receivers forward each request unchanged to both hubs), one pipeline for the hubs' spoke
//! listeners and one for their hub listeners (where both insert `cluster="hub"`). The senders:
//! kepler-rs in the classic and in the modern schema, kepler-rs relaying a kubelet-shaped
//! cAdvisor page, kepler-rs without a cluster (to the hub listeners), the official Python SDK
//! with every instrument kind, attribute types, units and names that need translating, resource
//! attributes and two scopes, and telemetrygen (the Collector project's load generator: sums
//! cumulative and delta, gauges, histograms). Compared when the senders have stopped and both pages
//! stand still: once, again after senders restart with their counters reset, and again after
//! the expiry window. The pages must agree except for the differences listed in
//! `collector/README.md`, each normalised here with its reason; anything else fails.
//! Loopback only: the network path plays no part in what the pages show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, http, python, HubProcess};
use kepler_test_support::peers::require_peer;
use kepler_test_support::require::require_binary;
use kepler_test_support::text::{parse_families, FamilyText};

/// Both hubs drop a series this long after its last point.
const EXPIRATION_S: u64 = 20;

/// A child process killed on drop, its output in a file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kubelet-shaped cAdvisor page of kepler-rs's relay fixture with fixed counters and the
/// scrape's time as sample timestamps, served on loopback until dropped.
struct CadvisorPage {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl CadvisorPage {
    fn serve() -> CadvisorPage {
        let fixture = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../kepler-rs/tests/fixtures/cadvisor.prom"),
        )
        .unwrap()
        .replace("{ROOT_CPU}", "81234.5")
        .replace("{APP_CPU}", "123.25");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_millis();
                        let page = fixture.replace("1732550000000", &now.to_string());
                        let _ = answer(stream, &page);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        CadvisorPage { addr, stop }
    }
}

impl Drop for CadvisorPage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut stream: TcpStream, page: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    )
}

/// The reference hub's Collector configuration on loopback ports (gRPC only), series expiring
/// after [`EXPIRATION_S`].
fn real_hub_config(hub: u16, spokes: u16, exposition: u16) -> String {
    let expiration = format!("{EXPIRATION_S}s");
    kepler_test_support::peers::otelcol_hub_config(&kepler_test_support::peers::OtelcolHub {
        host: "127.0.0.1",
        hub_grpc: hub,
        hub_http: None,
        spokes_grpc: spokes,
        spokes_http: None,
        exposition,
        exporter_settings: &[("metric_expiration", &expiration)],
    })
}

/// The tee: two receivers, each forwarding every request to both hubs' listener of that role.
fn tee_config(
    spokes_in: u16,
    hub_in: u16,
    real: (u16, u16),
    ours: (SocketAddr, SocketAddr),
) -> String {
    format!(
        "receivers:
  otlp/spokes: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{spokes_in}}}}}}}
  otlp/hub: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{hub_in}}}}}}}
exporters:
  otlp/real-hub: {{endpoint: 127.0.0.1:{real_hub}, tls: {{insecure: true}}}}
  otlp/real-spokes: {{endpoint: 127.0.0.1:{real_spokes}, tls: {{insecure: true}}}}
  otlp/ours-hub: {{endpoint: {ours_hub}, tls: {{insecure: true}}}}
  otlp/ours-spokes: {{endpoint: {ours_spokes}, tls: {{insecure: true}}}}
service:
  telemetry: {{logs: {{level: warn}}, metrics: {{level: none}}}}
  pipelines:
    metrics/hub: {{receivers: [otlp/hub], exporters: [otlp/real-hub, otlp/ours-hub]}}
    metrics/spokes: {{receivers: [otlp/spokes], exporters: [otlp/real-spokes, otlp/ours-spokes]}}
",
        real_hub = real.0,
        real_spokes = real.1,
        ours_hub = ours.0,
        ours_spokes = ours.1,
    )
}

/// GET /metrics on 127.0.0.1:`port` (empty when it does not answer 200).
fn page(addr: SocketAddr) -> String {
    match TcpStream::connect(addr) {
        Ok(_) => {
            let (status, _, body) = http(addr, "GET", "/metrics", &[], b"");
            if status == 200 {
                String::from_utf8(body).unwrap()
            } else {
                String::new()
            }
        }
        Err(_) => String::new(),
    }
}

/// A page as compared: families without the hub's own `kepler_collector_*` metrics, each
/// sample's labels without those whose value is empty.
///
/// Normalised differences (collector/README.md): the Collector writes every scope label, empty
/// or not (`otel_scope_schema_url=""`), where kepler-collector leaves empty labels out;
/// Prometheus stores a label with an empty value as no label, so the series are the same.
fn normalised(text: &str) -> BTreeMap<String, FamilyText> {
    let mut families = parse_families(text);
    families.retain(|name, _| !name.starts_with("kepler_collector_"));
    for family in families.values_mut() {
        family.samples = std::mem::take(&mut family.samples)
            .into_iter()
            .map(|((name, mut labels), v)| {
                labels.retain(|_, v| !v.is_empty());
                ((name, labels), v)
            })
            .collect();
    }
    families
}

/// Every difference between the real Collector's page and ours, one line each.
fn differences(real: &str, ours: &str) -> Vec<String> {
    let (real, ours) = (normalised(real), normalised(ours));
    let mut out = Vec::new();
    let names: BTreeSet<&String> = real.keys().chain(ours.keys()).collect();
    for name in names {
        let (r, o) = match (real.get(name), ours.get(name)) {
            (Some(r), Some(o)) => (r, o),
            (Some(r), None) => {
                out.push(format!(
                    "{name}: only at the Collector ({} samples)",
                    r.samples.len()
                ));
                continue;
            }
            (None, Some(o)) => {
                out.push(format!(
                    "{name}: only at kepler-collector ({} samples)",
                    o.samples.len()
                ));
                continue;
            }
            (None, None) => continue,
        };
        if r.kind != o.kind {
            out.push(format!("{name}: TYPE {} vs {}", r.kind, o.kind));
        }
        if r.help.is_some() && r.help != o.help {
            out.push(format!("{name}: HELP {:?} vs {:?}", r.help, o.help));
        }
        let keys: BTreeSet<_> = r.samples.keys().chain(o.samples.keys()).collect();
        for key in keys {
            match (r.samples.get(key), o.samples.get(key)) {
                (Some(a), Some(b)) if a == b || (a.is_nan() && b.is_nan()) => {}
                (Some(a), Some(b)) => out.push(format!("{}{:?}: {a} vs {b}", key.0, key.1)),
                (Some(_), None) => out.push(format!("{}{:?}: only at the Collector", key.0, key.1)),
                (None, Some(_)) => {
                    out.push(format!("{}{:?}: only at kepler-collector", key.0, key.1))
                }
                (None, None) => {}
            }
        }
    }
    out
}

/// Waits until both pages stand still (the same text twice, a second apart) and returns them.
fn settled(real: SocketAddr, ours: SocketAddr) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (page(real), page(ours));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = (page(real), page(ours));
        if normalised(&now.0) == normalised(&last.0) && normalised(&now.1) == normalised(&last.1) {
            return now;
        }
        assert!(Instant::now() < deadline, "the pages never stood still");
        last = now;
    }
}

/// Compares the two pages, printing the differences; fails on any.
fn assert_same(stage: &str, real: &str, ours: &str, logs: &dyn Fn() -> String) {
    let diffs = differences(real, ours);
    let families = normalised(real).len();
    println!(
        "{stage}: {families} families at the Collector, {} differences",
        diffs.len()
    );
    assert!(
        diffs.is_empty(),
        "{stage}: the pages differ:\n{}\n{}",
        diffs.join("\n"),
        logs()
    );
}

/// A kepler-rs named `name` on fake RAPL (a new tree per `stage`: its counters start from zero)
/// pushing every second to `endpoint` with `args`.
fn exporter(
    bin: &Path,
    dir: &Path,
    (name, stage): (&str, &str),
    endpoint: SocketAddr,
    args: &[String],
) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--fake-rapl",
        "--ebpf.enabled=false",
        "--log.level=warn",
        "--monitor.interval=1s",
        "--otlp.interval=1s",
    ])
    .arg(format!(
        "--fake-rapl.dir={}",
        dir.join(format!("rapl-{name}-{stage}")).display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
    .arg(format!("--kube.node-name={name}-node"))
    .arg(format!("--otlp.endpoint=http://{endpoint}"))
    .args(args);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    Proc::spawn(
        &format!("kepler-rs ({name})"),
        &mut cmd,
        dir.join(format!("{name}-{stage}.log")),
    )
}

/// The Python SDK's batch with values times `scale`.
fn python_batch(python: &Path, endpoint: SocketAddr, scale: f64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/every_instrument.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{endpoint}"))
        .arg(scale.to_string())
        .env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(out.status.success(), "python sender: {out:?}");
}

/// telemetrygen (the Collector project's load generator, another independent OTLP sender)
/// sending `count` points of each of a cumulative sum, a delta sum, a gauge and a histogram,
/// with point attributes of several types and its own resource.
fn telemetrygen_batch(bin: &Path, endpoint: SocketAddr, count: u32) {
    for (name, kind, temporality) in [
        ("tg.cumulative", "Sum", "cumulative"),
        ("tg.delta", "Sum", "delta"),
        ("tg.gauge", "Gauge", "cumulative"),
        ("tg.latency", "Histogram", "cumulative"),
    ] {
        let out = Command::new(bin)
            .args(["metrics", "--otlp-insecure", "--rate", "0"])
            .arg(format!("--otlp-endpoint={endpoint}"))
            .arg(format!("--otlp-metric-name={name}"))
            .arg(format!("--metric-type={kind}"))
            .arg(format!("--aggregation-temporality={temporality}"))
            .arg(format!("--metrics={count}"))
            .args([
                "--otlp-attributes=service.name=\"telemetrygen\"",
                "--otlp-attributes=deployment.environment=\"test\"",
                "--telemetry-attributes=cluster=\"cluster4\"",
                "--telemetry-attributes=k8s.pod.name=\"gen-1\"",
                "--telemetry-attributes=retries=3",
                "--telemetry-attributes=ok=true",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "telemetrygen {name}: {out:?}");
    }
}

/// Waits until both pages show `name` (bounded).
fn wait_for_family(real: SocketAddr, ours: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(normalised(&page(real)).contains_key(name)
        && normalised(&page(ours)).contains_key(name))
    {
        assert!(Instant::now() < deadline, "{name} never reached both hubs");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_real_collector_and_kepler_collector_expose_the_same_page() {
    let Some(otelcol) = require_peer("otelcol") else {
        return;
    };
    let Some(kepler_rs) = require_binary("kepler-rs") else {
        return;
    };
    let Some(python) = python() else {
        return;
    };
    let Some(telemetrygen) = require_peer("telemetrygen") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (real_hub, real_spokes, real_exposition) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("real.yaml"),
        real_hub_config(real_hub, real_spokes, real_exposition),
    )
    .unwrap();
    let real_proc = Proc::spawn(
        "otelcol (hub)",
        Command::new(&otelcol).arg(format!("--config={}", d.join("real.yaml").display())),
        d.join("otelcol-hub.log"),
    );
    let ours = HubProcess::start(&format!(
        r#"listeners:
  - {{name: hub-grpc, protocol: grpc, address: "127.0.0.1:0", insert_cluster: hub}}
  - {{name: spokes-grpc, protocol: grpc, address: "127.0.0.1:0"}}
exposition: {{address: "127.0.0.1:0", metric_expiration: {EXPIRATION_S}s}}
"#
    ));
    let (tee_spokes, tee_hub) = (free_port(), free_port());
    std::fs::write(
        d.join("tee.yaml"),
        tee_config(
            tee_spokes,
            tee_hub,
            (real_hub, real_spokes),
            (ours.addr("hub-grpc"), ours.addr("spokes-grpc")),
        ),
    )
    .unwrap();
    let tee_proc = Proc::spawn(
        "otelcol (tee)",
        Command::new(&otelcol).arg(format!("--config={}", d.join("tee.yaml").display())),
        d.join("otelcol-tee.log"),
    );
    let real_addr: SocketAddr = format!("127.0.0.1:{real_exposition}").parse().unwrap();
    let ours_addr = ours.addr("exposition");
    let tee_spokes_addr: SocketAddr = format!("127.0.0.1:{tee_spokes}").parse().unwrap();
    let tee_hub_addr: SocketAddr = format!("127.0.0.1:{tee_hub}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(tee_spokes_addr).is_err() || TcpStream::connect(real_addr).is_err() {
        assert!(Instant::now() < deadline, "the Collectors never listened");
        std::thread::sleep(Duration::from_millis(200));
    }
    let cadvisor = CadvisorPage::serve();

    let start_senders = |stage: &str| -> Vec<Proc> {
        vec![
            exporter(
                &kepler_rs,
                d,
                ("classic", stage),
                tee_spokes_addr,
                &[
                    "--cluster=cluster1".to_string(),
                    format!("--relay.targets=cadvisor=http://{}/metrics", cadvisor.addr),
                    "--relay.interval=1s".to_string(),
                ],
            ),
            exporter(
                &kepler_rs,
                d,
                ("modern", stage),
                tee_spokes_addr,
                &[
                    "--cluster=cluster2".to_string(),
                    "--metrics.schema=modern".to_string(),
                ],
            ),
            exporter(&kepler_rs, d, ("hub", stage), tee_hub_addr, &[]),
        ]
    };
    let logs = {
        let paths: Vec<(String, PathBuf)> = [&real_proc, &tee_proc]
            .iter()
            .map(|p| (p.name.clone(), p.log.clone()))
            .collect();
        move || {
            paths
                .iter()
                .map(|(name, log)| {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {name}\n{}",
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };

    // 1. Everything once, senders stopped, pages still.
    let mut senders = start_senders("first");
    python_batch(&python, tee_spokes_addr, 1.0);
    telemetrygen_batch(&telemetrygen, tee_spokes_addr, 5);
    for family in [
        "kepler_container_joules_total",
        "kepler_node_cpu_joules_total",
        "container_cpu_usage_seconds_total",
        "diff_energy_joules_total",
        "tg_latency",
    ] {
        wait_for_family(real_addr, ours_addr, family);
    }
    std::thread::sleep(Duration::from_secs(3));
    for s in &mut senders {
        s.stop();
    }
    let (real, ours_page) = settled(real_addr, ours_addr);
    assert_same("first push", &real, &ours_page, &logs);
    let first_families = normalised(&real).len();
    println!(
        "families: {:?}",
        normalised(&real).keys().collect::<Vec<_>>()
    );
    assert!(
        first_families > 40,
        "too few families to compare: {first_families}"
    );

    // 2. Senders restarted with their counters from zero (a new fake-RAPL tree, a new Python
    // process with smaller values): both hubs show the reset values.
    let mut senders = start_senders("second");
    python_batch(&python, tee_spokes_addr, 0.5);
    telemetrygen_batch(&telemetrygen, tee_spokes_addr, 3);
    std::thread::sleep(Duration::from_secs(4));
    for s in &mut senders {
        s.stop();
    }
    let (real, ours_page) = settled(real_addr, ours_addr);
    assert_same("after a counter reset", &real, &ours_page, &logs);
    // The reset is there: the Python counter shows the second process's 10.5 J x 0.5.
    let energy = &normalised(&real)["diff_energy_joules_total"];
    assert!(
        energy.samples.values().all(|v| *v == 5.25) && !energy.samples.is_empty(),
        "{energy:?}"
    );

    // 3. After the expiry window without data, both pages have dropped the same series.
    std::thread::sleep(Duration::from_secs(EXPIRATION_S + 5));
    let (real, ours_page) = settled(real_addr, ours_addr);
    assert_same("after expiry", &real, &ours_page, &logs);
    assert!(
        normalised(&real).is_empty(),
        "series outlived the expiry:\n{real}"
    );
    drop(senders);
    drop(tee_proc);
    drop(real_proc);
}
