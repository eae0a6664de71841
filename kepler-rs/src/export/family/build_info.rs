//! [`BuildInfo`]: what this binary is (git branch and revision, version, OS, architecture,
//! compiler), for the build-info families of both schemas.

/// What this binary is, for the build-info metrics. [`BuildInfo::current`] reads what
/// `build.rs` recorded; tests build their own for stable output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Git branch at build time, or `unknown`.
    pub branch: String,
    /// Git commit at build time, or `unknown`.
    pub revision: String,
    /// The crate version.
    pub version: String,
    /// `std::env::consts::OS` (`linux`).
    pub os: String,
    /// `std::env::consts::ARCH` (`x86_64`).
    pub arch: String,
    /// The `rustc --version` that built us, or `unknown`.
    pub rust_version: String,
}

impl Default for BuildInfo {
    /// Nothing known: every fact `unknown` (stable output for tests and tools).
    fn default() -> Self {
        let unknown = || "unknown".to_string();
        Self {
            branch: unknown(),
            revision: unknown(),
            version: unknown(),
            os: unknown(),
            arch: unknown(),
            rust_version: unknown(),
        }
    }
}

impl BuildInfo {
    /// The build facts of this binary.
    pub fn current() -> Self {
        Self {
            branch: option_env!("KEPLER_BUILD_GIT_BRANCH")
                .unwrap_or("unknown")
                .to_string(),
            revision: option_env!("KEPLER_BUILD_GIT_REVISION")
                .unwrap_or("unknown")
                .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            rust_version: option_env!("KEPLER_BUILD_RUSTC_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_build_info_is_filled() {
        let info = BuildInfo::current();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.branch.is_empty());
        assert!(!info.revision.is_empty());
        assert!(!info.rust_version.is_empty());
        assert_eq!(info.os, std::env::consts::OS);
    }
}
