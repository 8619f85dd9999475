//! The tokio shell: accept loops, one task per control session (`session`, driven by
//! `driver` with output in `outbox`, reports in `report`), one task per expectation
//! (`data`), reload and shutdown. It carries out what the session engine decides and
//! owns every socket; it makes no protocol decision of its own and writes no FTP
//! reply text.

mod data;
mod driver;
mod outbox;
pub mod pools;
mod report;
mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::net::{self, Binding, nft::Nft};
use crate::rules::{Config, ListenMode, Listener};
use crate::session::OwnSockets;
use crate::track::Tracker;
use crate::vocab::SessionOutcome;
use crate::xferlog::XferLog;

/// State every task of the process shares.
pub struct Shared {
    /// The rule set in force; swapped whole on reload.
    pub config: ArcSwap<Config>,
    pub tracker: Tracker,
    pub metrics: Metrics,
    /// Cancelled on SIGTERM: no new sessions, and sessions end once no transfer of
    /// theirs is in flight. A child of `shutdown`: stopping drains too.
    pub draining: CancellationToken,
    /// Cancelled when the process stops: every session ends now, with 421.
    pub shutdown: CancellationToken,
    xferlog: Mutex<Option<XferLog>>,
    /// Why the last reload was rejected, until one succeeds (`/healthz`).
    pub reload_error: Mutex<Option<String>>,
    /// Every data task, so that shutdown waits for their nftables holes to close.
    pub data_tasks: TaskTracker,
    /// The netlink side of `data-path kernel`, when a listener uses it.
    pub nft: Option<Nft>,
    /// The sockets ftpgate listens on, which no data connection may target; the
    /// host's addresses are read again at each reload.
    pub own_sockets: ArcSwap<OwnSockets>,
    /// Which servers of each pool are up, and their sessions.
    pub pools: pools::Pools,
}

impl Shared {
    /// Must be called inside the runtime (it may start the xferlog writer).
    pub fn new(config: Config, nft: Option<Nft>) -> Arc<Self> {
        let metrics = Metrics::new();
        metrics
            .sessions_limit
            .set(config.settings.max_sessions as i64);
        let outcomes: Vec<&str> = SessionOutcome::ALL.iter().map(|o| o.as_str()).collect();
        metrics.session_outcomes(&outcomes);
        metrics.rules_loaded();
        let mut ports: Vec<u16> = config.listeners.iter().map(|l| l.addr.port()).collect();
        ports.extend(config.metrics_listen.map(|a| a.port()));
        let own = OwnSockets {
            ips: net::local_addresses(),
            ports,
        };
        let shutdown = CancellationToken::new();
        Arc::new(Shared {
            own_sockets: ArcSwap::from_pointee(own),
            xferlog: Mutex::new(config.settings.xferlog.clone().map(XferLog::start)),
            reload_error: Mutex::new(None),
            tracker: Tracker::new(config.settings.data_ports),
            config: ArcSwap::from_pointee(config),
            metrics,
            draining: shutdown.child_token(),
            shutdown,
            data_tasks: TaskTracker::new(),
            nft,
            pools: pools::Pools::default(),
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
        let ports = self.own_sockets.load().ports.clone();
        self.own_sockets.store(Arc::new(OwnSockets {
            ips: net::local_addresses(),
            ports,
        }));
        self.metrics
            .sessions_limit
            .set(new.settings.max_sessions as i64);
        self.reopen_xferlog(new.settings.xferlog.clone());
        self.config.store(Arc::new(new));
        self.metrics.reloaded(true);
        *self.reload_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A reload whose rule file was rejected: the rules in force stay, the transfer
    /// log is still reopened (SIGHUP is also logrotate's signal).
    pub fn reload_rejected(&self, why: String) {
        self.reopen_xferlog(self.config.load().settings.xferlog.clone());
        self.metrics.reloaded(false);
        *self.reload_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// SIGUSR1, logrotate's signal: reopens the transfer log of the rules in force,
    /// whatever state the rule file on disk is in.
    pub fn reopen_logs(&self) {
        self.reopen_xferlog(self.config.load().settings.xferlog.clone());
    }

    fn reopen_xferlog(&self, path: Option<std::path::PathBuf>) {
        let mut log = self.xferlog.lock().unwrap_or_else(|e| e.into_inner());
        *log = match (log.take(), path) {
            (Some(running), Some(path)) => {
                running.reopen(path);
                Some(running)
            }
            (None, Some(path)) => Some(XferLog::start(path)),
            (_, None) => None,
        };
    }

    /// The transfer log, when one is configured.
    pub fn xferlog(&self) -> Option<XferLog> {
        self.xferlog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Binds every listener of the configuration.
pub fn bind(config: &Config) -> anyhow::Result<Vec<(Listener, std::net::TcpListener)>> {
    config
        .listeners
        .iter()
        .map(|l| {
            let binding = match l.mode {
                ListenMode::Transparent(i) if i.is_tproxy() => Binding::Transparent,
                _ => Binding::Plain,
            };
            let socket = net::listen_std(l.addr, 1024, binding).map_err(|e| {
                let hint = privilege_hint(&e, l.addr.port(), binding);
                anyhow::anyhow!("cannot listen on {} ({}): {e}{hint}", l.addr, l.origin)
            })?;
            Ok((l.clone(), socket))
        })
        .collect()
}

/// What to do about a socket error that only a privilege explains.
pub fn privilege_hint(e: &std::io::Error, port: u16, binding: Binding) -> &'static str {
    match (e.raw_os_error(), binding) {
        (Some(nix::libc::EPERM), Binding::Transparent) => {
            "; TPROXY listeners (IP_TRANSPARENT) need CAP_NET_ADMIN: run as root, or under \
             systemd with the drop-in deploy/ftpgate-edge.conf"
        }
        (Some(nix::libc::EACCES), _) if port < 1024 => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE: run as root, under the shipped \
             unit (AmbientCapabilities=CAP_NET_BIND_SERVICE), or choose a port of 1024 or \
             above"
        }
        _ => "",
    }
}

/// Serves the bound listeners until `shared.draining` is cancelled, then closes them
/// and waits for the sessions to end, and for their data tasks to close what they hold
/// (sessions cancel their data connections as they end).
/// Threads that each run a single-threaded runtime, for sessions.
///
/// A session is placed on one of them (in turn) and its data tasks are spawned where
/// it runs, so every wake-up of a transfer (a reply, the data connection, its end)
/// stays on one thread: no task is stolen by another worker and no worker is woken
/// for it, which on a busy edge is a context switch and a cache miss per event.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("ftpgate-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = keep_next_wake_near() => {}
                        }
                    });
                    // Nothing is left to wait for (the sessions and data tasks were
                    // awaited), except perhaps a name lookup that hangs.
                    runtime.shutdown_background();
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// The next worker in turn.
    fn pick(&self) -> Option<&tokio::runtime::Handle> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(i.checked_rem(self.handles.len())?)
    }
}

/// A timer that fires every second, for nothing but its presence. tokio wakes a
/// runtime's I/O driver (an `eventfd` write, and a spare turn of `epoll_wait`)
/// whenever a timer is set earlier than the runtime's next wake-up. A session sets
/// one on every command it forwards (the reply timeout) and every data connection it
/// announces (the data timeout), each earlier than the idle timeout it had: twice per
/// transfer. Session timeouts are seconds long, so with this the next wake-up is
/// always the earlier and setting them costs no wake-up at all.
async fn keep_next_wake_near() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves the listeners until drained, sessions on the calling runtime.
pub async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<(Listener, std::net::TcpListener)>,
) -> std::io::Result<()> {
    serve_on(shared, listeners, None).await
}

/// Serves the listeners until drained, sessions on `workers` when there are any.
pub async fn serve_on(
    shared: Arc<Shared>,
    listeners: Vec<(Listener, std::net::TcpListener)>,
    workers: Option<Arc<Workers>>,
) -> std::io::Result<()> {
    let sessions = TaskTracker::new();
    tokio::spawn(pools::check_pools(shared.clone()));
    for (listener, socket) in listeners {
        let socket = TcpListener::from_std(socket)?;
        tracing::info!(addr = %listener.addr, rule = %listener.origin, "listening");
        let shared = shared.clone();
        let sessions = sessions.clone();
        tokio::spawn(accept_loop(
            shared,
            listener,
            socket,
            sessions,
            workers.clone(),
        ));
    }
    shared.draining.cancelled().await;
    sessions.close();
    sessions.wait().await;
    shared.data_tasks.close();
    shared.data_tasks.wait().await;
    Ok(())
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    socket: TcpListener,
    sessions: TaskTracker,
    workers: Option<Arc<Workers>>,
) {
    let listener = Arc::new(listener);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            // Returning drops the listener: new connections are refused.
            _ = shared.draining.cancelled() => return,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let (shared, listener) = (shared.clone(), listener.clone());
                let Some(worker) = workers.as_deref().and_then(Workers::pick) else {
                    sessions.spawn(session::serve(shared, listener, stream, peer));
                    continue;
                };
                // A socket belongs to the runtime that registered it: it moves to
                // the worker's.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker");
                        continue;
                    }
                };
                let session = async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => session::serve(shared, listener, stream, peer).await,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker")
                        }
                    }
                };
                sessions.spawn_on(session, worker);
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
