//! `kepler-rs top`'s own flags, a subcommand of the exporter's command line ([`command`]), and
//! their typed values ([`options`]); the `top` module draws what they ask for.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};

/// `--group`: what one row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Container,
    Pod,
    Process,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Container => "container",
            Group::Pod => "pod",
            Group::Process => "process",
        }
    }
}

/// `--sort`: the row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Power,
    Energy,
    Name,
}

impl SortBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Power => "power",
            SortBy::Energy => "energy",
            SortBy::Name => "name",
        }
    }
}

/// What `kepler-rs top` shows, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct TopOptions {
    pub url: String,
    pub interval: Duration,
    pub once: bool,
    pub group: Group,
    pub sort: SortBy,
    pub rows: usize,
}

/// The `top` subcommand's own flags.
pub fn command() -> Command {
    Command::new("top")
        .about("Live view of power per container, pod or process from a running exporter")
        .arg(Arg::new("url").long("url").default_value("http://127.0.0.1:9102/metrics").help("The exporter's /metrics URL"))
        .arg(Arg::new("interval").long("interval").default_value("3s").help("Refresh interval"))
        .arg(Arg::new("once").long("once").action(ArgAction::SetTrue).help("Print one table (two scrapes one interval apart) and exit"))
        .arg(Arg::new("group").long("group").default_value("container").value_parser(["container", "pod", "process"]).help("Rows per container, pod or process (process needs --metrics.processes on the exporter)"))
        .arg(Arg::new("sort").long("sort").default_value("power").value_parser(["power", "energy", "name"]).help("Sort order"))
        .arg(Arg::new("rows").long("rows").default_value("20").value_parser(clap::value_parser!(usize)).help("Rows shown with --once"))
}

/// The typed values of the `top` flags; a bad `--interval` is an error naming the flag.
pub fn options(m: &ArgMatches) -> Result<TopOptions> {
    let get = |k: &str| m.get_one::<String>(k).cloned().unwrap_or_default();
    let interval_raw = get("interval");
    let interval = humantime::parse_duration(&interval_raw)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!("--interval: must be a duration > 0 like 3s, got {interval_raw:?}")
        })?;
    Ok(TopOptions {
        url: get("url"),
        interval,
        once: m.get_flag("once"),
        group: match get("group").as_str() {
            "pod" => Group::Pod,
            "process" => Group::Process,
            _ => Group::Container,
        },
        sort: match get("sort").as_str() {
            "energy" => SortBy::Energy,
            "name" => SortBy::Name,
            _ => SortBy::Power,
        },
        rows: m.get_one::<usize>("rows").copied().unwrap_or(20),
    })
}
