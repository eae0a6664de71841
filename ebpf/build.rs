//! Compiles `src/*.bpf.c` with clang's BPF target into `OUT_DIR`: `src/cpu.bpf.c` twice, as the
//! time-only program (`cpu.bpf.o`) and with `-DKEPLER_COUNTERS` as the program that also reads
//! hardware counters (`cpu_counters.bpf.o`), from the one source.
//!
//! clang is `$KEPLER_BPF_CLANG`, else `clang` on PATH. When it is missing or fails, the build
//! still succeeds with a cargo warning and an empty object: the exporter then says "eBPF not
//! built in" at runtime and uses procfs. `KEPLER_REQUIRE_TOOLS=1` (CI) turns that into a build
//! error, so CI always builds and tests the real program.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// (object name, source name, extra clang arguments).
const OBJECTS: [(&str, &str, &[&str]); 2] = [
    ("cpu", "cpu", &[]),
    ("cpu_counters", "cpu", &["-DKEPLER_COUNTERS"]),
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kepler_ebpf_built)");
    println!("cargo::rerun-if-changed=src/kepler_bpf.h");
    println!("cargo::rerun-if-env-changed=KEPLER_BPF_CLANG");
    println!("cargo::rerun-if-env-changed=KEPLER_REQUIRE_TOOLS");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let clang = env::var("KEPLER_BPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    let require = env::var("KEPLER_REQUIRE_TOOLS").as_deref() == Ok("1");
    let mut built = true;
    for (name, source, defines) in OBJECTS {
        let src = format!("src/{source}.bpf.c");
        println!("cargo::rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let result = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .args(defines)
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .output();
        let failure = match result {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{clang} failed on {src} ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run {clang} for {src}: {e}")),
        };
        if let Some(why) = failure {
            if require {
                eprintln!("error: {why} (KEPLER_REQUIRE_TOOLS=1: the BPF program must be built)");
                std::process::exit(1);
            }
            println!(
                "cargo::warning=eBPF CPU accounting not built in: {why}; install clang (scripts/setup.sh) to build it"
            );
            // An empty object keeps include_bytes! valid; the lib reports it as not built.
            if let Err(e) = std::fs::write(&obj, b"") {
                eprintln!("error: cannot write {}: {e}", obj.display());
                std::process::exit(1);
            }
            built = false;
        }
    }
    if built {
        println!("cargo::rustc-cfg=kepler_ebpf_built");
    }
}
