//! The metrics reference (docs/metrics.md) is generated from the code's families.

use super::*;

/// One reference row per family: type, OTLP unit, label names, help.
pub(crate) fn reference_rows(
    s: &Snapshot,
    metrics: &SelfMetrics,
    schema: kepler_rs::config::Schema,
) -> BTreeMap<String, (String, String, String, String)> {
    let options = RenderOptions {
        process_metrics: true,
        schema,
    };
    let build = build_info();
    let mut rows = BTreeMap::new();
    for family in kepler_rs::export::prometheus::families(s, metrics, &options, &build) {
        let mut labels = Vec::new();
        family.for_each_sample(|l, _| {
            if labels.is_empty() {
                labels = l.iter().map(|(k, _)| format!("`{k}`")).collect();
            }
        });
        rows.insert(
            family.name.to_string(),
            (
                format!("{:?}", family.ty).to_lowercase(),
                family.unit.to_string(),
                labels.join(", "),
                family.help.replace('|', "\\|"),
            ),
        );
    }
    rows
}

pub(crate) fn reference_table(rows: &BTreeMap<String, (String, String, String, String)>) -> String {
    let mut out = String::from(
        "| name | type | OTLP unit | labels | meaning | upstream |\n|---|---|---|---|---|---|\n",
    );
    for (name, (ty, unit, labels, help)) in rows {
        let upstream = super::upstream::note(name).unwrap_or_else(|| {
            panic!("{name}: no upstream note; write one in kepler-rs/tests/exposition/upstream.rs")
        });
        let upstream = upstream.replace('|', "\\|");
        out.push_str(&format!(
            "| `{name}` | {ty} | {unit} | {labels} | {help} | {upstream} |\n"
        ));
    }
    out
}

#[test]
fn metrics_reference_is_up_to_date() {
    use kepler_rs::config::Schema;
    let mut s = client_all_zones();
    s.info.cpus = vec![kepler_rs::host::CpuInfo {
        processor: "0".into(),
        vendor_id: "GenuineIntel".into(),
        model_name: "Reference CPU".into(),
        physical_id: "0".into(),
        core_id: "0".into(),
    }];
    s.hardware_counters = kepler_rs::workload::HardwareCounter::ALL
        .into_iter()
        .chain(kepler_rs::workload::HardwareCounter::KERNEL_EVENTS)
        .fold(kepler_rs::workload::HardwareCounterSet::NONE, |set, c| {
            set.with(c)
        });
    s.gpus = vec![kepler_rs::snapshot::NodeGpu {
        index: 0,
        mig: None,
        uuid: "GPU-00000000-0000-0000-0000-000000000000".into(),
        name: "Reference GPU".into(),
        energy: Default::default(),
        watts: kepler_rs::power::units::Watts(0.0),
        idle_watts: kepler_rs::power::units::Watts(0.0),
    }];
    let share = kepler_rs::snapshot::GpuShare {
        energy: kepler_rs::snapshot::ModeSplit::new(
            kepler_rs::power::units::Microjoules(2_000_000),
            kepler_rs::power::units::Microjoules(1_000_000),
        ),
        ..Default::default()
    };
    let one_gpu =
        |share| std::collections::BTreeMap::from([(kepler_rs::snapshot::GpuId::whole(0), share)]);
    for w in &s.workloads {
        s.gpu_workloads.insert(w.key.clone(), one_gpu(share));
    }
    for p in &s.processes {
        s.gpu_processes.insert(p.pid, one_gpu(share));
    }
    let metrics = errors();
    metrics.record_export("push", "sent", 1);
    let classic = reference_rows(&s, &metrics, Schema::Classic);
    let modern = reference_rows(&s, &metrics, Schema::Modern);
    // Served alike by both schemas (a name both serve differently is listed under each).
    let common_rows: BTreeMap<_, _> = classic
        .iter()
        .filter(|(k, v)| modern.get(*k) == Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let only = |rows: &BTreeMap<String, (String, String, String, String)>| -> BTreeMap<_, _> {
        rows.iter()
            .filter(|(k, _)| !common_rows.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let doc = format!(
        "# Metrics reference\n\n\
         Generated from the exporter's metric families by `kepler-rs/tests/exposition.rs`\n\
         (`UPDATE_DOCS=1 cargo test -p kepler-rs --test exposition metrics_reference` rewrites it;\n\
         CI fails when it is stale). `metrics.schema` chooses the families: `classic` (default),\n\
         `modern` or `both`. Labels are listed in exposition order. Energy counters are in joules\n\
         and monotonic; process series appear with `--metrics.processes`, by default with the\n\
         modern or both schema (as Kepler 0.11) and not with classic (as Kepler 0.7);\n\
         `*_bpf_cpu_time_ms_total` only with the eBPF CPU-time source, the hardware counter\n\
         families (`*_cpu_cycles_total`, `*_cpu_instructions_total`, `*_cache_miss_total`) only\n\
         for the counters the PMU offers (absent in most VMs), and the kernel event families\n\
         (`*_bpf_net_tx_irq_total`, `*_bpf_net_rx_irq_total`, `*_bpf_block_irq_total`,\n\
         `*_bpf_page_cache_hit_total`) only with the eBPF source, for the hooks the kernel\n\
         offers. The VM families (`kepler_vm_*`)\n\
         appear while the node runs QEMU/KVM guests, found by libvirt's machine cgroups\n\
         (`machine.slice/machine-qemu...scope`) and by `qemu-system-*`, `qemu-kvm` and `kvm`\n\
         processes outside containers; a guest's energy is the sum of its processes' shares, so it\n\
         is also part of `system_processes`. `vm_id` is the guest's UUID (its `-uuid`, which\n\
         libvirt always passes), else its libvirt scope (`machine-qemu-1-web`, classic Kepler's\n\
         `vm_id`), else its `-name`; `vm_name` is the `-name`, and `hypervisor` is `kvm` for every\n\
         QEMU guest, as upstream names it. OTLP push sends the same\n\
         families with the unit shown, so a Collector's Prometheus exporter gives back these names.\n\
         The upstream column compares each family with Kepler v0.7.12 (classic) and v0.11.4\n\
         (modern): `same`, or what differs and why ([kepler-parity.md](kepler-parity.md) has the\n\
         details). The GPU families (`kepler_node_gpu_*` and the workloads' `*_gpu_*`) appear\n\
         where NVML lists NVIDIA GPUs (`gpu.enabled`, `gpu.nvmlLibrary`); with `both`, the names\n\
         both schemas use (`kepler_node_gpu_joules_total`, `kepler_container_gpu_joules_total`,\n\
         `kepler_process_gpu_joules_total`) are the modern families.\n\n\
         ## Classic family (Kepler <= 0.9)\n\n{}\n\
         ## Modern family (Kepler >= 0.10)\n\n{}\n\
         ## Exporter self-metrics (every schema)\n\n{}",
        reference_table(&only(&classic)),
        reference_table(&only(&modern)),
        reference_table(&common_rows),
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current != doc {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &doc).unwrap();
        } else {
            panic!("{path} is out of date: run `UPDATE_DOCS=1 cargo test -p kepler-rs --test exposition metrics_reference`");
        }
    }
}
