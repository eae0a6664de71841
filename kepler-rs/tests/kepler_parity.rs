#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity with upstream Kepler v0.11: the real `kepler-rs` binary (`--metrics.schema modern`,
//! fake RAPL, procfs CPU time, process metrics on, no Kubernetes) over a fake `/proc` with two
//! pods' containers (systemd and cgroupfs kubelet drivers), a plain Docker container, a host
//! service and a QEMU guest, compared family by family with
//! `testdata/upstream-kepler/v0.11-families.tsv`, the families upstream serves, as read from
//! its source (see that folder's README).
//!
//! Each row's `kepler_rs` column says what we serve: `same` (upstream's exact label names),
//! `labels <names>: <reason>` (a known difference, checked to still be exactly that), or
//! `missing: <reason>` (checked to be still absent). Fixing a gap therefore fails this test
//! until the file (and docs/kepler-parity.md) says so. A second test pins the value-semantics
//! differences docs/kepler-parity.md lists, each on the kepler-rs side, so that closing one
//! also forces the document to change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::host_tree::HostTree;

const FAMILIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/upstream-kepler/v0.11-families.tsv"
);
const HEADER: &str = "family\ttype\tgate\tlabels\tconst_labels\tupstream_values\tkepler_rs";

// The upstream table.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Parity {
    /// Served with upstream's label names.
    Same,
    /// Served, with these label names instead (a known difference).
    Labels(Vec<String>),
    /// Not served.
    Missing,
}

#[derive(Debug, Clone)]
struct Row {
    family: String,
    ty: String,
    /// Every label name upstream's series carry: the variable ones, then the constant ones.
    labels: Vec<String>,
    parity: Parity,
}

fn names(list: &str) -> Vec<String> {
    if list == "-" {
        return Vec::new();
    }
    list.split(',').map(str::to_string).collect()
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses the table, failing on anything malformed (so a typo cannot silently skip a row).
fn upstream_rows() -> Vec<Row> {
    let text = fs::read_to_string(FAMILIES).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER), "{FAMILIES}: header");
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in lines.enumerate() {
        let at = format!("{FAMILIES}:{}", i + 2);
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "{at}: 7 tab-separated columns");
        let [family, ty, gate, labels, const_labels, note, kepler_rs] = cols[..] else {
            unreachable!()
        };
        assert!(seen.insert(family.to_string()), "{at}: {family} twice");
        assert!(
            ["counter", "gauge", "summary", "histogram"].contains(&ty),
            "{at}: type {ty}"
        );
        assert!(!gate.is_empty() && !note.is_empty(), "{at}: empty column");
        let mut all = names(labels);
        all.extend(names(const_labels));
        for name in &all {
            assert!(is_label_name(name), "{at}: label name {name:?}");
        }
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{at}: a label twice");
        let parity = if kepler_rs == "same" {
            Parity::Same
        } else if let Some(reason) = kepler_rs.strip_prefix("missing: ") {
            assert!(!reason.trim().is_empty(), "{at}: missing without a reason");
            Parity::Missing
        } else if let Some(rest) = kepler_rs.strip_prefix("labels ") {
            let (list, reason) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("{at}: `labels <names>: <reason>`"));
            assert!(!reason.trim().is_empty(), "{at}: labels without a reason");
            let ours = names(list);
            assert!(ours.iter().all(|n| is_label_name(n)), "{at}: {list:?}");
            assert_ne!(
                set(&ours),
                set(&all),
                "{at}: listed as a label difference, but these are upstream's labels: say `same`"
            );
            Parity::Labels(ours)
        } else {
            panic!("{at}: kepler_rs must be `same`, `missing: <reason>` or `labels <names>: <reason>`, not {kepler_rs:?}");
        };
        rows.push(Row {
            family: family.to_string(),
            ty: ty.to_string(),
            labels: all,
            parity,
        });
    }
    rows
}

/// The table parses, and covers every level and collector upstream serves.
#[test]
fn the_upstream_table_is_well_formed() {
    let text = fs::read_to_string(FAMILIES).unwrap();
    let gates: BTreeSet<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    for gate in [
        "node",
        "process",
        "container",
        "vm",
        "pod",
        "build_info",
        "cpu_info",
        "gpu_info",
    ] {
        assert!(gates.contains(gate), "no family of level/collector {gate}");
    }
    assert_eq!(upstream_rows().len(), text.lines().count() - 1);
}

fn set(names: &[String]) -> BTreeSet<&str> {
    names.iter().map(String::as_str).collect()
}

// The exposition.

#[derive(Debug, Clone)]
struct Sample {
    family: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Exposition {
    /// `# TYPE` lines: family -> type.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut out = Self {
            text: text.to_string(),
            ..Self::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect(line);
                out.types.insert(name.to_string(), ty.to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let sample = parse_sample(line);
            let family = if out.types.contains_key(&sample.family) {
                sample.family.clone()
            } else {
                ["_sum", "_count", "_bucket"]
                    .iter()
                    .find_map(|s| sample.family.strip_suffix(s))
                    .filter(|base| out.types.contains_key(*base))
                    .unwrap_or(&sample.family)
                    .to_string()
            };
            out.samples.push(Sample { family, ..sample });
        }
        out
    }

    fn of<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.family == family)
    }

    /// Samples of `family` whose labels include all of `with`.
    fn matching(&self, family: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.family == family)
            .filter(|s| with.iter().all(|(n, v)| s.label(n) == Some(*v)))
            .collect()
    }
}

/// One text-format sample line: `name{a="x",b="y"} value [timestamp]`.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect(line);
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(body) => parse_labels(body, line),
        None => (Vec::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next().expect(line);
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().expect(line),
    };
    Sample {
        family: line[..name_end].to_string(),
        labels,
        value,
    }
}

/// The label pairs after `{`, and what follows the closing `}`.
fn parse_labels<'a>(body: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut name = String::new();
    let mut chars = body.char_indices();
    loop {
        let (i, c) = chars.next().expect(line);
        match c {
            '}' => return (labels, &body[i + 1..]),
            ',' | ' ' => {}
            '=' => {
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect(line).1 {
                        '"' => break,
                        '\\' => match chars.next().expect(line).1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        other => value.push(other),
                    }
                }
                labels.push((std::mem::take(&mut name), value));
            }
            other => name.push(other),
        }
    }
}

#[test]
fn the_sample_parser_reads_escapes_and_families() {
    let e = Exposition::parse(
        "# TYPE a_total counter\na_total{x=\"q\\\"u,o}te\",y=\"\"} 1.5\n\
         # TYPE s summary\ns_sum 2\ns_count{k=\"v\"} 3\nb 4\n",
    );
    let a: Vec<_> = e.of("a_total").collect();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].label("x"), Some("q\"u,o}te"));
    assert_eq!(a[0].label("y"), Some(""));
    assert_eq!(a[0].value, 1.5);
    assert_eq!(e.of("s").count(), 2);
    assert_eq!(e.of("b").count(), 1);
    assert_eq!(e.types.get("s").map(String::as_str), Some("summary"));
}

// The fake host.

const POD_UID: &str = "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b";
const CGROUPFS_POD_UID: &str = "1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809";
const NGINX: u32 = 4101;
const POSTGRES: u32 = 4102;
const SSHD: u32 = 4103;
const QEMU: u32 = 4104;
const WORKER: u32 = 4105;
/// CPU time every process had before the exporter started (`utime` ticks at 100 Hz): 1000 s,
/// far more than a process gains during a test.
const START_TICKS: u64 = 100_000;

fn hex(h: &str) -> String {
    h.repeat(64 / h.len())
}

/// (pid, comm, `/proc/<pid>/cgroup`, its container's cgroup when in one).
fn processes() -> Vec<(u32, &'static str, String, Option<String>)> {
    let pod = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
        POD_UID.replace('-', "_"),
        hex("9c")
    );
    let docker = format!("system.slice/docker-{}.scope", hex("d0"));
    let cgroupfs = format!("kubepods/besteffort/pod{CGROUPFS_POD_UID}/{}", hex("5d"));
    vec![
        (NGINX, "nginx", format!("0::/{pod}"), Some(pod)),
        (POSTGRES, "postgres", format!("0::/{docker}"), Some(docker)),
        (SSHD, "sshd", "0::/system.slice/ssh.service".into(), None),
        (
            QEMU,
            "qemu-system-x86",
            "0::/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator".into(),
            None,
        ),
        (WORKER, "worker", format!("0::/{cgroupfs}"), Some(cgroupfs)),
    ]
}

struct FakeHost {
    tree: HostTree,
    interval: u64,
    gone: Vec<u32>,
}

impl FakeHost {
    fn new() -> Self {
        let tree = HostTree::new("intel-client-psys", "cpu memory pids");
        for (pid, _, cgroup_file, container) in processes() {
            tree.add_process(pid, &cgroup_file, container.as_deref());
        }
        let proc = tree.procfs();
        // What upstream reads and we do not: the executable, the environment, the command line.
        std::os::unix::fs::symlink("/usr/sbin/nginx", proc.join(format!("{NGINX}/exe"))).unwrap();
        fs::write(
            proc.join(format!("{POSTGRES}/environ")),
            "HOSTNAME=db\0PATH=/usr/bin\0",
        )
        .unwrap();
        fs::write(
            proc.join(format!("{QEMU}/cmdline")),
            [
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=vm1",
                "-uuid",
                "5b0a6f3e-0c1d-4e2f-8a9b-1c2d3e4f5a6b",
                "",
            ]
            .join("\0"),
        )
        .unwrap();
        let mut cpuinfo = String::new();
        for cpu in 0..2 {
            cpuinfo.push_str(&format!(
                "processor\t: {cpu}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nphysical id\t: 0\ncore id\t\t: {cpu}\n\n"
            ));
        }
        fs::write(proc.join("cpuinfo"), cpuinfo).unwrap();
        let host = Self {
            tree,
            interval: 0,
            gone: Vec::new(),
        };
        host.write_counters();
        host
    }

    fn ticks(&self, pid: u32) -> u64 {
        START_TICKS + 20 * self.interval + u64::from(pid % 2) * self.interval
    }

    /// Replaces `path` at once (write aside, rename), so the exporter never reads a file
    /// half-written.
    fn replace(path: PathBuf, content: String) {
        let aside = path.with_extension("new");
        fs::write(&aside, content).unwrap();
        fs::rename(aside, path).unwrap();
    }

    /// `/proc/<pid>/stat`, the containers' `cpu.stat` and `/proc/stat` for the current interval.
    fn write_counters(&self) {
        let (proc, cgroups) = (self.procfs(), self.tree.cgroup_root());
        let mut busy = 0;
        for (pid, comm, _, container) in processes() {
            if self.gone.contains(&pid) {
                continue;
            }
            let utime = self.ticks(pid);
            busy += utime - START_TICKS;
            let stat = common::proc_stat_line(pid, comm, 0, utime);
            Self::replace(proc.join(format!("{pid}/stat")), stat);
            if let Some(cgroup) = container {
                let usec = utime * 10_000;
                Self::replace(
                    cgroups.join(cgroup).join("cpu.stat"),
                    format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
                );
            }
        }
        let all = 600 * self.interval;
        let idle = all - busy.min(all);
        Self::replace(
            proc.join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        );
    }

    /// 3 s more of node time, every running process busy.
    fn advance(&mut self) {
        self.interval += 1;
        self.write_counters();
        self.write_gpu();
    }

    /// The fake NVML's state: one GPU whose energy grows faster each interval (so some of it
    /// is above the idle estimate), used by nginx alone.
    fn write_gpu(&self) {
        let i = self.interval;
        let counter = 1000 + 50_000 * i * (i + 1) / 2;
        Self::replace(
            self.tree.sysfs().join("fake-nvml-state"),
            format!(
                "driver 550.54.15\n\
                 gpu GPU-5b0a6f3e-0c1d-4e2f-8a9b-1c2d3e4f5a6b Fake_GPU {counter} 60000 30 0\n\
                 running 0 {NGINX}\n"
            ),
        );
    }

    fn exit(&mut self, pid: u32) {
        self.tree.remove_process(pid, None);
        self.gone.push(pid);
    }

    fn sysfs(&self) -> PathBuf {
        self.tree.sysfs()
    }

    fn procfs(&self) -> PathBuf {
        self.tree.procfs()
    }
}

/// The binary on `host`, modern schema (process metrics on by default, as upstream), procfs CPU
/// time, fake RAPL, and one GPU of the fake NVML that nginx uses (None where it cannot be built:
/// the test is skipped).
fn start(host: &FakeHost, extra: &[&str]) -> Option<Exporter> {
    let nvml = common::fake_nvml::library()?;
    let state = host.tree.sysfs().join("fake-nvml-state");
    host.write_gpu();
    // The exporter inherits it (no test here loads NVML in-process).
    std::env::set_var("FAKE_NVML_STATE", &state);
    let nvml = format!("--gpu.nvml-library={}", nvml.display());
    let sysfs = format!("--host.sysfs={}", host.sysfs().display());
    let procfs = format!("--host.procfs={}", host.procfs().display());
    let mut flags = vec![
        nvml.as_str(),
        "--ebpf.enabled=false",
        "--metrics.schema",
        "modern",
        "--kube.node-name",
        "parity-node",
        sysfs.as_str(),
        procfs.as_str(),
    ];
    flags.extend_from_slice(extra);
    Some(Exporter::start(&flags))
}

fn get_metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|()| head.split_whitespace().nth(1) == Some("200"))?;
    Some(body.to_string())
}

/// Advances `host` and scrapes until `ready` holds; after 30 s returns the last page anyway
/// (`Err`), for the caller to report what is wrong with it.
fn scrape_until(
    host: &mut FakeHost,
    exporter: &Exporter,
    ready: impl Fn(&Exposition) -> bool,
) -> Result<Exposition, Exposition> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Exposition::default();
    while Instant::now() < deadline {
        host.advance();
        std::thread::sleep(Duration::from_millis(300));
        if let Some(text) = get_metrics(exporter.port) {
            last = Exposition::parse(&text);
            if ready(&last) {
                return Ok(last);
            }
        }
    }
    Err(last)
}

// The comparison.

/// Every upstream family is served with upstream's type and label names, or with exactly the
/// difference its row names, or (`missing:`) not at all; and we serve no other family except
/// our own `kepler_exporter_*` self-metrics.
#[test]
fn every_upstream_family_is_served_with_upstreams_labels() {
    let rows = upstream_rows();
    let mut host = FakeHost::new();
    let Some(exporter) = start(&host, &[]) else {
        return;
    };
    let served = |e: &Exposition| {
        rows.iter()
            .filter(|r| r.parity != Parity::Missing)
            .all(|r| e.of(&r.family).next().is_some())
    };
    let page = scrape_until(&mut host, &exporter, served).unwrap_or_else(|page| page);

    let mut problems = Vec::new();
    for row in &rows {
        let family = row.family.as_str();
        let has_type = page.types.get(family);
        let label_sets: BTreeSet<Vec<&str>> = page
            .of(family)
            .map(|s| s.labels.iter().map(|(n, _)| n.as_str()).collect())
            .collect();
        let expected = match &row.parity {
            Parity::Missing => {
                if has_type.is_some() || !label_sets.is_empty() {
                    problems.push(format!(
                        "{family}: marked missing but served (update the table and docs/kepler-parity.md)"
                    ));
                }
                continue;
            }
            Parity::Same => &row.labels,
            Parity::Labels(ours) => ours,
        };
        match has_type {
            None => {
                problems.push(format!("{family}: not served (no # TYPE line)"));
                continue;
            }
            Some(ty) if *ty != row.ty => {
                problems.push(format!("{family}: type {ty}, upstream {}", row.ty));
            }
            Some(_) => {}
        }
        if label_sets.is_empty() {
            problems.push(format!("{family}: no sample on this fake host"));
        }
        let want: BTreeSet<&str> = set(expected);
        for labels in label_sets {
            let got: BTreeSet<&str> = labels.iter().copied().collect();
            if got != want {
                let extra: Vec<_> = got.difference(&want).collect();
                let lacking: Vec<_> = want.difference(&got).collect();
                problems.push(format!(
                    "{family}: labels {labels:?}; extra {extra:?}, lacking {lacking:?} (expected {} {:?})",
                    if row.parity == Parity::Same { "upstream's" } else { "the listed" },
                    expected
                ));
            }
        }
    }
    let listed: BTreeSet<&str> = rows.iter().map(|r| r.family.as_str()).collect();
    for family in page.types.keys() {
        if !listed.contains(family.as_str()) && !family.starts_with("kepler_exporter_") {
            problems.push(format!(
                "{family}: served, but upstream v0.11 has no such family"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "parity with upstream Kepler v0.11 ({FAMILIES}):\n  {}\n\n/metrics was:\n{}",
        problems.join("\n  "),
        page.text
    );
}

// The value semantics (docs/kepler-parity.md): each check pins the kepler-rs side of a
// documented difference, or a parity the document claims.

/// Parity: on two sockets, both sum each zone name into one series, `path="aggregated-<zone>"`.
fn zones_are_aggregated(page: &Exposition) -> Result<(), String> {
    for family in [
        "kepler_node_cpu_joules_total",
        "kepler_node_cpu_watts",
        "kepler_node_cpu_active_joules_total",
        "kepler_node_cpu_idle_watts",
    ] {
        let package = page.matching(family, &[("zone", "package")]);
        let paths: Vec<&str> = package.iter().filter_map(|s| s.label("path")).collect();
        if paths != ["aggregated-package"] {
            return Err(format!(
                "{family}: one zone=\"package\" series with path=\"aggregated-package\", got {paths:?}"
            ));
        }
    }
    Ok(())
}

/// One pinned fact: `Ok`, or what was expected.
type Check = fn(&Exposition) -> Result<(), String>;

fn one(page: &Exposition, family: &str, with: &[(&str, &str)]) -> Result<Sample, String> {
    match page.matching(family, with).as_slice() {
        [] => Err(format!("no {family} with {with:?}")),
        [s, ..] => Ok((*s).clone()),
    }
}

fn pid(p: u32) -> String {
    p.to_string()
}

/// Upstream reads `/proc/<pid>/exe` (`exe="/usr/sbin/nginx"` here); we leave `exe` empty.
fn exe_is_empty(page: &Exposition) -> Result<(), String> {
    let nginx = pid(NGINX);
    for family in [
        "kepler_process_cpu_joules_total",
        "kepler_process_cpu_watts",
        "kepler_process_cpu_seconds_total",
    ] {
        let s = one(page, family, &[("pid", &nginx)])?;
        if s.label("exe") != Some("") {
            return Err(format!(
                "{family}: exe={:?}, documented as empty",
                s.label("exe")
            ));
        }
    }
    Ok(())
}

/// As upstream: a `qemu-system-*` process is `type="vm"` with the `-uuid` as `vm_id` and no
/// `container_id`, and its guest is served in `kepler_vm_*` with the `-name` and `kvm`.
fn qemu_is_a_vm(page: &Exposition) -> Result<(), String> {
    const UUID: &str = "5b0a6f3e-0c1d-4e2f-8a9b-1c2d3e4f5a6b";
    for family in [
        "kepler_process_cpu_joules_total",
        "kepler_process_cpu_watts",
        "kepler_process_cpu_seconds_total",
    ] {
        let s = one(page, family, &[("pid", &pid(QEMU))])?;
        if s.label("type") != Some("vm")
            || s.label("vm_id") != Some(UUID)
            || s.label("container_id") != Some("")
        {
            return Err(format!(
                "{family} qemu: type={:?} vm_id={:?} container_id={:?}, documented as vm, {UUID}, empty",
                s.label("type"),
                s.label("vm_id"),
                s.label("container_id")
            ));
        }
    }
    let guest = [
        ("vm_id", UUID),
        ("vm_name", "vm1"),
        ("hypervisor", "kvm"),
        ("state", "running"),
        ("zone", "package"),
    ];
    for family in ["kepler_vm_cpu_joules_total", "kepler_vm_cpu_watts"] {
        one(page, family, &guest)?;
    }
    Ok(())
}

/// Parity: `kepler_process_cpu_seconds_total` is utime + stime since the process started (here
/// at least START_TICKS / 100 s, used before the exporter started), as upstream.
fn cpu_seconds_count_from_process_start(page: &Exposition) -> Result<(), String> {
    let s = one(
        page,
        "kepler_process_cpu_seconds_total",
        &[("pid", &pid(NGINX))],
    )?;
    let before_start = START_TICKS as f64 / 100.0;
    if s.value < before_start {
        return Err(format!(
            "cpu seconds {} leave out the {before_start} s before the exporter started",
            s.value
        ));
    }
    Ok(())
}

/// Upstream serves pods only with the Kubernetes pod informer; we serve the pod UID from the
/// cgroup path without it, names empty.
fn pods_without_kubernetes(page: &Exposition) -> Result<(), String> {
    let s = one(page, "kepler_pod_cpu_joules_total", &[("pod_id", POD_UID)])?;
    if s.label("pod_name") != Some("") || s.label("pod_namespace") != Some("") {
        return Err(format!("pod names {:?}, documented as empty", s.labels));
    }
    let c = one(
        page,
        "kepler_container_cpu_joules_total",
        &[("container_id", &hex("9c"))],
    )?;
    if c.label("pod_id") != Some(POD_UID) {
        return Err(format!("nginx container pod_id {:?}", c.label("pod_id")));
    }
    Ok(())
}

/// Upstream names a container from its process's `HOSTNAME`/`CONTAINER_NAME` (here `db`); we
/// name containers only from Kubernetes.
fn container_name_only_from_kubernetes(page: &Exposition) -> Result<(), String> {
    let s = one(
        page,
        "kepler_container_cpu_joules_total",
        &[("container_id", &hex("d0"))],
    )?;
    if s.label("container_name") != Some("") || s.label("runtime") != Some("docker") {
        return Err(format!("postgres container {:?}", s.labels));
    }
    if s.label("pod_id") != Some("") {
        return Err(format!(
            "a container outside pods has pod_id {:?}",
            s.label("pod_id")
        ));
    }
    Ok(())
}

/// A bare id under the kubelet's cgroupfs `kubepods/<qos>/pod<uid>/` is `runtime="kubernetes"`
/// upstream; we say `containerd`.
fn cgroupfs_kubepods_runtime(page: &Exposition) -> Result<(), String> {
    let s = one(
        page,
        "kepler_container_cpu_joules_total",
        &[("container_id", &hex("5d"))],
    )?;
    if s.label("runtime") != Some("containerd") {
        return Err(format!(
            "runtime {:?}, documented as containerd",
            s.label("runtime")
        ));
    }
    Ok(())
}

/// Parity: container families hold real containers only (no pseudo container for host
/// processes), and every workload series carries every node zone.
fn only_real_containers(page: &Exposition) -> Result<(), String> {
    let ids: BTreeSet<&str> = page
        .of("kepler_container_cpu_joules_total")
        .filter_map(|s| s.label("container_id"))
        .collect();
    let want: BTreeSet<String> = [hex("9c"), hex("d0"), hex("5d")].into();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    if ids != want {
        return Err(format!("container ids {ids:?}, want {want:?}"));
    }
    let zones: BTreeSet<&str> = page
        .of("kepler_node_cpu_joules_total")
        .filter_map(|s| s.label("zone"))
        .collect();
    let nginx: BTreeSet<&str> = page
        .matching(
            "kepler_container_cpu_joules_total",
            &[("container_id", &hex("9c"))],
        )
        .iter()
        .filter_map(|s| s.label("zone"))
        .collect();
    if nginx != zones {
        return Err(format!("nginx zones {nginx:?}, node zones {zones:?}"));
    }
    Ok(())
}

#[test]
fn documented_value_differences_still_hold() {
    let mut host = FakeHost::new();
    let Some(exporter) = start(&host, &["--fake-rapl.sockets", "2"]) else {
        return;
    };
    let checks: [(&str, Check); 8] = [
        ("zones aggregated as upstream", zones_are_aggregated),
        ("exe empty", exe_is_empty),
        ("VMs as upstream", qemu_is_a_vm),
        (
            "cpu seconds since process start",
            cpu_seconds_count_from_process_start,
        ),
        ("pods without Kubernetes", pods_without_kubernetes),
        ("container names", container_name_only_from_kubernetes),
        ("cgroupfs runtime", cgroupfs_kubepods_runtime),
        ("real containers only", only_real_containers),
    ];
    let all_hold = |page: &Exposition| checks.iter().all(|(_, check)| check(page).is_ok());
    let page = scrape_until(&mut host, &exporter, all_hold).unwrap_or_else(|page| {
        let failed: Vec<String> = checks
            .iter()
            .filter_map(|(name, check)| check(&page).err().map(|e| format!("{name}: {e}")))
            .collect();
        panic!(
            "documented differences (docs/kepler-parity.md) no longer hold:\n  {}\n\n/metrics was:\n{}",
            failed.join("\n  "),
            page.text
        )
    });

    // Terminated workloads: upstream shows a terminated process (one above 10 J) until one
    // scrape has read it, with its last watts; we keep it for the retention window (5 m)
    // whoever scrapes, with 0 W.
    assert!(page
        .of("kepler_process_cpu_watts")
        .any(|s| s.label("pid") == Some("4103")));
    host.exit(SSHD);
    let sshd = pid(SSHD);
    let terminated = [("pid", sshd.as_str()), ("state", "terminated")];
    let gone = |page: &Exposition| {
        !page
            .matching("kepler_process_cpu_watts", &terminated)
            .is_empty()
    };
    let first = scrape_until(&mut host, &exporter, gone)
        .unwrap_or_else(|page| panic!("sshd never became terminated:\n{}", page.text));
    let sequence = |page: &Exposition| {
        page.of("kepler_exporter_snapshot_sequence")
            .next()
            .map_or(0.0, |s| s.value)
    };
    let seen_at = sequence(&first);
    let later = scrape_until(&mut host, &exporter, |page| sequence(page) >= seen_at + 3.0)
        .unwrap_or_else(|page| panic!("no three more intervals:\n{}", page.text));
    let watts = later.matching("kepler_process_cpu_watts", &terminated);
    assert!(
        !watts.is_empty() && watts.iter().all(|s| s.value == 0.0),
        "a terminated process stays, at 0 W, after further scrapes and intervals: {watts:?}"
    );
}
