//! One task per expectation: wait for the expected peer on the data port, refuse anyone
//! else without consuming the expectation, connect the onward leg, relay, report.
//! Under `server-mode` one leg changes: the proxy dials the server instead of waiting
//! for it, or waits for the server on a second port instead of dialing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use crate::addrs::OrigDstAddr;
use crate::codec::TransferKind;
use crate::net::nft::{Announced, Hole};
use crate::net::{self, Binding};
use crate::session::{Conversion, DataOutcome, Event, ExpectationId, ExpectationRequest, Refusal};
use crate::track::{self, ExpectationEntry, ExpectationState, Mismatch, SessionId, Transferred};
use crate::vocab::{DataMode, DataPath};
use crate::xferlog;

/// What a session's control connections' TLS was made with, for its protected data
/// connections.
pub struct SessionTls {
    /// Toward the client: ftpgate's certificates and ticket key, and the mark its
    /// tickets carry.
    pub client: Option<(crate::tls::Server, [u8; 16])>,
    /// Toward the server.
    pub server: Option<ServerTls>,
}

/// ftpgate's TLS toward a session's server: the configuration whose session cache
/// holds the server's tickets from the control connection, and the name checked.
#[derive(Clone)]
pub struct ServerTls {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

impl ServerTls {
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> ServerTls {
        ServerTls {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
        }
    }
}

/// A data leg in clear or through TLS.
type ClientLeg = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;
type ServerLeg = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// How much longer than ftpgate's own deadline the kernel keeps a hole.
const HOLE_GRACE: Duration = Duration::from_secs(5);

/// A started expectation, as the session engine needs to know it.
pub struct Opened {
    /// The proxy's data socket for the client (port 0 when the proxy dials it).
    pub proxy: SocketAddr,
    /// The second data port, where the server connects (client passive, server active).
    pub server_port: Option<u16>,
    pub handle: Handle,
    /// Who forwards the connection (an nftables hole, or the relay).
    pub path: DataPath,
}

/// How the session ends one of its data connections.
pub enum Handle {
    /// A task waits for the peer and relays.
    Task(DataHandle),
    /// The kernel forwards the connection; the session closes the hole itself, after
    /// the reply that ends the transfer has gone out, with no task between.
    Kernel(KernelHole),
}

/// How the session tells a data task that it is over.
#[derive(Debug, Clone, Default)]
pub struct DataHandle {
    /// The session is done with it: stop waiting, stop relaying.
    cancel: CancellationToken,
    /// Its time is up: stop waiting for the peer, keep a connection already made.
    expire: CancellationToken,
}

impl DataHandle {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn expire(&self) {
        self.expire.cancel();
    }
}

/// Binds the data ports for `req` (or, with `kernel`, opens an nftables hole when the
/// kernel can forward the connection) and starts its task; `None` when no port is free
/// or the hole cannot be opened. With `edge` (a transparent listener's session) the
/// relayed connection is also announced to the ruleset, which hands over only what
/// was announced. Nothing here waits: netlink exchanges are answered within their
/// `sendmsg` (`crate::net::nft`).
#[allow(clippy::too_many_arguments)]
pub fn open(
    shared: &Arc<Shared>,
    session: SessionId,
    req: &ExpectationRequest,
    session_tls: SessionTls,
    events: mpsc::UnboundedSender<Event>,
    binding: Binding,
    path: DataPath,
    edge: bool,
    balancers: Option<crate::rules::AddrMatch>,
) -> Option<Opened> {
    let key = (session, req.id);
    let transferred = Arc::new(Transferred::default());
    let entry = |port| ExpectationEntry {
        mode: req.mode,
        proxy: SocketAddr::new(req.listen_ip, port),
        dst: SocketAddr::new(req.dst_ip, port),
        expected_peer: req.expected_peer,
        onward: req.onward,
        deadline: req.expires,
        state: ExpectationState::Waiting,
        transfer: None,
        transferred: transferred.clone(),
        server_port: None,
    };
    // The client's TLS (`PROT P`) is ftpgate's to speak, with what its control
    // connection used: the same certificates and the same ticket key, which a reload
    // since would have replaced, so that its sessions resume.
    let tls = match (req.client_tls, session_tls.client) {
        (false, _) => None,
        (true, Some((server, mark))) => Some(DataTls {
            acceptor: server.acceptor(),
            session: mark,
            require_reuse: req.tls_require_reuse,
        }),
        (true, None) => {
            tracing::warn!("PROT P data connection of a session without TLS");
            return None;
        }
    };
    // The server's TLS resumes the session of ftpgate's control connection to it.
    let server_tls = match (req.server_tls, session_tls.server) {
        (false, _) => None,
        (true, Some(server)) => Some(server),
        (true, None) => {
            tracing::warn!("PROT P to a server without TLS");
            return None;
        }
    };
    // Conversions need the proxy to dial a leg, which no kernel rule does, and TLS
    // needs it to hold one. The port of the hole's destination is chosen when it is
    // installed.
    let unported = SocketAddr::new(req.dst_ip, 0);
    // A balancer's PROXY header must be read off the connection, which the kernel
    // does not do either.
    let kernel = path == DataPath::Kernel
        && req.conversion.is_none()
        && tls.is_none()
        && server_tls.is_none()
        && balancers.is_none();
    let hole = (kernel && shared.nft.is_some())
        .then(|| Hole::new(req.expected_peer, unported, req.onward, req.onward_from))
        .flatten();
    if let Some(hole) = hole {
        return open_hole(shared, hole, key, req, entry, req.expires);
    }
    let bound = bind(shared, key, req, binding, entry)?;
    let proxy = bound.proxy;
    let server_port = bound.second.as_ref().map(|(_, addr)| addr.port());
    let announced = if edge {
        let peer_leg = bound
            .listener
            .is_some()
            .then(|| Announced::new(req.expected_peer, SocketAddr::new(req.dst_ip, proxy.port())));
        let server_leg = match (req.conversion, &bound.second) {
            (Some(Conversion::AcceptServer { expected_peer, .. }), Some((_, local))) => {
                Some(Announced::new(expected_peer, *local))
            }
            _ => None,
        };
        let legs: Vec<Announced> = peer_leg.into_iter().chain(server_leg).flatten().collect();
        if let Err(e) = announce(shared, &legs, req.expires) {
            tracing::warn!(error = %e, "cannot announce a data connection to the nftables ruleset");
            shared.metrics.kernel_hole_error("announce");
            shared.tracker.close_expectation(key);
            return None;
        }
        legs
    } else {
        Vec::new()
    };
    // The data connection may outlive its session (its reverse direction can close
    // after the client quit), so what the transfer log needs is taken now.
    let client = shared.tracker.session(session).map(|s| s.client.ip());
    let handle = DataHandle::default();
    shared.metrics.expectations_active.inc();
    let span = tracing::info_span!("data", id = req.id.0, mode = req.mode.as_str(), %proxy);
    let settings = &shared.config.load().settings;
    let task = Expectation {
        shared: shared.clone(),
        session,
        req: req.clone(),
        connect_timeout: settings.connect_timeout,
        data_idle_timeout: settings.data_idle_timeout,
        cancel: handle.cancel.clone(),
        expire: handle.expire.clone(),
        events,
        transferred,
        client,
        binding,
        announced,
        tls,
        tls_described: std::sync::OnceLock::new(),
        server_tls,
        server_tls_described: std::sync::OnceLock::new(),
        balancers,
    };
    shared
        .data_tasks
        .spawn(task.run(bound.listener, bound.second).instrument(span));
    Some(Opened {
        proxy,
        server_port,
        handle: Handle::Task(handle),
        path: DataPath::Relay,
    })
}

/// Writes the relay elements of `legs`, to expire a little after the expectation.
fn announce(shared: &Shared, legs: &[Announced], deadline: Instant) -> std::io::Result<()> {
    if legs.is_empty() {
        return Ok(());
    }
    let nft = shared.nft.as_ref().ok_or_else(|| {
        std::io::Error::other("no netlink socket (transparent listener without the ruleset)")
    })?;
    nft.announce(
        legs,
        deadline.saturating_duration_since(Instant::now()) + HOLE_GRACE,
    )
}

/// The sockets of a relayed expectation.
struct Bound {
    /// Where the peer connects; `None` when the proxy dials both legs.
    listener: Option<TcpListener>,
    proxy: SocketAddr,
    /// The second port, where the server connects (client passive, server active).
    second: Option<(TcpListener, SocketAddr)>,
}

/// Reserves and binds the data ports of `req` and records the expectation.
fn bind(
    shared: &Shared,
    key: (SessionId, ExpectationId),
    req: &ExpectationRequest,
    binding: Binding,
    entry: impl FnOnce(u16) -> ExpectationEntry,
) -> Option<Bound> {
    let (listener, proxy) = match req.conversion {
        Some(Conversion::DialServer { .. }) => {
            shared.tracker.insert_expectation(key, entry(0));
            (None, SocketAddr::new(req.listen_ip, 0))
        }
        _ => {
            let (l, proxy) = shared.tracker.open_expectation(
                key,
                |port| {
                    let proxy = SocketAddr::new(req.listen_ip, port);
                    net::listen_data(req.listen_ip, port, binding).map(|l| (l, proxy))
                },
                entry,
            )?;
            (Some(l), proxy)
        }
    };
    let second = match req.conversion {
        Some(Conversion::AcceptServer { listen_ip, .. }) => {
            let reserved = shared
                .tracker
                .reserve_server_port(key, |port| net::listen_data(listen_ip, port, binding));
            match reserved {
                Some((port, l)) => Some((l, SocketAddr::new(listen_ip, port))),
                None => {
                    shared.tracker.close_expectation(key);
                    return None;
                }
            }
        }
        _ => None,
    };
    Some(Bound {
        listener,
        proxy,
        second,
    })
}

/// `data-path kernel`: reserves the announced port and installs the hole outside the
/// tracker's lock; the session closes it ([`KernelHole::close`]).
fn open_hole(
    shared: &Shared,
    hole: Hole,
    key: (SessionId, ExpectationId),
    req: &ExpectationRequest,
    entry: impl FnOnce(u16) -> ExpectationEntry,
    deadline: Instant,
) -> Option<Opened> {
    // The kernel's own expiry is a safety net should ftpgate die; it is later than
    // ftpgate's so that a missing pass element means the connection was made.
    let kernel_timeout = deadline.saturating_duration_since(Instant::now()) + HOLE_GRACE;
    let nft = shared.nft.as_ref()?;
    let port = shared.tracker.reserve_port(key, |port| ExpectationEntry {
        state: ExpectationState::Kernel,
        ..entry(port)
    })?;
    let hole = Hole {
        dst: SocketAddr::new(req.dst_ip, port),
        ..hole
    };
    // Any port does as well as another for an error, so none is retried.
    let installed = nft.install(&hole, kernel_timeout);
    match installed {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the nftables hole for a data connection");
            shared.metrics.kernel_hole_error("install");
            shared.tracker.close_expectation(key);
            return None;
        }
    };
    let proxy = SocketAddr::new(req.listen_ip, hole.dst.port());
    shared.metrics.expectations_active.inc();
    Some(Opened {
        proxy,
        server_port: None,
        handle: Handle::Kernel(KernelHole {
            key,
            mode: req.mode,
            hole,
        }),
        path: DataPath::Kernel,
    })
}

/// An installed nftables hole of a session.
pub struct KernelHole {
    key: (SessionId, ExpectationId),
    mode: crate::session::DataMode,
    hole: Hole,
}

/// Why a session closes a kernel hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleEnd {
    /// The server reported its transfer complete ([`crate::session::Action::Finished`]).
    Finished,
    Cancelled,
    Expired,
}

impl KernelHole {
    /// Removes the hole and accounts for it; what the engine is told.
    pub fn close(self, shared: &Shared, end: HoleEnd) -> DataOutcome {
        let removed = shared
            .nft
            .as_ref()
            .map(|nft| nft.remove(&self.hole, end == HoleEnd::Finished));
        let used = match removed {
            Some(Ok(used)) => used,
            Some(Err(e)) => {
                // The elements expire on their own a little later.
                tracing::warn!(error = %e, "cannot close the nftables hole of a data connection");
                shared.metrics.kernel_hole_error("remove");
                false
            }
            None => false,
        };
        let outcome = match (used, end) {
            (true, _) => DataOutcome::Completed,
            (false, HoleEnd::Expired) => DataOutcome::Expired,
            (false, _) => DataOutcome::Cancelled,
        };
        shared.tracker.close_expectation(self.key);
        let m = &shared.metrics;
        m.expectations_active.dec();
        m.expectations_total
            .with_label_values(&[outcome.as_str()])
            .inc();
        if used {
            m.kernel_data_connections_total
                .with_label_values(&[self.mode.as_str()])
                .inc();
        }
        tracing::info!(
            id = self.key.1.0,
            mode = self.mode.as_str(),
            peer = %self.hole.peer,
            dst = %self.hole.dst,
            onward = %self.hole.onward,
            used,
            outcome = outcome.as_str(),
            "kernel data connection closed"
        );
        outcome
    }
}

struct Expectation {
    shared: Arc<Shared>,
    session: SessionId,
    req: ExpectationRequest,
    connect_timeout: Duration,
    data_idle_timeout: Duration,
    cancel: CancellationToken,
    /// The engine said the expectation's time is up (waiting ends, relaying not).
    expire: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
    transferred: Arc<Transferred>,
    client: Option<IpAddr>,
    /// Transparent with TPROXY: onward legs may leave from a peer's address.
    binding: Binding,
    /// The ruleset's elements for this expectation, withdrawn when it ends.
    announced: Vec<Announced>,
    /// `PROT P`: the client's leg is TLS, ftpgate its server.
    tls: Option<DataTls>,
    /// That TLS's version and cipher suite once negotiated, for the transfer log.
    tls_described: std::sync::OnceLock<String>,
    /// The server's leg is TLS (`tls server`), ftpgate its client.
    server_tls: Option<ServerTls>,
    /// The same for that TLS.
    server_tls_described: std::sync::OnceLock<String>,
    /// `accept-proxy`: the client's passive connection comes through one of these
    /// balancers, with a PROXY header naming the client.
    balancers: Option<crate::rules::AddrMatch>,
}

/// ftpgate's TLS toward the client on a protected data connection.
struct DataTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The mark the control connection's TLS put in the tickets it issued: a data
    /// connection that resumes a session must carry it, or it resumed another
    /// session's (another control connection's, perhaps another client's).
    session: [u8; 16],
    /// `require-reuse`: a full handshake is refused too.
    require_reuse: bool,
}

impl Expectation {
    async fn run(self, listener: Option<TcpListener>, second: Option<(TcpListener, SocketAddr)>) {
        let key = (self.session, self.req.id);
        let started = Instant::now();
        let outcome = self.serve(listener, second).await;
        self.withdraw();
        let entry = self.shared.tracker.expectation(key);
        self.shared.tracker.close_expectation(key);
        let m = &self.shared.metrics;
        m.expectations_active.dec();
        m.expectations_total
            .with_label_values(&[outcome.as_str()])
            .inc();
        if outcome == DataOutcome::Expired {
            tracing::info!(expected_peer = %self.req.expected_peer, "expectation expired unused");
        } else {
            let (download, upload) = self.transferred.by_direction(self.req.mode);
            let mode = self.req.mode.as_str();
            m.data_connections_total
                .with_label_values(&[mode, outcome.as_str()])
                .inc();
            m.data_bytes_total
                .with_label_values(&[mode, "download"])
                .inc_by(download);
            m.data_bytes_total
                .with_label_values(&[mode, "upload"])
                .inc_by(upload);
            self.shared
                .tracker
                .update_session(self.session, |s| s.data_bytes += download + upload);
            let transfer = entry.and_then(|e| e.transfer);
            tracing::info!(
                kind = transfer.as_ref().map_or("unknown", |t| t.kind.as_str()),
                download,
                upload,
                duration_ms = started.elapsed().as_millis() as u64,
                outcome = outcome.as_str(),
                tls = self.tls_described.get().map_or("none", String::as_str),
                server_tls = self
                    .server_tls_described
                    .get()
                    .map_or("none", String::as_str),
                "transfer"
            );
            if let Some(t) = transfer {
                self.log_transfer(&t, started, outcome, download.max(upload));
            }
        }
        // The session may be gone already; then nobody needs to know.
        let _ = self.events.send(Event::DataClosed {
            id: self.req.id,
            outcome,
        });
    }

    /// Removes the ruleset's elements; should that fail, they expire on their own.
    fn withdraw(&self) {
        let Some(nft) = self.shared.nft.as_ref() else {
            return;
        };
        if let Err(e) = nft.withdraw(&self.announced) {
            tracing::warn!(error = %e, "cannot withdraw a data connection from the nftables ruleset");
            self.shared.metrics.kernel_hole_error("withdraw");
        }
    }

    /// Appends the xferlog line for a download or upload (listings are not logged,
    /// as FTP servers do not log them either).
    fn log_transfer(
        &self,
        t: &crate::session::Transfer,
        started: Instant,
        outcome: DataOutcome,
        bytes: u64,
    ) {
        let Some(log) = self.shared.xferlog() else {
            return;
        };
        if t.kind == TransferKind::Listing {
            return;
        }
        log.record(&xferlog::Record {
            end: chrono::Utc::now(),
            seconds: started.elapsed().as_secs(),
            remote_host: self.client.map_or_else(String::new, |ip| ip.to_string()),
            bytes,
            path: t.path.clone(),
            transfer_type: t.transfer_type,
            kind: t.kind,
            user: t.user.clone().unwrap_or_default(),
            complete: outcome == DataOutcome::Completed,
        });
    }

    /// Connects a leg the proxy dials.
    async fn dial(&self, from: IpAddr, to: SocketAddr) -> Result<TcpStream, DataOutcome> {
        // The engine refused the control listeners and the admin endpoint already;
        // which data ports are bound is known only here, when the leg is dialed.
        let local = to.ip().to_canonical() == from.to_canonical()
            || self.shared.own_sockets.load().is_local(to.ip());
        if local && self.shared.tracker.data_port_in_use(to.port()) {
            tracing::warn!(onward = %to, reason = "own-socket", "refused");
            self.shared.metrics.refusal(Refusal::OwnSocket);
            return Err(DataOutcome::Failed);
        }
        let dialed = tokio::select! {
            _ = self.cancel.cancelled() => return Err(DataOutcome::Cancelled),
            r = net::connect_from(from, to, self.connect_timeout, self.binding) => r,
        };
        dialed.map_err(|e| {
            tracing::warn!(onward = %to, error = %e, "onward data connection failed");
            DataOutcome::Failed
        })
    }

    /// Why waiting for a peer ended without one.
    fn no_peer(&self) -> DataOutcome {
        if self.cancel.is_cancelled() {
            DataOutcome::Cancelled
        } else {
            DataOutcome::Expired
        }
    }

    async fn serve(
        &self,
        listener: Option<TcpListener>,
        second: Option<(TcpListener, SocketAddr)>,
    ) -> DataOutcome {
        let (accepted, onward) = match self.connect_legs(listener, second).await {
            Ok(legs) => legs,
            Err(outcome) => return outcome,
        };
        self.shared
            .tracker
            .update_expectation((self.session, self.req.id), |e| {
                e.state = ExpectationState::Connected;
            });
        let _ = self.events.send(Event::DataConnected { id: self.req.id });
        // Once the transfer direction has drained, the transfer is complete whatever
        // then happens to the idle reverse direction (cancelled at session end, reset).
        let delivered = AtomicBool::new(false);
        let drained = || {
            delivered.store(true, Ordering::Relaxed);
            let _ = self.events.send(Event::DataDrained { id: self.req.id });
        };
        let idle = self.data_idle_timeout;
        let relay = async {
            if self.tls.is_none() && self.server_tls.is_none() {
                return net::relay(accepted, onward, &self.transferred, idle, drained).await;
            }
            // The client's leg is the accepted one in passive mode, the dialed one in
            // active mode, whatever the server leg's mode; ftpgate is the TLS server
            // toward the client and the TLS client toward the server either way
            // (RFC 4217). Both handshakes run at once: a server starts its own only
            // once the client's transfer command has reached it.
            let (client, server) = match self.req.mode {
                DataMode::Passive => (accepted, onward),
                DataMode::Active => (onward, accepted),
            };
            let (client, server) = tokio::try_join!(
                self.secure_client_leg(client),
                self.secure_server_leg(server)
            )?;
            let totals = &self.transferred;
            match self.req.mode {
                DataMode::Passive => {
                    net::relay_streams(client, server, totals, idle, drained).await
                }
                DataMode::Active => net::relay_streams(server, client, totals, idle, drained).await,
            }
        };
        let result = tokio::select! {
            _ = self.cancel.cancelled() => None,
            r = relay => Some(r),
        };
        match result {
            _ if delivered.load(Ordering::Relaxed) => DataOutcome::Completed,
            Some(Ok(())) => DataOutcome::Completed,
            None => DataOutcome::Cancelled,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "data relay failed");
                DataOutcome::Failed
            }
        }
    }

    /// The client's leg as the session's `PROT` says.
    async fn secure_client_leg(&self, stream: TcpStream) -> std::io::Result<ClientLeg> {
        match &self.tls {
            None => Ok(Either::Left(stream)),
            Some(tls) => self.handshake(tls, stream).await.map(Either::Right),
        }
    }

    /// The server's leg: TLS when ftpgate's `PROT P` to the server was taken, with
    /// the control connection's TLS session resumed (vsftpd's `require_ssl_reuse`
    /// refuses a data connection that does not), bounded by the connect timeout and
    /// counted either way.
    async fn secure_server_leg(&self, stream: TcpStream) -> std::io::Result<ServerLeg> {
        let Some(tls) = &self.server_tls else {
            return Ok(Either::Left(stream));
        };
        let connect = tls.connector.connect(tls.name.clone(), stream);
        let result = self.within_connect_timeout(connect).await;
        self.shared
            .metrics
            .tls_handshake("server-data", result.is_ok());
        let stream = result.inspect_err(|e| {
            tracing::warn!(reason = %e, "server data TLS failed");
        })?;
        let conn = stream.get_ref().1;
        if let Some((version, suite)) = crate::tls::describe(conn) {
            let _ = self.server_tls_described.set(format!("{version} {suite}"));
        }
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        tracing::debug!(resumed, "server data TLS up");
        Ok(Either::Right(stream))
    }

    /// A data connection's TLS handshake, given the connect timeout to finish.
    async fn within_connect_timeout<T>(
        &self,
        handshake: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no TLS handshake within the connect timeout",
                ))
            })
    }

    /// The TLS handshake with the client on its data connection, bounded by the
    /// connect timeout; counted either way, a failure logged with its reason.
    async fn handshake(
        &self,
        tls: &DataTls,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let result = self
            .within_connect_timeout(tls.acceptor.accept(stream))
            .await;
        self.shared
            .metrics
            .tls_handshake("client-data", result.is_ok());
        if let Err(e) = &result {
            tracing::info!(reason = %e, "client data TLS failed");
        }
        let stream = result?;
        let conn = stream.get_ref().1;
        if let Some((version, suite)) = crate::tls::describe(conn) {
            let _ = self.tls_described.set(format!("{version} {suite}"));
        }
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let ours = conn.received_resumption_data() == Some(&tls.session[..]);
        let refusal = match (resumed, ours) {
            (true, false) => Some("it resumed another control connection's TLS session"),
            (false, _) if tls.require_reuse => {
                Some("it did not resume its control connection's TLS session (require-reuse)")
            }
            _ => None,
        };
        if let Some(why) = refusal {
            tracing::warn!(reason = why, "protected data connection refused");
            self.shared
                .metrics
                .expectations_refused_total
                .with_label_values(&["tls-session"])
                .inc();
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                why,
            ));
        }
        Ok(stream)
    }

    /// The peer's leg (accepted, or dialed under `server-mode passive`) and the onward
    /// leg (dialed, or accepted under `server-mode active`).
    async fn connect_legs(
        &self,
        listener: Option<TcpListener>,
        second: Option<(TcpListener, SocketAddr)>,
    ) -> Result<(TcpStream, TcpStream), DataOutcome> {
        let key = (self.session, self.req.id);
        let admits_peer = |peer, dst| self.shared.tracker.admits(key, peer, dst);
        let listener = match (self.req.conversion, listener) {
            (None, Some(listener)) => return self.legs_at_once(listener, admits_peer).await,
            (_, listener) => listener,
        };
        let accepted = match (self.req.conversion, listener) {
            (Some(Conversion::DialServer { server, from }), _) => self.dial(from, server).await?,
            (_, Some(listener)) => self
                .accept_expected_peer(
                    listener,
                    self.req.expected_peer,
                    self.client_balancers(),
                    admits_peer,
                )
                .await
                .ok_or_else(|| self.no_peer())?,
            (_, None) => return Err(DataOutcome::Failed),
        };
        let setup = Instant::now();
        let onward = match (self.req.conversion, second) {
            (Some(Conversion::AcceptServer { expected_peer, .. }), Some((listener, local))) => {
                let admits = |peer, dst| track::admits(expected_peer, local, peer, dst);
                self.accept_expected_peer(listener, expected_peer, None, admits)
                    .await
                    .ok_or_else(|| self.no_peer())?
            }
            _ => self.dial(self.req.onward_from, self.req.onward).await?,
        };
        self.observe_setup(setup);
        Ok((accepted, onward))
    }

    /// A connection without conversion: the onward leg is dialed at once, while the
    /// peer is still on its way, so the peer's connection meets a ready leg instead of
    /// waiting for a handshake. In passive mode that is the server's passive port, in
    /// active mode the client's `PORT` address (checked against the client already);
    /// either listener holds the leg until the transfer command, as it would hold
    /// the peer's own connection.
    async fn legs_at_once(
        &self,
        listener: TcpListener,
        admits: impl Fn(IpAddr, Option<SocketAddr>) -> Result<(), Mismatch>,
    ) -> Result<(TcpStream, TcpStream), DataOutcome> {
        let dial = self.dial(self.req.onward_from, self.req.onward);
        // It owns the listener and drops it when it returns (invariant 3).
        let balancers = self.client_balancers();
        let accept = self.accept_expected_peer(listener, self.req.expected_peer, balancers, admits);
        tokio::pin!(dial, accept);
        let mut dialed = None;
        let accepted = loop {
            tokio::select! {
                a = &mut accept => break a,
                d = &mut dial, if dialed.is_none() => dialed = Some(d),
            }
        };
        // A leg dialed for a client that never came is closed on this return.
        let accepted = accepted.ok_or_else(|| self.no_peer())?;
        let setup = Instant::now();
        let onward = match dialed {
            Some(d) => d?,
            None => dial.await?,
        };
        self.observe_setup(setup);
        Ok((accepted, onward))
    }

    /// How long the onward leg took once the peer's leg was there.
    fn observe_setup(&self, since: Instant) {
        self.shared
            .metrics
            .data_setup_seconds
            .observe(since.elapsed().as_secs_f64());
    }

    /// The balancers a connection on the listener for the client comes through: in
    /// passive mode, that of a listener with `accept-proxy` (in active mode ftpgate
    /// dials the client, and the server's connections come straight).
    fn client_balancers(&self) -> Option<&crate::rules::AddrMatch> {
        self.balancers
            .as_ref()
            .filter(|_| self.req.mode == DataMode::Passive)
    }

    /// Waits for the expected peer until the engine expires the expectation; anyone
    /// else is refused and the expectation stays open for the right peer (invariant 2).
    /// The listener is dropped on return, so the port takes no second connection
    /// (invariant 3). `admits` judges a peer by its address and the connection's
    /// original destination; through `balancers`, by the client its PROXY header names
    /// (a connection from elsewhere, or without a header, is refused the same way).
    async fn accept_expected_peer(
        &self,
        listener: TcpListener,
        expected: IpAddr,
        balancers: Option<&crate::rules::AddrMatch>,
        admits: impl Fn(IpAddr, Option<SocketAddr>) -> Result<(), Mismatch>,
    ) -> Option<TcpStream> {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = self.expire.cancelled() => return None,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "data accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let (who, dst) = match balancers {
                None => {
                    let dst = net::original_dst(&stream).map(|d| OrigDstAddr::new(d).get());
                    (peer.ip(), dst.ok())
                }
                Some(balancers) => {
                    match super::session::proxied(&self.shared, balancers, &stream, peer, "data")
                        .await
                    {
                        // The client dialed the balancer at the address and port
                        // ftpgate announced (`set advertise`).
                        Some((client, dialed)) => (client.ip(), Some(dialed)),
                        // No client's connection at all: closed, counted there.
                        None => continue,
                    }
                }
            };
            match admits(who, dst) {
                Ok(()) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(mismatch) => {
                    tracing::warn!(
                        %peer,
                        client = %who,
                        %expected,
                        reason = mismatch.as_str(),
                        "data connection refused"
                    );
                    self.shared
                        .metrics
                        .expectations_refused_total
                        .with_label_values(&[mismatch.as_str()])
                        .inc();
                }
            }
        }
    }
}
