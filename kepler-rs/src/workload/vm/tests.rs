//! Guest detection on real-shaped host data: `testdata/vm-processes.tsv` through a fake `/proc`.

use super::*;
use crate::power::units::CpuNanos;
use crate::workload::cgroup::{self, Classification};

/// One row of the table.
struct Case {
    name: String,
    comm: String,
    cgroup: String,
    cmdline: Vec<u8>,
    vm_id: String,
    vm_name: String,
    error: String,
}

fn cases() -> Vec<Case> {
    let tsv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/vm-processes.tsv"
    ))
    .unwrap();
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 7, "{line}");
            Case {
                name: cols[0].into(),
                comm: cols[1].into(),
                cgroup: cols[2].replace("\\n", "\n") + "\n",
                cmdline: cols[3].replace("\\0", "\0").into_bytes(),
                vm_id: cols[4].into(),
                vm_name: cols[5].into(),
                error: cols[6].into(),
            }
        })
        .collect()
}

fn workload_of(cgroup_content: &str) -> WorkloadKey {
    match cgroup::resolve(cgroup_content).class {
        Classification::Container(identity) => WorkloadKey::Container(identity.id),
        Classification::System => WorkloadKey::System,
        Classification::Kernel => WorkloadKey::Kernel,
    }
}

fn usage(pid: u32, comm: &str, workload: WorkloadKey) -> ProcessUsage {
    ProcessUsage {
        pid,
        comm: comm.into(),
        workload,
        cpu: CpuNanos(1),
        counters: Default::default(),
    }
}

/// A fake `/proc` with `<pid>/cgroup` and `<pid>/cmdline` per case (pids from 100).
fn fake_proc(cases: &[Case]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, c) in cases.iter().enumerate() {
        let p = dir.path().join((100 + i).to_string());
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("cgroup"), &c.cgroup).unwrap();
        std::fs::write(p.join("cmdline"), &c.cmdline).unwrap();
    }
    dir
}

#[test]
fn every_real_shaped_process_resolves_as_the_table_says() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let proc = fake_proc(&cases);
    for (i, c) in cases.iter().enumerate() {
        // One resolver and one metrics registry per case, so each error is the case's own.
        let metrics = SelfMetrics::new();
        let mut resolver = VmResolver::new(proc.path().to_path_buf());
        let p = usage(100 + i as u32, &c.comm, workload_of(&c.cgroup));
        let vm = resolver.resolve(&[p], &metrics).pop().unwrap();
        let (want_id, want_name) = match c.vm_id.as_str() {
            "HASH" => {
                let id = format!("{:016x}", fnv1a(&c.cmdline));
                let name = format!("kvm-{}", &id[..8]);
                (id, name)
            }
            _ => (c.vm_id.clone(), c.vm_name.clone()),
        };
        match &vm {
            Some(vm) => {
                assert_eq!(vm.id, want_id, "{}", c.name);
                assert_eq!(vm.name, want_name, "{}", c.name);
                assert_eq!(vm.hypervisor, "kvm", "{}", c.name);
            }
            None => assert!(want_id.is_empty(), "{}: no VM found", c.name),
        }
        let errors: Vec<&str> = metrics.errors().iter().map(|(_, r, _)| *r).collect();
        if c.error.is_empty() {
            assert!(errors.is_empty(), "{}: {errors:?}", c.name);
        } else {
            assert!(vm.is_none(), "{}: rejected data gave a VM", c.name);
            assert_eq!(errors, [c.error.as_str()], "{}", c.name);
            assert!(metrics.errors().iter().all(|(comp, _, _)| *comp == "vm"));
        }
    }
}

#[test]
fn a_helper_in_a_scope_belongs_to_the_scope_s_qemu_guest() {
    let dir = tempfile::tempdir().unwrap();
    let scope = "0::/machine.slice/machine-qemu\\x2d5\\x2dfs.scope";
    for (pid, sub, cmdline) in [
        (
            10u32,
            "/libvirt/emulator",
            &b"/usr/bin/qemu-system-x86_64\0-name\0guest=fs\0-uuid\x0011111111-2222-4333-8444-555555555555\0"[..],
        ),
        (11, "/libvirt", &b"/usr/libexec/virtiofsd\0--fd=33\0"[..]),
    ] {
        let p = dir.path().join(pid.to_string());
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("cgroup"), format!("{scope}{sub}\n")).unwrap();
        std::fs::write(p.join("cmdline"), cmdline).unwrap();
    }
    let metrics = SelfMetrics::new();
    let mut resolver = VmResolver::new(dir.path().to_path_buf());
    let procs = [
        usage(11, "virtiofsd", WorkloadKey::System),
        usage(10, "qemu-system-x86", WorkloadKey::System),
    ];
    let vms = resolver.resolve(&procs, &metrics);
    let ids: Vec<&str> = vms
        .iter()
        .map(|v| v.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["11111111-2222-4333-8444-555555555555"; 2]);
}

#[test]
fn each_process_is_read_once_and_forgotten_when_gone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("42");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("cgroup"), "0::/user.slice\n").unwrap();
    std::fs::write(p.join("cmdline"), b"qemu-system-x86_64\0-name\0a\0").unwrap();
    let metrics = SelfMetrics::new();
    let mut resolver = VmResolver::new(dir.path().to_path_buf());
    let proc = [usage(42, "qemu-system-x86", WorkloadKey::System)];
    assert_eq!(
        resolver.resolve(&proc, &metrics)[0].as_ref().unwrap().id,
        "a"
    );
    // The files changing does not matter while the process is the same (pid and name)...
    std::fs::write(p.join("cmdline"), b"qemu-system-x86_64\0-name\0b\0").unwrap();
    assert_eq!(
        resolver.resolve(&proc, &metrics)[0].as_ref().unwrap().id,
        "a"
    );
    // ...a new process on the pid (another name) is read afresh, and one gone is forgotten.
    let renamed = [usage(42, "qemu-b", WorkloadKey::System)];
    assert_eq!(
        resolver.resolve(&renamed, &metrics)[0].as_ref().unwrap().id,
        "b"
    );
    assert!(resolver.resolve(&[], &metrics).is_empty());
    assert!(resolver.cache.is_empty());
    // A process whose files vanished is no VM, and no error.
    let gone = [usage(7, "qemu-system-x86", WorkloadKey::System)];
    assert_eq!(resolver.resolve(&gone, &metrics), [None]);
    assert!(metrics.errors().is_empty());
}

#[test]
fn executables_and_names_parse_as_qemu_does() {
    for exe in [
        "qemu-system-x86_64",
        "/usr/bin/qemu-system-aarch64",
        "/usr/libexec/qemu-kvm",
        "kvm",
    ] {
        assert!(is_qemu_executable(exe), "{exe}");
    }
    for exe in [
        "qemu-img",
        "qemu-system-",
        "/usr/bin/qemu-nbd",
        "kvmtool",
        "",
    ] {
        assert!(!is_qemu_executable(exe), "{exe}");
    }
    assert_eq!(guest_name("guest=a,debug-threads=on").as_deref(), Some("a"));
    assert_eq!(guest_name("a,process=b").as_deref(), Some("a"));
    assert_eq!(guest_name("process=b,guest=c").as_deref(), Some("c"));
    assert_eq!(guest_name("x,,y").as_deref(), Some("x,y"));
    assert_eq!(guest_name("").as_deref(), None);
    assert_eq!(guest_name("process=b"), None);
    assert_eq!(parse_cmdline(b""), Ok(None));
    assert_eq!(
        parse_cmdline(b"qemu-kvm\0-name\0"),
        Err(VmError::MissingValue("-name"))
    );
}

proptest::proptest! {
    /// No command line or cgroup content, however malformed, panics.
    #[test]
    fn arbitrary_host_data_never_panics(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                                        text in "\\PC{0,120}") {
        let mut with_qemu = b"qemu-system-x86_64\0".to_vec();
        with_qemu.extend_from_slice(&raw);
        let _ = parse_cmdline(&raw);
        let _ = parse_cmdline(&with_qemu);
        let _ = scope_in_cgroup(&text);
        let _ = scope_in_cgroup(&format!("0::/machine.slice/machine-qemu{text}.scope"));
    }
}
