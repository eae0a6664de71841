//! `--web.config-file` for both binaries: the web configuration file of the Prometheus
//! exporter-toolkit (the format node_exporter and Kepler read), and the accept loop that serves
//! an axum router over plain HTTP or TLS with it.
//!
//! - [`file`]: the YAML format, parsed strictly (unknown keys are errors) and validated, every
//!   problem reported with its field path (`tls_server_config.min_version: ...`).
//! - [`tls`]: the rustls server configuration (ring; no OpenSSL): Go cipher-suite and curve
//!   names, TLS versions, client-certificate policies.
//! - [`auth`]: basic auth against bcrypt hashes, with a cache of successful checks.
//! - [`reload`]: [`WebConfig`], the file and the certificates it names, re-read when one of
//!   them changes (checked per new connection and per request); a bad file after a reload keeps
//!   the last good configuration.
//! - [`serve`]: [`serve::serve`], the accept loop (plain HTTP unchanged without a web config).

pub mod auth;
pub mod file;
pub mod reload;
pub mod serve;
pub mod tls;

pub use file::Settings;
pub use reload::{WebConfig, WebConfigError};
pub use serve::{serve, ServeOptions};
