//! Records build facts (git revision, rustc version) for `--version` (see the
//! kepler-build-info crate).

fn main() {
    kepler_build_info::emit();
}
