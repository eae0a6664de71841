//! `kepler-rs`: command line and process setup only; the wiring lives in `kepler_rs::app`.

use std::process::ExitCode;

use kepler_rs::config::{layers, top, Config, LogFormat};

fn main() -> ExitCode {
    let command_line = match layers::command().try_get_matches() {
        Ok(matches) => layers::from_matches(&matches),
        Err(e) => e.exit(),
    };
    let config = match Config::load(&command_line, |k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("kepler-rs: {errors}");
            return ExitCode::from(2);
        }
    };
    if let layers::Action::Top(matches) = &command_line.action {
        let result = top::options(matches).and_then(|opts| {
            if opts.once {
                kepler_rs::top::run_once(&opts)
            } else {
                kepler_rs::top::run_interactive(opts)
            }
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kepler-rs top: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if command_line.action == layers::Action::Doctor {
        let report = kepler_rs::doctor::diagnose(&config, |k| std::env::var(k).ok());
        println!("{report}");
        return if report.real_measurements {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kepler-rs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kepler_rs::app::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kepler-rs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEPLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
