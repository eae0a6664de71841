//! The sources of setting values, lowest precedence first: defaults, the YAML file, the
//! environment, the command line. Each layer yields raw strings keyed by dotted path; parsing
//! into types happens once, in [`super::Config::from_values`], so every error is reported with
//! its path no matter which layer supplied the value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::settings::{self, Kind, SETTINGS};
use kepler_config_errors::ConfigError;

/// Raw values by dotted path.
pub type Values = BTreeMap<&'static str, String>;

/// The defaults from the settings table.
pub fn defaults() -> Values {
    SETTINGS
        .iter()
        .map(|s| (s.path, s.default.to_string()))
        .collect()
}

/// Values from a YAML document. Unknown keys and non-scalar values are errors with their path.
pub fn from_yaml(text: &str, origin: &Path) -> Result<Values, Vec<ConfigError>> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        vec![ConfigError::new(
            "config.file",
            format!("{}: not valid YAML: {e}", origin.display()),
        )]
    })?;
    let mut values = Values::new();
    let mut errors = Vec::new();
    if !doc.is_null() {
        flatten(&doc, String::new(), &mut values, &mut errors);
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

fn flatten(
    node: &serde_yaml_ng::Value,
    prefix: String,
    out: &mut Values,
    errors: &mut Vec<ConfigError>,
) {
    use serde_yaml_ng::Value;
    match node {
        Value::Mapping(map) => {
            for (key, child) in map {
                let Some(key) = key.as_str() else {
                    errors.push(ConfigError::new(
                        &prefix,
                        format!("keys must be strings, got {key:?}"),
                    ));
                    continue;
                };
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(child, path, out, errors);
            }
        }
        scalar => {
            let Some(setting) = settings::find(&prefix) else {
                errors.push(ConfigError::new(&prefix, "unknown setting".to_string()));
                return;
            };
            let text = match scalar {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null => return,
                other => {
                    errors.push(ConfigError::new(
                        &prefix,
                        format!("must be a single value, got {other:?}"),
                    ));
                    return;
                }
            };
            out.insert(setting.path, text);
        }
    }
}

/// Values from `KEPLER_*` environment variables (through `lookup`, so tests need no real env).
pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Values {
    SETTINGS
        .iter()
        .filter_map(|s| lookup(&settings::env_name(s.path)).map(|v| (s.path, v)))
        .collect()
}

/// The command-line interface: `--config.file` plus one flag per setting.
pub fn command() -> Command {
    let mut cmd = Command::new("kepler-rs")
        .version(crate::VERSION)
        .about("Kepler-compatible node energy exporter")
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("PATH")
                .env("KEPLER_CONFIG_FILE")
                .global(true)
                .help(
                    "YAML configuration file (precedence: defaults < file < KEPLER_* env < flags)",
                ),
        )
        .subcommand(Command::new("doctor").about(
            "Check what this host offers (RAPL, eBPF, perf counters, cgroups, runtimes, Kubernetes) and what the exporter will use; exit 0 when real energy measurements are possible",
        ))
        .subcommand(super::top::command());
    for s in SETTINGS {
        let flag = settings::flag_name(s);
        let arg = Arg::new(s.path).long(flag).global(true).help(format!(
            "{} [default: {:?}; env {}]",
            s.help,
            s.default,
            settings::env_name(s.path)
        ));
        let arg = match s.kind {
            Kind::Value => arg.value_name("VALUE").action(ArgAction::Set),
            Kind::Switch => arg
                .value_name("BOOL")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .action(ArgAction::Set),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// What the command line asks for besides running the exporter.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Action {
    #[default]
    Run,
    Doctor,
    /// `kepler-rs top` with its own flags.
    Top(ArgMatches),
}

/// Parsed command line: the action, the config file path and the values given as flags.
#[derive(Debug, Default)]
pub struct CommandLine {
    pub action: Action,
    pub config_file: Option<String>,
    pub values: Values,
}

pub fn from_matches(matches: &ArgMatches) -> CommandLine {
    // Settings are global flags: when a subcommand is used, its matches hold them all.
    let (action, matches) = match matches.subcommand() {
        Some(("doctor", sub)) => (Action::Doctor, sub),
        Some(("top", sub)) => (Action::Top(sub.clone()), sub),
        _ => (Action::Run, matches),
    };
    let values = SETTINGS
        .iter()
        .filter_map(|s| {
            matches
                .get_one::<String>(s.path)
                .map(|v| (s.path, v.clone()))
        })
        .collect();
    CommandLine {
        action,
        config_file: matches.get_one::<String>("config.file").cloned(),
        values,
    }
}

/// Parses arguments (without touching the process environment for settings).
pub fn parse_args<I, T>(args: I) -> Result<CommandLine, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    command()
        .try_get_matches_from(args)
        .map(|m| from_matches(&m))
}
