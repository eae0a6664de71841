//! Node share: an exporter that shares its host with other nodes takes only its node's part of
//! the host's energy.
//!
//! On kind (and any other "nodes are containers on one machine" setup) every node of every
//! cluster reads the same RAPL counters, so three clusters on one laptop would report the laptop
//! three times. With `monitor.nodeShare` each interval's zone energy is multiplied by
//! `node CPU time / host busy CPU time`: the node's CPU time is the usage of the root of the
//! cgroup tree the exporter sees (`<host.sysfs>/fs/cgroup`, which inside a kind node is the
//! node container's own cgroup), the host's busy time comes from `/proc/stat` (not namespaced).
//! The share is clamped to 0..=1; an interval in which the host was not busy at all keeps the
//! previous share, and the first interval (no previous reading) counts as share 0. On a host
//! that is a single node the share is about 1 and the option changes nothing of substance.

use std::path::Path;

use crate::host::{CpuTimes, USER_HZ};
use crate::power::units::{CpuNanos, Microjoules};
use crate::workload::cgroup::{CgroupRef, Hierarchy};
use crate::workload::cgroup_cpu::{CgroupError, CgroupLayout};

/// The node's share of host CPU time, updated once per interval.
#[derive(Debug)]
pub struct NodeShare {
    layout: CgroupLayout,
    root: CgroupRef,
    last: Option<(CpuNanos, u64)>,
    share: f64,
}

impl NodeShare {
    /// Uses the root of the cgroup hierarchies mounted at `cgroup_root`.
    pub fn new(cgroup_root: &Path) -> Self {
        let layout = CgroupLayout::detect(cgroup_root);
        let hierarchy = if layout.v2_root().is_some() {
            Hierarchy::V2
        } else {
            Hierarchy::V1 {
                controllers: "cpuacct".to_string(),
            }
        };
        Self {
            layout,
            root: CgroupRef {
                hierarchy,
                path: "/".to_string(),
            },
            last: None,
            share: 0.0,
        }
    }

    /// The share for the interval ending with `host` (the `/proc/stat` reading of this
    /// interval). On an error the previous share stays.
    pub fn update(&mut self, host: &CpuTimes) -> Result<f64, CgroupError> {
        let node = self.layout.usage(&self.root)?;
        if let Some((last_node, last_busy)) = self.last {
            let host_ns = CpuNanos::from_ticks(host.busy.saturating_sub(last_busy), USER_HZ).0;
            let node_ns = node.0.saturating_sub(last_node.0);
            if host_ns > 0 {
                self.share = (node_ns as f64 / host_ns as f64).clamp(0.0, 1.0);
            }
        }
        self.last = Some((node, host.busy));
        Ok(self.share)
    }

    /// The current share.
    pub fn share(&self) -> f64 {
        self.share
    }
}

/// `energy × share`, rounded to the nearest microjoule.
pub fn scale(energy: Microjoules, share: f64) -> Microjoules {
    Microjoules((energy.0 as f64 * share.clamp(0.0, 1.0)).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_usage(root: &Path, usec: u64) {
        std::fs::write(
            root.join("cpu.stat"),
            format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
        )
        .unwrap();
    }

    fn host(busy: u64) -> CpuTimes {
        CpuTimes {
            busy,
            total: busy + 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn share_is_node_cpu_over_host_busy_cpu() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        write_usage(dir.path(), 1_000_000);
        let mut share = NodeShare::new(dir.path());
        assert_eq!(share.update(&host(500)).unwrap(), 0.0, "first interval");
        // Host busy 300 ticks = 3 s; the node used 1 s of it.
        write_usage(dir.path(), 2_000_000);
        let s = share.update(&host(800)).unwrap();
        assert!((s - 1.0 / 3.0).abs() < 1e-9, "{s}");
        // An idle host keeps the share; a node that claims more than the host is clamped.
        assert!((share.update(&host(800)).unwrap() - 1.0 / 3.0).abs() < 1e-9);
        write_usage(dir.path(), 9_000_000);
        assert_eq!(share.update(&host(900)).unwrap(), 1.0);
        assert_eq!(
            scale(Microjoules(3_000_000), 1.0 / 3.0),
            Microjoules(1_000_000)
        );
    }

    #[test]
    fn unreadable_cgroup_keeps_the_share_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut share = NodeShare::new(dir.path());
        let err = share.update(&host(1)).unwrap_err();
        assert!(err.to_string().contains("cgroup"), "{err}");
        assert_eq!(share.share(), 0.0);
    }
}
