//! Records build facts (git branch and revision, rustc version) for `--version` and
//! `kepler_exporter_build_info` (see the kepler-build-info crate).

fn main() {
    kepler_build_info::emit();
}
