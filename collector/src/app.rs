//! Wiring: binds every listener and the exposition address, starts the receivers, the
//! exposition server and the expiry sweeper, and stops them all on shutdown. Binding happens
//! before anything is served, so an address in use fails the start with its listener's name;
//! the exposition's web configuration is read before that, so a bad one fails the start too.

use crate::clock::Clock;
use crate::config::{Config, Protocol};
use crate::ingest::Hub;
use crate::receiver::{self, Listener};
use crate::server;
use crate::store::{Limits, Store};
use crate::tls;
use kepler_web_config::{ServeOptions, WebConfig};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Serve { what: String, message: String },
    #[error("exposition.web_config_file: {0}")]
    WebConfig(kepler_web_config::WebConfigError),
    #[error("listener {what}: {source}")]
    Tls {
        what: String,
        source: crate::tls::TlsError,
    },
}

/// A started hub.
#[derive(Debug)]
pub struct Running {
    pub hub: Arc<Hub>,
    /// (listener name or `exposition`, bound address), in config order.
    pub addresses: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), AppError>>,
}

async fn bind(what: &str, address: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Bind {
            what: what.to_string(),
            address,
            source,
        })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The exposition's web configuration, loaded before anything is bound so that a bad file
/// fails the start with its path; failed reloads count in
/// `kepler_collector_web_config_reload_failures_total`.
fn web_options(config: &Config, hub: &Arc<Hub>) -> Result<ServeOptions, AppError> {
    let Some(path) = &config.web_config_file else {
        return Ok(ServeOptions::default());
    };
    let web = WebConfig::load(path).map_err(AppError::WebConfig)?;
    hub.metrics
        .web_config
        .enabled
        .store(true, Ordering::Relaxed);
    let failures = hub.clone();
    let web = web.on_reload_failure(move |_| {
        failures
            .metrics
            .web_config
            .reload_failures
            .fetch_add(1, Ordering::Relaxed);
    });
    Ok(ServeOptions::with_web_config(
        web,
        config.healthz_without_auth,
        "exposition",
    ))
}

/// Binds and starts everything.
pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Running, AppError> {
    let store = Store::new(
        Limits {
            max_series: config.max_series,
            max_series_per_cluster: config.max_series_per_cluster,
        },
        config.metric_expiration.as_millis() as u64,
        clock,
    );
    let hub = Arc::new(Hub::new(store));
    let web = web_options(config, &hub)?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut addresses = Vec::new();
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let socket = bind(&l.name, l.address).await?;
        let local = socket.local_addr().map_err(|source| AppError::Bind {
            what: l.name.clone(),
            address: l.address,
            source,
        })?;
        addresses.push((l.name.clone(), local));
        sockets.push((l, socket));
    }
    let exposition = bind("exposition", config.exposition_address).await?;
    let exposition_addr = exposition.local_addr().map_err(|source| AppError::Bind {
        what: "exposition".into(),
        address: config.exposition_address,
        source,
    })?;
    addresses.push(("exposition".into(), exposition_addr));
    for (l, socket) in sockets {
        let listener = Arc::new(Listener::new(l, hub.clone()));
        let name = l.name.clone();
        let shutdown = stopped(stop_rx.clone());
        let tls_error = |source| AppError::Tls {
            what: l.name.clone(),
            source,
        };
        match l.protocol {
            Protocol::Grpc => {
                let tls = match &l.tls {
                    Some(t) => Some(tls::load(t).map_err(tls_error)?),
                    None => None,
                };
                tasks.spawn(async move {
                    receiver::grpc::serve(listener, socket, tls, shutdown)
                        .await
                        .map_err(|e| AppError::Serve {
                            what: name,
                            message: e.to_string(),
                        })
                });
            }
            Protocol::Http => {
                let router = receiver::http::router(listener);
                let tls = match &l.tls {
                    Some(t) => Some(tls::server_config(t).map_err(tls_error)?),
                    None => None,
                };
                tasks.spawn(async move {
                    let served = match tls {
                        Some(config) => {
                            receiver::http::serve_tls(router, socket, config, shutdown).await
                        }
                        None => {
                            axum::serve(socket, router)
                                .with_graceful_shutdown(shutdown)
                                .await
                        }
                    };
                    served.map_err(|e| AppError::Serve {
                        what: name,
                        message: e.to_string(),
                    })
                });
            }
        }
    }
    let router = server::router(hub.clone(), config.enable_open_metrics);
    let shutdown = stopped(stop_rx.clone());
    tasks.spawn(async move {
        kepler_web_config::serve(exposition, router, web, shutdown)
            .await
            .map_err(|e| AppError::Serve {
                what: "exposition".into(),
                message: e.to_string(),
            })
    });
    if let Some(settings) = config.remote_write.clone() {
        let rw_hub = hub.clone();
        let rw_stop = stop_rx.clone();
        tasks.spawn(async move {
            crate::remote_write::run(rw_hub, settings, rw_stop).await;
            Ok(())
        });
    }
    let sweep_every =
        (config.metric_expiration / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let sweeper_hub = hub.clone();
    let mut sweeper_stop = stop_rx.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let removed = sweeper_hub.store.sweep();
                    if removed > 0 {
                        tracing::debug!(removed, "expired series removed");
                    }
                }
                _ = sweeper_stop.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    });
    Ok(Running {
        hub,
        addresses,
        stop,
        tasks,
    })
}

impl Running {
    /// The bound address of a listener (or `exposition`).
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Waits until a task fails (returns its error) or `shutdown` resolves; then stops all.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AppError> {
        let result = tokio::select! {
            _ = shutdown => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(AppError::Serve { what: "task".into(), message: e.to_string() }),
            },
        };
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        result
    }
}
