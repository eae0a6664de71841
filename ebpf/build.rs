//! Provides the BPF objects in `OUT_DIR`: `src/cpu.bpf.c` built twice, as the time-only program
//! (`cpu.bpf.o`) and with `-DKEPLER_COUNTERS` as the program that also reads hardware counters
//! (`cpu_counters.bpf.o`).
//!
//! With clang (`$KEPLER_BPF_CLANG`, else `clang` on PATH) the objects are compiled from source.
//! Without it they are the objects committed in `prebuilt/`, so a machine without clang still
//! gets eBPF. CI builds with clang (`KEPLER_REQUIRE_TOOLS=1` makes a missing or failing clang a
//! build error) and a test compares the fresh objects with the committed ones byte for byte:
//! `-fdebug-prefix-map` keeps the checkout's path out of the debug info, so the same clang
//! gives the same bytes in any folder. `KEPLER_BPF_UPDATE_PREBUILT=1` copies the fresh objects
//! (and the clang version) into `prebuilt/` (scripts/update-bpf-objects.sh).
//!
//! Emits the cfgs `kepler_ebpf_built` (every object present) and `kepler_ebpf_from_source`
//! (compiled here), and the env `KEPLER_BPF_CLANG_VERSION` (the clang used, or `none`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (object name, extra clang arguments).
const OBJECTS: [(&str, &[&str]); 2] = [("cpu", &[]), ("cpu_counters", &["-DKEPLER_COUNTERS"])];
const SOURCE: &str = "src/cpu.bpf.c";
const PREBUILT: &str = "prebuilt";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kepler_ebpf_built)");
    println!("cargo::rustc-check-cfg=cfg(kepler_ebpf_from_source)");
    println!("cargo::rerun-if-changed=src/kepler_bpf.h");
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed={PREBUILT}");
    for var in [
        "KEPLER_BPF_CLANG",
        "KEPLER_REQUIRE_TOOLS",
        "KEPLER_BPF_UPDATE_PREBUILT",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let clang = env::var("KEPLER_BPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    let require = env::var("KEPLER_REQUIRE_TOOLS").as_deref() == Ok("1");

    match compile_all(&clang, &manifest_dir, &out) {
        Ok(version) => {
            println!("cargo::rustc-cfg=kepler_ebpf_built");
            println!("cargo::rustc-cfg=kepler_ebpf_from_source");
            println!("cargo::rustc-env=KEPLER_BPF_CLANG_VERSION={version}");
            if env::var("KEPLER_BPF_UPDATE_PREBUILT").as_deref() == Ok("1") {
                update_prebuilt(&manifest_dir, &out, &version);
            }
        }
        Err(why) if require => fail(&format!(
            "{why} (KEPLER_REQUIRE_TOOLS=1: the BPF objects must be built from source)"
        )),
        Err(why) => {
            println!("cargo::rustc-env=KEPLER_BPF_CLANG_VERSION=none");
            match copy_prebuilt(&manifest_dir, &out) {
                Ok(()) => {
                    println!("cargo::rustc-cfg=kepler_ebpf_built");
                    println!(
                        "cargo::warning=eBPF objects taken from ebpf/{PREBUILT}/ (not compiled here: {why})"
                    );
                }
                Err(missing) => {
                    println!(
                        "cargo::warning=eBPF CPU accounting not built in: {why}, and {missing}"
                    );
                    // Empty objects keep include_bytes! valid; the lib reports them as absent.
                    for (name, _) in OBJECTS {
                        write(&out.join(format!("{name}.bpf.o")), b"");
                    }
                }
            }
        }
    }
}

/// Compiles every object into `out`; the clang version on success.
fn compile_all(clang: &str, manifest_dir: &Path, out: &Path) -> Result<String, String> {
    let version = Command::new(clang)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let prefix_map = format!("-fdebug-prefix-map={}=.", manifest_dir.display());
    for (name, defines) in OBJECTS {
        let obj = out.join(format!("{name}.bpf.o"));
        let output = Command::new(clang)
            .current_dir(manifest_dir)
            .args([
                "-target",
                "bpf",
                "-O2",
                "-g",
                "-Wall",
                "-Werror",
                &prefix_map,
            ])
            .args(defines)
            .args(["-c", SOURCE, "-o"])
            .arg(&obj)
            .output()
            .map_err(|e| format!("cannot run {clang} for {SOURCE}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{clang} failed on {SOURCE} ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(version)
}

/// Copies the committed objects into `out`; what is missing otherwise.
fn copy_prebuilt(manifest_dir: &Path, out: &Path) -> Result<(), String> {
    for (name, _) in OBJECTS {
        let file = format!("{name}.bpf.o");
        let from = manifest_dir.join(PREBUILT).join(&file);
        std::fs::copy(&from, out.join(&file))
            .map_err(|e| format!("no committed object {}: {e}", from.display()))?;
    }
    Ok(())
}

/// Writes the fresh objects and the clang version into `prebuilt/`.
fn update_prebuilt(manifest_dir: &Path, out: &Path, version: &str) {
    let dir = manifest_dir.join(PREBUILT);
    for (name, _) in OBJECTS {
        let file = format!("{name}.bpf.o");
        match std::fs::read(out.join(&file)) {
            Ok(bytes) => write(&dir.join(&file), &bytes),
            Err(e) => fail(&format!("cannot read the fresh {file}: {e}")),
        }
    }
    write(
        &dir.join("clang-version"),
        format!("{version}\n").as_bytes(),
    );
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
}

fn fail(why: &str) -> ! {
    eprintln!("error: {why}");
    std::process::exit(1);
}
