//! Configuration errors shared by both binaries (the exporter in `kepler-rs/` and the hub in
//! `collector/`): one invalid setting is a [`ConfigError`] naming its dotted path
//! (`monitor.interval: must be > 0, got 0s`), and [`ConfigErrors`] carries every problem
//! found, so one message lists them all.

use std::fmt;

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's dotted path (`monitor.interval`, `listeners[2].address`).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub fn new(path: &str, message: String) -> Self {
        Self {
            path: path.to_string(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, for one message listing them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_path() {
        let e = ConfigError::new("monitor.interval", "must be > 0, got 0s".to_string());
        assert_eq!(e.to_string(), "monitor.interval: must be > 0, got 0s");
    }

    #[test]
    fn all_errors_are_listed_in_one_message() {
        let errors = ConfigErrors(vec![
            ConfigError::new("monitor.interval", "must be > 0, got 0s".to_string()),
            ConfigError {
                path: "listeners[2].address".to_string(),
                message: "invalid socket address \"x\"".to_string(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "invalid configuration (2 problem(s)):\n  monitor.interval: must be > 0, got 0s\n  \
             listeners[2].address: invalid socket address \"x\""
        );
        let as_error: &dyn std::error::Error = &errors;
        assert!(as_error.source().is_none());
    }
}
