//! The "upstream" column of docs/metrics.md: for every family, `same` (upstream's labels and
//! meaning: classic Kepler v0.7.12, modern Kepler v0.11.4) or the difference and why.
//! docs/kepler-parity.md tells the same differences at length.

/// How the idle energy of a node zone is estimated (both schemas).
const IDLE_ESTIMATE: &str = "idle power is a regression of power on CPU use, where Kepler \
     takes the lowest power seen (see docs/attribution.md)";

/// The upstream note of a family, or `None` when nobody has written one yet.
pub(crate) fn note(name: &str) -> Option<String> {
    let classic_workload = |level: &str| {
        format!(
            "idle energy shared by `--attribution.idle-policy` (CPU share by default), where \
             Kepler splits it evenly per process: same total, other {level} shares"
        )
    };
    let zone_families = |level: &str| {
        format!(
            "every zone, 0 where the node lacks it, as Kepler; {}",
            classic_workload(level)
        )
    };
    let bpf = [
        "bpf_cpu_time_ms_total",
        "cpu_cycles_total",
        "cpu_instructions_total",
    ];
    let note = match name {
        // GPUs (both schemas).
        "kepler_node_gpu_joules_total" => "counts from 0 at start-up; per GPU: classic \
             `package` is the GPU's index and `source=\"NVML\"`, as Kepler v0.7; the dynamic \
             (active) and idle split uses the RAPL zones' idle estimator on the GPU's \
             utilisation, where Kepler takes a configured idle power or the lowest seen; a GPU \
             in MIG mode is served as its MIG instances (`<index>:<gpu instance>:<compute \
             instance>`, the MIG UUID), each with its SM share of the GPU's energy, where \
             Kepler serves the GPU whole"
            .to_string(),
        n if n.starts_with("kepler_node_gpu_active_") || n.starts_with("kepler_node_gpu_idle_") => {
            "idle power from the RAPL zones' estimator on the GPU's utilisation (regression, \
             else the lowest power seen), where Kepler takes a configured idle power or the \
             lowest seen"
                .to_string()
        }
        "kepler_node_gpu_watts" => "same".to_string(),
        "kepler_node_gpu_info" => "same; a GPU in MIG mode is listed as its MIG instances, not \
             itself"
            .to_string(),
        "kepler_container_gpu_joules_total" | "kepler_process_gpu_joules_total" => {
            "classic: every workload, 0 where it used no GPU, with `mode` and `source=\"NVML\"` \
             (Kepler v0.7); modern: active energy only, only above 0 (Kepler v0.11); each \
             process's share by its compute (SM) utilisation samples, equal among the running \
             compute processes where NVML has no samples, as Kepler"
                .to_string()
        }
        "kepler_container_gpu_watts"
        | "kepler_process_gpu_watts"
        | "kepler_pod_gpu_joules_total"
        | "kepler_pod_gpu_watts" => "same".to_string(),
        "kepler_container_gpu_compute_util_total"
        | "kepler_container_gpu_mem_util_total"
        | "kepler_process_gpu_compute_util_total"
        | "kepler_process_gpu_mem_util_total" => "sums of NVML's per-process utilisation \
             samples (percent) since the exporter started; `gpu_id` is NVML's index \
             (`<index>:<gpu instance>:<compute instance>` for a MIG instance)"
            .to_string(),
        // Classic.
        "kepler_container_joules_total" => classic_workload("container"),
        "kepler_process_joules_total" | "kepler_process_other_joules_total" => {
            classic_workload("process")
        }
        "kepler_container_other_joules_total" => classic_workload("container"),
        "kepler_vm_other_joules_total" => format!(
            "{}; `vm_id` is the guest's UUID where Kepler takes the libvirt scope name \
             (`machine-qemu-1-web`)",
            classic_workload("VM")
        ),
        n if n.starts_with("kepler_container_")
            && n.ends_with("_joules_total")
            && !n.contains("cpu") =>
        {
            zone_families("container")
        }
        n if n.starts_with("kepler_process_")
            && n.ends_with("_joules_total")
            && !n.contains("cpu") =>
        {
            zone_families("process")
        }
        n if n.starts_with("kepler_vm_") && n.ends_with("_joules_total") && !n.contains("cpu") => {
            format!(
                "{}; `vm_id` is the guest's UUID where Kepler takes the libvirt scope name \
                 (`machine-qemu-1-web`)",
                zone_families("VM")
            )
        }
        n if ["kepler_container_", "kepler_process_", "kepler_vm_"]
            .iter()
            .any(|l| n.starts_with(l))
            && (bpf.iter().any(|b| n.ends_with(b)) || n.ends_with("cache_miss_total")) =>
        {
            if n.starts_with("kepler_vm_") {
                "same, but `vm_id` is the guest's UUID where Kepler takes the libvirt scope name \
                 (`machine-qemu-1-web`)"
                    .to_string()
            } else {
                "same".to_string()
            }
        }
        n if ["kepler_container_", "kepler_process_"]
            .iter()
            .any(|l| n.starts_with(l))
            && [
                "_bpf_net_tx_irq_total",
                "_bpf_net_rx_irq_total",
                "_bpf_block_irq_total",
            ]
            .iter()
            .any(|e| n.ends_with(e)) =>
        {
            "same (softirq_entry, charged to the task it interrupts)".to_string()
        }
        "kepler_container_bpf_page_cache_hit_total" | "kepler_process_bpf_page_cache_hit_total" => {
            "same hooks: `writeback_dirty_folio` for writes; for reads a kprobe on \
             `folio_mark_accessed` (what `filemap_read` calls; Kepler hooks `mark_page_accessed`), \
             absent on kernels without kprobes, so there only writes count"
                .to_string()
        }
        "kepler_node_other_joules_total" | "kepler_node_platform_joules_total" => format!(
            "`package` as Kepler names it (`socket0` for other, the meter `energy1` for \
             platform); {IDLE_ESTIMATE}"
        ),
        n if n.starts_with("kepler_node_")
            && n.ends_with("_joules_total")
            && !n.contains("cpu") =>
        {
            IDLE_ESTIMATE.to_string()
        }
        "kepler_node_info" => "same".to_string(),
        "kepler_exporter_build_info" => "same".to_string(),
        // Modern.
        "kepler_node_cpu_joules_total" => "counts from 0 at start-up and corrects counter \
             wraps, where Kepler serves the raw RAPL counter (it drops at a wrap); sockets \
             summed into `path=\"aggregated-<zone>\"` as Kepler"
            .to_string(),
        "kepler_node_cpu_watts" => "same".to_string(),
        n if n.starts_with("kepler_node_cpu_active_") || n.starts_with("kepler_node_cpu_idle_") => {
            "active is the power above the estimated idle power, where Kepler takes the zone's \
             power times the node's CPU usage ratio"
                .to_string()
        }
        "kepler_node_cpu_usage_ratio" | "kepler_node_cpu_info" => "same".to_string(),
        "kepler_build_info" => "same labels; `goversion` holds the Rust compiler's version \
             (there is no Go)"
            .to_string(),
        "kepler_container_cpu_joules_total" | "kepler_container_cpu_watts" => {
            "a share of the active energy as in Kepler (active: see the node families); \
             `container_name` only from Kubernetes (Kepler also reads `HOSTNAME`); `runtime` \
             `containerd` for bare ids under the kubelet's cgroupfs driver (Kepler: \
             `kubernetes`)"
                .to_string()
        }
        "kepler_pod_cpu_joules_total" | "kepler_pod_cpu_watts" => {
            "a share of the active energy as in Kepler (active: see the node families); served \
             without `--kube.enable` from the cgroup's pod UID, names empty (Kepler: only with \
             Kubernetes)"
                .to_string()
        }
        "kepler_vm_cpu_joules_total" | "kepler_vm_cpu_watts" => "a share of the active energy as \
             in Kepler, but active is the energy above the estimated idle power (Kepler: the \
             zone's energy times the CPU usage ratio)"
            .to_string(),
        "kepler_process_cpu_joules_total" | "kepler_process_cpu_watts" => {
            "a share of the active energy as in Kepler (active: see the node families); `exe` \
             empty (Kepler: the executable's path)"
                .to_string()
        }
        "kepler_process_cpu_seconds_total" => {
            "since the process started, as Kepler (read once from `/proc/<pid>/stat`, then \
             counted); `exe` empty (Kepler: the executable's path)"
                .to_string()
        }
        // Our own.
        n if n.starts_with("kepler_exporter_") => {
            "kepler-rs only: the exporter's own health".to_string()
        }
        _ => return None,
    };
    Some(note)
}
