//! What scrapes of the bench's store cost: wall and CPU time, and the memory a scrape needs
//! beyond the stored state, as the peak of the process's heap (the counting allocator) and of
//! its resident memory (`VmHWM`, reset before each phase), for the page rendered while it is
//! sent (`render_each`, in process and through the real server over loopback) and for the
//! former render that collected the page first (`render_collected`).

use super::{cpu_seconds, heap, peak_rss_bytes, rss_bytes};
use kepler_collector::exposition::{render_each, whole::render_collected};
use kepler_collector::ingest::Hub;
use kepler_collector::server;
use kepler_prom_text::Format;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// What one phase cost.
pub struct Cost {
    pub wall: f64,
    pub cpu: f64,
    /// Peak heap beyond what was live when the phase started.
    pub heap: u64,
    /// Peak resident memory beyond the resident memory when the phase started (0 where the
    /// high-water mark cannot be reset).
    pub rss: u64,
    /// Bytes of text the phase's scrapes received, in all.
    pub bytes: usize,
}

impl Cost {
    pub fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.2} s | {:.2} s | {:.1} MiB | {:.1} MiB | {} MB |",
            self.wall,
            self.cpu,
            self.heap as f64 / (1 << 20) as f64,
            self.rss as f64 / (1 << 20) as f64,
            self.bytes / 1_000_000
        )
    }
}

/// Runs `phase` (which returns the bytes it received) and measures it.
pub fn measure(phase: impl FnOnce() -> usize) -> Cost {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss0 = rss_bytes();
    let cpu0 = cpu_seconds();
    heap::start();
    let start = Instant::now();
    let bytes = phase();
    let wall = start.elapsed().as_secs_f64();
    let heap = heap::stop();
    Cost {
        wall,
        cpu: cpu_seconds() - cpu0,
        heap,
        rss: if reset {
            peak_rss_bytes().saturating_sub(rss0)
        } else {
            0
        },
        bytes,
    }
}

/// One page rendered while sent, each piece dropped as a socket would take it.
pub fn streamed(hub: &Hub) -> usize {
    let mut bytes = 0;
    assert!(render_each(hub, Format::Text, |piece| {
        bytes += piece.len();
        true
    }));
    bytes
}

/// One page as the hub rendered it before: collected, then handed out family by family.
pub fn collected(hub: &Hub) -> usize {
    render_collected(hub, Format::Text)
        .into_iter()
        .map(|piece| piece.len())
        .sum()
}

/// `n` scrapes at once, each on its own thread.
pub fn concurrent(n: usize, scrape: impl Fn() -> usize + Sync) -> usize {
    std::thread::scope(|s| {
        let scrapes: Vec<_> = (0..n).map(|_| s.spawn(&scrape)).collect();
        scrapes.into_iter().map(|t| t.join().unwrap()).sum()
    })
}

/// The hub's exposition server on loopback.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

impl Server {
    pub fn start(hub: Arc<Hub>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, server::router(hub, false)).await });
        Server { runtime, addr }
    }

    /// One `GET /metrics` (HTTP/1.0, no compression), read to the end 64 KiB at a time.
    pub fn scrape(&self) -> usize {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: hub\r\n\r\n")
            .unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut bytes = 0;
        let mut tail = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes += n;
            tail.clear();
            tail.extend_from_slice(&buf[n.saturating_sub(64)..n]);
        }
        assert!(
            String::from_utf8_lossy(&tail).ends_with('\n'),
            "a short answer: {bytes} bytes"
        );
        bytes
    }

    pub fn stop(self) {
        self.runtime.shutdown_background();
    }
}
