//! [`WebConfig`]: the web configuration file and the certificate, key and client CA it names,
//! loaded at start (a bad file fails the start, naming the file and the field) and re-read
//! when one of them changes, so rotated certificates and changed passwords need no restart.
//!
//! [`WebConfig::refresh`] runs per new connection and per request: it compares each file's
//! modification time, size and inode with what was last read (a few `stat` calls) and reloads
//! only on a change. A reload that fails keeps the last good configuration, logs one line and
//! bumps the failure counter (and the hook the binary set, its self-metric); the same broken
//! files are not retried until they change again. Whether TLS is on is fixed at start, as in
//! exporter-toolkit: a reload that would switch it is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use kepler_config_errors::{ConfigError, ConfigErrors};
use rustls::ServerConfig;

use crate::auth::Authenticator;
use crate::file::{self, Settings};

/// A web configuration file that cannot be used: the file and every problem, each with its
/// field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    pub file: PathBuf,
    pub errors: ConfigErrors,
}

impl std::fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "web config file {}: ", self.file.display())?;
        match self.errors.0.as_slice() {
            [one] => write!(f, "{one}"),
            _ => write!(f, "{}", self.errors),
        }
    }
}

impl std::error::Error for WebConfigError {}

/// One loaded configuration: the settings and, with TLS, the rustls configuration built from
/// them and the certificates read.
#[derive(Debug)]
pub struct Active {
    pub settings: Settings,
    pub tls: Option<Arc<ServerConfig>>,
}

/// What identifies one version of a file: modification time, size, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[derive(Debug)]
struct Watched {
    files: Vec<PathBuf>,
    stamps: Vec<Stamp>,
}

impl Watched {
    fn new(files: Vec<PathBuf>) -> Self {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        Self { files, stamps }
    }
}

type Hook = Box<dyn Fn(&WebConfigError) + Send + Sync>;

/// A loaded web configuration that follows its files. Share it behind an `Arc`.
pub struct WebConfig {
    path: PathBuf,
    active: ArcSwap<Active>,
    watched: Mutex<Watched>,
    auth: Authenticator,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    on_reload_failure: Option<Hook>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls_enabled())
            .field("reloads", &self.reloads())
            .field("reload_failures", &self.reload_failures())
            .finish_non_exhaustive()
    }
}

/// Reads and checks everything: the file, then the files it names. Also returns the files to
/// watch (the web configuration file first), as far as they are known.
fn read_all(path: &Path) -> (Result<Active, WebConfigError>, Vec<PathBuf>) {
    let error = |errors: Vec<ConfigError>| WebConfigError {
        file: path.to_path_buf(),
        errors: ConfigErrors(errors),
    };
    let mut files = vec![path.to_path_buf()];
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return (
                Err(error(vec![ConfigError::new(
                    "(file)",
                    format!("cannot read: {e}"),
                )])),
                files,
            )
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let settings = match file::parse(&text, dir) {
        Ok(s) => s,
        Err(e) => return (Err(error(e.0)), files),
    };
    files.extend(settings.files());
    let tls = match &settings.tls {
        None => None,
        Some(t) => match crate::tls::server_config(t, settings.http2) {
            Ok(c) => Some(c),
            Err(e) => return (Err(error(vec![e])), files),
        },
    };
    (Ok(Active { settings, tls }), files)
}

impl WebConfig {
    /// Loads `path` and everything it names; an error names the file and each bad field.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let (active, files) = read_all(path);
        let active = active?;
        Ok(Self {
            path: path.to_path_buf(),
            active: ArcSwap::from_pointee(active),
            watched: Mutex::new(Watched::new(files)),
            auth: Authenticator::new(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            on_reload_failure: None,
        })
    }

    /// Calls `hook` after each failed reload (the binary's self-metric).
    pub fn on_reload_failure(
        mut self,
        hook: impl Fn(&WebConfigError) + Send + Sync + 'static,
    ) -> Self {
        self.on_reload_failure = Some(Box::new(hook));
        self
    }

    /// The web configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Whether connections are TLS (fixed at start).
    pub fn tls_enabled(&self) -> bool {
        self.active.load().tls.is_some()
    }

    /// The password checker (and its cache) shared by every request.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads since start (the last good configuration stayed in force).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Reloads when a watched file changed since it was last read. Cheap when nothing did.
    pub fn refresh(&self) {
        // One reload at a time; a request that finds one running goes on with what is active.
        let Ok(mut watched) = self.watched.try_lock() else {
            return;
        };
        let now: Vec<Stamp> = watched.files.iter().map(|f| stamp(f)).collect();
        if now == watched.stamps {
            return;
        }
        let (loaded, files) = read_all(&self.path);
        let loaded = loaded.and_then(|active| {
            if active.tls.is_some() == self.tls_enabled() {
                Ok(active)
            } else {
                Err(WebConfigError {
                    file: self.path.clone(),
                    errors: ConfigErrors(vec![ConfigError::new(
                        "tls_server_config",
                        "TLS cannot be switched on or off while running; restart to do that".into(),
                    )]),
                })
            }
        });
        // Watch what the new file names as well as what is in force, so that fixing either
        // triggers the next reload. The stamps are those taken before reading: a file changed
        // while it was read is read again next time.
        let mut all = files;
        for f in &watched.files {
            if !all.contains(f) {
                all.push(f.clone());
            }
        }
        let stamps = all
            .iter()
            .map(|f| {
                watched
                    .files
                    .iter()
                    .position(|w| w == f)
                    .and_then(|i| now.get(i).copied())
                    .unwrap_or_else(|| stamp(f))
            })
            .collect();
        match loaded {
            Ok(active) => {
                self.active.store(Arc::new(active));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), "web config reloaded");
                *watched = Watched::new(self.current_files());
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}; keeping the last good web config");
                if let Some(hook) = &self.on_reload_failure {
                    hook(&e);
                }
                *watched = Watched { files: all, stamps };
            }
        }
    }

    fn current_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        files.extend(self.active.load().settings.files());
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_fails_the_load_naming_it() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("web config file /nonexistent/web.yml: (file): cannot read:"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_file_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(
            &path,
            "tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
        )
        .unwrap();
        let text = WebConfig::load(&path).unwrap_err().to_string();
        assert!(
            text.starts_with(&format!(
                "web config file {}: tls_server_config.cert_file: {}: No such file",
                path.display(),
                dir.path().join("nope.crt").display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_bad_reload_keeps_the_last_good_config_and_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users: {{a: '{hash}'}}\n")).unwrap();
        let hooked = Arc::new(AtomicU64::new(0));
        let seen = hooked.clone();
        let web = WebConfig::load(&path).unwrap().on_reload_failure(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        web.refresh();
        assert_eq!(
            (web.reloads(), web.reload_failures()),
            (0, 0),
            "nothing changed"
        );

        std::fs::write(&path, "basic_auth_users: {a: not-a-hash, b: also-not}\n").unwrap();
        web.refresh();
        web.refresh();
        assert_eq!(
            web.reload_failures(),
            1,
            "one failure per change, not per refresh"
        );
        assert_eq!(hooked.load(Ordering::Relaxed), 1);
        assert!(
            web.current().settings.users.contains_key("a"),
            "the old config stays"
        );

        let hash_b = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users: {{b: '{hash_b}'}}\n")).unwrap();
        web.refresh();
        assert_eq!(web.reloads(), 1);
        let users = &web.current().settings.users;
        assert!(users.contains_key("b") && !users.contains_key("a"));

        std::fs::write(&path, "tls_server_config: {cert_file: a, key_file: b}\n").unwrap();
        web.refresh();
        assert_eq!(web.reload_failures(), 2);
        assert!(!web.tls_enabled());
    }
}
