//! The processes under test: started as children with their output in a log file, their CPU
//! time and memory read from `/proc/<pid>`, and their `/metrics` page fetched whole and counted.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kepler_test_support::process::ChildGuard;

/// A child process (killed and reaped on drop) and its log.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: ChildGuard,
}

impl Proc {
    /// Starts `bin` with `args`, stdout and stderr into `log`.
    pub fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Proc {
        let out = fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let child = Command::new(bin)
            .args(args)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", bin.display()));
        Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: ChildGuard(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Panics with the end of the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.0.try_wait() {
            panic!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }

    /// Waits (at most a minute) until `GET /<path>` on `port` answers 200.
    pub fn wait_serving(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status_of(port, path) != Some(200) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} never served {path} on port {port}; the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU seconds (user + system, all threads, from `/proc/<pid>/stat`) used so far.
    pub fn cpu_seconds(&mut self) -> f64 {
        self.assert_running();
        cpu_seconds(self.pid())
    }

    /// (VmRSS, VmHWM) in bytes.
    pub fn memory(&mut self) -> Memory {
        self.assert_running();
        memory(self.pid())
    }
}

/// The last 30 lines of a log.
pub fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds (utime + stime) of process `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("/proc/{pid}/stat without a command: {stat}"));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat field {i}: {stat}"))
    };
    // After the command: state is field 0, utime 11, stime 12.
    (field(11) + field(12)) as f64 / ticks_per_second()
}

/// Resident memory of a process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`, bytes.
    pub rss: u64,
    /// `VmHWM` (the peak of `VmRSS`), bytes.
    pub hwm: u64,
}

pub fn memory(pid: u32) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}"))
    };
    Memory {
        rss: kib("VmRSS:") * 1024,
        hwm: kib("VmHWM:") * 1024,
    }
}

/// The status code of `GET /<path>` on 127.0.0.1:`port`, or `None` when nothing answers.
fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// One whole `GET /metrics` (text format 0.0.4, no compression).
#[derive(Debug, Default, Clone)]
pub struct Page {
    /// From connecting until the last byte.
    pub wall: Duration,
    /// Body size.
    pub bytes: u64,
    /// Sample lines (not comments, not empty).
    pub samples: u64,
    /// Sample lines that start with each prefix asked for.
    pub counts: Vec<u64>,
    /// The body's first sample line with each prefix (to show the labels).
    pub examples: Vec<String>,
}

/// `GET /metrics` on 127.0.0.1:`port` over HTTP/1.0 (the body ends when the connection does,
/// so no chunked decoding), counting sample lines as they arrive, also those that start with
/// each of `prefixes` (`"name{"` counts a family's series). Panics unless the answer is 200.
pub fn get_metrics(port: u16, prefixes: &[&str]) -> Page {
    let began = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port} for /metrics: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap_or_else(|e| panic!("read timeout: {e}"));
    s.write_all(
        b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("send GET /metrics to port {port}: {e}"));
    let mut reader = BufReader::with_capacity(1 << 20, s);
    let mut line = Vec::with_capacity(4096);
    let read_line = |reader: &mut BufReader<TcpStream>, line: &mut Vec<u8>| -> usize {
        line.clear();
        reader
            .read_until(b'\n', line)
            .unwrap_or_else(|e| panic!("reading /metrics from port {port}: {e}"))
    };
    read_line(&mut reader, &mut line);
    let status_line = String::from_utf8_lossy(&line).trim_end().to_string();
    assert!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "GET /metrics on port {port}: {} after {:.1} s",
        if status_line.is_empty() {
            "no answer, the connection closed"
        } else {
            &status_line
        },
        began.elapsed().as_secs_f64()
    );
    // Headers, up to the empty line.
    while read_line(&mut reader, &mut line) > 0 && line != b"\r\n" && line != b"\n" {}
    let mut page = Page {
        counts: vec![0; prefixes.len()],
        examples: vec![String::new(); prefixes.len()],
        ..Page::default()
    };
    loop {
        let n = read_line(&mut reader, &mut line);
        if n == 0 {
            break;
        }
        page.bytes += n as u64;
        if line.first().is_none_or(|b| *b == b'#' || *b == b'\n') {
            continue;
        }
        page.samples += 1;
        for (i, prefix) in prefixes.iter().enumerate() {
            if line.starts_with(prefix.as_bytes()) {
                page.counts[i] += 1;
                if page.examples[i].is_empty() {
                    page.examples[i] = String::from_utf8_lossy(&line).trim_end().to_string();
                }
            }
        }
    }
    page.wall = began.elapsed();
    page
}
