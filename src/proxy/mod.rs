//! The tokio shell: accept loops, one task per control session (`control`), one task
//! per expectation (`data`), reload and shutdown. It carries out what the session engine
//! decides and owns every socket; it makes no protocol decision of its own.

mod control;
mod data;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::net;
use crate::rules::{Config, Listener};
use crate::track::Tracker;

/// State every task of the process shares.
pub struct Shared {
    /// The rule set in force; swapped whole on reload.
    pub config: ArcSwap<Config>,
    pub tracker: Tracker,
    pub metrics: Metrics,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Shared {
            tracker: Tracker::new(config.settings.data_ports),
            config: ArcSwap::from_pointee(config),
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// Swaps in a new rule set. Listeners are bound once at start; a reload that
    /// changes them takes effect only after a restart, and says so.
    pub fn reload(&self, new: Config) {
        let old = self.config.load();
        if old.listeners != new.listeners || old.metrics_listen != new.metrics_listen {
            tracing::warn!("listen/metrics statements changed: restart ftpgate to apply them");
        }
        self.tracker.set_data_ports(new.settings.data_ports);
        self.config.store(Arc::new(new));
    }
}

/// Binds every listener of the configuration.
pub fn bind(config: &Config) -> anyhow::Result<Vec<(Listener, TcpListener)>> {
    config
        .listeners
        .iter()
        .map(|l| {
            let socket = net::listen(l.addr, 1024)
                .with_context(|| format!("cannot listen on {} ({})", l.addr, l.origin))?;
            Ok((l.clone(), socket))
        })
        .collect()
}

/// Serves the bound listeners until `shared.shutdown` is cancelled, then waits for the
/// sessions to end.
pub async fn serve(shared: Arc<Shared>, listeners: Vec<(Listener, TcpListener)>) {
    let sessions = TaskTracker::new();
    for (listener, socket) in listeners {
        tracing::info!(addr = %listener.addr, rule = %listener.origin, "listening");
        let shared = shared.clone();
        let sessions = sessions.clone();
        tokio::spawn(accept_loop(shared, listener, socket, sessions));
    }
    shared.shutdown.cancelled().await;
    sessions.close();
    sessions.wait().await;
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    socket: TcpListener,
    sessions: TaskTracker,
) {
    let listener = Arc::new(listener);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                sessions.spawn(control::serve(
                    shared.clone(),
                    listener.clone(),
                    stream,
                    peer,
                ));
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off so the loop does not spin, and
                // keep serving the sessions that exist.
                tracing::warn!(addr = %listener.addr, error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
