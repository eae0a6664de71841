//! [`Parser`]: turns the raw value of a dotted path into a type, collecting every error (with
//! its path) instead of stopping at the first. Every settings module parses through it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::layers::Values;
use crate::power::units::Watts;
use kepler_config_errors::ConfigError;

/// Parses each raw value once, collecting errors instead of stopping at the first.
pub(super) struct Parser<'a> {
    values: &'a Values,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(values: &'a Values) -> Self {
        Self {
            values,
            errors: Vec::new(),
        }
    }

    pub(super) fn raw(&self, path: &'static str) -> &str {
        self.values
            .get(path)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(super) fn fail(&mut self, path: &str, message: String) {
        self.errors.push(ConfigError::new(path, message));
    }

    pub(super) fn parse<T: FromStr + Default>(&mut self, path: &'static str, what: &str) -> T {
        let raw = self.raw(path).trim().to_string();
        match raw.parse() {
            Ok(v) => v,
            Err(_) => {
                self.fail(path, format!("must be {what}, got {raw:?}"));
                T::default()
            }
        }
    }

    pub(super) fn bool(&mut self, path: &'static str) -> bool {
        match self.raw(path).trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            other => {
                let other = other.to_string();
                self.fail(path, format!("must be true or false, got {other:?}"));
                false
            }
        }
    }

    pub(super) fn duration(&mut self, path: &'static str, min: Duration) -> Duration {
        let raw = self.raw(path).trim().to_string();
        match humantime::parse_duration(&raw) {
            Ok(d) if d < min => {
                let shown = humantime::format_duration(d);
                if min.is_zero() {
                    d
                } else if d.is_zero() {
                    self.fail(path, format!("must be > 0, got {shown}"));
                    d
                } else {
                    let min_shown = humantime::format_duration(min);
                    self.fail(path, format!("must be at least {min_shown}, got {shown}"));
                    d
                }
            }
            Ok(d) => d,
            Err(e) => {
                self.fail(
                    path,
                    format!("must be a duration like 3s or 500ms, got {raw:?} ({e})"),
                );
                Duration::ZERO
            }
        }
    }

    pub(super) fn watts(&mut self, path: &'static str) -> Watts {
        let w: f64 = self.parse(path, "a number of watts");
        if !w.is_finite() || w < 0.0 {
            self.fail(path, format!("must be a finite number >= 0, got {w}"));
        }
        Watts(w)
    }

    pub(super) fn path(&mut self, path: &'static str) -> PathBuf {
        let raw = PathBuf::from(self.raw(path).trim());
        if raw.as_os_str().is_empty() {
            self.fail(path, "must not be empty".to_string());
        }
        raw
    }

    /// A URL with an explicit http:// or https:// scheme.
    pub(super) fn url(&mut self, path: &'static str, raw: &str) -> Option<reqwest::Url> {
        if !(raw.starts_with("http://") || raw.starts_with("https://")) {
            self.fail(
                path,
                format!(
                    "must start with http:// (plaintext) or https:// (TLS), e.g. http://hub:4317, \
                     got {raw:?}"
                ),
            );
            return None;
        }
        match reqwest::Url::parse(raw) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Some(u),
            Ok(_) => {
                self.fail(path, format!("must name a host, got {raw:?}"));
                None
            }
            Err(e) => {
                self.fail(path, format!("is not a valid URL ({e}), got {raw:?}"));
                None
            }
        }
    }

    /// The value as a path, `None` when empty.
    pub(super) fn optional_path(&self, path: &'static str) -> Option<PathBuf> {
        Some(self.raw(path).trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    }

    /// A comma-separated list, empty items dropped.
    pub(super) fn list(&self, path: &'static str) -> Vec<String> {
        self.raw(path)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}
