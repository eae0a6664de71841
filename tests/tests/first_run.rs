#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A newcomer's first run: `./scripts/run.sh` on a machine without clang builds the exporter
//! with the BPF objects committed in `ebpf/prebuilt/` and serves eBPF CPU time.
//!
//! "Without clang" is made by pointing the build at a clang that does not exist
//! (`KEPLER_BPF_CLANG`), which is all the build sees of a missing compiler. The build goes to its
//! own target folder (`target/no-clang`, dev profile), so it neither waits for nor disturbs the
//! build of the suite; the first time it is a whole build of the exporter (minutes). Needs root,
//! as eBPF does: a failure under CI, a skip elsewhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kepler_test_support::net::free_port;
use kepler_test_support::require::require_root;
use kepler_test_support::workspace_root;

/// The script's process group (cargo, then the exporter it execs), killed on drop.
struct ProcessGroup(Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created for its child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn run_script_without_clang_serves_ebpf_cpu_time() {
    if !require_root("loading the eBPF program") {
        return;
    }
    let root = workspace_root();
    let log_path = root.join("target/no-clang-run.log");
    std::fs::create_dir_all(root.join("target")).unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let child = Command::new("bash")
        .arg(root.join("scripts/run.sh"))
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(["--monitor.interval", "1s"])
        .current_dir(&root)
        .env("KEPLER_BPF_CLANG", "/nonexistent/clang")
        .env("KEPLER_RUN_PROFILE", "dev")
        .env("CARGO_TARGET_DIR", root.join("target/no-clang"))
        .env_remove("KEPLER_REQUIRE_TOOLS")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let mut script = ProcessGroup(child);

    // A cold build of the exporter on two cores takes a few minutes.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let verbose = loop {
        if let Some(status) = script.0.try_wait().unwrap() {
            panic!(
                "scripts/run.sh exited ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if let Some(body) = get(port, "/healthz?verbose=1") {
            if body.contains("snapshot_sequence") && !body.contains("snapshot_sequence 0\n") {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer on :{port} in time:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        output.contains("eBPF objects taken from ebpf/prebuilt/"),
        "the build did not take the committed objects:\n{output}"
    );
    assert!(
        output.contains("run: no clang here: eBPF program taken from the objects committed"),
        "the script did not say where the program came from:\n{output}"
    );
    assert!(
        verbose.contains("\ncpu_time_source ebpf\n"),
        "healthz: {verbose}\nscript output:\n{output}"
    );
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("kepler_exporter_cpu_time_source{source=\"ebpf\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("cpu_time_source"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
