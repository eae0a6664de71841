//! Pure parsing of `/proc/<pid>/cgroup`: which container (id, pod UID, runtime) a process belongs
//! to, and which cgroup directory accounts for that container's CPU time.
//!
//! No IO happens here: [`resolve`] takes the file's content. The container id is the 64-hex id
//! that container runtimes put in the cgroup path (`docker-<id>.scope`,
//! `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, `/docker/<id>`,
//! `/kubepods/<qos>/pod<uid>/<id>`, ...). The cgroup v2 line is preferred, then the v1
//! `cpuacct` hierarchy, then `name=systemd`, then any other line. Processes in the root cgroup of
//! every hierarchy are classified [`Classification::Kernel`]; everything else that is not a
//! container is [`Classification::System`] (the procfs source refines this with `PF_KTHREAD`).

use super::{ContainerIdentity, Runtime};

/// Which cgroup hierarchy a path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hierarchy {
    /// The unified (v2) hierarchy, line `0::/path`.
    V2,
    /// A v1 hierarchy with its comma-separated controllers (`cpu,cpuacct`, `name=systemd`).
    V1 { controllers: String },
}

impl Hierarchy {
    /// Whether this v1 hierarchy has the named controller (always false for v2).
    pub fn has_controller(&self, name: &str) -> bool {
        match self {
            Hierarchy::V2 => false,
            Hierarchy::V1 { controllers } => controllers.split(',').any(|c| c == name),
        }
    }
}

/// A cgroup directory, relative to the mount point of its hierarchy (starts with `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupRef {
    pub hierarchy: Hierarchy,
    pub path: String,
}

/// What a process is, as far as its cgroup paths tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Container(ContainerIdentity),
    /// A user-space process outside any container (`system_processes`).
    System,
    /// In the root cgroup of every hierarchy (`kernel_processes`).
    Kernel,
}

/// The result of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub class: Classification,
    /// For a container: the cgroup whose CPU accounting covers the whole container (the path up
    /// to and including the segment that carries the id). Otherwise the process's own v2 cgroup,
    /// if it has a v2 line.
    pub cgroup: Option<CgroupRef>,
}

/// One well-formed line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy_id: u32,
    /// Empty for v2.
    pub controllers: &'a str,
    /// Starts with `/`.
    pub path: &'a str,
}

impl CgroupLine<'_> {
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    pub fn hierarchy(&self) -> Hierarchy {
        if self.is_v2() {
            Hierarchy::V2
        } else {
            Hierarchy::V1 {
                controllers: self.controllers.to_string(),
            }
        }
    }
}

/// Parses `/proc/<pid>/cgroup` content, skipping lines that are not `id:controllers:/path`.
pub fn parse(content: &str) -> Vec<CgroupLine<'_>> {
    content
        .lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.parse::<u32>().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            path.starts_with('/').then_some(CgroupLine {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect()
}

/// Classifies a process from its `/proc/<pid>/cgroup` content.
pub fn resolve(proc_pid_cgroup: &str) -> Resolution {
    let lines = parse(proc_pid_cgroup);
    let rank = |l: &CgroupLine<'_>| {
        let h = l.hierarchy();
        if l.is_v2() {
            0
        } else if h.has_controller("cpuacct") {
            1
        } else if h.has_controller("name=systemd") {
            2
        } else {
            3
        }
    };
    let mut ordered: Vec<&CgroupLine<'_>> = lines.iter().collect();
    ordered.sort_by_key(|l| rank(l)); // stable: file order within a rank
    for line in ordered {
        if let Some((identity, prefix)) = container_in_path(line.path) {
            return Resolution {
                class: Classification::Container(identity),
                cgroup: Some(CgroupRef {
                    hierarchy: line.hierarchy(),
                    path: prefix.to_string(),
                }),
            };
        }
    }
    let cgroup = lines.iter().find(|l| l.is_v2()).map(|l| CgroupRef {
        hierarchy: Hierarchy::V2,
        path: l.path.to_string(),
    });
    let class = if !lines.is_empty() && lines.iter().all(|l| l.path == "/") {
        Classification::Kernel
    } else {
        Classification::System
    };
    Resolution { class, cgroup }
}

/// Finds a container in one cgroup path; returns its identity and the path prefix up to and
/// including the segment that carries the id.
pub fn container_in_path(path: &str) -> Option<(ContainerIdentity, &str)> {
    let mut ctx = PathContext::default();
    let mut end = 0usize;
    for (i, seg) in path.split('/').enumerate() {
        end += seg.len() + usize::from(i > 0);
        if let Some((id, runtime, uid)) = container_segment(seg, &ctx) {
            let identity = ContainerIdentity {
                id,
                pod_uid: uid.or(ctx.pod_uid),
                runtime,
            };
            return Some((identity, path.get(..end)?));
        }
        if let Some(uid) = pod_uid_in_segment(seg, ctx.under_kubepods) {
            ctx.pod_uid = Some(uid);
        }
        if seg.contains("kubepods") {
            ctx.under_kubepods = true;
        }
        if seg == "kubepods" {
            ctx.kube_cgroupfs = true;
        }
        ctx.prev_is_docker = seg == "docker";
    }
    None
}

/// What the segments before the current one said.
#[derive(Debug, Default)]
struct PathContext {
    under_kubepods: bool,
    /// The kubelet's cgroupfs driver (`/kubepods/<qos>/pod<uid>/<id>`), not systemd slices.
    kube_cgroupfs: bool,
    prev_is_docker: bool,
    pod_uid: Option<String>,
}

/// Runtime prefixes of systemd scopes (and cgroupfs names) that carry a container id.
const PREFIXES: [(&str, Runtime); 4] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::Crio),
    ("libpod-", Runtime::Podman),
];

fn runtime_from_name(name: &str) -> Runtime {
    match name {
        "docker" => Runtime::Docker,
        "cri-containerd" | "containerd" => Runtime::Containerd,
        "crio" | "cri-o" => Runtime::Crio,
        "libpod" | "podman" => Runtime::Podman,
        _ => Runtime::Unknown,
    }
}

/// A segment that names a container: `(id, runtime, pod uid carried by the segment itself)`.
fn container_segment(seg: &str, ctx: &PathContext) -> Option<(String, Runtime, Option<String>)> {
    // containerd's systemd cgroupsPath left unparsed: `<slice>:cri-containerd:<id>`.
    let mut colon = seg.split(':');
    if let (Some(slice), Some(prefix), Some(id), None) =
        (colon.next(), colon.next(), colon.next(), colon.next())
    {
        return is_container_id(id).then(|| {
            (
                id.to_string(),
                runtime_from_name(prefix),
                pod_uid_in_segment(slice, true),
            )
        });
    }
    let body = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in PREFIXES {
        if let Some(rest) = body.strip_prefix(prefix) {
            // `crio-conmon-<id>` and `libpod-conmon-<id>` are the runtime's monitor, not the
            // container: `rest` is then not a bare id and nothing matches.
            if is_container_id(rest) {
                return Some((rest.to_string(), runtime, None));
            }
        }
    }
    if is_container_id(body) {
        let runtime = if ctx.prev_is_docker {
            Runtime::Docker
        } else if ctx.kube_cgroupfs {
            // kubelet's cgroupfs driver: a bare id is what containerd (the default CRI since
            // dockershim's removal) creates; CRI-O would say `crio-<id>`.
            Runtime::Containerd
        } else if ctx.under_kubepods {
            Runtime::Unknown
        } else {
            return None;
        };
        return Some((body.to_string(), runtime, None));
    }
    if ctx.under_kubepods {
        // Any other `<prefix>-<id>` under a kubepods path.
        let (head, id) = body.rsplit_once('-')?;
        if is_container_id(id) && !head.ends_with("conmon") {
            return Some((id.to_string(), runtime_from_name(head), None));
        }
    }
    None
}

/// A pod UID in a kubepods slice (`kubepods-<qos>-pod<uid>.slice`, underscores for dashes, also
/// with kind's `kubelet-` prefix) or a cgroupfs `pod<uid>` segment under kubepods.
fn pod_uid_in_segment(seg: &str, under_kubepods: bool) -> Option<String> {
    let raw = if let Some(name) = seg.strip_suffix(".slice") {
        if !name.contains("kubepods") {
            return None;
        }
        let at = name.rfind("-pod")?;
        name.get(at + 4..)?
    } else if under_kubepods {
        seg.strip_prefix("pod")?
    } else {
        return None;
    };
    let uid = raw.replace('_', "-");
    let valid = (8..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then_some(uid)
}

/// Whether `s` is a container id: exactly 64 lowercase hex characters.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b";

    fn container(content: &str) -> (ContainerIdentity, CgroupRef) {
        match resolve(content) {
            Resolution {
                class: Classification::Container(c),
                cgroup: Some(cg),
            } => (c, cg),
            other => panic!("no container in {content:?}: {other:?}"),
        }
    }

    fn runtime_named(s: &str) -> Option<Runtime> {
        [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
            Runtime::Unknown,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    #[test]
    fn fixture_rows() {
        let tsv = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/cgroup-paths.tsv"
        ))
        .unwrap();
        let mut rows = 0;
        for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (case, content, want_id) = (cols[0], cols[1].replace("\\n", "\n"), cols[2]);
            let want_uid = cols.get(3).copied().unwrap_or("");
            let want_rt = cols.get(4).copied().unwrap_or("");
            let r = resolve(&content);
            match want_id {
                "system_processes" => assert_eq!(r.class, Classification::System, "{case}"),
                "kernel_processes" => assert_eq!(r.class, Classification::Kernel, "{case}"),
                _ => {
                    let (c, cg) = container(&content);
                    assert_eq!(c.id, want_id, "{case}");
                    let uid = (!want_uid.is_empty()).then(|| want_uid.to_string());
                    assert_eq!(c.pod_uid, uid, "{case}");
                    assert_eq!(Some(c.runtime), runtime_named(want_rt), "{case}");
                    assert!(
                        cg.path.ends_with(want_id) || cg.path.contains(&format!("{want_id}.scope")),
                        "{case}"
                    );
                }
            }
            rows += 1;
        }
        assert!(rows >= 10, "fixture has {rows} rows");
    }

    #[test]
    fn cgroup_prefix_is_the_container_directory() {
        let (c, cg) = container(&format!("0::/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(c.runtime, Runtime::Podman);
        assert_eq!(cg.hierarchy, Hierarchy::V2);
        assert_eq!(cg.path, format!("/machine.slice/libpod-{ID}.scope"));
        let (_, cg) = container(&format!("0::/docker/{ID}"));
        assert_eq!(cg.path, format!("/docker/{ID}"));
    }

    #[test]
    fn docker_v1_systemd_driver() {
        let content = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n4:cpu,cpuacct:/system.slice/docker-{ID}.scope\n\
             1:name=systemd:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope\n"
        );
        let (c, cg) = container(&content);
        assert_eq!(
            (c.id.as_str(), c.runtime, c.pod_uid),
            (ID, Runtime::Docker, None)
        );
        assert_eq!(cg.hierarchy, Hierarchy::V2);
        // Only the systemd line carries it: still found, on name=systemd.
        let content = format!("4:cpu,cpuacct:/\n1:name=systemd:/system.slice/docker-{ID}.scope");
        let (c, cg) = container(&content);
        assert_eq!(c.runtime, Runtime::Docker);
        assert!(cg.hierarchy.has_controller("name=systemd"));
    }

    #[test]
    fn crio_v2_and_its_conmon_sibling() {
        let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b2d2c5e_5f0a_4d3b_9c1e_8a7f6e5d4c3b.slice";
        let (c, cg) = container(&format!("0::/{pod}/crio-{ID}.scope"));
        assert_eq!(c.runtime, Runtime::Crio);
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!(cg.path, format!("/{pod}/crio-{ID}.scope"));
        let conmon = resolve(&format!("0::/{pod}/crio-conmon-{ID}.scope"));
        assert_eq!(conmon.class, Classification::System);
        let conmon = resolve(&format!("0::/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(conmon.class, Classification::System);
        // CRI-O with the cgroupfs manager: `crio-<id>` without `.scope`.
        let (c, _) = container(&format!("0::/kubepods/besteffort/pod{UID}/crio-{ID}"));
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Runtime::Crio, Some(UID))
        );
    }

    #[test]
    fn podman_rootless() {
        let p =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        let (c, cg) = container(&format!("0::{p}/container"));
        assert_eq!((c.runtime, c.pod_uid), (Runtime::Podman, None));
        assert_eq!(cg.path, p);
    }

    #[test]
    fn containerd_v1_systemd_driver() {
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let content = format!("11:memory:{p}\n4:cpu,cpuacct:{p}\n1:name=systemd:{p}\n");
        let (c, cg) = container(&content);
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Runtime::Containerd, Some(UID))
        );
        assert_eq!(
            cg.hierarchy,
            Hierarchy::V1 {
                controllers: "cpu,cpuacct".into()
            }
        );
        assert_eq!(cg.path, p);
    }

    #[test]
    fn hybrid_host_v1_root_v2_container() {
        let v2 = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let content = format!("9:name=systemd:/\n2:cpuacct:/\n1:cpu:/\n0::{v2}\n");
        let (c, cg) = container(&content);
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!(
            cg,
            CgroupRef {
                hierarchy: Hierarchy::V2,
                path: v2
            }
        );
    }

    #[test]
    fn bare_ids_and_odd_shapes() {
        let (c, _) = container(&format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/{ID}",
            UID.replace('-', "_")
        ));
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Runtime::Unknown, Some(UID))
        );
        let (c, _) = container(&format!(
            "0::/system.slice/containerd.service/kubepods-burstable-pod{}.slice:cri-containerd:{ID}",
            UID.replace('-', "_")
        ));
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Runtime::Containerd, Some(UID))
        );
        let (c, _) = container(&format!("0::/kubepods.slice/x-{ID}.scope"));
        assert_eq!(c.runtime, Runtime::Unknown);
        // Seen from inside a private cgroup namespace: identity still found, path kept as is
        // (the CPU reader refuses `..`, so the source falls back to process sums).
        let (c, cg) = container(&format!(
            "0::/../../kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ));
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Runtime::Containerd, Some(UID))
        );
        assert!(cg.path.starts_with("/../../"));
        // A bare id outside kubepods or docker is not claimed.
        assert_eq!(
            resolve(&format!("0::/lxc/{ID}")).class,
            Classification::System
        );
    }

    #[test]
    fn rejects_uppercase_and_short_ids() {
        let upper = ID.to_uppercase();
        assert_eq!(
            resolve(&format!("0::/system.slice/docker-{upper}.scope")).class,
            Classification::System
        );
        let short = &ID[..63];
        assert_eq!(
            resolve(&format!("0::/system.slice/docker-{short}.scope")).class,
            Classification::System
        );
        assert_eq!(
            resolve(&format!("0::/docker/{ID}0")).class,
            Classification::System
        );
        assert_eq!(
            resolve(&format!("0::/kubepods/besteffort/pod{UID}/{upper}")).class,
            Classification::System
        );
    }

    #[test]
    fn kernel_system_and_garbage() {
        assert_eq!(resolve("0::/").class, Classification::Kernel);
        assert_eq!(
            resolve("9:name=systemd:/\n2:cpuacct:/\n0::/").class,
            Classification::Kernel
        );
        let mine = resolve("4:memory:/process_api/2f06\n2:cpuacct:/\n0::/");
        assert_eq!(mine.class, Classification::System);
        assert_eq!(
            mine.cgroup,
            Some(CgroupRef {
                hierarchy: Hierarchy::V2,
                path: "/".into()
            })
        );
        let r = resolve("garbage\nx:y:/z\n0::relative\n\n1:cpu\n0::/system.slice/sshd.service\r\n");
        assert_eq!(r.class, Classification::System);
        assert_eq!(
            r.cgroup.map(|c| c.path).as_deref(),
            Some("/system.slice/sshd.service")
        );
        assert_eq!(resolve("").class, Classification::System);
        assert_eq!(resolve("").cgroup, None);
        assert_eq!(parse("0::/a:b").first().map(|l| l.path), Some("/a:b"));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC*", t in "[0-9a-fA-F:/_.\\-a-z\n]{0,200}") {
            for input in [&s, &t] {
                if let Classification::Container(c) = resolve(input).class {
                    prop_assert!(is_container_id(&c.id));
                }
            }
        }

        #[test]
        fn generated_paths_resolve(id in "[0-9a-f]{64}", prefix in prop::sample::select(vec![
            "docker-", "cri-containerd-", "crio-", "libpod-"]), parent in "(/[a-z@.0-9-]{1,12}){0,4}") {
            let r = resolve(&format!("0::{parent}/{prefix}{id}.scope/sub"));
            let Classification::Container(c) = r.class else { panic!("not a container") };
            prop_assert_eq!(&c.id, &id);
            prop_assert_eq!(r.cgroup.map(|c| c.path), Some(format!("{parent}/{prefix}{id}.scope")));
        }
    }
}
