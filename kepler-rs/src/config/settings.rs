//! The table of every setting: its dotted path, default and help text.
//!
//! This table is the one place a setting is declared. The YAML key, the environment variable
//! and the command-line flag are all derived from the dotted path (see [`flag_name`],
//! [`env_name`]), so the three layers can never drift apart. Kepler's names are used where
//! Kepler has one (`--web.listen-address`, `--host.sysfs`, `--monitor.interval`).

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Takes a value: `--monitor.interval 3s`.
    Value,
    /// A switch: `--fake-rapl` means true, `--fake-rapl=false` is allowed too.
    Switch,
}

/// One configurable setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Dotted path in camelCase, as in the YAML file: `monitor.interval`.
    pub path: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
    /// A flag name that differs from the derived one (Kepler's `--fake-rapl` style switches).
    pub flag_override: Option<&'static str>,
}

const fn value(path: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        path,
        kind: Kind::Value,
        default,
        help,
        flag_override: None,
    }
}

const fn switch(path: &'static str, help: &'static str) -> Setting {
    Setting {
        path,
        kind: Kind::Switch,
        default: "false",
        help,
        flag_override: None,
    }
}

/// Every setting, in the order `--help` shows them.
pub const SETTINGS: &[Setting] = &[
    value("log.level", "info", "Log level: error, warn, info, debug, trace"),
    value("log.format", "text", "Log format: text or json"),
    value("host.sysfs", "/sys", "Host sysfs mount (RAPL powercap, cgroups)"),
    value("host.procfs", "/proc", "Host procfs mount (processes, CPU statistics)"),
    value("web.listenAddress", "0.0.0.0:9102", "Address the /metrics and /healthz server listens on"),
    value(
        "web.configFile",
        "",
        "Web configuration file in the Prometheus exporter-toolkit format (as node_exporter's): TLS, client certificates, basic auth, response headers; re-read when it or a certificate changes (empty: plain HTTP, no auth)",
    ),
    switch(
        "web.healthzWithoutAuth",
        "Serve /healthz without basic auth (for Kubernetes probes; TLS and client certificates still apply)",
    ),
    value("monitor.interval", "3s", "How often energy and CPU time are measured"),
    value(
        "monitor.terminatedRetention",
        "5m",
        "How long a terminated container or process stays visible with its final energy",
    ),
    value(
        "monitor.maxTerminated",
        "500",
        "Most terminated containers (and, separately, processes) kept visible at once; oldest leave first",
    ),
    value(
        "attribution.idlePolicy",
        "cpu-share",
        "How idle energy is split: cpu-share (by CPU time over attribution.idleWindow), even (equally per container) or requests (by Kubernetes CPU requests against the node's CPUs; the unrequested rest to system_processes)",
    ),
    value(
        "attribution.idleWindow",
        "1m",
        "Window of CPU time used by the cpu-share idle policy",
    ),
    value(
        "attribution.idleHalfLife",
        "1h",
        "Half-life of the observations the idle-power estimator learns from",
    ),
    switch(
        "monitor.nodeShare",
        "Take only this node's share of the host's energy, by its share of host CPU time (several nodes on one host, e.g. kind; see deploy/README.md)",
    ),
    value(
        "metrics.schema",
        "classic",
        "Kepler metric family to serve: classic (Kepler <= 0.9 names), modern (Kepler >= 0.10 names) or both",
    ),
    Setting {
        path: "metrics.processes",
        kind: Kind::Switch,
        default: "",
        help: "Also export per-process metrics (kepler_process_*); unset: on with the modern or both schema (as Kepler 0.11), off with classic (as Kepler 0.7)",
        flag_override: None,
    },
    Setting {
        path: "ebpf.enabled",
        kind: Kind::Switch,
        default: "true",
        help: "Measure CPU time with the eBPF sched_switch program (exact, counts short-lived processes); when false or where it cannot load, CPU time comes from procfs and cgroups",
        flag_override: None,
    },
    Setting {
        path: "gpu.enabled",
        kind: Kind::Switch,
        default: "true",
        help: "Measure NVIDIA GPU energy through NVML where the driver's library loads (nodes without it run as without this setting); false: no GPU accounting",
        flag_override: None,
    },
    value(
        "gpu.nvmlLibrary",
        "",
        "Path of the NVML library to load (empty: the system's libnvidia-ml.so.1, as the dynamic loader finds it)",
    ),
    value("kube.nodeName", "", "Node name for the `instance` label (default: $NODE_NAME, then the host name)"),
    switch(
        "kube.enable",
        "Fill pod_name, container_name and container_namespace from the local kubelet's /pods",
    ),
    value(
        "kube.kubeletUrl",
        "",
        "Kubelet base URL polled for GET /pods (default: https://$NODE_IP:10250, else https://127.0.0.1:10250)",
    ),
    value(
        "kube.tokenFile",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "Bearer token file sent to the kubelet, re-read on every poll (empty: no token)",
    ),
    value(
        "kube.caFile",
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "PEM bundle that verifies the kubelet's serving certificate",
    ),
    switch(
        "kube.kubeletInsecureSkipVerify",
        "Do not verify the kubelet's certificate (kubeadm and kind kubelets serve self-signed ones)",
    ),
    value("kube.pollInterval", "10s", "How often the kubelet's pod list is fetched"),
    value(
        "kube.metadataSource",
        "kubelet",
        "Where pod metadata comes from: kubelet (poll the local kubelet's /pods) or api-server (watch this node's pods, fieldSelector spec.nodeName)",
    ),
    value(
        "kube.apiServerUrl",
        "",
        "API server URL for kube.metadataSource=api-server (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)",
    ),
    Setting {
        path: "estimator.enabled",
        kind: Kind::Switch,
        default: "true",
        help: "Where no RAPL is found (and fake RAPL is off), estimate power from CPU utilisation (source=\"estimator\") instead of exiting",
        flag_override: None,
    },
    value(
        "estimator.idleWatts",
        "",
        "Estimator: power per socket at 0 % CPU (default: from the CPU model table, else per-vCPU coefficients)",
    ),
    value(
        "estimator.maxWatts",
        "",
        "Estimator: power per socket at 100 % CPU (set together with estimator.idleWatts)",
    ),
    value(
        "cluster",
        "",
        "Cluster name sent with OTLP: the `cluster` attribute of every data point and k8s.cluster.name (empty: none is sent, so the hub can insert its own)",
    ),
    value(
        "otlp.endpoint",
        "",
        "OTLP endpoint to push metrics to, with its scheme (http:// = plaintext, https:// = TLS), e.g. http://hub:4317; empty: no push (env OTEL_EXPORTER_OTLP_ENDPOINT too)",
    ),
    value("otlp.protocol", "grpc", "OTLP protocol: grpc or http/protobuf (env OTEL_EXPORTER_OTLP_PROTOCOL too)"),
    value(
        "otlp.headers",
        "",
        "Headers sent with every export, key=value pairs separated by commas, values URL-encoded, e.g. authorization=Bearer%20TOKEN (env OTEL_EXPORTER_OTLP_HEADERS too)",
    ),
    value("otlp.compression", "gzip", "Export compression: gzip or none (env OTEL_EXPORTER_OTLP_COMPRESSION too)"),
    value("otlp.timeout", "10s", "Timeout of one export request (env OTEL_EXPORTER_OTLP_TIMEOUT in ms too)"),
    value("otlp.interval", "", "How often to push (default: monitor.interval)"),
    value(
        "otlp.caFile",
        "",
        "PEM CA to trust for an https:// endpoint instead of the system roots (env OTEL_EXPORTER_OTLP_CERTIFICATE too)",
    ),
    value(
        "otlp.clientCertFile",
        "",
        "PEM client certificate (chain) presented to an https:// endpoint that requires one, with otlp.clientKeyFile (env OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE too)",
    ),
    value(
        "otlp.clientKeyFile",
        "",
        "PEM private key of otlp.clientCertFile (env OTEL_EXPORTER_OTLP_CLIENT_KEY too)",
    ),
    value(
        "otlp.serviceName",
        "kepler-pods",
        "service.name of the pushed resource: the hub's `job` label (the Kepler scrape job's name in the reference multi-cluster deployment; env OTEL_SERVICE_NAME too)",
    ),
    value("otlp.retry.initialInterval", "5s", "First retry delay after a retryable export failure (grows x1.5 with jitter)"),
    value("otlp.retry.maxInterval", "30s", "Longest retry delay"),
    value(
        "relay.targets",
        "",
        "Prometheus endpoints to relay over OTLP, comma-separated [job=]URL (e.g. cadvisor=http://127.0.0.1:8080/metrics)",
    ),
    switch(
        "relay.kubelet.enabled",
        "Relay the local kubelet's cAdvisor metrics (<kube.kubeletUrl>/metrics/cadvisor, with the kube.tokenFile token and kube.caFile CA or kube.kubeletInsecureSkipVerify), job kubelet",
    ),
    value("relay.interval", "30s", "How often relay targets are scraped and pushed"),
    value(
        "relay.maxSeries",
        "100000",
        "Most series relayed from one target per scrape (after relay.metrics); a bigger page is skipped with a log line",
    ),
    value(
        "relay.metrics",
        "container_cpu_*,container_memory_*,container_network_*,container_fs_*,machine_*",
        "Metric allow-list: comma-separated names, a trailing * matches a prefix; * relays everything",
    ),
    value(
        "relay.dropLabels",
        "",
        "Labels removed from relayed series, comma-separated (e.g. id,name to cut cAdvisor's cgroup paths)",
    ),
    Setting {
        path: "fakeRapl.enabled",
        kind: Kind::Switch,
        default: "false",
        help: "Simulate RAPL: a powercap-shaped tree whose energy follows this host's real CPU load",
        flag_override: Some("fake-rapl"),
    },
    value(
        "fakeRapl.dir",
        "",
        "Where to build the fake powercap tree (default: a temporary directory)",
    ),
    value("fakeRapl.sockets", "1", "Number of simulated sockets"),
    value("fakeRapl.packageIdleWatts", "10", "Simulated package power at 0 % CPU, per socket"),
    value("fakeRapl.packageDynamicWatts", "40", "Simulated package power added at 100 % CPU, per socket"),
    value("fakeRapl.coreIdleWatts", "2", "Simulated core power at 0 % CPU, per socket"),
    value("fakeRapl.coreDynamicWatts", "30", "Simulated core power added at 100 % CPU, per socket"),
    value("fakeRapl.dramIdleWatts", "2", "Simulated DRAM power at 0 % CPU, per socket"),
    value("fakeRapl.dramDynamicWatts", "3", "Simulated DRAM power added at 100 % CPU, per socket"),
    value(
        "fakeRapl.maxEnergyRangeUj",
        "1000000000",
        "max_energy_range_uj of the simulated zones (small, so counters wrap)",
    ),
    value("fakeRapl.tick", "100ms", "How often the simulated counters advance"),
];

/// `monitor.maxTerminated` -> `monitor.max-terminated`.
pub fn flag_name(setting: &Setting) -> String {
    if let Some(flag) = setting.flag_override {
        return flag.to_string();
    }
    let mut out = String::with_capacity(setting.path.len() + 4);
    for c in setting.path.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `monitor.maxTerminated` -> `KEPLER_MONITOR_MAX_TERMINATED`.
pub fn env_name(path: &str) -> String {
    let mut out = String::from("KEPLER_");
    for c in path.chars() {
        match c {
            '.' => out.push('_'),
            c if c.is_ascii_uppercase() => {
                out.push('_');
                out.push(c);
            }
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}

/// The settings reference as a Markdown table (docs/configuration.md embeds it; a test keeps
/// the two identical).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| YAML path | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let flag = match s.kind {
            Kind::Value => format!("`--{}`", flag_name(s)),
            Kind::Switch => format!("`--{}[=BOOL]`", flag_name(s)),
        };
        let default = if s.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", s.default)
        };
        out.push_str(&format!(
            "| `{}` | {flag} | `{}` | {default} | {} |\n",
            s.path,
            env_name(s.path),
            s.help.replace('|', "\\|")
        ));
    }
    out
}

pub fn find(path: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let s = find("monitor.maxTerminated").unwrap();
        assert_eq!(flag_name(s), "monitor.max-terminated");
        assert_eq!(env_name(s.path), "KEPLER_MONITOR_MAX_TERMINATED");
        assert_eq!(
            flag_name(find("web.listenAddress").unwrap()),
            "web.listen-address"
        );
        assert_eq!(flag_name(find("fakeRapl.enabled").unwrap()), "fake-rapl");
        assert_eq!(flag_name(find("fakeRapl.dir").unwrap()), "fake-rapl.dir");
    }

    /// docs/configuration.md must carry the current table; `UPDATE_DOCS=1` rewrites it.
    #[test]
    fn configuration_reference_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let begin = "<!-- settings:begin -->\n";
        let end = "<!-- settings:end -->";
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            panic!("{path} lacks the settings markers");
        };
        let current = &doc[b + begin.len()..e];
        let table = markdown_table();
        if current != table {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &doc[..b + begin.len()], &doc[e..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!("{path} is out of date: run `UPDATE_DOCS=1 cargo test -p kepler-rs configuration_reference`");
            }
        }
    }

    #[test]
    fn paths_and_flags_are_unique() {
        let mut paths: Vec<_> = SETTINGS.iter().map(|s| s.path).collect();
        let mut flags: Vec<_> = SETTINGS.iter().map(flag_name).collect();
        paths.sort_unstable();
        flags.sort_unstable();
        paths.dedup();
        flags.dedup();
        assert_eq!(paths.len(), SETTINGS.len());
        assert_eq!(flags.len(), SETTINGS.len());
    }
}
