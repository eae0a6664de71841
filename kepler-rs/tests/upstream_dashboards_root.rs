#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Acceptance against upstream Kepler's own Grafana dashboards: every panel query of
//!
//! - the classic dashboard of Kepler v0.7.12, `grafana-dashboards/Kepler-Exporter.json`, whose
//!   16 expressions the top-k dashboard of the same release
//!   (`manifests/k8s/config/dashboard/04-grafana-dashboard-topk.yaml`) repeats word for word,
//! - the modern default dashboard of Kepler v0.11.4,
//!   `compose/default/grafana/dashboards/latest/dashboard.json`,
//!
//! with the dashboards' template variables resolved as Grafana resolves them (query variables
//! asked of Prometheus, "All" as the variable's custom all value or every option as a regex,
//! a saved value that is no longer offered replaced by the first option), must return data from
//! a real Prometheus 3 scraping a real kepler-rs exporter on this host: one with the default
//! (classic) schema for the classic dashboard, one with `--metrics.schema modern` for the
//! modern one, each scraped by its own Prometheus (its own data source).
//!
//! What they measure is real where this machine allows: eBPF CPU time (as root), two containers
//! in kubepods-shaped cgroups whose pods a stand-in kubelet names (real HTTPS, bearer token), a
//! real QEMU guest in a libvirt-shaped cgroup ([`common::qemu`]). RAPL is the fake-RAPL tree,
//! and the GPU is the fake NVML of `testdata/fake-nvml/` loaded through `gpu.nvmlLibrary`,
//! scripted with a rising energy counter and one container's process as its compute process:
//! this machine has neither RAPL nor a GPU. The GPU and VM panels must show that GPU and that
//! guest with power above 0, not just any series.
//!
//! The expressions below are this project's own list, copied from the dashboards' `expr`
//! fields (whitespace folded); each names its dashboard and panel.
//!
//! Skips with a message when not root, without cgroup v2, QEMU, `cc` or the Prometheus 3 peer;
//! fails instead under CI=true.

mod common;
mod kubelet_server;

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::{Exporter, BIN};
use common::fake_nvml::ScriptedGpu;
use common::qemu::QemuGuest;
use kepler_test_support::cgroup::TestContainer;
use kepler_test_support::peers::{require_peer, Prometheus};
use kepler_test_support::promql;
use kepler_test_support::require::require_tool;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dashboard {
    /// Kepler v0.7.12 `Kepler-Exporter.json` (and its top-k twin), scraped as job
    /// `kepler-classic`.
    Classic,
    /// Kepler v0.11.4 compose default `dashboard.json`, scraped as job `kepler-modern`.
    Modern,
}

/// One panel query: its dashboard, the panel's title, the PromQL as the dashboard has it.
struct Panel {
    dashboard: Dashboard,
    title: &'static str,
    expr: &'static str,
}

const fn panel(dashboard: Dashboard, title: &'static str, expr: &'static str) -> Panel {
    Panel {
        dashboard,
        title,
        expr,
    }
}

use Dashboard::{Classic, Modern};

const CLASSIC_CARBON: &str =
    "Carbon Footprint (pounds per kWh per day) in Namespace: $namespace (PKG+DRAM+OTHER+GPU)";
const CLASSIC_POD_W: &str = "Pod/Process Power Consumption (W) in Namespace: $namespace";
const CLASSIC_TOTAL_W: &str = "Total Power Consumption (W) in Namespace: $namespace";
const CLASSIC_KWH: &str = "Total Power Consumption (kWh per day) in Namespace: $namespace";

const PANELS: &[Panel] = &[
    panel(
        Classic,
        CLASSIC_CARBON,
        r#"( sum( increase( (kepler_container_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh ) * $coal"#,
    ),
    panel(
        Classic,
        CLASSIC_CARBON,
        r#"( sum( increase( (kepler_container_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh ) * $petroleum"#,
    ),
    panel(
        Classic,
        CLASSIC_CARBON,
        r#"( sum( increase( (kepler_container_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh ) * $natural_gas"#,
    ),
    panel(
        Classic,
        CLASSIC_POD_W,
        r#"sum by (pod_name, container_namespace) (irate(kepler_container_package_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_POD_W,
        r#"sum by (pod_name, container_namespace) (irate(kepler_container_dram_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_POD_W,
        r#"sum by (pod_name, container_namespace) (irate(kepler_container_other_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_POD_W,
        r#"sum by (pod_name, container_namespace) (irate(kepler_container_gpu_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_TOTAL_W,
        r#"sum(irate(kepler_container_package_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_TOTAL_W,
        r#"sum(irate(kepler_container_dram_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_TOTAL_W,
        r#"sum(irate(kepler_container_other_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_TOTAL_W,
        r#"sum(irate(kepler_container_gpu_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[1m]))"#,
    ),
    panel(
        Classic,
        CLASSIC_KWH,
        r#"sum ( increase( (kepler_container_package_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh"#,
    ),
    panel(
        Classic,
        CLASSIC_KWH,
        r#"sum ( increase( (kepler_container_dram_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh"#,
    ),
    panel(
        Classic,
        CLASSIC_KWH,
        r#"sum ( increase( (kepler_container_other_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh"#,
    ),
    panel(
        Classic,
        CLASSIC_KWH,
        r#"sum ( increase( (kepler_container_gpu_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh"#,
    ),
    panel(
        Classic,
        "Total Power Consumption (PKG+DRAM+OTHER+GPU) by Namespace (kWh per day)",
        r#"sum by (container_namespace) ( increase( (kepler_container_joules_total{container_namespace=~"$namespace", pod_name=~"$pod"}[24h:1m]) ) ) * $watt_per_second_to_kWh"#,
    ),
    panel(
        Modern,
        "Current Power Consumption By Zone",
        r#"sum by (zone) (kepler_node_cpu_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "Current Active Power Consumption By Zone",
        r#"sum by (zone) (kepler_node_cpu_active_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "Current Idle Power Consumption By Zone",
        r#"sum by (zone) (kepler_node_cpu_idle_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "CPU Info",
        r#"count by (instance, model_name)(kepler_node_cpu_info{job="$job"})"#,
    ),
    panel(
        Modern,
        "RAPL Info",
        r#"group by (node_name,zone)(kepler_node_cpu_watts{job="$job"})"#,
    ),
    panel(
        Modern,
        "Total Power Consumption (W) per Zone",
        r#"sum by (zone) (kepler_node_cpu_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "Node Power Consumption (W) By Zone",
        r#"kepler_node_cpu_watts{job="$job", instance=~"$node", zone=~"$zone"}"#,
    ),
    panel(
        Modern,
        "Node Active Power Consumption (W) By Zone",
        r#"kepler_node_cpu_active_watts{job="$job", instance=~"$node", zone=~"$zone"}"#,
    ),
    panel(
        Modern,
        "Node Idle Power Consumption (W) By Zone",
        r#"kepler_node_cpu_idle_watts{job="$job", instance=~"$node", zone=~"$zone"}"#,
    ),
    panel(
        Modern,
        "Top 10 Power Consuming Processes (W) per Zone",
        r#"topk(10,sum by (comm,zone)(kepler_process_cpu_watts{job="$job", zone=~"$zone"}))"#,
    ),
    panel(
        Modern,
        "Total Power Consumption of Processes (W) per Zone",
        r#"sum by (zone) (kepler_process_cpu_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "Process Power Consumption (W) By Zone",
        r#"kepler_process_cpu_watts{job="$job", zone=~"$zone",pid="${process}"}"#,
    ),
    panel(
        Modern,
        "Top 10 Power Consuming Containers (W) per Zone",
        r#"topk(10,sum by (container_name,zone)(kepler_container_cpu_watts{job="$job", zone=~"$zone"}))"#,
    ),
    panel(
        Modern,
        "Total Power Consumption of Containers (W) per Zone",
        r#"sum by (zone) (kepler_container_cpu_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "Container Power Consumption (W) By Zone",
        r#"kepler_container_cpu_watts{job="$job", zone=~"$zone",container_name=~"$container"}"#,
    ),
    panel(
        Modern,
        "Top 10 Power Consuming Namespaces (W) per Zone",
        r#"topk(10,sum by (pod_namespace,zone)(kepler_pod_cpu_watts{job="$job", zone=~"$zone"}))"#,
    ),
    panel(
        Modern,
        "Total Power Consumption of Pods in Namespace (W) per Zone",
        r#"sum by (zone) (kepler_pod_cpu_watts{job="$job", zone=~"$zone", pod_namespace=~"$namespace"})"#,
    ),
    panel(
        Modern,
        "Pod Power Consumption (W) By Zone",
        r#"kepler_pod_cpu_watts{job="$job",pod_namespace=~"$namespace", zone=~"$zone",pod_name=~"$pod"}"#,
    ),
    panel(
        Modern,
        "Top 10 Power Consuming VMs (W) per Zone",
        r#"topk(10,sum by (vm_name,zone)(kepler_vm_cpu_watts{job="$job", zone=~"$zone"}))"#,
    ),
    panel(
        Modern,
        "Total Power Consumption of VMs (W) per Zone",
        r#"sum by (zone) (kepler_vm_cpu_watts{job="$job", zone=~"$zone"})"#,
    ),
    panel(
        Modern,
        "VM Power Consumption (W) By Zone",
        r#"kepler_vm_cpu_watts{job="$job", zone=~"$zone",vm_name=~"$vm"}"#,
    ),
];

/// Where a template variable's options come from.
enum Source {
    /// `label_values(<selector>, <label>)`.
    LabelValues(&'static str, &'static str),
    /// `query_result(<expr>)`, each result's value taken from one label by the variable's
    /// regex (the modern `process` variable: `pid`).
    QueryResultLabel(&'static str, &'static str),
    /// A textbox or constant.
    Text(&'static str),
}

/// A template variable as the dashboard defines it; listed so that a variable comes after
/// those its query uses.
struct Variable {
    dashboard: Dashboard,
    name: &'static str,
    source: Source,
    /// "Include All option", with its custom all value if any.
    include_all: bool,
    all_value: Option<&'static str>,
    /// The value saved in the dashboard (`$__all` for "All").
    saved: &'static str,
}

const fn var(
    dashboard: Dashboard,
    name: &'static str,
    source: Source,
    include_all: bool,
    all_value: Option<&'static str>,
    saved: &'static str,
) -> Variable {
    Variable {
        dashboard,
        name,
        source,
        include_all,
        all_value,
        saved,
    }
}

const ALL: &str = "$__all";

const VARIABLES: &[Variable] = &[
    var(
        Classic,
        "namespace",
        Source::LabelValues(
            "kepler_container_package_joules_total",
            "container_namespace",
        ),
        true,
        Some(".*"),
        ALL,
    ),
    var(
        Classic,
        "pod",
        Source::LabelValues(
            r#"kepler_container_package_joules_total{container_namespace=~"$namespace"}"#,
            "pod_name",
        ),
        true,
        Some(".*"),
        ALL,
    ),
    var(Classic, "coal", Source::Text("2.23"), false, None, "2.23"),
    var(
        Classic,
        "natural_gas",
        Source::Text("0.91"),
        false,
        None,
        "0.91",
    ),
    var(
        Classic,
        "petroleum",
        Source::Text("2.13"),
        false,
        None,
        "2.13",
    ),
    var(
        Classic,
        "watt_per_second_to_kWh",
        Source::Text("0.000000277777777777778"),
        false,
        None,
        "0.000000277777777777778",
    ),
    var(
        Modern,
        "job",
        Source::LabelValues("kepler_node_cpu_watts", "job"),
        false,
        None,
        "kepler-latest",
    ),
    var(
        Modern,
        "namespace",
        Source::LabelValues(r#"kepler_pod_cpu_watts{job="$job"}"#, "pod_namespace"),
        true,
        Some(".*"),
        ALL,
    ),
    var(
        Modern,
        "pod",
        Source::LabelValues(
            r#"kepler_pod_cpu_watts{job="$job", pod_namespace=~"$namespace"}"#,
            "pod_name",
        ),
        true,
        Some(".*"),
        ALL,
    ),
    var(
        Modern,
        "process",
        Source::QueryResultLabel(
            r#"label_join( count by (pid, comm) (kepler_process_cpu_watts{job="$job"}), "process", " | ", "comm", "pid" )"#,
            "pid",
        ),
        false,
        None,
        "1563",
    ),
    var(
        Modern,
        "node",
        Source::LabelValues(r#"kepler_node_cpu_info{job="$job"}"#, "instance"),
        false,
        None,
        "kepler-latest:28282",
    ),
    var(
        Modern,
        "zone",
        Source::LabelValues(r#"kepler_node_cpu_watts{job="$job"}"#, "zone"),
        true,
        Some(".*"),
        ALL,
    ),
    var(
        Modern,
        "container",
        Source::LabelValues("kepler_container_cpu_watts", "container_name"),
        true,
        None,
        ALL,
    ),
    var(
        Modern,
        "vm",
        Source::LabelValues(r#"kepler_vm_cpu_watts{job="$job"}"#, "vm_name"),
        true,
        Some(".*"),
        ALL,
    ),
];

/// Replaces every `$name` and `${name}` of `text` with its value; panics on a variable the
/// dashboard does not define.
fn interpolate(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("unclosed ${");
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("{text}: ${name} is not a variable of the dashboard"));
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Grafana's Prometheus escaping of one value of a multi-value or "All" variable.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]".contains(c) {
            // A backslash for the regex, doubled inside the PromQL string.
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// Grafana's escaping of a single-value variable (backslashes and single quotes).
fn plain_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The text Grafana puts in place of a variable: `options` are its current choices.
fn variable_text(v: &Variable, options: &[String]) -> String {
    if v.include_all && v.saved == ALL {
        if let Some(all) = v.all_value {
            return all.to_string();
        }
        let escaped: Vec<String> = options.iter().map(|o| regex_escape(o)).collect();
        return match escaped.len() {
            1 => escaped[0].clone(),
            _ => format!("({})", escaped.join("|")),
        };
    }
    let chosen = options
        .iter()
        .find(|o| o.as_str() == v.saved)
        .or(options.first())
        .cloned()
        .unwrap_or_default();
    plain_escape(&chosen)
}

fn get_json(prometheus: &Prometheus, path: &str) -> Value {
    let (status, body) =
        kepler_test_support::https::get_plain(("127.0.0.1", prometheus.port), path)
            .unwrap_or_else(|| panic!("Prometheus did not answer {path}"));
    let answer: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: {status}, not JSON ({e}): {body}"));
    assert_eq!(answer["status"], "success", "{path}: {body}");
    answer["data"].clone()
}

/// Every variable of `dashboard` resolved against Prometheus now: (options, text) by name.
fn resolve(
    prometheus: &Prometheus,
    dashboard: Dashboard,
) -> BTreeMap<&'static str, (Vec<String>, String)> {
    let mut resolved: BTreeMap<&'static str, (Vec<String>, String)> = BTreeMap::new();
    for v in VARIABLES.iter().filter(|v| v.dashboard == dashboard) {
        let texts: BTreeMap<&str, String> =
            resolved.iter().map(|(k, (_, t))| (*k, t.clone())).collect();
        let options: Vec<String> = match v.source {
            Source::Text(value) => vec![value.to_string()],
            Source::LabelValues(selector, label) => {
                let selector = interpolate(selector, &texts);
                let data = get_json(
                    prometheus,
                    &format!(
                        "/api/v1/label/{label}/values?match%5B%5D={}",
                        promql::percent_encode(&selector)
                    ),
                );
                data.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            }
            Source::QueryResultLabel(expr, label) => {
                let expr = interpolate(expr, &texts);
                let data = get_json(prometheus, &promql::query_path(&expr));
                data["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| promql::sample_label(s, label).map(str::to_string))
                    .collect()
            }
        };
        let text = variable_text(v, &options);
        resolved.insert(v.name, (options, text));
    }
    resolved
}

/// The result of `panel` with `texts` in place of its variables (empty: no data yet).
fn run_panel(prometheus: &Prometheus, panel: &Panel, texts: &BTreeMap<&str, String>) -> Vec<Value> {
    let promql = interpolate(panel.expr, texts);
    let data = get_json(prometheus, &promql::query_path(&promql));
    data["result"].as_array().cloned().unwrap_or_default()
}

/// A container with a process that works in short bursts (about a third of a CPU), in pod
/// `pod` of `namespace` as the kubelet lists it.
struct Workload {
    container: TestContainer,
    process: common::ChildGuard,
    namespace: &'static str,
    pod: &'static str,
    name: &'static str,
}

impl Workload {
    fn start(namespace: &'static str, pod: &'static str, name: &'static str) -> Self {
        let container = TestContainer::create().expect("cgroup v2 was checked");
        let process = common::ChildGuard(container.spawn(
            "while :; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.05; done",
        ));
        Self {
            container,
            process,
            namespace,
            pod,
            name,
        }
    }

    fn kubelet_pod(&self) -> Value {
        kubelet_server::pod(
            self.pod,
            self.namespace,
            &self.container.pod_uid,
            self.name,
            &self.container.id,
        )
    }
}

#[test]
fn upstream_kepler_dashboards_fill_every_panel() {
    // The lists are whole: every variable a panel uses is defined for its dashboard.
    for p in PANELS {
        let defined: BTreeMap<&str, String> = VARIABLES
            .iter()
            .filter(|v| v.dashboard == p.dashboard)
            .map(|v| (v.name, String::new()))
            .collect();
        interpolate(p.expr, &defined);
    }
    assert_eq!(PANELS.iter().filter(|p| p.dashboard == Classic).count(), 16);
    assert_eq!(PANELS.iter().filter(|p| p.dashboard == Modern).count(), 21);

    if !common::require_root("eBPF, cgroups and a QEMU guest in one") {
        return;
    }
    let Some(v2) = common::require_v2_root() else {
        return;
    };
    let Some(qemu) = require_tool("qemu-system-x86_64") else {
        return;
    };
    let Some(nvml) = common::fake_nvml::library() else {
        return;
    };
    let Some(prometheus_bin) = require_peer("prometheus") else {
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let web = Workload::start("dash-shop", "web-0", "nginx");
    let etl = Workload::start("dash-batch", "etl-7f9c", "worker");
    let mut guest = QemuGuest::start(&v2, &qemu, "dashvm");
    let gpu = ScriptedGpu::start(dir.path(), 120, &[web.process.0.id()]);

    // The stand-in kubelet names both pods; it runs on its own runtime for the whole test.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pods = serde_json::to_vec(&serde_json::json!({
        "kind": "PodList", "apiVersion": "v1",
        "items": [web.kubelet_pod(), etl.kubelet_pod()]
    }))
    .unwrap();
    let kubelet = runtime.block_on(kubelet_server::Kubelet::start(pods, "dash-token"));
    fs::write(dir.path().join("token"), "dash-token\n").unwrap();
    let ca = kubelet.write_ca(dir.path());

    let start = |schema: &str| {
        let flags = [
            format!("--fake-rapl.dir={}", dir.path().join(schema).display()),
            format!("--metrics.schema={schema}"),
            format!("--gpu.nvml-library={}", nvml.display()),
            "--kube.enable".to_string(),
            "--kube.node-name=worker-1".to_string(),
            format!("--kube.kubelet-url={}", kubelet.url),
            format!("--kube.token-file={}", dir.path().join("token").display()),
            format!("--kube.ca-file={}", ca.display()),
            "--kube.poll-interval=1s".to_string(),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut command = Command::new(BIN);
        command.env("FAKE_NVML_STATE", gpu.state());
        Exporter::launch(command, "500ms", &flags, Stdio::inherit())
    };
    let classic = start("classic");
    let modern = start("modern");
    // One Prometheus per dashboard, as each would be its own data source: both schemas name a
    // family `kepler_container_gpu_joules_total`, and the classic queries select no job.
    let job = |name: &str, port: u16| {
        format!(
            "  - job_name: {name}\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        )
    };
    let prometheus = [
        Prometheus::start(&prometheus_bin, &job("kepler-classic", classic.port)),
        Prometheus::start(&prometheus_bin, &job("kepler-modern", modern.port)),
    ];

    // The `[24h:1m]` panels need two minute-aligned steps with samples: up to two minutes.
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut answers: Vec<Vec<Value>>;
    let mut variables;
    loop {
        variables = [Classic, Modern].map(|d| resolve(&prometheus[d as usize], d));
        let texts = variables.clone().map(|v| {
            v.into_iter()
                .map(|(k, (_, t))| (k, t))
                .collect::<BTreeMap<&str, String>>()
        });
        answers = PANELS
            .iter()
            .map(|p| {
                let d = p.dashboard as usize;
                run_panel(&prometheus[d], p, &texts[d])
            })
            .collect();
        let empty: Vec<String> = PANELS
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_empty())
            .map(|(p, _)| format!("{:?} {:?}: {}", p.dashboard, p.title, p.expr))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels still without data after 200 s: {empty:#?}\nvariables: {variables:#?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    for (p, a) in PANELS.iter().zip(&answers) {
        println!("{:?} | {} | {} series", p.dashboard, p.title, a.len());
    }

    // The variables offer what runs here.
    let [classic_vars, modern_vars] = &variables;
    for (vars, name, wanted) in [
        (classic_vars, "namespace", web.namespace),
        (classic_vars, "namespace", etl.namespace),
        (classic_vars, "pod", web.pod),
        (modern_vars, "namespace", web.namespace),
        (modern_vars, "pod", etl.pod),
        (modern_vars, "container", web.name),
        (modern_vars, "vm", guest.name.as_str()),
        (modern_vars, "job", "kepler-modern"),
    ] {
        assert!(
            vars[name].0.iter().any(|o| o == wanted),
            "variable {name} lacks {wanted:?}: {:?}",
            vars[name].0
        );
    }

    // The GPU panels show the GPU pod's power, the VM panels the guest's.
    let answer = |title: &str, expr_part: &str| -> &Vec<Value> {
        let at = PANELS
            .iter()
            .position(|p| p.title == title && p.expr.contains(expr_part))
            .unwrap_or_else(|| panic!("no panel {title} with {expr_part}"));
        &answers[at]
    };
    let gpu_pods = answer(CLASSIC_POD_W, "kepler_container_gpu_joules_total");
    let web_gpu_watts: f64 = gpu_pods
        .iter()
        .filter(|s| promql::sample_label(s, "pod_name") == Some(web.pod))
        .map(promql::sample_value)
        .sum();
    assert!(
        web_gpu_watts > 0.0,
        "the GPU pod has no GPU power: {gpu_pods:#?}"
    );
    let vms = answer("VM Power Consumption (W) By Zone", "kepler_vm_cpu_watts");
    assert!(
        vms.iter().any(
            |s| promql::sample_label(s, "vm_name") == Some(guest.name.as_str())
                && promql::sample_value(s) > 0.0
        ),
        "the guest has no power: {vms:#?}"
    );

    guest.kill();
    drop((classic, modern, prometheus, gpu, web, etl));
}
