//! Virtual machines on the node: which processes are QEMU/KVM guests, and which guest each is.
//!
//! A guest is found two ways, as upstream Kepler finds it: by its cgroup (libvirt puts every guest
//! in a systemd scope `machine.slice/machine-qemu\x2d<N>\x2d<name>.scope`, with the threads in
//! sub-cgroups such as `.../libvirt/emulator` and `.../libvirt/vcpu0`; without systemd,
//! `/machine/qemu-<N>-<name>.libvirt-qemu/...`), and by its executable (`qemu-system-*`,
//! `qemu-kvm`, `kvm`). The guest's identity comes from its command line where there is one: `vm_id`
//! is the `-uuid` argument (libvirt always passes the domain UUID), else the scope name
//! (`machine-qemu-1-web`), else the `-name`; `vm_name` is the `-name` (`-name guest=web,...` or
//! `-name web`), else the name in the scope. Processes inside a container are never VMs (the
//! container wins, as upstream). [`parse_cmdline`] and [`scope_in_cgroup`] are pure; [`VmResolver`]
//! reads `/proc/<pid>/cgroup` and `/proc/<pid>/cmdline` of every process outside containers once
//! (while its pid and name stay the same) and caches the answer. Host data that does not parse is
//! skipped with one rate-limited log line and `kepler_exporter_errors_total{component="vm"}`;
//! nothing here panics.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ProcessUsage, WorkloadKey};
use crate::report_error;
use crate::selfmetrics::SelfMetrics;

/// The `hypervisor` label of QEMU guests: upstream Kepler names every QEMU process `kvm`,
/// whether it runs with KVM or TCG.
pub const HYPERVISOR_KVM: &str = "kvm";

const COMPONENT: &str = "vm";

/// Who a guest is: the modern `vm_id`, `vm_name` and `hypervisor` labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmIdentity {
    pub id: String,
    pub name: String,
    pub hypervisor: &'static str,
}

/// Why host data about a guest was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmError {
    /// An option that needs a value came last (`-uuid`, `-name`).
    MissingValue(&'static str),
    /// `-uuid` is not `8-4-4-4-12` hex digits.
    BadUuid(String),
    /// A libvirt machine scope whose name is not `qemu-<N>-<name>` (or a bad `\xNN` escape).
    BadScope(String),
}

impl VmError {
    /// The `reason` label of the self-metric.
    pub fn reason(&self) -> &'static str {
        match self {
            VmError::MissingValue(_) | VmError::BadUuid(_) => "bad_cmdline",
            VmError::BadScope(_) => "bad_cgroup",
        }
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::MissingValue(opt) => write!(f, "{opt} has no value"),
            VmError::BadUuid(v) => write!(f, "-uuid {v:?} is not a UUID"),
            VmError::BadScope(s) => write!(f, "machine scope {s:?} is not qemu-<N>-<name>"),
        }
    }
}

impl std::error::Error for VmError {}

/// What a QEMU command line says about its guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuArgs {
    /// `-uuid`, lowercased.
    pub uuid: Option<String>,
    /// The guest name of `-name` (`guest=` or the leading value).
    pub name: Option<String>,
}

/// Whether `argv0` names a QEMU/KVM executable: `qemu-system-<arch>`, `qemu-kvm` or `kvm`, with
/// or without a directory.
pub fn is_qemu_executable(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    match base.strip_prefix("qemu-system-") {
        Some(arch) => !arch.is_empty(),
        None => base == "qemu-kvm" || base == "kvm",
    }
}

/// Parses `/proc/<pid>/cmdline` (arguments separated by NUL). `Ok(None)` when the executable is
/// not QEMU (or the command line is empty: a kernel thread or a zombie).
pub fn parse_cmdline(raw: &[u8]) -> Result<Option<QemuArgs>, VmError> {
    let text = String::from_utf8_lossy(raw);
    // The kernel ends every argument with a NUL, the last one included.
    let text = text.strip_suffix('\0').unwrap_or(&text);
    let args: Vec<&str> = text.split('\0').collect();
    let Some(argv0) = args.first() else {
        return Ok(None);
    };
    if !is_qemu_executable(argv0) {
        return Ok(None);
    }
    let mut out = QemuArgs::default();
    let mut i = 1;
    while i < args.len() {
        let arg = args[i];
        // QEMU accepts `-opt` and `--opt`, the value as the next argument or after `=`.
        let opt = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        let (key, inline) = match opt {
            Some(o) => match o.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (o, None),
            },
            None => {
                i += 1;
                continue;
            }
        };
        let (key, static_name) = match key {
            "uuid" => ("uuid", "-uuid"),
            "name" => ("name", "-name"),
            _ => {
                i += 1;
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                *args.get(i).ok_or(VmError::MissingValue(static_name))?
            }
        };
        if key == "uuid" {
            if !is_uuid(value) {
                return Err(VmError::BadUuid(value.to_string()));
            }
            out.uuid = Some(value.to_ascii_lowercase());
        } else {
            out.name = guest_name(value);
        }
        i += 1;
    }
    Ok(Some(out))
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The guest name in `-name`'s value: `[guest=]name[,process=...][,debug-threads=on]`, where a
/// doubled comma is a literal comma. `None` when it is empty.
fn guest_name(value: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                parts.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    let name = parts
        .iter()
        .enumerate()
        .find_map(|(i, p)| match p.split_once('=') {
            Some(("guest", v)) => Some(v.to_string()),
            None if i == 0 => Some(p.clone()),
            _ => None,
        })?;
    (!name.is_empty()).then_some(name)
}

/// A libvirt machine cgroup: `machine-qemu\x2d1\x2dweb.scope` (systemd) or
/// `qemu-1-web.libvirt-qemu` (cgroupfs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MachineScope {
    /// The unit name unescaped, without `.scope`: `machine-qemu-1-web` (upstream classic's
    /// `vm_id`); for cgroupfs the directory name without `.libvirt-qemu`.
    pub unit: String,
    /// libvirt's domain number.
    pub domain: u32,
    pub name: String,
}

/// Finds a libvirt machine scope in `/proc/<pid>/cgroup` content (any hierarchy, v1 or v2).
pub fn scope_in_cgroup(content: &str) -> Result<Option<MachineScope>, VmError> {
    for line in super::cgroup::parse(content) {
        for seg in line.path.split('/') {
            if let Some(escaped) = seg
                .strip_prefix("machine-qemu")
                .and_then(|rest| rest.strip_suffix(".scope"))
            {
                let unit = format!("machine-qemu{}", unescape(escaped, seg)?);
                let rest = unit.strip_prefix("machine-qemu-").unwrap_or_default();
                return numbered(rest, &unit, seg).map(Some);
            }
            if let Some(dir) = seg.strip_suffix(".libvirt-qemu") {
                if let Some(rest) = dir.strip_prefix("qemu-") {
                    return numbered(rest, dir, seg).map(Some);
                }
            }
        }
    }
    Ok(None)
}

/// `<N>-<name>` with `N` a number and `name` not empty.
fn numbered(rest: &str, unit: &str, seg: &str) -> Result<MachineScope, VmError> {
    let bad = || VmError::BadScope(seg.to_string());
    let (n, name) = rest.split_once('-').ok_or_else(bad)?;
    let domain = n.parse::<u32>().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok(MachineScope {
        unit: unit.to_string(),
        domain,
        name: name.to_string(),
    })
}

/// systemd's unit-name escaping: `\xNN` is the byte `NN`.
fn unescape(escaped: &str, seg: &str) -> Result<String, VmError> {
    let bad = || VmError::BadScope(seg.to_string());
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = escaped.get(i + 2..i + 4).ok_or_else(bad)?;
            if bytes.get(i + 1) != Some(&b'x') {
                return Err(bad());
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The identity of a guest from what its command line and cgroup say (either may be absent).
pub fn identity(
    args: Option<&QemuArgs>,
    scope: Option<&MachineScope>,
    cmdline: &[u8],
) -> VmIdentity {
    let uuid = args.and_then(|a| a.uuid.clone());
    let qemu_name = args.and_then(|a| a.name.clone());
    let id = uuid
        .or_else(|| scope.map(|s| s.unit.clone()))
        .or_else(|| qemu_name.clone())
        .unwrap_or_else(|| format!("{:016x}", fnv1a(cmdline)));
    let name = qemu_name
        .or_else(|| scope.map(|s| s.name.clone()))
        .unwrap_or_else(|| {
            let short: String = id.chars().take(8).collect();
            format!("{HYPERVISOR_KVM}-{short}")
        });
    VmIdentity {
        id,
        name,
        hypervisor: HYPERVISOR_KVM,
    }
}

/// A stable 64-bit hash (FNV-1a) for guests with neither UUID, scope nor name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the resolver learnt about one process.
#[derive(Debug, Clone)]
enum Known {
    NotVm,
    /// A QEMU process (with its scope, if any).
    Qemu(Arc<VmIdentity>, Option<String>),
    /// Another process in a machine scope (a helper): it belongs to the scope's QEMU guest.
    InScope(MachineScope),
}

#[derive(Debug)]
struct Cached {
    comm: String,
    known: Known,
}

/// Finds the guest of every process, reading each process's `/proc` files once.
#[derive(Debug)]
pub struct VmResolver {
    procfs: PathBuf,
    cache: HashMap<u32, Cached>,
}

impl VmResolver {
    pub fn new(procfs: PathBuf) -> Self {
        Self {
            procfs,
            cache: HashMap::new(),
        }
    }

    /// The guest of each process (aligned with `processes`); forgets processes not listed.
    pub fn resolve(
        &mut self,
        processes: &[ProcessUsage],
        metrics: &SelfMetrics,
    ) -> Vec<Option<Arc<VmIdentity>>> {
        let mut fresh = HashMap::with_capacity(processes.len());
        for p in processes {
            if matches!(p.workload, WorkloadKey::Container(_)) {
                continue;
            }
            let entry = match self.cache.remove(&p.pid) {
                Some(cached) if cached.comm == p.comm => cached,
                _ => Cached {
                    comm: p.comm.clone(),
                    known: self.detect(p.pid, metrics),
                },
            };
            fresh.insert(p.pid, entry);
        }
        self.cache = fresh;
        // Helpers in a scope belong to the scope's QEMU guest when it is listed.
        let by_scope: BTreeMap<&str, &Arc<VmIdentity>> = self
            .cache
            .values()
            .filter_map(|c| match &c.known {
                Known::Qemu(vm, Some(unit)) => Some((unit.as_str(), vm)),
                _ => None,
            })
            .collect();
        processes
            .iter()
            .map(|p| match &self.cache.get(&p.pid)?.known {
                Known::NotVm => None,
                Known::Qemu(vm, _) => Some(vm.clone()),
                Known::InScope(scope) => Some(match by_scope.get(scope.unit.as_str()) {
                    Some(vm) => Arc::clone(vm),
                    None => Arc::new(identity(None, Some(scope), b"")),
                }),
            })
            .collect()
    }

    fn detect(&self, pid: u32, metrics: &SelfMetrics) -> Known {
        let dir = self.procfs.join(pid.to_string());
        // A process that exited meanwhile has no files: not a VM, nothing to report.
        let scope = match std::fs::read_to_string(dir.join("cgroup")) {
            Ok(content) => match scope_in_cgroup(&content) {
                Ok(scope) => scope,
                Err(e) => {
                    report_error!(metrics, COMPONENT, e.reason(), pid, error = %e, "ignoring a machine cgroup whose name does not parse");
                    None
                }
            },
            Err(_) => None,
        };
        // Every command line is read (once): QEMU can rename its process (`-name ...,process=`).
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        match parse_cmdline(&cmdline) {
            Ok(Some(args)) => {
                let vm = identity(Some(&args), scope.as_ref(), &cmdline);
                Known::Qemu(Arc::new(vm), scope.map(|s| s.unit))
            }
            Ok(None) => scope.map_or(Known::NotVm, Known::InScope),
            Err(e) => {
                report_error!(metrics, COMPONENT, e.reason(), pid, error = %e, "skipping a QEMU process whose command line does not parse");
                Known::NotVm
            }
        }
    }
}

#[cfg(test)]
mod tests;
