//! Loopback ports for servers a test starts in another process.
//!
//! Binding port 0 and releasing it races: until the server binds, the kernel may hand the same
//! port to any socket that asks for an ephemeral one (another test's `bind(:0)`, an outgoing
//! connection). [`free_port`] therefore picks ports below the kernel's ephemeral range, which
//! the kernel never hands out by itself, checks each by binding it on every address, and never
//! hands the same port out twice in one test process. In-process servers should bind
//! [`loopback_listener`] and keep it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// The lowest port [`free_port`] hands out.
const FIRST_PORT: u16 = 10_000;

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > FIRST_PORT + 1_000)
        .unwrap_or(32_768)
}

/// A TCP port free on every address of this host, below the ephemeral range, not handed out
/// before by this process. The walk starts at a place that depends on the process id, so two
/// test processes running at once start far apart.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let span = u32::from(ephemeral_start() - FIRST_PORT);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for step in 0..span {
        let port = FIRST_PORT + ((start + step) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free TCP port between {FIRST_PORT} and the ephemeral range");
}

/// A listener on 127.0.0.1 with a port the kernel chose, for a server in this process: keep it
/// and serve on it, so no other socket can take the port.
pub fn loopback_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!((FIRST_PORT..ephemeral_start()).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    fn a_bound_port_is_not_handed_out() {
        let first = free_port();
        let _held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, first + 1));
        let next = free_port();
        assert_ne!(next, first);
        assert_ne!(next, first + 1);
    }
}
