//! The real exporter binary on fake RAPL for the integration tests: started on a free loopback
//! port with the test's flags, ready once `/healthz` answers, killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kepler_test_support::net::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");

/// A running exporter; killed and reaped on drop.
#[derive(Debug)]
pub struct Exporter {
    pub child: Child,
    pub port: u16,
}

impl Exporter {
    /// `kepler-rs --fake-rapl` measuring every 500 ms with `extra` flags, log on the test's stderr.
    pub fn start(extra: &[&str]) -> Self {
        Self::launch(Command::new(BIN), "500ms", extra, Stdio::inherit())
    }

    /// `command` (the binary, or a wrapper that runs it) with the fake-RAPL flags, `interval`,
    /// a free port and `extra`, its log (stderr) to `log`; waits up to 30 s for `/healthz`. The
    /// OTLP environment of the test run is not passed on, so only `extra` decides about a push.
    pub fn launch(
        mut command: Command,
        interval: &str,
        extra: &[&str],
        log: impl Into<Stdio>,
    ) -> Self {
        let port = free_port();
        let child = command
            .args(["--fake-rapl", "--log.level", "warn"])
            .args(["--monitor.interval", interval])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the exporter: {e}"));
        let mut exporter = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = exporter.child.try_wait().unwrap() {
                panic!("exporter exited at start-up: {status}");
            }
            if get(port, "/healthz").is_some_and(|body| body == "ok") {
                return exporter;
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not answer /healthz within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a `200` answer to `GET path` on 127.0.0.1:`port`.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|status| status == "200")
        .then(|| body.to_string())
}
