#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Helm chart `deploy/helm/kepler-rs` with the real Helm: Helm 4 (`tests/peers/helm`) and
//! Helm 3 (`tests/peers/helm3`), both built by scripts/peers.sh. `helm lint --strict` in every
//! mode; `helm template` of every mode and a values matrix, each manifest through
//! `kubernetes-validate --strict` for the Kubernetes versions deploy_manifests.rs validates
//! against, every flag and KEPLER_* variable one the exporter knows, the exporter's privileges
//! (three capabilities by default, `exporter.privileged` as an option: common/privileges.rs);
//! wrong values refused by
//! values.schema.json with their path; ServiceMonitor and PrometheusRule only where the cluster
//! serves monitoring.coreos.com/v1; the recording rules under upstream Kepler's names through
//! `promtool check rules`; the dashboard ConfigMap equal to deploy/grafana; the chart and the
//! kustomize overlays describing the same objects (ADR 0013); the kind script installing through
//! the chart (stub kind/docker/kubectl, helm rendering for real); and the rendered hub and spoke
//! run as the real binaries: a spoke's token, as the kubelet would expand it, is accepted by the
//! hub's rendered configuration. A missing tool skips with a message, or fails under CI.

mod common;
#[path = "common/privileges.rs"]
mod privileges;

use privileges::{assert_exporter_privileges, Privileges};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kepler_rs::config::settings::{env_name, flag_name, SETTINGS};
use kepler_test_support::peers::require_peer;
use kepler_test_support::require::require_tool;
use serde_yaml_ng::Value;

const CHART: &str = "deploy/helm/kepler-rs";
/// The Kubernetes versions deploy_manifests.rs validates the kustomize overlays against.
const KUBE_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];
const MONITORING: [&str; 2] = ["--api-versions", "monitoring.coreos.com/v1"];
const SPOKE: [&str; 6] = [
    "--set",
    "mode=spoke",
    "--set",
    "spoke.cluster=cluster1",
    "--set",
    "spoke.endpoint=http://hub.invalid:4327",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join(CHART)
}

/// Helm 4 and Helm 3, or `None` (a skip line; a failure under CI) when either is not built.
fn helms() -> Option<Vec<(&'static str, PathBuf)>> {
    let four = require_peer("helm")?;
    let three = require_peer("helm3")?;
    Some(vec![("helm 4", four), ("helm 3", three)])
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `helm template kepler <chart> --namespace kepler <args>`: success and stdout (+ stderr).
fn template(helm: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(helm)
        .args(["template", "kepler"])
        .arg(chart())
        .args(["--namespace", "kepler"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        (true, stdout)
    } else {
        (false, stderr + &stdout)
    }
}

fn rendered(helm: &Path, args: &[&str]) -> String {
    let (ok, yaml) = template(helm, args);
    assert!(ok, "helm template {args:?}:\n{yaml}");
    yaml
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn has(objects: &[Value], kind: &str) -> bool {
    objects.iter().any(|o| o["kind"] == kind)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// A literal env value of the container, if it has that variable.
fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

fn validate(validator: &Path, yaml: &str, what: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), yaml).unwrap();
    for version in KUBE_VERSIONS {
        let (ok, report) = run(Command::new(validator)
            .args(["--strict", "--no-warn", "-k", version])
            .arg(tmp.path()));
        assert!(
            ok && !report.contains("ERROR"),
            "kubernetes-validate {version} on {what}:\n{report}"
        );
    }
}

/// What every rendered exporter must have, in every mode and values set.
fn check_exporter(objects: &[Value], privileges: Privileges, what: &str) {
    let ds = find(objects, "DaemonSet", "kepler-exporter");
    let pod = &ds["spec"]["template"]["spec"];
    assert_exporter_privileges(ds, privileges, what);
    let c = container(ds);
    assert_eq!(c["command"][0], "/usr/local/bin/kepler-rs", "{what}");
    for arg in strs(&c["args"]) {
        let flag = arg.trim_start_matches("--").split('=').next().unwrap();
        assert!(
            SETTINGS.iter().any(|s| flag_name(s) == flag),
            "{what}: {arg} is not a kepler-rs flag"
        );
    }
    for e in c["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name.starts_with("KEPLER_") {
            assert!(
                SETTINGS.iter().any(|s| env_name(s.path) == name),
                "{what}: {name} is not a kepler-rs setting"
            );
        }
    }
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for (path, host) in [("/host/sys", "/sys"), ("/host/proc", "/proc")] {
        let m = mounts.iter().find(|m| m["mountPath"] == path).unwrap();
        assert_eq!(m["readOnly"], true, "{what}: {path} read-only");
        let vol = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(vol["hostPath"]["path"], host, "{what}");
    }
    for mount in mounts {
        assert!(
            pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v["name"] == mount["name"]),
            "{what}: mount {mount:?} has no volume"
        );
    }
    let sa = find(objects, "ServiceAccount", "kepler-exporter");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"], "{what}");
    let binding = find(objects, "ClusterRoleBinding", "kepler-exporter");
    assert_eq!(binding["subjects"][0]["name"], "kepler-exporter", "{what}");
    assert_eq!(binding["subjects"][0]["namespace"], "kepler", "{what}");
    // The Service and the ServiceMonitor select the DaemonSet's pods.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let svc = find(objects, "Service", "kepler-exporter");
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[k.as_str().unwrap()], v, "{what}: Service selector");
    }
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "{what}: DaemonSet selector"
        );
    }
}

fn ports(svc: &Value) -> BTreeSet<u64> {
    svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect()
}

fn check_hub(objects: &[Value], what: &str) {
    let collector = find(objects, "Deployment", "kepler-collector");
    let c = container(collector);
    assert_eq!(c["command"][0], "/usr/local/bin/kepler-collector", "{what}");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let svc = find(objects, "Service", "kepler-collector");
    assert_eq!(ports(svc), BTreeSet::from([4317, 4318, 4327, 4328, 9464]));
    let spokes = find(objects, "Service", "kepler-collector-spokes");
    assert_eq!(ports(spokes), BTreeSet::from([4327, 4328]));
    let labels = &collector["spec"]["template"]["metadata"]["labels"];
    for s in [svc, spokes] {
        for (k, v) in s["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(
                &labels[k.as_str().unwrap()],
                v,
                "{what}: hub Service selector"
            );
        }
    }
    // The configuration parses as kepler-collector's and every spoke has its token mounted.
    let cfg = find(objects, "ConfigMap", "kepler-collector-config");
    let config: Value =
        serde_yaml_ng::from_str(cfg["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let volumes = collector["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let tokens = volumes.iter().find(|v| v["name"] == "tokens").unwrap();
    let secret_name = tokens["secret"]["secretName"].as_str().unwrap();
    let secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret_name);
    for l in config["listeners"].as_sequence().unwrap() {
        for t in l["auth"]["tokens"].as_sequence().into_iter().flatten() {
            let cluster = t["cluster"].as_str().unwrap();
            assert_eq!(
                t["token_file"],
                format!("/etc/kepler-collector/tokens/{cluster}").as_str()
            );
            if let Some(secret) = secret {
                let token = b64(secret["data"][cluster].as_str().unwrap());
                assert!(token.len() >= 16, "{what}: token of {cluster}");
            }
        }
    }
    // TLS: on exactly the spoke listeners when a Secret is named, its files where the config
    // reads them; on none otherwise.
    let tls_secret = volumes
        .iter()
        .find(|v| v["name"] == "tls")
        .map(|v| v["secret"]["secretName"].as_str().unwrap().to_string());
    let mounted = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tls" && m["mountPath"] == "/etc/kepler-collector/tls");
    assert_eq!(
        mounted,
        tls_secret.is_some(),
        "{what}: TLS volume and mount"
    );
    for l in config["listeners"].as_sequence().unwrap() {
        let spoke = l["name"].as_str().unwrap().starts_with("spokes-");
        if spoke && tls_secret.is_some() {
            assert_eq!(
                l["tls"]["cert_file"], "/etc/kepler-collector/tls/tls.crt",
                "{what}"
            );
            assert_eq!(
                l["tls"]["key_file"], "/etc/kepler-collector/tls/tls.key",
                "{what}"
            );
        } else {
            assert!(l["tls"].is_null(), "{what}: TLS on {:?}", l["name"]);
        }
    }
}

/// Standard base64 (Secret data).
fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("not base64: {text}")) as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn chart_lints_strict_in_every_mode_with_helm_3_and_4() {
    let Some(helms) = helms() else {
        return;
    };
    let modes: [&[&str]; 3] = [&["--set", "mode=exporter"], &SPOKE, &["--set", "mode=hub"]];
    for (name, helm) in &helms {
        for args in modes {
            let (ok, out) = run(Command::new(helm)
                .args(["lint", "--strict"])
                .arg(chart())
                .args(args));
            assert!(
                ok && out.contains("0 chart(s) failed"),
                "{name} lint {args:?}:\n{out}"
            );
        }
    }
}

/// Modes and values the matrix renders: name, helm arguments.
fn matrix() -> Vec<(&'static str, Vec<&'static str>)> {
    let with = |base: &[&'static str], more: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(more).copied().collect()
    };
    vec![
        ("exporter (defaults)", vec![]),
        ("exporter with the monitoring API", MONITORING.to_vec()),
        (
            "exporter: api-server metadata, fake RAPL, node share, extra flags and env",
            with(
                &MONITORING,
                &[
                    "--set",
                    "exporter.kube.metadataSource=api-server",
                    "--set",
                    "exporter.fakeRapl=true",
                    "--set",
                    "exporter.nodeShare=true",
                    "--set",
                    "exporter.extraArgs={--metrics.processes}",
                    "--set",
                    "exporter.extraEnv[0].name=KEPLER_MONITOR_INTERVAL",
                    "--set",
                    "exporter.extraEnv[0].value=5s",
                    "--set",
                    "prometheusRule.highGranularity=true",
                    "--set",
                    "exporter.podAnnotations.team=energy",
                    "--set",
                    "namePrefix=kepler",
                ],
            ),
        ),
        (
            "exporter: no pod metadata, no priority class, no tolerations",
            vec![
                "--set",
                "exporter.kube.enabled=false",
                "--set",
                "exporter.priorityClassName=",
                "--set",
                "exporter.tolerations=null",
                "--set",
                "exporter.nodeSelector.kubernetes\\.io/os=linux",
            ],
        ),
        (
            "exporter: privileged (kernels older than 5.8, kind)",
            vec!["--set", "exporter.privileged=true"],
        ),
        (
            "spoke: SYS_RESOURCE for the memlock limit of kernels 5.8 to 5.10",
            with(
                &SPOKE,
                &["--set", "exporter.extraCapabilities={SYS_RESOURCE}"],
            ),
        ),
        ("spoke, generated token", SPOKE.to_vec()),
        (
            "spoke, existing token Secret, TLS CA, OTLP/HTTP",
            vec![
                "--set",
                "mode=spoke",
                "--set",
                "spoke.cluster=edge-1",
                "--set",
                "spoke.endpoint=https://hub.example.com:4328",
                "--set",
                "spoke.protocol=http/protobuf",
                "--set",
                "spoke.token.existingSecret=edge-token",
                "--set",
                "spoke.token.key=bearer",
                "--set",
                "spoke.tls.caSecret=hub-ca",
            ],
        ),
        (
            "spoke, token value, no kubelet relay, with the monitoring API",
            with(
                &SPOKE,
                &[
                    "--set",
                    "spoke.token.value=0123456789abcdef0123",
                    "--set",
                    "exporter.relayKubelet=false",
                    "--api-versions",
                    "monitoring.coreos.com/v1",
                ],
            ),
        ),
        ("hub (defaults)", vec!["--set", "mode=hub"]),
        (
            "hub: TLS on the spoke listeners from a Secret",
            vec!["--set", "mode=hub", "--set", "hub.tls.secretName=hub-tls"],
        ),
        (
            "hub with the monitoring API, ServiceMonitor elsewhere",
            with(
                &MONITORING,
                &[
                    "--set",
                    "mode=hub",
                    "--set",
                    "serviceMonitor.namespace=monitoring",
                    "--set",
                    "serviceMonitor.labels.release=kube-prometheus-stack",
                ],
            ),
        ),
        (
            "hub: LoadBalancer with fixed node ports, existing tokens, no local exporters",
            vec![
                "--set",
                "mode=hub",
                "--set",
                "hub.spokeService.type=LoadBalancer",
                "--set",
                "hub.spokeService.nodePorts.grpc=30427",
                "--set",
                "hub.spokeService.nodePorts.http=30428",
                "--set",
                "hub.spokeService.loadBalancerSourceRanges={10.0.0.0/8}",
                "--set",
                "hub.spokeService.externalTrafficPolicy=Local",
                "--set",
                "hub.tokens.existingSecret=hub-tokens",
                "--set",
                "hub.localExporters=false",
                "--set",
                "hub.spokes={eu-1,us-2,ap-3}",
            ],
        ),
        (
            "hub: mutual TLS with certificate names",
            vec![
                "--set",
                "mode=hub",
                "--set",
                "hub.tls.secretName=hub-tls",
                "--set",
                "hub.tls.clientCASecret=spokes-ca",
                "--set",
                "hub.certificates[0].cluster=cluster3",
                "--set",
                "hub.certificates[0].dnsName=otel.cluster3.example",
            ],
        ),
        (
            "hub: ClusterIP, tokens from values",
            vec![
                "--set",
                "mode=hub",
                "--set",
                "hub.spokeService.type=ClusterIP",
                "--set",
                "hub.tokens.values.cluster1=0123456789abcdef0123",
                "--set",
                "hub.replicas=2",
            ],
        ),
    ]
}

/// `hub.tls.secretName` serves the spoke listeners over TLS with that Secret's files; the hub
/// listeners stay plain.
#[test]
fn hub_tls_from_a_secret_reaches_the_spoke_listeners() {
    let Some(helms) = helms() else {
        return;
    };
    for (name, helm) in &helms {
        let objects = docs(&rendered(
            helm,
            &["--set", "mode=hub", "--set", "hub.tls.secretName=hub-tls"],
        ));
        let collector = find(&objects, "Deployment", "kepler-collector");
        let volumes = collector["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .unwrap();
        let tls = volumes.iter().find(|v| v["name"] == "tls");
        assert_eq!(
            tls.map(|v| &v["secret"]["secretName"]),
            Some(&Value::from("hub-tls")),
            "{name}: no TLS volume from the Secret"
        );
        check_hub(&objects, &format!("{name}: hub with TLS"));
    }
}

#[test]
fn every_mode_and_a_values_matrix_render_and_validate_with_helm_3_and_4() {
    let Some(helms) = helms() else {
        return;
    };
    let Some(validator) = require_tool("kubernetes-validate") else {
        return;
    };
    for (name, args) in matrix() {
        // Helm 3 and 4 render the same objects (Helm 4 leaves a few more blank lines).
        let yaml = rendered(&helms[0].1, &args);
        let objects = docs(&yaml);
        let mut other = docs(&rendered(&helms[1].1, &args));
        // Generated tokens differ from one rendering to the next.
        let mut mine = objects.clone();
        for o in mine.iter_mut().chain(other.iter_mut()) {
            if o["kind"] == "Secret" {
                o["data"] = Value::Null;
            }
        }
        assert_eq!(mine, other, "{name}: helm 3 and helm 4 differ");
        validate(&validator, &yaml, name);

        let hub = args.contains(&"mode=hub");
        let spoke = args.contains(&"mode=spoke");
        let exporters = !args.contains(&"hub.localExporters=false");
        assert_eq!(has(&objects, "DaemonSet"), exporters, "{name}");
        assert_eq!(has(&objects, "Deployment"), hub, "{name}");
        assert!(
            !has(&objects, "Namespace"),
            "{name}: the chart installs into the release namespace"
        );
        for o in &objects {
            let cluster_scoped = ["ClusterRole", "ClusterRoleBinding"]
                .iter()
                .any(|k| o["kind"] == *k);
            let ns = &o["metadata"]["namespace"];
            assert_eq!(
                ns.is_string(),
                !cluster_scoped,
                "{name}: namespace of {} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
        }
        if exporters {
            let privileges = if args.contains(&"exporter.privileged=true") {
                Privileges::Privileged
            } else if args.contains(&"exporter.extraCapabilities={SYS_RESOURCE}") {
                Privileges::Capabilities(&["SYS_RESOURCE"])
            } else {
                Privileges::Capabilities(&[])
            };
            check_exporter(&objects, privileges, name);
            let c = container(find(&objects, "DaemonSet", "kepler-exporter"));
            let pushes = env_value(c, "KEPLER_OTLP_ENDPOINT");
            assert_eq!(pushes.is_some(), hub || spoke, "{name}: push");
            if hub {
                assert_eq!(pushes, Some("http://kepler-collector.kepler.svc:4317"));
                assert_eq!(
                    env_value(c, "KEPLER_CLUSTER"),
                    None,
                    "{name}: the hub inserts cluster=\"hub\""
                );
            }
            if spoke {
                assert!(env_value(c, "KEPLER_CLUSTER").is_some(), "{name}");
                let header = env_value(c, "KEPLER_OTLP_HEADERS").unwrap();
                assert_eq!(header, "authorization=Bearer%20$(OTLP_BEARER_TOKEN)");
                // $(OTLP_BEARER_TOKEN) expands only from a variable defined before it.
                let env = c["env"].as_sequence().unwrap();
                let pos = |n: &str| env.iter().position(|e| e["name"] == n).unwrap();
                assert!(pos("OTLP_BEARER_TOKEN") < pos("KEPLER_OTLP_HEADERS"));
                let token = &env[pos("OTLP_BEARER_TOKEN")]["valueFrom"]["secretKeyRef"];
                let secret = token["name"].as_str().unwrap();
                if secret == "kepler-spoke-otlp" {
                    let s = find(&objects, "Secret", secret);
                    let value = b64(s["data"][token["key"].as_str().unwrap()].as_str().unwrap());
                    assert!(value.len() >= 16, "{name}: token {value:?}");
                } else {
                    assert_eq!(secret, "edge-token");
                    assert_eq!(token["key"], "bearer");
                    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
                }
                let relay = env_value(c, "KEPLER_RELAY_KUBELET_ENABLED");
                assert_eq!(
                    relay.is_some(),
                    !args.contains(&"exporter.relayKubelet=false"),
                    "{name}"
                );
            }
            if args.contains(&"spoke.tls.caSecret=hub-ca") {
                let ca = env_value(c, "KEPLER_OTLP_CA_FILE").unwrap();
                let mount = c["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|m| ca.starts_with(m["mountPath"].as_str().unwrap()))
                    .unwrap_or_else(|| panic!("{name}: {ca} is not mounted"));
                assert_eq!(mount["name"], "otlp-ca");
            }
            let role = find(&objects, "ClusterRole", "kepler-exporter");
            let pods_rule = role["rules"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|r| strs(&r["resources"]) == ["pods"]);
            assert_eq!(
                pods_rule,
                args.contains(&"exporter.kube.metadataSource=api-server"),
                "{name}: list/watch pods only for the api-server source"
            );
        }
        if hub {
            check_hub(&objects, name);
        }
    }
}

#[test]
fn wrong_values_are_refused_with_their_path() {
    let Some(helms) = helms() else {
        return;
    };
    // (values, what the error must name)
    let cases: [(&[&str], &[&str]); 17] = [
        (&["--set", "mode=edge"], &["/mode"]),
        (
            &["--set", "exporter.tolerationz[0].operator=Exists"],
            &["/exporter", "tolerationz"],
        ),
        (&["--set", "exporter.fakeRapl=yes"], &["/exporter/fakeRapl"]),
        (
            &["--set", "exporter.privileged=sometimes"],
            &["/exporter/privileged"],
        ),
        (
            &["--set", "exporter.extraCapabilities={ALL}"],
            &["/exporter/extraCapabilities/0"],
        ),
        (
            &["--set", "exporter.extraCapabilities={cap_sys_admin}"],
            &["/exporter/extraCapabilities/0"],
        ),
        (
            &["--set", "exporter.resources.requests.cpu=lots"],
            &["/exporter/resources/requests/cpu"],
        ),
        (
            &["--set", "exporter.kube.metadataSource=etcd"],
            &["/exporter/kube/metadataSource"],
        ),
        (
            &["--set", "exporter.extraArgs={fake-rapl}"],
            &["/exporter/extraArgs/0"],
        ),
        (
            &["--set", "mode=spoke"],
            &["/spoke/cluster", "/spoke/endpoint"],
        ),
        (
            &[
                "--set",
                "mode=spoke",
                "--set",
                "spoke.cluster=c1",
                "--set",
                "spoke.endpoint=hub:4327",
            ],
            &["/spoke/endpoint"],
        ),
        (
            &[
                "--set",
                "mode=spoke",
                "--set",
                "spoke.cluster=c1",
                "--set",
                "spoke.endpoint=http://hub:4327",
                "--set",
                "spoke.tls.caSecret=ca",
            ],
            &["/spoke/endpoint", "https://"],
        ),
        (
            &["--set", "spoke.token.value=short"],
            &["/spoke/token/value"],
        ),
        (
            &["--set", "hub.spokeService.type=External"],
            &["/hub/spokeService/type"],
        ),
        (&["--set", "hub.spokes={cluster 1}"], &["/hub/spokes/0"]),
        (
            &["--set", "hub.metricExpiration=5 minutes"],
            &["/hub/metricExpiration"],
        ),
        (
            &["--set", "serviceMonitor.interval=often"],
            &["/serviceMonitor/interval"],
        ),
    ];
    for (name, helm) in &helms {
        for (args, names) in cases {
            let (ok, out) = template(helm, args);
            assert!(!ok, "{name}: {args:?} was accepted");
            assert!(
                out.contains("values don't meet the specifications of the schema"),
                "{name}: {args:?} not refused by the schema:\n{out}"
            );
            for n in names {
                assert!(
                    out.contains(n),
                    "{name}: {args:?}: the error lacks {n}:\n{out}"
                );
            }
        }
        // What the schema cannot say, the templates do.
        let (ok, out) = template(
            helm,
            &[
                "--set",
                "mode=hub",
                "--set",
                "hub.tokens.values.cluster9=0123456789abcdef0123",
            ],
        );
        assert!(
            !ok && out.contains("hub.tokens.values.cluster9"),
            "{name}:\n{out}"
        );
        // And the defaults pass.
        assert!(template(helm, &[]).0, "{name}: the defaults");
    }
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn service_monitor_and_rules_only_where_the_cluster_serves_monitoring_coreos_com() {
    let Some(helms) = helms() else {
        return;
    };
    for (name, helm) in &helms {
        for (mode, monitored) in [
            (&["--set", "mode=exporter"][..], Some("kepler-exporter")),
            (&["--set", "mode=hub"][..], Some("kepler-collector")),
            (&SPOKE[..], None),
        ] {
            let without = docs(&rendered(helm, mode));
            assert!(
                !kinds(&without).contains("ServiceMonitor")
                    && !kinds(&without).contains("PrometheusRule"),
                "{name} {mode:?}: without the API"
            );
            let args: Vec<&str> = mode.iter().chain(&MONITORING).copied().collect();
            let with = docs(&rendered(helm, &args));
            let monitors: Vec<&Value> = with
                .iter()
                .filter(|o| o["kind"] == "ServiceMonitor")
                .collect();
            match monitored {
                Some(target) => {
                    assert_eq!(monitors.len(), 1, "{name} {mode:?}");
                    let sm = monitors[0];
                    assert_eq!(sm["metadata"]["name"], target);
                    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
                    // It selects exactly the Service of its target, in the release namespace.
                    let svc = find(&with, "Service", target);
                    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
                        assert_eq!(&svc["metadata"]["labels"][k.as_str().unwrap()], v);
                    }
                    let others = with.iter().filter(|o| {
                        o["kind"] == "Service"
                            && o["metadata"]["name"] != target
                            && sm["spec"]["selector"]["matchLabels"]
                                .as_mapping()
                                .unwrap()
                                .iter()
                                .all(|(k, v)| &o["metadata"]["labels"][k.as_str().unwrap()] == v)
                    });
                    assert_eq!(others.count(), 0, "{name} {mode:?}: one Service scraped");
                    assert_eq!(
                        strs(&sm["spec"]["namespaceSelector"]["matchNames"]),
                        ["kepler"]
                    );
                    let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
                    assert!(svc["spec"]["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == port));
                    assert!(kinds(&with).contains("PrometheusRule"));
                }
                None => assert!(
                    monitors.is_empty() && !kinds(&with).contains("PrometheusRule"),
                    "{name}: no Prometheus on a spoke"
                ),
            }
            // And never when switched off.
            let args: Vec<&str> = args
                .iter()
                .copied()
                .chain(["--set", "serviceMonitor.enabled=false"])
                .chain(["--set", "prometheusRule.enabled=false"])
                .collect();
            let off = docs(&rendered(helm, &args));
            assert!(!kinds(&off).contains("ServiceMonitor"));
            assert!(!kinds(&off).contains("PrometheusRule"));
        }
    }
}

/// Upstream Kepler's record names (kepler 0.7.x, manifests/k8s/config/exporter/
/// prometheus_common_rules.yaml and prometheus_high_granularity_rules.yaml), by group.
const UPSTREAM_RULES: [(&str, &str, &[&str]); 3] = [
    (
        "kepler-common-rules",
        "kepler-common-rules",
        &[
            "kepler:container_joules_total:increase:24h:by_ns_pod",
            "kepler:container_joules_total:increase:24h:by_ns",
        ],
    ),
    (
        "kepler-common-rules",
        "kepler-low-res-rules",
        &[
            "kepler:container_package_watts:2m:by_ns_pod",
            "kepler:container_dram_watts:2m:by_ns_pod",
            "kepler:container_other_watts:2m:by_ns_pod",
            "kepler:container_gpu_watts:2m:by_ns_pod",
        ],
    ),
    (
        "kepler-high-granularity-rules",
        "kepler-high-granularity-rules",
        &[
            "kepler:container_package_watts:15s:by_ns_pod",
            "kepler:container_dram_watts:15s:by_ns_pod",
            "kepler:container_other_watts:15s:by_ns_pod",
            "kepler:container_gpu_watts:15s:by_ns_pod",
        ],
    ),
];

#[test]
fn recording_rules_keep_upstream_kepler_names_and_pass_promtool() {
    let Some(helms) = helms() else {
        return;
    };
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let helm = &helms[0].1;
    for mode in ["exporter", "hub"] {
        let mode_arg = format!("mode={mode}");
        let args = [
            &MONITORING[..],
            &[
                "--set",
                &mode_arg,
                "--set",
                "prometheusRule.highGranularity=true",
            ],
        ]
        .concat();
        let objects = docs(&rendered(helm, &args));
        let rules: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "PrometheusRule")
            .collect();
        let mut names = Vec::new();
        for (object, group, records) in UPSTREAM_RULES {
            let rule = find(&objects, "PrometheusRule", object);
            let g = rule["spec"]["groups"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|g| g["name"] == group)
                .unwrap_or_else(|| panic!("{mode}: no group {group}"));
            let got: Vec<&str> = g["rules"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|r| r["record"].as_str().unwrap())
                .collect();
            assert_eq!(got, records, "{mode}: {group}");
            for r in g["rules"].as_sequence().unwrap() {
                let expr = r["expr"].as_str().unwrap();
                assert_eq!(
                    expr.contains("cluster"),
                    mode == "hub",
                    "{mode}: at the hub the rules keep `cluster`: {expr}"
                );
            }
            names.push(group);
        }
        // promtool checks the groups as a rule file.
        let mut groups = Vec::new();
        for r in &rules {
            groups.extend(r["spec"]["groups"].as_sequence().unwrap().iter().cloned());
        }
        let mut file = serde_yaml_ng::Mapping::new();
        file.insert("groups".into(), Value::Sequence(groups));
        let tmp = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        fs::write(tmp.path(), serde_yaml_ng::to_string(&file).unwrap()).unwrap();
        let (ok, out) = run(Command::new(&promtool)
            .args(["check", "rules"])
            .arg(tmp.path()));
        assert!(
            ok && out.contains("SUCCESS: 10 rules found"),
            "{mode}: promtool:\n{out}"
        );
    }
    // The 15 s rules only on request.
    let objects = docs(&rendered(helm, &MONITORING));
    assert!(objects
        .iter()
        .all(|o| o["metadata"]["name"] != "kepler-high-granularity-rules"));
}

#[test]
fn dashboard_configmap_is_the_repository_dashboard_for_the_grafana_sidecar() {
    let Some(helms) = helms() else {
        return;
    };
    let source = fs::read_to_string(repo().join("deploy/grafana/kepler-hub.json")).unwrap();
    let copy = fs::read_to_string(chart().join("dashboards/kepler-hub.json")).unwrap();
    assert_eq!(
        copy, source,
        "{CHART}/dashboards/kepler-hub.json must be a copy of deploy/grafana/kepler-hub.json \
         (cp deploy/grafana/kepler-hub.json {CHART}/dashboards/)"
    );
    for (name, helm) in &helms {
        for mode in ["exporter", "hub"] {
            let objects = docs(&rendered(
                helm,
                &[
                    "--set",
                    &format!("mode={mode}"),
                    "--set",
                    "grafanaDashboard.datasourceUid=hubprom",
                ],
            ));
            let cm = find(&objects, "ConfigMap", "kepler-grafana-dashboard");
            assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
            let json = cm["data"]["kepler-hub.json"].as_str().unwrap();
            assert!(
                !json.contains("${DS_PROMETHEUS}"),
                "{name}: the sidecar cannot resolve it"
            );
            let got: serde_json::Value = serde_json::from_str(json).unwrap();
            let want: serde_json::Value =
                serde_json::from_str(&source.replace("${DS_PROMETHEUS}", "hubprom")).unwrap();
            assert_eq!(got, want, "{name} {mode}");
        }
        let spoke = docs(&rendered(helm, &SPOKE));
        assert!(
            spoke.iter().all(|o| o["kind"] != "ConfigMap"),
            "{name}: no Grafana on a spoke"
        );
        let off = docs(&rendered(
            helm,
            &["--set", "grafanaDashboard.enabled=false"],
        ));
        assert!(off.iter().all(|o| o["kind"] != "ConfigMap"));
    }
}

// --- parity with deploy/kustomize (ADR 0013) ---

/// A kustomize-generated ConfigMap or Secret name without its content hash.
fn unhashed(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((stem, hash))
            if hash.len() == 10 && hash.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            stem.to_string()
        }
        _ => name.to_string(),
    }
}

fn identities(objects: &[Value]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                unhashed(o["metadata"]["name"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Where a variable's value comes from, as the exporter sees it.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Literal(String),
    Field(String),
    Secret,
}

/// The container's effective KEPLER_* and NODE_* environment: `env` entries, and `envFrom`
/// ConfigMaps read from the rendered objects. A variable built from a Secret's (`$(VAR)`) counts
/// as a Secret's, and the helpers it is built from are left out. The spoke overlay's optional
/// Secret kepler-spoke-otlp carries KEPLER_OTLP_HEADERS (the overlay and deploy/README.md say so).
fn effective_env(objects: &[Value], c: &Value) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let mut secret_vars = BTreeSet::new();
    for from in c["envFrom"].as_sequence().into_iter().flatten() {
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            let cm = find(objects, "ConfigMap", name);
            for (k, v) in cm["data"].as_mapping().unwrap() {
                let v = Source::Literal(v.as_str().unwrap().to_string());
                out.insert(k.as_str().unwrap().to_string(), v);
            }
        }
        if from["secretRef"]["name"] == "kepler-spoke-otlp" {
            out.insert("KEPLER_OTLP_HEADERS".into(), Source::Secret);
        }
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let source = if let Some(v) = e["value"].as_str() {
            if secret_vars.iter().any(|s| v.contains(&format!("$({s})"))) {
                Source::Secret
            } else {
                Source::Literal(v.to_string())
            }
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Source::Field(f.to_string())
        } else {
            assert!(e["valueFrom"]["secretKeyRef"].is_mapping(), "{e:?}");
            secret_vars.insert(name.clone());
            Source::Secret
        };
        out.insert(name, source);
    }
    out.retain(|k, _| k.starts_with("KEPLER_") || k.starts_with("NODE_"));
    out
}

/// A workload's spec with what legitimately differs taken out: labels and selectors (the chart
/// adds app.kubernetes.io/instance), the pod's annotations (checksums), the image tag (chart:
/// appVersion, kustomize: latest), generated names' hashes, and the environment (compared as
/// [`effective_env`]).
fn comparable_workload(w: &Value, same_image: bool) -> Value {
    let mut spec = w["spec"].clone();
    let m = spec.as_mapping_mut().unwrap();
    m.remove("selector");
    let template = m.get_mut("template").unwrap().as_mapping_mut().unwrap();
    template.remove("metadata");
    let pod = template.get_mut("spec").unwrap().as_mapping_mut().unwrap();
    for c in pod
        .get_mut("containers")
        .unwrap()
        .as_sequence_mut()
        .unwrap()
    {
        let c = c.as_mapping_mut().unwrap();
        c.remove("env");
        c.remove("envFrom");
        let image = c.remove("image").unwrap();
        let image = image.as_str().unwrap();
        let image = if same_image {
            image
        } else {
            image.split(':').next().unwrap()
        };
        c.insert("image".into(), image.into());
    }
    for v in pod.get_mut("volumes").unwrap().as_sequence_mut().unwrap() {
        if let Some(name) = v["configMap"]["name"].as_str() {
            let name = unhashed(name);
            v["configMap"]["name"] = name.into();
        }
    }
    spec
}

fn without_selector(spec: &Value) -> Value {
    let mut spec = spec.clone();
    spec.as_mapping_mut().unwrap().remove("selector");
    spec
}

/// Kinds and names of objects.
type Ids = &'static [(&'static str, &'static str)];

/// A chart rendering and the kustomization it must match.
struct Pair<'a> {
    /// helm template arguments.
    args: Vec<&'a str>,
    /// The kustomization, under deploy/.
    dir: &'static str,
    /// What only kustomize renders, and only the chart (ADR 0013).
    only_kustomize: Ids,
    only_chart: Ids,
    /// Whether the image tags must match too (kind), or the repositories only.
    same_image: bool,
}

/// The chart (rendered with `args`) and the kustomization `dir` describe the same objects:
/// the same kinds and names but for the listed differences, and for each workload, Service,
/// ServiceMonitor, RBAC object and the hub's configuration the same content.
fn assert_same_objects(helm: &Path, kubectl: &Path, pair: &Pair) {
    let Pair {
        args,
        dir,
        only_kustomize,
        only_chart,
        same_image,
    } = pair;
    let (dir, same_image) = (*dir, *same_image);
    let chart = docs(&rendered(helm, args));
    let (ok, yaml) = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy").join(dir)));
    assert!(ok, "kubectl kustomize {dir}:\n{yaml}");
    let kustomize = docs(&yaml);

    let set = |l: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        l.iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect()
    };
    let (k_ids, c_ids) = (identities(&kustomize), identities(&chart));
    let (k_only, c_only) = (set(only_kustomize), set(only_chart));
    assert!(
        k_ids.is_superset(&k_only),
        "{dir}: {k_only:?} no longer in kustomize"
    );
    assert!(
        c_ids.is_superset(&c_only),
        "{dir}: {c_only:?} no longer in the chart"
    );
    assert_eq!(
        &k_ids - &k_only,
        &c_ids - &c_only,
        "{dir}: kustomize and the chart ({args:?}) describe different objects"
    );

    let by_id = |objects: &[Value], kind: &str, name: &str| -> Value {
        objects
            .iter()
            .find(|o| {
                o["kind"] == kind && unhashed(o["metadata"]["name"].as_str().unwrap()) == name
            })
            .unwrap()
            .clone()
    };
    for (kind, name) in &k_ids - &k_only {
        let (k, c) = (by_id(&kustomize, &kind, &name), by_id(&chart, &kind, &name));
        let what = format!("{dir}: {kind} {name}");
        match kind.as_str() {
            "DaemonSet" | "Deployment" => {
                assert_eq!(
                    comparable_workload(&k, same_image),
                    comparable_workload(&c, same_image),
                    "{what}"
                );
                assert_eq!(
                    effective_env(&kustomize, container(&k)),
                    effective_env(&chart, container(&c)),
                    "{what}: environment"
                );
            }
            "Service" => assert_eq!(
                without_selector(&k["spec"]),
                without_selector(&c["spec"]),
                "{what}"
            ),
            "ServiceMonitor" => {
                assert_eq!(k["spec"]["endpoints"], c["spec"]["endpoints"], "{what}");
                assert_eq!(k["spec"]["jobLabel"], c["spec"]["jobLabel"], "{what}");
            }
            "ClusterRole" => assert_eq!(k["rules"], c["rules"], "{what}"),
            "ClusterRoleBinding" => {
                assert_eq!(k["roleRef"], c["roleRef"], "{what}");
                assert_eq!(k["subjects"], c["subjects"], "{what}");
            }
            "ServiceAccount" => assert_eq!(
                k["automountServiceAccountToken"], c["automountServiceAccountToken"],
                "{what}"
            ),
            "ConfigMap" => {
                let parse = |o: &Value| -> Value {
                    serde_yaml_ng::from_str(o["data"]["config.yaml"].as_str().unwrap()).unwrap()
                };
                assert_eq!(parse(&k), parse(&c), "{what}: the hub's configuration");
            }
            other => panic!("{what}: no comparison for {other}"),
        }
    }
}

#[test]
fn chart_and_kustomize_overlays_describe_the_same_objects() {
    let Some(helms) = helms() else {
        return;
    };
    let Some(kubectl) = require_tool("kubectl") else {
        return;
    };
    let kind_values = repo().join("deploy/kind/helm/kind.yaml");
    let kind_values = kind_values.to_str().unwrap();
    const NAMESPACE: Ids = &[("Namespace", "kepler")];
    const SPOKE_K: Ids = &[("Namespace", "kepler"), ("ConfigMap", "kepler-spoke")];
    const HUB_K: Ids = &[("Namespace", "kepler"), ("ConfigMap", "kepler-hub-push")];
    const EXPORTER_C: Ids = &[
        ("ConfigMap", "kepler-grafana-dashboard"),
        ("PrometheusRule", "kepler-common-rules"),
    ];
    const SPOKE_C: Ids = &[("Secret", "kepler-spoke-otlp")];
    const HUB_C: Ids = &[
        ("ConfigMap", "kepler-grafana-dashboard"),
        ("PrometheusRule", "kepler-common-rules"),
        ("Secret", "kepler-collector-tokens"),
    ];
    let hub: Vec<&str> = MONITORING
        .iter()
        .copied()
        .chain(["--set", "mode=hub"])
        .collect();
    let pair = |args, dir, only_kustomize, only_chart, same_image| Pair {
        args,
        dir,
        only_kustomize,
        only_chart,
        same_image,
    };
    let kind = |args: &[&'static str]| -> Vec<&str> {
        args.iter().copied().chain(["-f", kind_values]).collect()
    };
    let pairs = [
        pair(
            MONITORING.to_vec(),
            "kustomize/base",
            NAMESPACE,
            EXPORTER_C,
            false,
        ),
        pair(
            SPOKE.to_vec(),
            "kustomize/overlays/spoke",
            SPOKE_K,
            SPOKE_C,
            false,
        ),
        pair(hub.clone(), "kustomize/overlays/hub", HUB_K, HUB_C, false),
        pair(kind(&hub), "kind/hub", HUB_K, HUB_C, true),
        pair(kind(&SPOKE), "kind/spoke", SPOKE_K, SPOKE_C, true),
    ];
    for (name, helm) in &helms {
        eprintln!("parity with {name}");
        for p in &pairs {
            assert_same_objects(helm, &kubectl, p);
        }
    }
}

// --- deploy/kind/kind-up.sh through the chart ---

fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(
        &path,
        format!("#!/bin/sh\necho \"{name} $*\" >> \"$STUB_LOG\"\n{body}\n"),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn kind_script_installs_through_the_chart_with_a_token_per_spoke() {
    let Some(helms) = helms() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new("cp")
        .arg("-a")
        .arg(repo().join("deploy"))
        .arg(scratch.path()));
    assert!(ok, "{out}");
    let _ = fs::remove_dir_all(scratch.path().join("deploy/kind/.state"));
    let bin = scratch.path().join("stubs");
    let rendered_dir = scratch.path().join("rendered");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&rendered_dir).unwrap();
    stub(&bin, "docker", "exit 0");
    stub(&bin, "kind", "exit 0");
    stub(
        &bin,
        "kubectl",
        r#"case "$*" in
  *"get nodes"*) echo 172.18.0.4 ;;
  *"get service kepler-collector-spokes"*) echo 31427 ;;
esac
exit 0"#,
    );
    // helm: `upgrade --install NAME CHART ARGS` renders with the real Helm 4 into
    // rendered/<context>.yaml (dropping the flags only a cluster needs).
    stub(
        &bin,
        "helm",
        &format!(
            r#"[ "$1" = upgrade ] && [ "$2" = --install ] || exit 1
shift 2
release="$1" chart="$2"
shift 2
n=$#
i=0
ctx=none
while [ "$i" -lt "$n" ]; do
  a="$1"; shift; i=$((i + 1))
  case "$a" in
    --kube-context) ctx="$1"; shift; i=$((i + 1)) ;;
    --timeout) shift; i=$((i + 1)) ;;
    --wait) ;;
    *) set -- "$@" "$a" ;;
  esac
done
exec "{real}" template "$release" "$chart" "$@" > "{out}/$ctx.yaml""#,
            real = helms[0].1.display(),
            out = rendered_dir.display()
        ),
    );
    let log = scratch.path().join("stub.log");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let kind_up = scratch.path().join("deploy/kind/kind-up.sh");
    let (ok, out) = run(Command::new("bash")
        .arg(&kind_up)
        .env("PATH", &path)
        .env("STUB_LOG", &log));
    assert!(ok, "{out}");
    assert!(
        out.contains("spokes push to http://172.18.0.4:31427"),
        "{out}"
    );

    let read =
        |ctx: &str| docs(&fs::read_to_string(rendered_dir.join(format!("{ctx}.yaml"))).unwrap());
    let hub = read("kind-hub");
    check_hub(&hub, "kind hub");
    check_exporter(&hub, Privileges::Privileged, "kind hub");
    let secret = find(&hub, "Secret", "kepler-collector-tokens");
    let mut tokens = BTreeSet::new();
    for spoke in ["cluster1", "cluster2"] {
        let token = b64(secret["data"][spoke].as_str().unwrap());
        assert_eq!(token.len(), 64, "32 random bytes in hex");
        tokens.insert(token.clone());
        let objects = read(&format!("kind-{spoke}"));
        check_exporter(&objects, Privileges::Privileged, spoke);
        let c = container(find(&objects, "DaemonSet", "kepler-exporter"));
        assert_eq!(env_value(c, "KEPLER_CLUSTER"), Some(spoke));
        assert_eq!(
            env_value(c, "KEPLER_OTLP_ENDPOINT"),
            Some("http://172.18.0.4:31427")
        );
        assert_eq!(env_value(c, "KEPLER_MONITOR_NODE_SHARE"), Some("true"));
        assert!(strs(&c["args"]).contains(&"--fake-rapl".to_string()));
        assert_eq!(c["image"], "kepler-rs:dev");
        assert_eq!(c["imagePullPolicy"], "Never");
        let s = find(&objects, "Secret", "kepler-spoke-otlp");
        assert_eq!(
            b64(s["data"]["token"].as_str().unwrap()),
            token,
            "{spoke}: the hub's token"
        );
        for file in [format!("{spoke}/values.yaml"), format!("tokens/{spoke}")] {
            let mode = fs::metadata(scratch.path().join("deploy/kind/.state").join(&file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is private");
        }
    }
    assert_eq!(tokens.len(), 2, "one token per spoke");
    let collector = container(find(&hub, "Deployment", "kepler-collector"));
    assert_eq!(collector["image"], "kepler-rs:dev");
    let calls = fs::read_to_string(&log).unwrap();
    for cluster in ["hub", "cluster1", "cluster2"] {
        assert!(calls.contains(&format!(
            "kubectl --context kind-{cluster} apply -f deploy/kustomize/base/namespace.yaml"
        )));
    }

    // A second run reuses the tokens; --no-node-share turns the share off.
    let (ok, out) = run(Command::new("bash")
        .arg(&kind_up)
        .arg("--no-node-share")
        .env("PATH", &path)
        .env("STUB_LOG", &log));
    assert!(ok, "{out}");
    let objects = read("kind-cluster1");
    let s = find(&objects, "Secret", "kepler-spoke-otlp");
    assert!(
        tokens.contains(&b64(s["data"]["token"].as_str().unwrap())),
        "token reused"
    );
    let c = container(find(&objects, "DaemonSet", "kepler-exporter"));
    assert_eq!(env_value(c, "KEPLER_MONITOR_NODE_SHARE"), None);
}

// --- the rendered hub and spokes, run ---

/// The container's environment as the kubelet would set it: literals with `$(VAR)` expanded
/// from earlier variables, Secrets' keys from the rendered Secrets, the downward API's fields
/// from `fields`.
fn kubelet_env(objects: &[Value], c: &Value, fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &out {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            fields.iter().find(|(p, _)| *p == f).unwrap().1.to_string()
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            let s = find(objects, "Secret", r["name"].as_str().unwrap());
            b64(s["data"][r["key"].as_str().unwrap()].as_str().unwrap())
        };
        out.push((name, value));
    }
    out
}

/// Starts the rendered exporter on fake RAPL: the chart's environment (host paths, kubelet and
/// relay aside: there is no node here), its OTLP endpoint's host:port moved to `endpoint`.
fn start_rendered_exporter(
    objects: &[Value],
    endpoint: &str,
    log: Stdio,
) -> common::exporter::Exporter {
    start_rendered_exporter_with_files(objects, endpoint, log, &[])
}

/// [`start_rendered_exporter`], with the folders the pod would mount (`(mount path, here)`)
/// replaced in its variables.
fn start_rendered_exporter_with_files(
    objects: &[Value],
    endpoint: &str,
    log: Stdio,
    mounts: &[(&str, &Path)],
) -> common::exporter::Exporter {
    let c = container(find(objects, "DaemonSet", "kepler-exporter"));
    let mut cmd = Command::new(common::exporter::BIN);
    for (k, v) in kubelet_env(
        objects,
        c,
        &[("spec.nodeName", "node-a"), ("status.hostIP", "127.0.0.1")],
    ) {
        match k.as_str() {
            "KEPLER_RELAY_KUBELET_ENABLED" => {}
            "KEPLER_OTLP_ENDPOINT" => {
                let scheme = v.split_once("://").unwrap().0;
                cmd.env(k, format!("{scheme}://{endpoint}"));
            }
            _ => {
                let v = mounts.iter().fold(v, |v, (mount, here)| {
                    v.replace(mount, &here.display().to_string())
                });
                cmd.env(k, v);
            }
        }
    }
    common::exporter::Exporter::launch(cmd, "300ms", &["--ebpf.enabled=false"], log)
}

struct Hub(std::process::Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rendered_spokes_reach_the_rendered_hub_with_their_tokens() {
    let Some(helms) = helms() else {
        return;
    };
    let Some(collector) = kepler_test_support::require::require_binary("kepler-collector") else {
        return;
    };
    let helm = &helms[0].1;
    // The hub with generated tokens, as `helm install --set mode=hub` makes it.
    let hub = docs(&rendered(helm, &["--set", "mode=hub"]));
    let config = find(&hub, "ConfigMap", "kepler-collector-config")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = find(&hub, "Secret", "kepler-collector-tokens");
    let dir = tempfile::tempdir().unwrap();
    let mut text = config.replace(
        "/etc/kepler-collector/tokens",
        &dir.path().display().to_string(),
    );
    let mut ports = BTreeMap::new();
    for port in ["4317", "4318", "4327", "4328", "9464"] {
        let free = common::otlp::free_port();
        ports.insert(port, free);
        text = text.replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{free}"));
    }
    assert!(!text.contains("0.0.0.0"), "every listener moved:\n{text}");
    let mut tokens = BTreeMap::new();
    for (cluster, data) in secret["data"].as_mapping().unwrap() {
        let (cluster, token) = (cluster.as_str().unwrap(), b64(data.as_str().unwrap()));
        fs::write(dir.path().join(cluster), &token).unwrap();
        tokens.insert(cluster.to_string(), token);
    }
    fs::write(dir.path().join("config.yaml"), &text).unwrap();
    let mut hub_process = Hub(Command::new(collector)
        .arg("--config.file")
        .arg(dir.path().join("config.yaml"))
        .args(["--log.level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());

    // This cluster's exporters as the hub mode renders them; a spoke given cluster1's token the
    // way an operator would (--set spoke.token.value=...), a spoke over OTLP/HTTP, and one whose
    // generated token the hub never learnt.
    let local = start_rendered_exporter(
        &hub,
        &format!("127.0.0.1:{}", ports["4317"]),
        Stdio::inherit(),
    );
    let spoke_args = |cluster: &str, extra: &[&str]| -> Vec<String> {
        [
            "--set",
            "mode=spoke",
            "--set",
            &format!("spoke.cluster={cluster}"),
            "--set",
            "spoke.endpoint=http://hub.invalid:4327",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let render_spoke = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docs(&rendered(helm, &args))
    };
    let one = render_spoke(spoke_args(
        "cluster1",
        &[
            "--set",
            &format!("spoke.token.value={}", tokens["cluster1"]),
        ],
    ));
    let two = render_spoke(spoke_args(
        "cluster2",
        &[
            "--set",
            &format!("spoke.token.value={}", tokens["cluster2"]),
            "--set",
            "spoke.protocol=http/protobuf",
        ],
    ));
    let rogue = render_spoke(spoke_args("cluster2", &[]));
    let _one = start_rendered_exporter(
        &one,
        &format!("127.0.0.1:{}", ports["4327"]),
        Stdio::inherit(),
    );
    let _two = start_rendered_exporter(
        &two,
        &format!("127.0.0.1:{}", ports["4328"]),
        Stdio::inherit(),
    );
    let rogue = start_rendered_exporter(
        &rogue,
        &format!("127.0.0.1:{}", ports["4327"]),
        // Its refused pushes are expected; their log lines are not news.
        Stdio::null(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Some(status) = hub_process.0.try_wait().unwrap() {
            panic!("kepler-collector refused the rendered configuration: {status}");
        }
        let text = common::otlp::metrics(ports["9464"]).unwrap_or_default();
        let rogue_failed = common::otlp::metrics(rogue.port)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.starts_with("kepler_exporter_otlp_exports_total{")
                    && l.contains("result=\"failed\"")
                    && !l.ends_with(" 0")
            });
        if ["hub", "cluster1", "cluster2"]
            .iter()
            .all(|c| text.contains(&format!("cluster=\"{c}\"")))
            && rogue_failed
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not every rendered exporter reached the hub (or the rogue was not refused):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(seen.contains("kepler_container_joules_total{"), "{seen}");
    drop(local);
}

/// Mutual TLS as the chart renders it: the hub with `hub.tls` (its certificate and the spokes'
/// client CA from Secrets) and a certificate name bound to a cluster; a spoke with
/// `spoke.tls.clientCertSecret` and no token. The spoke calls itself cluster9, but its
/// certificate says cluster3, and so does the hub.
#[test]
fn rendered_spoke_reaches_the_rendered_hub_with_a_client_certificate() {
    let Some(helms) = helms() else {
        return;
    };
    let Some(collector) = kepler_test_support::require::require_binary("kepler-collector") else {
        return;
    };
    let helm = &helms[0].1;
    let hub = docs(&rendered(
        helm,
        &[
            "--set",
            "mode=hub",
            "--set",
            "hub.localExporters=false",
            "--set",
            "hub.tls.secretName=hub-tls",
            "--set",
            "hub.tls.clientCASecret=spokes-ca",
            "--set",
            "hub.certificates[0].cluster=cluster3",
            "--set",
            "hub.certificates[0].commonName=spoke-cluster3",
        ],
    ));
    let spoke = docs(&rendered(
        helm,
        &[
            "--set",
            "mode=spoke",
            "--set",
            "spoke.cluster=cluster9",
            "--set",
            "spoke.endpoint=https://hub.invalid:4327",
            "--set",
            "spoke.tls.caSecret=hub-ca",
            "--set",
            "spoke.tls.clientCertSecret=spoke-cluster3-tls",
            "--set",
            "spoke.token.enabled=false",
        ],
    ));
    assert!(
        !spoke.iter().any(|o| o["kind"] == "Secret"),
        "no token Secret without a token"
    );
    let c = container(find(&spoke, "DaemonSet", "kepler-exporter"));
    assert_eq!(env_value(c, "KEPLER_OTLP_HEADERS"), None);

    // The Secrets' files, where the pods would mount them.
    let dir = tempfile::tempdir().unwrap();
    let ca = kepler_test_support::pki::TestCa::new(dir.path(), "kepler");
    let server = ca.server("hub", &[]);
    let client = ca.client("spoke", "spoke-cluster3", &[]);
    let mount = |name: &str, files: &[(&str, &Path)]| {
        let folder = dir.path().join(name);
        fs::create_dir_all(&folder).unwrap();
        for (file, from) in files {
            fs::copy(from, folder.join(file)).unwrap();
        }
        folder
    };
    let hub_tls = mount(
        "hub-tls",
        &[("tls.crt", &server.cert), ("tls.key", &server.key)],
    );
    let client_ca = mount("client-ca", &[("ca.crt", &ca.ca_file)]);
    let otlp_ca = mount("otlp-ca", &[("ca.crt", &ca.ca_file)]);
    let otlp_client = mount(
        "otlp-client",
        &[("tls.crt", &client.cert), ("tls.key", &client.key)],
    );
    let tokens = dir.path().join("tokens");
    fs::create_dir_all(&tokens).unwrap();
    let secret = find(&hub, "Secret", "kepler-collector-tokens");
    for (cluster, data) in secret["data"].as_mapping().unwrap() {
        fs::write(
            tokens.join(cluster.as_str().unwrap()),
            b64(data.as_str().unwrap()),
        )
        .unwrap();
    }

    let mut text = find(&hub, "ConfigMap", "kepler-collector-config")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    for (mount, here) in [
        ("/etc/kepler-collector/tokens", &tokens),
        ("/etc/kepler-collector/tls", &hub_tls),
        ("/etc/kepler-collector/client-ca", &client_ca),
    ] {
        text = text.replace(mount, &here.display().to_string());
    }
    let mut ports = BTreeMap::new();
    for port in ["4317", "4318", "4327", "4328", "9464"] {
        let free = common::otlp::free_port();
        ports.insert(port, free);
        text = text.replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{free}"));
    }
    assert!(text.contains("client_ca_file"), "{text}");
    fs::write(dir.path().join("config.yaml"), &text).unwrap();
    let mut hub_process = Hub(Command::new(collector)
        .arg("--config.file")
        .arg(dir.path().join("config.yaml"))
        .args(["--log.level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let _spoke = start_rendered_exporter_with_files(
        &spoke,
        &format!("127.0.0.1:{}", ports["4327"]),
        Stdio::inherit(),
        &[
            ("/etc/kepler-rs/otlp-ca", &otlp_ca),
            ("/etc/kepler-rs/otlp-client", &otlp_client),
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Some(status) = hub_process.0.try_wait().unwrap() {
            panic!("kepler-collector refused the rendered configuration: {status}");
        }
        let text = common::otlp::metrics(ports["9464"]).unwrap_or_default();
        if text.contains("kepler_container_joules_total{") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the rendered spoke never reached the rendered hub:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let series: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("kepler_") && !l.starts_with("kepler_collector_"))
        .collect();
    assert!(!series.is_empty());
    for line in series {
        assert!(line.contains("cluster=\"cluster3\""), "{line}");
    }
}

/// The chart refuses mutual-TLS values that cannot work, naming the value.
#[test]
fn mutual_tls_values_that_cannot_work_are_refused() {
    let Some(helms) = helms() else {
        return;
    };
    for (name, helm) in &helms {
        for (args, expected) in [
            (
                vec!["mode=hub", "hub.tls.clientCASecret=ca"],
                "hub.tls.clientCASecret: mutual TLS needs the hub's own certificate",
            ),
            (
                vec![
                    "mode=hub",
                    "hub.tls.secretName=tls",
                    "hub.certificates[0].cluster=c3",
                    "hub.certificates[0].commonName=x",
                ],
                "hub.certificates: client certificates need the CA",
            ),
            (
                vec![
                    "mode=spoke",
                    "spoke.cluster=c3",
                    "spoke.endpoint=https://hub:4327",
                    "spoke.token.enabled=false",
                ],
                "spoke.token.enabled: without a token",
            ),
            (
                vec![
                    "mode=spoke",
                    "spoke.cluster=c3",
                    "spoke.endpoint=http://hub:4327",
                    "spoke.tls.clientCertSecret=c",
                ],
                "at '/spoke/endpoint': 'http://hub:4327' does not match pattern '^https://'",
            ),
            (
                vec![
                    "mode=hub",
                    "hub.tls.secretName=tls",
                    "hub.tls.clientCASecret=ca",
                    "hub.certificates[0].cluster=c3",
                    "hub.certificates[0].commonName=x",
                    "hub.certificates[0].dnsName=y",
                ],
                "at '/hub/certificates/0': 'oneOf' failed",
            ),
        ] {
            let set: Vec<&str> = args.iter().flat_map(|a| ["--set", a]).collect();
            let (ok, text) = template(helm, &set);
            assert!(!ok, "{name}: {args:?} rendered");
            assert!(text.contains(expected), "{name}: {args:?}: {text}");
        }
    }
}
