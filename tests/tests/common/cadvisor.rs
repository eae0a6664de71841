//! A cAdvisor endpoint inside a namespace: the kubelet-shaped fixture page
//! (`kepler-rs/tests/fixtures/cadvisor.prom`, the relay's own fixture) served over HTTP/1.1 on
//! `127.0.0.1:8080/metrics` of that namespace, with `container_cpu_usage_seconds_total`
//! counters that grow at known rates in wall-clock time: the root cgroup at
//! [`ROOT_CPU_RATE`] cores, the app container at [`APP_CPU_RATE`] cores, the pod's own cgroup
//! not at all. Whenever it is scraped, each counter is `base + rate * seconds since start`, so
//! `rate()` downstream must come out at those rates, however often the relay scrapes.
//! Sample timestamps are the time of the scrape, as the kubelet's are.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The fixture, with `{ROOT_CPU}` and `{APP_CPU}` placeholders and a fixed sample timestamp.
const FIXTURE: &str = include_str!("../../../kepler-rs/tests/fixtures/cadvisor.prom");
const FIXTURE_TIMESTAMP: &str = "1732550000000";

/// Port in the namespace (cAdvisor's default).
pub const PORT: u16 = 8080;
/// The root cgroup's CPU counter grows by this many seconds per second.
pub const ROOT_CPU_RATE: f64 = 4.0;
/// The app container's (`cri-containerd-9c1f...scope`) CPU counter rate.
pub const APP_CPU_RATE: f64 = 0.25;
/// `id` labels of the three `container_cpu_usage_seconds_total` series and their rates.
pub const ROOT_ID: &str = "/";
pub const POD_ID: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f1a8d2e_3c4b_4f6a_9e2d_0b1c2d3e4f50.slice";
pub const APP_ID: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f1a8d2e_3c4b_4f6a_9e2d_0b1c2d3e4f50.slice/cri-containerd-9c1f0e5d8b7a6c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e.scope";

/// The expected `rate(container_cpu_usage_seconds_total)` of the series with `id`.
pub fn expected_rate(id: &str) -> Option<f64> {
    match id {
        ROOT_ID => Some(ROOT_CPU_RATE),
        POD_ID => Some(0.0),
        APP_ID => Some(APP_CPU_RATE),
        _ => None,
    }
}

/// The page `elapsed` seconds after start, stamped `now_ms`.
pub fn page(elapsed: f64, now_ms: u128) -> String {
    assert!(FIXTURE.contains("{ROOT_CPU}") && FIXTURE.contains("{APP_CPU}"));
    FIXTURE
        .replace(
            "{ROOT_CPU}",
            &format!("{:.6}", 80_000.0 + ROOT_CPU_RATE * elapsed),
        )
        .replace(
            "{APP_CPU}",
            &format!("{:.6}", 100.0 + APP_CPU_RATE * elapsed),
        )
        .replace(FIXTURE_TIMESTAMP, &now_ms.to_string())
}

/// The server; stops (and frees its socket) on drop.
#[derive(Debug)]
pub struct CadvisorServer {
    /// When it started serving (the counters' origin, give or take the thread's start).
    pub started: Instant,
    /// Pages served so far.
    pub scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CadvisorServer {
    /// Listens on 127.0.0.1:[`PORT`] in `ns` (returns once bound).
    pub fn start(ns: &str) -> CadvisorServer {
        let scrapes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let scrapes = scrapes.clone();
            let stop = stop.clone();
            super::spawn_in_ns(ns, move || {
                let listener = TcpListener::bind(("127.0.0.1", PORT)).unwrap();
                listener.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if answer(stream, start).is_ok() {
                                scrapes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("cAdvisor fixture accept: {e}"),
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the cAdvisor fixture server never bound");
        CadvisorServer {
            started: Instant::now(),
            scrapes,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request head and answers it with the page (any path: the relay asks for one).
fn answer(mut stream: TcpStream, start: Instant) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let body = page(start.elapsed().as_secs_f64(), now_ms);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

impl Drop for CadvisorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
