//! `kepler-package-docs OUT`: writes what the Debian package ships beside the binaries, all
//! generated from the binaries' own command-line definitions so that they never drift:
//!
//! - `OUT/man/kepler-rs.1`, `kepler-rs-doctor.1`, `kepler-rs-top.1`, `kepler-collector.1`
//!   (roff, from clap with clap_mangen);
//! - `OUT/completions/{bash,zsh,fish}/...` for both programs (clap_complete), named where
//!   bash-completion, zsh and fish look for them.
//!
//! `scripts/package-deb.sh` runs it and builds the package.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Command, CommandFactory as _};
use clap_complete::Shell;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: kepler-package-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    let programs = [
        kepler_rs::config::layers::command(),
        kepler_collector::cli::Args::command(),
    ];
    for cmd in &programs {
        write_man_pages(cmd, &out.join("man"))?;
        write_completions(cmd, &out.join("completions"))?;
    }
    Ok(())
}

/// One page for the program and one per subcommand (`kepler-rs-doctor.1`).
fn write_man_pages(cmd: &Command, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = cmd.get_name().to_string();
    write_page(cmd.clone(), &name, dir)?;
    for sub in cmd.get_subcommands() {
        let page = format!("{name}-{}", sub.get_name());
        // The page's NAME and SYNOPSIS show the command as typed: `kepler-rs doctor`.
        let sub = sub
            .clone()
            .name(page.clone())
            .bin_name(format!("{name} {}", sub.get_name()))
            .version(cmd.get_version().unwrap_or_default().to_string());
        write_page(sub, &page, dir)?;
    }
    Ok(())
}

fn write_page(cmd: Command, page: &str, dir: &Path) -> Result<()> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(page.to_uppercase())
        .section("1")
        .render(&mut roff)
        .with_context(|| format!("rendering the man page {page}"))?;
    let path = dir.join(format!("{page}.1"));
    fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))
}

/// Completions under the names the shells' packaged locations use.
fn write_completions(cmd: &Command, dir: &Path) -> Result<()> {
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let shell_dir = dir.join(shell.to_string());
        fs::create_dir_all(&shell_dir)
            .with_context(|| format!("creating {}", shell_dir.display()))?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut text);
        let path = shell_dir.join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
