//! Kernel event counters on this kernel: softirqs of a ping flood between two network
//! namespaces and page cache hits of file writes (and reads, where kprobes exist) go to the
//! container whose process caused them, and not to an idle container beside it.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};

use kepler_test_support::require::require_tool;

use super::*;

/// Two network namespaces joined by a veth pair, with `10.231.<n>.1/30` and `.2/30` on its ends;
/// deleted (with the pair) on drop. No address outside these namespaces is touched.
struct NamespacePair {
    names: [String; 2],
    peer_address: String,
}

impl NamespacePair {
    fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id());
        let names = [format!("kepler-evt-{tag}-a"), format!("kepler-evt-{tag}-b")];
        let pair = Self {
            names,
            peer_address: format!("10.231.{}.2", n % 250),
        };
        let [a, b] = &pair.names;
        let (va, vb) = (format!("kev{tag}a"), format!("kev{tag}b"));
        let net = format!("10.231.{}", n % 250);
        for args in [
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec![
                "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
            ],
            vec!["-n", a, "addr", "add", &format!("{net}.1/30"), "dev", &va],
            vec!["-n", b, "addr", "add", &format!("{net}.2/30"), "dev", &vb],
            vec!["-n", a, "link", "set", &va, "up"],
            vec!["-n", b, "link", "set", &vb, "up"],
            vec!["-n", a, "link", "set", "lo", "up"],
            vec!["-n", b, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {}: {status}", args.join(" "));
        }
        pair
    }
}

impl Drop for NamespacePair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn event(sample: &WorkloadSample, id: &str, counter: HardwareCounter) -> u64 {
    sample
        .workloads
        .get(&WorkloadKey::Container(id.to_string()))
        .map(|w| w.counters.get(counter))
        .unwrap_or_default()
}

fn wait(mut child: Child, what: &str) {
    let status = child.wait().unwrap();
    assert!(status.success(), "{what}: {status}");
}

/// A ping flood from a process in container A, from one namespace to the other over the veth
/// pair: the NET_RX softirqs that carry its packets run on top of ping (the send path raises
/// them and runs them when it re-enables bottom halves) and are charged to container A; an
/// idle container B gets none.
#[test]
fn softirqs_of_a_ping_flood_go_to_the_pinging_container() {
    if !common::require_ebpf("counting softirqs with eBPF") {
        return;
    }
    if require_tool("ip").is_none() || require_tool("ping").is_none() {
        return;
    }
    let (Some(busy), Some(idle)) = (TestContainer::create(), TestContainer::create()) else {
        return;
    };
    let metrics = Arc::new(SelfMetrics::new());
    let mut src = source(&metrics);
    let events = src.hardware_counters();
    assert!(
        events.contains(HardwareCounter::NetRxIrq),
        "softirq_entry not attached: {:?}",
        metrics.errors()
    );
    let pair = NamespacePair::create();
    let mut sleeper = idle.spawn("exec sleep 30");
    src.sample();
    let ping = busy.spawn(&format!(
        "exec ip netns exec {} ping -f -q -c 20000 -w 20 {}",
        pair.names[0], pair.peer_address
    ));
    let ping_pid = ping.id();
    wait(ping, "ping flood");
    let s = src.sample();
    let rx = event(&s, &busy.id, HardwareCounter::NetRxIrq);
    let tx = event(&s, &busy.id, HardwareCounter::NetTxIrq);
    let block = event(&s, &busy.id, HardwareCounter::BlockIrq);
    let idle_rx = event(&s, &idle.id, HardwareCounter::NetRxIrq);
    let idle_tx = event(&s, &idle.id, HardwareCounter::NetTxIrq);
    println!("ping container: NET_RX {rx}, NET_TX {tx}, BLOCK {block}; idle container: NET_RX {idle_rx}, NET_TX {idle_tx}");
    // 20,000 echo requests and their replies; a softirq run can carry several packets.
    assert!(rx >= 1_000, "NET_RX softirqs of the ping container: {rx}");
    assert_eq!(
        (idle_rx, idle_tx),
        (0, 0),
        "the idle container got softirqs"
    );
    // The process too, in its container (it exited, so it is reported once, in this sample).
    if let Some(p) = s.processes.iter().find(|p| p.pid == ping_pid) {
        assert_eq!(p.workload, WorkloadKey::Container(busy.id.clone()));
        assert!(p.counters.get(HardwareCounter::NetRxIrq) >= 1_000, "{p:?}");
    }
    let total: u64 = s
        .processes
        .iter()
        .filter(|p| p.workload == WorkloadKey::Container(busy.id.clone()))
        .map(|p| p.counters.get(HardwareCounter::NetRxIrq))
        .sum();
    assert_eq!(
        total, rx,
        "the container's processes add up to the container"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Writes of 2,000 fresh pages to a file on a disk file system from container A dirty 2,000
/// folios in the page cache (writeback_dirty_folio); reading the file back, now cached, marks its
/// folios accessed (the kprobe, where the kernel has kprobes). Container B, idle, gets none.
#[test]
fn page_cache_hits_go_to_the_container_that_writes_and_reads() {
    if !common::require_ebpf("counting page cache hits with eBPF") {
        return;
    }
    let (Some(busy), Some(idle)) = (TestContainer::create(), TestContainer::create()) else {
        return;
    };
    let metrics = Arc::new(SelfMetrics::new());
    let mut src = source(&metrics);
    let status: Vec<String> = src
        .hook_status()
        .iter()
        .map(|h| format!("{} ({}): {:?}", h.program, h.target, h.attached))
        .collect();
    println!("hooks: {status:#?}");
    assert!(
        src.hardware_counters()
            .contains(HardwareCounter::PageCacheHit),
        "no page cache hook attached: {status:?}"
    );
    let read_hook = status
        .iter()
        .any(|s| s.starts_with(kepler_ebpf::PAGE_CACHE_READ_PROGRAM) && s.ends_with("Ok(())"));
    // A disk file system (the target directory), not tmpfs: shmem folios skip the tracepoint.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("cached");
    let mut sleeper = idle.spawn("exec sleep 30");
    src.sample();
    wait(
        busy.spawn(&format!(
            "exec dd if=/dev/zero of={} bs=4096 count=2000 status=none",
            file.display()
        )),
        "dd",
    );
    let s = src.sample();
    let written = event(&s, &busy.id, HardwareCounter::PageCacheHit);
    let idle_hits = event(&s, &idle.id, HardwareCounter::PageCacheHit);
    println!("writes: page cache hits {written} (idle container {idle_hits})");
    assert!(
        written >= 2_000,
        "page cache hits of 2,000 written pages: {written}"
    );
    assert_eq!(idle_hits, 0);
    wait(
        busy.spawn(&format!(
            "exec dd if={} of=/dev/null bs=4096 status=none",
            file.display()
        )),
        "dd read",
    );
    let s = src.sample();
    let read = event(&s, &busy.id, HardwareCounter::PageCacheHit);
    println!("reads: page cache hits {read} (read hook attached: {read_hook})");
    if read_hook {
        assert!(
            read >= 500,
            "page cache hits of reading 2,000 cached pages: {read}"
        );
    }
    assert_eq!(event(&s, &idle.id, HardwareCounter::PageCacheHit), 0);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
