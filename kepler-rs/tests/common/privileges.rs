//! What the exporter's pod may do, as deploy/ renders it (kustomize and the Helm chart): the
//! least-privilege default (uid 0 with every capability dropped but BPF, PERFMON and
//! DAC_READ_SEARCH, no privilege escalation, the runtime's seccomp profile, a read-only root
//! file system) or the privileged option (kernels older than 5.8, kind); in both, the host's
//! file systems mounted read-only, recursively, and no host namespace but the PID one.

use serde_yaml_ng::Value;

/// The capabilities the exporter needs: the eBPF program and hardware counters (BPF, PERFMON),
/// cgroup ids and root-only RAPL files (DAC_READ_SEARCH).
pub const CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "DAC_READ_SEARCH"];

/// Which privileges a rendering should give the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges<'a> {
    /// The default: [`CAPABILITIES`] and these more (e.g. SYS_RESOURCE), nothing else.
    Capabilities(&'a [&'a str]),
    /// The documented privileged option.
    Privileged,
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

/// Asserts the exporter DaemonSet's pod and first container have `want`'s privileges and
/// nothing more.
pub fn assert_exporter_privileges(daemonset: &Value, want: Privileges, what: &str) {
    let pod = &daemonset["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(
        pod["hostPID"], true,
        "{what}: host PIDs (eBPF tgids, /proc)"
    );
    for ns in ["hostNetwork", "hostIPC"] {
        assert_ne!(pod[ns], true, "{what}: {ns}");
    }
    assert!(pod["securityContext"]["privileged"].is_null(), "{what}");
    assert_eq!(
        sc["runAsUser"], 0,
        "{what}: uid 0 (capabilities reach uid 0 only)"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    match want {
        Privileges::Capabilities(extra) => {
            assert_eq!(sc["privileged"], false, "{what}: {sc:?}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}: {sc:?}");
            assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{what}: {sc:?}");
            let added = strs(&sc["capabilities"]["add"]);
            let mut want: Vec<String> = CAPABILITIES
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect();
            want.sort();
            let mut got = added.clone();
            got.sort();
            assert_eq!(got, want, "{what}: capabilities added");
            assert!(
                !added.iter().any(|a| a == "SYS_ADMIN" || a == "ALL"),
                "{what}: {added:?}"
            );
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        }
        Privileges::Privileged => {
            assert_eq!(sc["privileged"], true, "{what}: {sc:?}");
            // Kubernetes refuses privileged with allowPrivilegeEscalation: false.
            assert_ne!(sc["allowPrivilegeEscalation"], false, "{what}: {sc:?}");
            assert!(sc["capabilities"].is_null(), "{what}: all of them anyway");
        }
    }
    // Every host path is mounted read-only, recursively where the runtime can, and only /sys,
    // the cgroup fs and /proc are mounted: no tracefs or debugfs (raw tracepoints).
    let volumes = pod["volumes"].as_sequence().cloned().unwrap_or_default();
    let mut host_paths: Vec<String> = Vec::new();
    for v in volumes.iter().filter(|v| v["hostPath"].is_mapping()) {
        let path = v["hostPath"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mounts: Vec<&Value> = c["volumeMounts"]
            .as_sequence()
            .map(|m| m.iter().filter(|m| m["name"] == v["name"]).collect())
            .unwrap_or_default();
        assert!(!mounts.is_empty(), "{what}: host path {path} not mounted");
        for m in mounts {
            assert_eq!(m["readOnly"], true, "{what}: {path} read-only");
            assert_eq!(m["recursiveReadOnly"], "IfPossible", "{what}: {path}");
        }
        host_paths.push(path);
    }
    host_paths.sort();
    assert_eq!(
        host_paths,
        ["/proc", "/sys", "/sys/fs/cgroup"],
        "{what}: host paths"
    );
    // The cgroup fs at the path the exporter reads it (host.sysfs + fs/cgroup).
    let cgroup = c["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/host/sys/fs/cgroup"));
    assert!(cgroup.is_some(), "{what}: cgroup fs at /host/sys/fs/cgroup");
}
