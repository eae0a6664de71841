use super::*;
use crate::power::units::Watts;

fn load(args: &[&str], env: &[(&str, &str)], yaml: Option<&str>) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["kepler-rs".to_string()];
    if let Some(yaml) = yaml {
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        argv.push(format!("--config.file={}", file.display()));
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = layers::parse_args(argv).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(&cli, |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

#[test]
fn defaults_match_kepler() {
    let c = load(&[], &[], None).unwrap();
    assert_eq!(c.listen_address, "0.0.0.0:9102".parse().unwrap());
    assert_eq!(c.interval, Duration::from_secs(3));
    assert_eq!(c.sysfs, PathBuf::from("/sys"));
    assert_eq!(c.procfs, PathBuf::from("/proc"));
    assert!(!c.process_metrics);
    assert!(c.fake_rapl.is_none());
    assert_eq!(c.idle_policy, IdlePolicy::CpuShare);
}

#[test]
fn process_metrics_default_to_each_keplers() {
    // Kepler 0.7 (classic) serves no process level by default, Kepler 0.11 (modern) does.
    let on = |args: &[&str]| load(args, &[], None).unwrap().process_metrics;
    assert!(!on(&[]));
    assert!(on(&["--metrics.schema", "modern"]));
    assert!(on(&["--metrics.schema", "both"]));
    assert!(!on(&[
        "--metrics.schema",
        "modern",
        "--metrics.processes=false"
    ]));
    assert!(on(&["--metrics.processes"]));
    let env = load(
        &["--metrics.schema", "modern"],
        &[("KEPLER_METRICS_PROCESSES", "false")],
        None,
    )
    .unwrap();
    assert!(!env.process_metrics);
}

#[test]
fn precedence_file_env_flags() {
    let yaml = "monitor:\n  interval: 10s\n  maxTerminated: 7\nhost:\n  sysfs: /yaml/sys\n  procfs: /yaml/proc\n";
    let c = load(
        &["--monitor.interval", "5s"],
        &[
            ("KEPLER_MONITOR_INTERVAL", "7s"),
            ("KEPLER_HOST_PROCFS", "/env/proc"),
        ],
        Some(yaml),
    )
    .unwrap();
    assert_eq!(
        c.interval,
        Duration::from_secs(5),
        "flag beats env and file"
    );
    assert_eq!(c.procfs, PathBuf::from("/env/proc"), "env beats file");
    assert_eq!(c.sysfs, PathBuf::from("/yaml/sys"), "file beats default");
    assert_eq!(c.max_terminated, 7);
}

#[test]
fn fake_rapl_switch_and_model() {
    let c = load(
        &[
            "--fake-rapl",
            "--fake-rapl.sockets",
            "2",
            "--fake-rapl.package-idle-watts=12.5",
        ],
        &[],
        None,
    )
    .unwrap();
    let fake = c.fake_rapl.unwrap();
    assert_eq!(fake.model.sockets, 2);
    assert_eq!(fake.model.zones[0].idle, Watts(12.5));
    assert!(fake.dir.is_none());
    let c = load(
        &["--fake-rapl=false"],
        &[],
        Some("fakeRapl:\n  enabled: true\n"),
    )
    .unwrap();
    assert!(c.fake_rapl.is_none(), "flag false overrides file true");
    let c = load(&[], &[("KEPLER_FAKE_RAPL_ENABLED", "true")], None).unwrap();
    assert!(c.fake_rapl.is_some());
}

#[test]
fn every_idle_policy_parses_from_flag_and_file() {
    for (name, policy) in [
        ("cpu-share", IdlePolicy::CpuShare),
        ("even", IdlePolicy::Even),
        ("requests", IdlePolicy::Requests),
    ] {
        let flag = load(&["--attribution.idle-policy", name], &[], None).unwrap();
        assert_eq!(flag.idle_policy, policy, "{name}");
        let file = format!("attribution:\n  idlePolicy: {name}\n");
        let file = load(&[], &[], Some(&file)).unwrap();
        assert_eq!(file.idle_policy, policy, "{name}");
    }
}

#[test]
fn all_errors_reported_with_paths() {
    let err = load(
        &[
            "--monitor.interval",
            "0s",
            "--web.listen-address",
            "nope",
            "--fake-rapl",
            "--fake-rapl.sockets",
            "0",
        ],
        &[("KEPLER_LOG_LEVEL", "loud")],
        Some("attribution:\n  idlePolicy: random\n"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("monitor.interval: must be > 0, got 0s"),
        "{text}"
    );
    assert!(
        text.contains("web.listenAddress: must be HOST:PORT"),
        "{text}"
    );
    assert!(text.contains("log.level: must be one of"), "{text}");
    assert!(
        text.contains("attribution.idlePolicy: must be cpu-share, even or requests"),
        "{text}"
    );
    assert!(text.contains("fakeRapl.sockets: must be > 0"), "{text}");
    assert_eq!(err.0.len(), 5, "{text}");
}

#[test]
fn unknown_and_malformed_yaml() {
    let err = load(
        &[],
        &[],
        Some("monitor:\n  intervall: 3s\n  interval: [1, 2]\n"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("monitor.intervall: unknown setting"),
        "{text}"
    );
    assert!(
        text.contains("monitor.interval: must be a single value"),
        "{text}"
    );
    let err = load(&[], &[], Some("monitor: [unclosed")).unwrap_err();
    assert!(err.to_string().contains("config.file:"), "{err}");
}

#[test]
fn bad_durations_and_numbers() {
    let err = load(
        &["--monitor.interval", "fast", "--monitor.max-terminated=-1"],
        &[],
        None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("monitor.interval: must be a duration"),
        "{text}"
    );
    assert!(
        text.contains("monitor.maxTerminated: must be a whole number"),
        "{text}"
    );
}

#[test]
fn estimator_watts_come_in_pairs() {
    let c = load(&[], &[], None).unwrap();
    assert_eq!(
        c.estimator,
        EstimatorConfig {
            enabled: true,
            watts: None
        }
    );
    let c = load(
        &[
            "--estimator.idle-watts",
            "20",
            "--estimator.max-watts",
            "90",
        ],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(c.estimator.watts, Some((Watts(20.0), Watts(90.0))));
    let err = load(&["--estimator.idle-watts", "20"], &[], None).unwrap_err();
    assert!(
        err.to_string()
            .contains("estimator.maxWatts: must be set together"),
        "{err}"
    );
    let err = load(
        &[
            "--estimator.idle-watts",
            "50",
            "--estimator.max-watts",
            "10",
        ],
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("estimator.maxWatts: must be at least"),
        "{err}"
    );
    let c = load(&["--estimator.enabled=false"], &[], None).unwrap();
    assert!(!c.estimator.enabled);
}

#[test]
fn subcommand_sees_flags_before_and_after_it() {
    let cli = layers::parse_args([
        "kepler-rs",
        "--host.sysfs",
        "/a",
        "doctor",
        "--host.procfs",
        "/b",
    ])
    .unwrap();
    assert_eq!(cli.action, layers::Action::Doctor);
    assert_eq!(cli.values.get("host.sysfs").map(String::as_str), Some("/a"));
    assert_eq!(
        cli.values.get("host.procfs").map(String::as_str),
        Some("/b")
    );
    let cli = layers::parse_args(["kepler-rs", "--host.sysfs", "/a"]).unwrap();
    assert_eq!(cli.action, layers::Action::Run);
}

#[test]
fn kube_settings() {
    assert!(load(&[], &[], None).unwrap().kube.is_none());
    let c = load(
        &["--kube.enable", "--kube.kubelet-insecure-skip-verify"],
        &[("KEPLER_KUBE_KUBELET_URL", "https://10.0.0.1:10250")],
        Some("kube:\n  pollInterval: 30s\n  caFile: \"\"\n"),
    )
    .unwrap();
    let kube = c.kube.unwrap();
    assert_eq!(kube.kubelet_url, "https://10.0.0.1:10250");
    assert!(kube.insecure_skip_verify);
    assert_eq!(kube.poll_interval, Duration::from_secs(30));
    assert_eq!(kube.ca_file, None);
    assert_eq!(
        kube.token_file,
        Some(PathBuf::from(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ))
    );
    let err = load(
        &["--kube.enable", "--kube.kubelet-url", "10.0.0.1:10250"],
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("kube.kubeletUrl: must start with https://"),
        "{err}"
    );
    assert_eq!(kube.source, MetadataSource::Kubelet);
    let c = load(
        &["--kube.enable", "--kube.metadata-source=api-server"],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(c.kube.unwrap().source, MetadataSource::ApiServer);
    let err = load(
        &["--kube.enable", "--kube.metadata-source=watch"],
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("kube.metadataSource: must be kubelet or api-server"),
        "{err}"
    );
}

#[test]
fn otlp_push_and_relay_settings() {
    let c = load(&[], &[], None).unwrap();
    assert!(c.otlp.is_none() && c.relay.is_none() && c.cluster.is_none());
    let c = load(
        &[
            "--cluster",
            "cluster1",
            "--otlp.endpoint",
            "http://hub:4318",
            "--otlp.protocol",
            "http/protobuf",
            "--relay.targets",
            "cadvisor=http://127.0.0.1:8080/metrics,http://127.0.0.1:9100/metrics",
        ],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t")],
        None,
    )
    .unwrap();
    assert_eq!(c.cluster.as_deref(), Some("cluster1"));
    let otlp = c.otlp.unwrap();
    assert_eq!(
        otlp.transport.endpoint.as_str(),
        "http://hub:4318/v1/metrics"
    );
    assert_eq!(
        otlp.transport.headers,
        vec![("authorization".to_string(), "Bearer t".to_string())]
    );
    assert_eq!(otlp.interval, None, "defaults to monitor.interval");
    assert_eq!(otlp.transport.client_identity, None);
    let relay = c.relay.unwrap();
    assert_eq!(relay.targets[0].job, "cadvisor");
    assert_eq!(relay.targets[1].job, "relay");
    // The OTEL variable is below the KEPLER_ one.
    let c = load(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
            ("KEPLER_OTLP_ENDPOINT", "https://kepler:4317"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        c.otlp.unwrap().transport.endpoint.as_str(),
        "https://kepler:4317/"
    );
    // The client certificate: the OTel variables, the flags above them.
    let c = load(
        &["--otlp.client-key-file", "/flag/spoke.key"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://hub:4327"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/env/spoke.crt"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/env/spoke.key"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        c.otlp.unwrap().transport.client_identity,
        Some(super::otlp::ClientIdentityFiles {
            cert_file: "/env/spoke.crt".into(),
            key_file: "/flag/spoke.key".into(),
        })
    );
}

#[test]
fn otlp_errors_name_the_setting() {
    let err = load(
        &[
            "--otlp.endpoint",
            "hub:4317",
            "--otlp.protocol",
            "udp",
            "--otlp.headers",
            "nonsense",
            "--relay.kubelet.enabled",
        ],
        &[],
        None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("otlp.endpoint: must start with http:// (plaintext) or https://"),
        "{text}"
    );
    assert!(
        text.contains("otlp.protocol: must be grpc or http/protobuf"),
        "{text}"
    );
    assert!(text.contains("otlp.headers: must be key=value"), "{text}");
    // A client certificate without its key (or the other way round) is an error.
    let err = load(
        &["--otlp.endpoint", "https://hub:4327"],
        &[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/spoke.crt")],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("otlp.clientKeyFile: must be set with otlp.clientCertFile"),
        "{err}"
    );
    let err = load(
        &["--relay.targets", "http://127.0.0.1:1/metrics"],
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("relaying needs otlp.endpoint"),
        "{err}"
    );
}

#[test]
fn metrics_schema() {
    assert_eq!(load(&[], &[], None).unwrap().schema, Schema::Classic);
    assert_eq!(
        load(&["--metrics.schema", "both"], &[], None)
            .unwrap()
            .schema,
        Schema::Both
    );
    assert_eq!(
        load(&[], &[("KEPLER_METRICS_SCHEMA", "modern")], None)
            .unwrap()
            .schema,
        Schema::Modern
    );
    let err = load(&["--metrics.schema", "v2"], &[], None).unwrap_err();
    assert!(
        err.to_string()
            .contains("metrics.schema: must be classic, modern or both"),
        "{err}"
    );
}

#[test]
fn unknown_flag_is_a_clap_error() {
    assert!(layers::parse_args(["kepler-rs", "--no-such-flag"]).is_err());
}
