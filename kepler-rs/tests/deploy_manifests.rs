#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! deploy/ checked with the real tools: every kustomize overlay rendered by `kubectl kustomize`
//! and validated by `kubernetes-validate --strict` (built-in kinds), the rendered objects checked
//! for the exporter's privileges (three capabilities in base and overlays, privileged with the
//! Component overlays/privileged and on kind: common/privileges.rs), for what the exporter and hub need (and every flag and KEPLER_* variable they pass is one the
//! exporter knows), the systemd units through `systemd-analyze verify` and `security`, the
//! container recipe through hadolint, and the kind script: its `--dry-run` plan (Helm, and with
//! `--kustomize`) names every manifest and writes nothing, and a `--kustomize` run against stub
//! `kind`/`docker`/`kubectl` (the stub renders every `apply -k` with the real kustomize) wires a
//! distinct token per spoke into both the hub's Secret and the spoke's header, with the hub
//! address it looked up. The same through the Helm chart: kepler-rs/tests/helm_chart.rs.
//! Kubernetes, kind and Docker cannot run here. Tools come from scripts/setup.sh (.venv/bin on
//! PATH); a missing tool skips with a message, or fails under CI (kepler_test_support::require).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kepler_rs::config::settings::{env_name, flag_name, SETTINGS};
use privileges::{assert_exporter_privileges, Privileges};
use serde_yaml_ng::Value;

#[path = "common/privileges.rs"]
mod privileges;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use kepler_test_support::require::require_tool as tool;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
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
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn has(objects: &[Value], kind: &str, name: &str) -> bool {
    objects
        .iter()
        .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
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

/// Renders a kustomization with the real kustomize and validates its built-in kinds strictly.
fn render(kubectl: &Path, validate: Option<&Path>, dir: &Path) -> Vec<Value> {
    let (ok, yaml) = run(Command::new(kubectl).arg("kustomize").arg(dir));
    assert!(ok, "kubectl kustomize {} failed:\n{yaml}", dir.display());
    if let Some(validate) = validate {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), &yaml).unwrap();
        for version in ["1.33.0", "1.37.0"] {
            let (ok, report) = run(Command::new(validate)
                .args(["--strict", "--no-warn", "-k", version])
                .arg(tmp.path()));
            assert!(
                ok,
                "kubernetes-validate {version} on {}:\n{report}",
                dir.display()
            );
            assert!(!report.contains("ERROR"), "{report}");
        }
    }
    docs(&yaml)
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// KEPLER_* names must be settings of the exporter.
fn assert_known_env(name: &str) {
    assert!(
        SETTINGS.iter().any(|s| env_name(s.path) == name),
        "{name} is not a kepler-rs setting"
    );
}

fn assert_known_flag(arg: &str) {
    let flag = arg.trim_start_matches("--").split('=').next().unwrap();
    assert!(
        SETTINGS.iter().any(|s| flag_name(s) == flag),
        "{arg} is not a kepler-rs flag"
    );
}

fn check_exporter(objects: &[Value], privileges: Privileges, what: &str) {
    let ds = find(objects, "DaemonSet", "kepler-exporter");
    let pod = &ds["spec"]["template"]["spec"];
    assert_exporter_privileges(ds, privileges, what);
    let c = container(ds);
    for arg in strs(&c["args"]) {
        assert_known_flag(&arg);
    }
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for (path, host) in [("/host/sys", "/sys"), ("/host/proc", "/proc")] {
        let m = mounts.iter().find(|m| m["mountPath"] == path).unwrap();
        assert_eq!(m["readOnly"], true, "{path} read-only");
        let vol = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(vol["hostPath"]["path"], host);
    }
    let env = c["env"].as_sequence().unwrap();
    for (name, field) in [("NODE_NAME", "spec.nodeName"), ("NODE_IP", "status.hostIP")] {
        let e = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    for name in env_names(c).iter().filter(|n| n.starts_with("KEPLER_")) {
        assert_known_env(name);
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz");
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["command"][0], "/usr/local/bin/kepler-rs");
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let binding = find(objects, "ClusterRoleBinding", "kepler-exporter");
    assert_eq!(binding["subjects"][0]["name"], sa);
    let role = find(objects, "ClusterRole", "kepler-exporter");
    for rule in role["rules"].as_sequence().unwrap() {
        assert_eq!(strs(&rule["verbs"]), vec!["get"], "read-only: {rule:?}");
        for r in strs(&rule["resources"]) {
            assert!(
                r.starts_with("nodes/") && r != "nodes/proxy",
                "least privilege: {r}"
            );
        }
    }
}

/// KEPLER_* literals of a generated ConfigMap, checked against the settings.
fn configmap_env(objects: &[Value], name: &str) -> Vec<(String, String)> {
    let cm = find(objects, "ConfigMap", name);
    let data = cm["data"].as_mapping().unwrap();
    data.iter()
        .map(|(k, v)| {
            let k = k.as_str().unwrap().to_string();
            assert_known_env(&k);
            (k, v.as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn kustomize_overlays_render_validate_and_carry_what_the_binaries_need() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    let validate = tool("kubernetes-validate");
    let validate = validate.as_deref();
    let deploy = repo().join("deploy");

    let least = Privileges::Capabilities(&[]);
    let base = render(&kubectl, validate, &deploy.join("kustomize/base"));
    check_exporter(&base, least, "base");
    assert!(has(&base, "Namespace", "kepler"));
    assert!(has(&base, "ServiceMonitor", "kepler-exporter"));
    assert!(has(&base, "Service", "kepler-exporter"));

    let spoke = render(&kubectl, validate, &deploy.join("kustomize/overlays/spoke"));
    check_exporter(&spoke, least, "spoke");
    assert!(
        !has(&spoke, "ServiceMonitor", "kepler-exporter"),
        "no Prometheus on a spoke"
    );
    let env = configmap_env(&spoke, "kepler-spoke");
    assert!(env.iter().any(|(k, _)| k == "KEPLER_CLUSTER"));
    assert!(env.contains(&("KEPLER_RELAY_KUBELET_ENABLED".into(), "true".into())));
    let ds = find(&spoke, "DaemonSet", "kepler-exporter");
    let from = container(ds)["envFrom"].as_sequence().unwrap();
    let cm_name = find(&spoke, "ConfigMap", "kepler-spoke")["metadata"]["name"].clone();
    assert!(from.iter().any(|f| f["configMapRef"]["name"] == cm_name));
    assert!(from
        .iter()
        .any(|f| f["secretRef"]["name"] == "kepler-spoke-otlp"));

    let hub = render(&kubectl, validate, &deploy.join("kustomize/overlays/hub"));
    check_exporter(&hub, least, "hub");
    let env = configmap_env(&hub, "kepler-hub-push");
    assert!(
        !env.iter().any(|(k, _)| k == "KEPLER_CLUSTER"),
        "the hub's own exporters send no cluster: the hub inserts cluster=\"hub\""
    );
    let collector = find(&hub, "Deployment", "kepler-collector");
    let c = container(collector);
    assert_eq!(c["command"][0], "/usr/local/bin/kepler-collector");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let svc = find(&hub, "Service", "kepler-collector");
    let ports: BTreeSet<u64> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, BTreeSet::from([4317, 4318, 4327, 4328, 9464]));
    let nodeport = find(&hub, "Service", "kepler-collector-spokes");
    assert_eq!(nodeport["spec"]["type"], "NodePort");
    let np: BTreeSet<u64> = nodeport["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(np, BTreeSet::from([4327, 4328]));
    let sm = find(&hub, "ServiceMonitor", "kepler-collector");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(
        strs(&sm["spec"]["namespaceSelector"]["matchNames"]),
        vec!["kepler"]
    );
    let selector = sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(
            &svc["metadata"]["labels"][k.as_str().unwrap()],
            v,
            "selects the hub Service"
        );
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert!(
        !has(&hub, "ServiceMonitor", "kepler-exporter"),
        "hub exporters push, not scraped twice"
    );
    let cfg = find(&hub, "ConfigMap", "kepler-collector-config");
    let config: Value =
        serde_yaml_ng::from_str(cfg["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let listeners = config["listeners"].as_sequence().unwrap();
    assert_eq!(listeners.len(), 4);
    for l in listeners {
        let spoke_listener = l["address"].as_str().unwrap().ends_with(":4327")
            || l["address"].as_str().unwrap().ends_with(":4328");
        assert_eq!(spoke_listener, l["auth"]["tokens"].is_sequence(), "{l:?}");
        assert_eq!(!spoke_listener, l["insert_cluster"] == "hub", "{l:?}");
    }

    for (dir, exporter_only) in [("kind/hub", false), ("kind/spoke", true)] {
        let objects = render(&kubectl, validate, &deploy.join(dir));
        check_exporter(&objects, Privileges::Privileged, dir);
        let ds = find(&objects, "DaemonSet", "kepler-exporter");
        let c = container(ds);
        assert!(
            strs(&c["args"]).contains(&"--fake-rapl".to_string()),
            "{dir}: fake RAPL"
        );
        assert_eq!(
            env_names(c)[2],
            "KEPLER_MONITOR_NODE_SHARE",
            "kind-up.sh patches env/2"
        );
        assert_eq!(c["image"], "kepler-rs:dev");
        assert_eq!(c["imagePullPolicy"], "Never");
        if !exporter_only {
            let c = container(find(&objects, "Deployment", "kepler-collector"));
            assert_eq!(c["image"], "kepler-rs:dev");
        }
    }
    // The privileged Component on the base alone (kernels older than 5.8): the same exporter
    // but for its security context.
    // Kustomize takes only relative paths: from the temporary directory up to / and down.
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().canonicalize().unwrap().components().count() - 1);
    let from_root = |p: &str| {
        let abs = deploy.join(p).canonicalize().unwrap();
        format!("{up}{}", abs.strip_prefix("/").unwrap().display())
    };
    fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\ncomponents:\n  - {}\n",
            from_root("kustomize/base"),
            from_root("kustomize/overlays/privileged")
        ),
    )
    .unwrap();
    let privileged = render(&kubectl, validate, dir.path());
    check_exporter(&privileged, Privileges::Privileged, "base + privileged");
    let mut unprivileged = base.clone();
    let mut with = privileged.clone();
    for objects in [&mut unprivileged, &mut with] {
        for o in objects.iter_mut().filter(|o| o["kind"] == "DaemonSet") {
            o["spec"]["template"]["spec"]["containers"][0]["securityContext"] = Value::Null;
        }
    }
    assert_eq!(
        unprivileged, with,
        "the Component changes the security context only"
    );

    let prometheus = render(&kubectl, validate, &deploy.join("kind/prometheus"));
    let p = find(&prometheus, "Prometheus", "hub");
    assert_eq!(p["metadata"]["namespace"], "monitoring");
    assert!(p["spec"]["serviceMonitorNamespaceSelector"].is_mapping());
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // verify resolves ExecStart: point it at the real exporter and a stand-in hub binary.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_kepler-rs"), bin.join("kepler-rs")).unwrap();
    fs::write(bin.join("kepler-collector"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        bin.join("kepler-collector"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for unit in ["kepler-rs.service", "kepler-collector.service"] {
        let text = fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let path = dir.path().join(unit);
        fs::write(
            &path,
            text.replace("/usr/local/bin/", &format!("{}/", bin.display())),
        )
        .unwrap();
        let (ok, out) = run(Command::new(&analyze).arg("verify").arg(&path));
        assert!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{out}"
        );
        let (_, out) = run(Command::new(&analyze)
            .args(["security", "--no-pager", "--offline=true"])
            .arg(&path));
        let level: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split(": ")
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
        assert!(level <= 2.5, "{unit}: exposure {level}\n{out}");
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "DynamicUser=yes",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
    }
    // The exporter's environment file only names settings the exporter has.
    let env = fs::read_to_string(repo().join("deploy/systemd/kepler-rs.env")).unwrap();
    for line in env.lines().map(|l| l.trim_start_matches('#')) {
        if let Some((name, _)) = line
            .split_once('=')
            .filter(|(n, _)| n.starts_with("KEPLER_"))
        {
            if name != "KEPLER_CONFIG_ARGS" {
                assert_known_env(name);
            }
        }
    }
}

#[test]
fn container_recipe_passes_hadolint_and_ships_both_binaries() {
    let recipe = repo().join("deploy/image/Containerfile");
    let text = fs::read_to_string(&recipe).unwrap();
    assert!(text.contains("AS build"), "multi-stage");
    assert!(text.contains("-p kepler-rs -p kepler-collector"));
    assert!(text.contains("COPY --from=build /out/kepler-rs /out/kepler-collector /usr/local/bin/"));
    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target"));
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let (ok, out) = run(Command::new(hadolint).arg(&recipe));
    assert!(ok, "hadolint:\n{out}");
}

/// Copies deploy/ into a scratch repository so the script's generated state stays there.
fn scratch_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new("cp")
        .arg("-a")
        .arg(repo().join("deploy"))
        .arg(dir.path()));
    assert!(ok, "{out}");
    let _ = fs::remove_dir_all(dir.path().join("deploy/kind/.state"));
    dir
}

#[test]
fn kind_dry_run_prints_a_plan_that_names_every_manifest_and_writes_nothing() {
    for installer in ["helm", "kustomize"] {
        kind_dry_run(installer);
    }
}

fn kind_dry_run(installer: &str) {
    let scratch = scratch_repo();
    let script = scratch.path().join("deploy/kind/kind-up.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--dry-run")
        .env("PATH", "/usr/bin:/bin");
    if installer == "kustomize" {
        cmd.arg("--kustomize");
    }
    let (ok, plan) = run(&mut cmd);
    assert!(ok, "{plan}");
    let mut expected = vec![
        "deploy/image/Containerfile".to_string(),
        "deploy/kind/prometheus".to_string(),
        "prometheus-operator/releases/download/".to_string(),
    ];
    for entry in fs::read_dir(repo().join("deploy/kind")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            expected.push(format!("--config deploy/kind/{name}"));
            let config = fs::read_to_string(repo().join("deploy/kind").join(&name)).unwrap();
            assert!(
                config.contains("KubeletFineGrainedAuthz: true"),
                "{name}: nodes/pods needs the kubelet's fine-grained authorization"
            );
        }
    }
    for cluster in ["hub", "cluster1", "cluster2"] {
        expected.push(format!(
            "kind load docker-image kepler-rs:dev --name {cluster}"
        ));
        expected.push(format!(
            "kubectl --context kind-{cluster} -n kepler rollout status daemonset/kepler-exporter"
        ));
        if installer == "helm" {
            expected.push(format!(
                "kubectl --context kind-{cluster} apply -f deploy/kustomize/base/namespace.yaml"
            ));
            let (mode, values) = if cluster == "hub" {
                ("hub", "hub")
            } else {
                ("spoke", cluster)
            };
            expected.push(format!(
                "helm upgrade --install kepler deploy/helm/kepler-rs --kube-context kind-{cluster} \
                 --namespace kepler --set mode={mode} -f deploy/kind/helm/kind.yaml \
                 -f deploy/kind/.state/{values}/values.yaml"
            ));
        }
    }
    if installer == "kustomize" {
        // Every kustomization the plan applies, and what each generated one builds on.
        expected.push("kubectl --context kind-hub apply -k deploy/kind/.state/hub".into());
        expected
            .push("kubectl --context kind-cluster1 apply -k deploy/kind/.state/cluster1".into());
        expected
            .push("kubectl --context kind-cluster2 apply -k deploy/kind/.state/cluster2".into());
        expected.push("    |   - ../../hub".into());
        expected.push("    |   - ../../spoke".into());
        expected.push("KEPLER_CLUSTER=cluster1".into());
        expected.push("KEPLER_CLUSTER=cluster2".into());
        assert!(!plan.contains("helm "), "--kustomize runs no helm:\n{plan}");
    } else {
        expected.push("    |     - cluster1\n    |     - cluster2".into());
        expected.push("    |   cluster: cluster1".into());
        expected.push("    |   cluster: cluster2".into());
        assert!(!plan.contains("apply -k deploy/kind/.state"), "{plan}");
        assert!(repo().join("deploy/kind/helm/kind.yaml").is_file());
    }
    expected.push("port-forward service/prometheus-operated 9090:9090".into());
    expected.push("rate(kepler_container_joules_total{cluster=\"cluster1\"}[5m])".into());
    expected.push("rate(container_cpu_usage_seconds_total{cluster=\"cluster1\"}[5m])".into());
    for e in &expected {
        assert!(
            plan.contains(e.as_str()),
            "{installer} plan lacks {e:?}:\n{plan}"
        );
    }
    // deploy/kind/{hub,spoke} are what the generated kustomizations point at.
    for dir in ["hub", "spoke", "prometheus"] {
        assert!(repo()
            .join("deploy/kind")
            .join(dir)
            .join("kustomization.yaml")
            .is_file());
    }
    assert!(
        !scratch.path().join("deploy/kind/.state").exists(),
        "a dry run writes nothing"
    );
    assert!(
        plan.contains("<token-cluster1>"),
        "tokens are redacted in the plan"
    );
}

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
fn kind_script_wires_a_token_per_spoke_and_the_hub_address_it_finds() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    let scratch = scratch_repo();
    let bin = scratch.path().join("stubs");
    let rendered = scratch.path().join("rendered");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&rendered).unwrap();
    stub(&bin, "docker", "exit 0");
    stub(&bin, "kind", "exit 0");
    // kubectl: `apply -k DIR` renders DIR with the real kustomize; the look-ups answer like a
    // kind hub; everything else succeeds.
    stub(
        &bin,
        "kubectl",
        &format!(
            r#"case "$*" in
  *"apply -k "*) for last; do :; done; exec "{real}" kustomize "$last" > "{out}/$(echo "$last" | tr / _).yaml" ;;
  *"get nodes"*) echo 172.18.0.4 ;;
  *"get service kepler-collector-spokes"*) echo 31427 ;;
esac
exit 0"#,
            real = kubectl.display(),
            out = rendered.display()
        ),
    );
    let log = scratch.path().join("stub.log");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let (ok, out) = run(Command::new("bash")
        .arg(scratch.path().join("deploy/kind/kind-up.sh"))
        .arg("--kustomize")
        .env("PATH", &path)
        .env("STUB_LOG", &log));
    assert!(ok, "{out}");
    assert!(
        out.contains("spokes push to http://172.18.0.4:31427"),
        "{out}"
    );

    let read = |name: &str| docs(&fs::read_to_string(rendered.join(name)).unwrap());
    let hub = read("deploy_kind_.state_hub.yaml");
    let secret = find(&hub, "Secret", "kepler-collector-tokens");
    let deployment = find(&hub, "Deployment", "kepler-collector");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == secret["metadata"]["name"]),
        "the hub mounts the generated token Secret"
    );
    let decode = |b64: &Value| {
        let out = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b64.as_str().unwrap().as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let mut tokens = BTreeSet::new();
    for spoke in ["cluster1", "cluster2"] {
        let token = decode(&secret["data"][spoke]).trim().to_string();
        assert_eq!(token.len(), 64, "32 random bytes in hex");
        tokens.insert(token.clone());
        let objects = read(&format!("deploy_kind_.state_{spoke}.yaml"));
        let env = configmap_env(&objects, "kepler-spoke");
        assert!(
            env.contains(&("KEPLER_CLUSTER".into(), spoke.into())),
            "{env:?}"
        );
        assert!(env.contains(&(
            "KEPLER_OTLP_ENDPOINT".into(),
            "http://172.18.0.4:31427".into()
        )));
        let s = find(&objects, "Secret", "kepler-spoke-otlp");
        assert_eq!(
            decode(&s["data"]["KEPLER_OTLP_HEADERS"]),
            format!("authorization=Bearer%20{token}")
        );
        let ds = find(&objects, "DaemonSet", "kepler-exporter");
        let from = container(ds)["envFrom"].as_sequence().unwrap();
        assert!(from
            .iter()
            .any(|f| f["secretRef"]["name"] == s["metadata"]["name"]));
        let mode = fs::metadata(scratch.path().join("deploy/kind/.state/tokens").join(spoke))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "tokens are private");
    }
    assert_eq!(tokens.len(), 2, "one token per spoke");

    // A second run reuses the tokens; --no-node-share turns the kind overlay's share off.
    let (ok, out) = run(Command::new("bash")
        .arg(scratch.path().join("deploy/kind/kind-up.sh"))
        .args(["--kustomize", "--no-node-share"])
        .env("PATH", &path)
        .env("STUB_LOG", &log));
    assert!(ok, "{out}");
    let objects = read("deploy_kind_.state_cluster1.yaml");
    let s = find(&objects, "Secret", "kepler-spoke-otlp");
    let header = decode(&s["data"]["KEPLER_OTLP_HEADERS"]);
    assert!(
        tokens.iter().any(|t| header.ends_with(t.as_str())),
        "token reused"
    );
    let c = container(find(&objects, "DaemonSet", "kepler-exporter"));
    assert_eq!(c["env"][2]["value"], "false");
    let calls = fs::read_to_string(&log).unwrap();
    assert!(calls.contains("docker build -t kepler-rs:dev -f deploy/image/Containerfile ."));
}

/// POST an empty OTLP/HTTP protobuf request; the status code.
fn otlp_post(port: u16, token: Option<&str>) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

#[test]
fn hub_overlay_config_runs_the_real_hub_with_per_cluster_tokens() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    let Some(collector) = kepler_test_support::require::require_binary("kepler-collector") else {
        return;
    };
    let hub = render(
        &kubectl,
        None,
        &repo().join("deploy/kustomize/overlays/hub"),
    );
    let cfg = find(&hub, "ConfigMap", "kepler-collector-config")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    // Same file on loopback ports, tokens where the Secret would be mounted.
    let dir = tempfile::tempdir().unwrap();
    let mut ports = std::collections::BTreeMap::new();
    let mut text = cfg.replace(
        "/etc/kepler-collector/tokens",
        &dir.path().display().to_string(),
    );
    for port in ["4317", "4318", "4327", "4328", "9464"] {
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ports.insert(port, free);
        text = text.replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{free}"));
    }
    assert!(!text.contains("0.0.0.0"), "every listener moved:\n{text}");
    let (one, two) = ("1a".repeat(32), "2b".repeat(32));
    fs::write(dir.path().join("cluster1"), format!("{one}\n")).unwrap();
    fs::write(dir.path().join("cluster2"), format!("{two}\n")).unwrap();
    fs::write(dir.path().join("config.yaml"), &text).unwrap();
    let mut child = Command::new(collector)
        .arg(format!(
            "--config.file={}",
            dir.path().join("config.yaml").display()
        ))
        .args(["--log.level", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let spoke_http = ports["4328"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("kepler-collector rejected the hub overlay's config: {status}");
        }
        if let Some(code) = otlp_post(spoke_http, None) {
            break code;
        }
        assert!(std::time::Instant::now() < deadline, "hub never listened");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 401, "spokes need a token");
    assert_eq!(otlp_post(spoke_http, Some(&one)), Some(200));
    assert_eq!(otlp_post(spoke_http, Some(&two)), Some(200));
    assert_eq!(otlp_post(spoke_http, Some(&"3c".repeat(32))), Some(401));
    assert_eq!(
        otlp_post(ports["4318"], None),
        Some(200),
        "the hub's own listener is open"
    );
    drop(guard);
}
