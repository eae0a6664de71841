//! The `kepler-collector` binary: flags, config file, logging, signals; everything else is in
//! the library. Exit status 2 for an invalid configuration, 1 for a failure at run time.

use anyhow::Context as _;
use clap::Parser;
use kepler_collector::cli::Args;
use kepler_collector::clock::SystemClock;
use kepler_collector::config::RawConfig;
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // reqwest (remote write over https) uses the process-wide rustls provider: ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let raw = match load(&args) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("{e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match raw.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn load(args: &Args) -> anyhow::Result<RawConfig> {
    let mut raw = match &args.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --config.file {}", path.display()))?;
            RawConfig::from_yaml(&text, &path.display().to_string())?
        }
        None => RawConfig::default(),
    };
    if let Some(a) = &args.exposition_address {
        raw.exposition.address = a.clone();
    }
    if let Some(e) = &args.metric_expiration {
        raw.exposition.metric_expiration = e.clone();
    }
    if let Some(f) = &args.web_config_file {
        raw.exposition.web_config_file = Some(f.clone());
    }
    if args.healthz_without_auth {
        raw.exposition.healthz_without_auth = true;
    }
    Ok(raw)
}

fn run(config: kepler_collector::config::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let running = kepler_collector::app::start(&config, Arc::new(SystemClock)).await?;
        for (name, address) in &running.addresses {
            tracing::info!(listener = %name, %address, "listening");
        }
        running
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
