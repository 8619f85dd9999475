//! The driver of one control session: a single `select!` over the client and the
//! server socket (readable, and writable while output is queued), data-connection
//! events, the resolve or connect in flight, the engine's next timer, and the drain
//! and shutdown signals. Carrying out actions never waits for a peer: output goes to
//! an [`Outbox`] that is written whenever the socket takes it, so a peer that stops
//! reading cannot hold up timers, shutdown or the other peer.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFuture;

use super::Shared;
use super::data::{self, Handle, HoleEnd, KernelHole};
use super::outbox::Outbox;
use super::report::report;
use crate::addrs::{ClientAddr, LocalAddr, ServerAddr};
use crate::codec::{Frame, LineFramer};
use crate::net::{self, Binding};
use crate::rules::{Config, Interception, ListenMode, Listener, Source};
use crate::session::{Action, CloseReason, Event, ExpectationId, Session};
use crate::track::{SessionId, SessionState};
use crate::vocab::SessionOutcome;

/// Control-channel read buffer per direction (on the stack, per read).
const READ_BUFFER: usize = 4096;

thread_local! {
    /// One read buffer per worker thread, not one on the stack per read: zeroing 4 KiB
    /// for every read was a tenth of the instructions a small transfer cost. A read
    /// never awaits, so two never overlap on a thread, and an idle session holds none.
    static READ_BUF: RefCell<[u8; READ_BUFFER]> = const { RefCell::new([0; READ_BUFFER]) };
}

/// Runs `read` with this thread's read buffer (a fresh one should it be in use).
fn with_read_buffer<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => read(&mut buf[..]),
        Err(_) => read(&mut [0; READ_BUFFER]),
    })
}
/// Past this much unwritten output toward a peer, the driver stops reading what
/// would add to it, so a peer that does not read is not buffered for without end.
const MAX_UNWRITTEN: usize = 256 * 1024;
/// How long output queued at the close may take to leave.
const LINGER: Duration = Duration::from_secs(1);

/// A resolve or connect the engine asked for.
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;
/// A drain or shutdown signal, waited for across turns.
type Signal<'a> = Pin<Box<WaitForCancellationFuture<'a>>>;

enum Done {
    Resolved(Option<SocketAddr>),
    Connected(io::Result<TcpStream>),
}

pub(super) struct Driver<'a> {
    shared: &'a Arc<Shared>,
    id: SessionId,
    listener: &'a Listener,
    session: Session,
    peer: ClientAddr,
    /// The rule set the engine decides with; a reload swaps it between events.
    rules: Arc<Config>,
    client: TcpStream,
    server: Option<TcpStream>,
    to_client: Outbox,
    to_server: Outbox,
    client_lines: LineFramer,
    server_lines: LineFramer,
    /// The client's control connection through TLS, from [`Action::SecureClient`]
    /// on; `None` in clear.
    client_tls: Option<Box<rustls::ServerConnection>>,
    /// Whether that TLS has finished its handshake (and been counted).
    client_tls_up: bool,
    /// `CCC`: ftpgate has closed that TLS and waits for the client's close; output
    /// is clear already.
    client_tls_closing: bool,
    /// The client's TLS records while it closes.
    client_records: Records,
    /// What that TLS was made with, for the session's protected data connections,
    /// and the mark it puts in the tickets it issues, which they must carry when they
    /// resume a session.
    client_tls_session: Option<(crate::tls::Server, [u8; 16])>,
    /// The server's control connection through TLS, from [`Action::SecureServer`] on.
    server_tls: Option<Box<rustls::ClientConnection>>,
    /// Whether that TLS has finished its handshake (and been counted).
    server_tls_up: bool,
    /// What that TLS was made with (its session cache holds the server's tickets) and
    /// the name checked, for the session's protected data connections to the server.
    server_tls_session: Option<data::ServerTls>,
    /// [`Action::SecureServer`] waiting for the client's hello (its SNI name), with
    /// the name to check otherwise, and what ftpgate says to the server meanwhile.
    server_tls_waits: Option<(crate::tls::Connector, String)>,
    server_held: Vec<u8>,
    /// `tls passthrough`: the control connection is relayed blind, and the ruleset
    /// lets the client reach the server's passive ports while this is set.
    passage: Option<crate::net::nft::Passage>,
    /// A pool listener's session: the server it was sent to, which a failed connect
    /// counts against.
    picked: Option<super::pools::Picked>,
    /// The data connections of the session, to cancel or expire them.
    data: HashMap<ExpectationId, Handle>,
    /// Kernel holes to close once the output of the current turn has left.
    closing: Vec<(ExpectationId, KernelHole, HoleEnd)>,
    /// Events of the session's own making (a hole it closed), fed before it waits.
    local: VecDeque<Event>,
    /// Data tasks report here.
    events: mpsc::UnboundedSender<Event>,
    data_events: mpsc::UnboundedReceiver<Event>,
    pending: Option<Pending>,
    /// The engine's next timer, and the deadline it is set to. It, and the signal,
    /// live across turns: made afresh on every turn, each registered with the
    /// runtime's timer wheel or the token's waiter list and left it again, per line
    /// relayed.
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// The drain until it came, then the shutdown: one wait per turn covers both,
    /// as a shutdown cancels the drain token too (its child).
    signal: Signal<'a>,
    draining: bool,
    shutting_down: bool,
    closed: Option<CloseReason>,
}

impl<'a> Driver<'a> {
    pub fn new(
        shared: &'a Arc<Shared>,
        id: SessionId,
        listener: &'a Listener,
        session: Session,
        client: TcpStream,
        peer: ClientAddr,
        picked: Option<super::pools::Picked>,
    ) -> Self {
        let rules = shared.config.load_full();
        let max_line = rules.settings.max_line;
        let (events, data_events) = mpsc::unbounded_channel();
        Driver {
            shared,
            id,
            listener,
            session,
            peer,
            rules,
            client,
            server: None,
            to_client: Outbox::default(),
            to_server: Outbox::default(),
            client_lines: LineFramer::new(max_line),
            // A reply may echo the longest argument a client can send, with text.
            server_lines: LineFramer::new(max_line + 1024),
            client_tls: None,
            client_tls_up: false,
            client_tls_closing: false,
            client_records: Records::default(),
            client_tls_session: None,
            server_tls: None,
            server_tls_up: false,
            server_tls_session: None,
            server_tls_waits: None,
            server_held: Vec::new(),
            passage: None,
            picked,
            data: HashMap::new(),
            closing: Vec::new(),
            local: VecDeque::new(),
            events,
            data_events,
            pending: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            signal: Box::pin(shared.draining.cancelled()),
            draining: false,
            shutting_down: false,
            closed: None,
        }
    }

    /// Drives the session to its end and says how it ended.
    pub async fn run(mut self) -> SessionOutcome {
        let result = self.start().await;
        let result = match result {
            Ok(()) => self.drive().await,
            Err(e) => Err(e),
        };
        let outcome = match result {
            Ok(()) => self
                .closed
                .map_or(SessionOutcome::IoError, CloseReason::outcome),
            Err(e) => {
                tracing::debug!(error = %e, "control connection failed");
                SessionOutcome::IoError
            }
        };
        self.finish().await;
        outcome
    }

    async fn start(&mut self) -> io::Result<()> {
        self.client.set_nodelay(true)?;
        // RFC 959's Synch sends the Telnet DM as TCP urgent data; read inline, it stays
        // in place in the `IAC IP IAC DM ABOR` sequence the codec understands.
        socket2::SockRef::from(&self.client).set_out_of_band_inline(true)?;
        // Implicit FTPS: the greeting and all after it go through TLS; rustls holds
        // them until the client's handshake is done.
        if self.listener.tls_implicit {
            self.secure_client();
        }
        let actions = self.session.poll_actions();
        self.apply(actions).await
    }

    async fn drive(&mut self) -> io::Result<()> {
        while self.closed.is_none() {
            match self.local.pop_front() {
                Some(event) => self.feed(event).await?,
                None => self.turn().await?,
            }
        }
        Ok(())
    }

    /// Waits for the next thing that happens and hands it to the engine.
    async fn turn(&mut self) -> io::Result<()> {
        let deadline = self.session.poll_timeout();
        let waiting = self.pending.is_some();
        let client_full = self.to_client.len() > MAX_UNWRITTEN;
        let read_client = !waiting && !client_full && self.to_server.len() <= MAX_UNWRITTEN;
        let read_server = !waiting && !client_full;
        if let Some(at) = deadline.filter(|at| self.timer_at != Some(*at)) {
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
            self.timer_at = Some(at);
        }
        tokio::select! {
            r = readable(Some(&self.client)), if read_client => {
                r?;
                self.read_client().await
            }
            r = readable(self.server.as_ref()), if read_server => {
                r?;
                self.read_server().await
            }
            r = writable(Some(&self.client)), if !self.to_client.is_empty() => {
                r?;
                self.to_client.write_to(&self.client)
            }
            r = writable(self.server.as_ref()), if !self.to_server.is_empty() => {
                r?;
                self.write_server()
            }
            Some(event) = self.data_events.recv(), if !waiting => self.feed(event).await,
            done = until_done(&mut self.pending), if waiting => {
                self.pending = None;
                self.on_done(done).await
            }
            () = &mut self.timer, if deadline.is_some() => {
                // Set again on the next turn even if the engine keeps the deadline.
                self.timer_at = None;
                let actions = self.session.handle_timeout(Instant::now());
                self.apply(actions).await
            }
            () = &mut self.signal, if !self.shutting_down => {
                if self.draining {
                    self.shutting_down = true;
                    self.feed(Event::Shutdown).await
                } else {
                    // A shutdown that came with the drain is seen on the next turn:
                    // its wait is over at once.
                    self.draining = true;
                    self.signal = Box::pin(self.shared.shutdown.cancelled());
                    self.feed(Event::Drain).await
                }
            }
        }
    }

    async fn read_client(&mut self) -> io::Result<()> {
        if self.passage.is_some() {
            let to_server = &mut self.to_server;
            let ready = read_chunks(&self.client, |bytes| {
                to_server.push(bytes);
                Ok(false)
            })?;
            return self.blind_read(ready, Event::ClientClosed).await;
        }
        let mut frames = Vec::new();
        let ready = match self.client_tls.as_deref_mut() {
            None => read_ready(&self.client, &mut self.client_lines, &mut frames)?,
            Some(tls) if self.client_tls_closing => {
                let (records, lines) = (&mut self.client_records, &mut self.client_lines);
                match read_tls_closing(&self.client, tls, records, lines, &mut frames) {
                    Ok((ready, closed)) => {
                        if closed {
                            self.client_tls = None;
                            self.client_tls_closing = false;
                        }
                        ready
                    }
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return self.client_tls_failed(&e.to_string()).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(tls) => match read_tls(&self.client, tls, &mut self.client_lines, &mut frames) {
                Ok(ready) => ready,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return self.client_tls_failed(&e.to_string()).await;
                }
                Err(e) => return Err(e),
            },
        };
        self.client_tls_progress();
        let clear = self.client_tls.is_none();
        for frame in frames {
            // Lines read in clear behind the `AUTH` that started TLS: text where TLS
            // must be, which a client may not send (RFC 4217 section 4).
            if clear && self.client_tls.is_some() {
                return self.client_tls_failed("clear text after AUTH TLS").await;
            }
            self.feed(Event::Client(frame)).await?;
        }
        if let Ready::Closed = ready {
            self.feed(Event::ClientClosed).await?;
        }
        Ok(())
    }

    /// After [`Action::SecureClient`]: the session's TLS starts on the client's leg.
    fn secure_client(&mut self) {
        // Part of a line behind the `AUTH`: clear text where TLS must be.
        if self.client_lines.buffered() > 0 {
            self.shared.metrics.tls_handshake("client", false);
            tracing::info!(reason = "clear text after AUTH TLS", "client TLS failed");
            return self.local.push_back(Event::ClientTlsFailed);
        }
        let server = self.client_tls_server();
        match server.as_ref().map(|s| (s, s.accept())) {
            Some((server, Ok(mut tls))) => {
                // Before the handshake, so that every ticket it issues carries it.
                let mark: [u8; 16] = rand::random();
                tls.set_resumption_data(&mark);
                self.client_tls_session = Some((server.clone(), mark));
                self.client_tls = Some(Box::new(tls));
            }
            // The rules let no session say `234` without a certificate.
            Some((_, Err(_))) | None => self.local.push_back(Event::ClientTlsFailed),
        }
    }

    /// What ftpgate presents to this client: on a transparent listener with `tls
    /// intercept`, certificates issued for the server it asked for (or for the address
    /// it connected to); else the `tls cert` certificates (the interception CA's,
    /// should there be none).
    fn client_tls_server(&self) -> Option<crate::tls::Server> {
        let transparent = matches!(self.listener.mode, ListenMode::Transparent(_));
        let intercept = self.rules.tls_intercept.as_ref().map(|i| &i.interceptor);
        match intercept {
            Some(interceptor) if transparent || self.rules.tls.is_none() => {
                let dialed = if transparent {
                    net::original_dst(&self.client)
                } else {
                    self.client.local_addr()
                };
                let address = dialed.ok()?.ip().to_canonical();
                interceptor
                    .server_for(address)
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot intercept"))
                    .ok()
            }
            _ => self.rules.tls.clone(),
        }
    }

    /// Queues what the client's TLS has to send (handshake records, alerts, and the
    /// lines written to it), and records the handshake's end once.
    fn client_tls_progress(&mut self) {
        let Some(tls) = self.client_tls.as_deref_mut() else {
            return;
        };
        let records = records_of(tls);
        self.to_client.push(&records);
        // The client's hello is in once ftpgate answers it: the server's TLS that
        // waited for its name can start.
        let hello = (!records.is_empty() || !tls.is_handshaking())
            .then(|| tls.server_name().map(str::to_string));
        if let Some(sni) = hello {
            if let Some((connector, address)) = self.server_tls_waits.take() {
                self.start_server_tls(&connector, sni.as_deref().unwrap_or(&address));
                let held = std::mem::take(&mut self.server_held);
                self.tell_server(&held);
            }
        }
        let Some(tls) = self.client_tls.as_deref_mut() else {
            return;
        };
        if !self.client_tls_up && !tls.is_handshaking() {
            self.client_tls_up = true;
            tls_up(self.shared, self.id, "client", tls, |s, d| {
                s.client_tls = Some(d)
            });
        }
    }

    /// The client's TLS failed: counted, logged with the reason, and the session ends
    /// (the alert rustls queued goes out first, if the socket takes it).
    async fn client_tls_failed(&mut self, why: &str) -> io::Result<()> {
        if !self.client_tls_up {
            self.shared.metrics.tls_handshake("client", false);
        }
        tracing::info!(reason = why, "client TLS failed");
        self.client_tls_progress();
        self.client_tls = None;
        self.feed(Event::ClientTlsFailed).await
    }

    /// After [`Action::ClearClient`] (`CCC`): ftpgate closes its side of the TLS; the
    /// client's close is read before its clear text.
    fn clear_client(&mut self) {
        if let Some(tls) = self.client_tls.as_deref_mut() {
            tls.send_close_notify();
            self.client_tls_progress();
            self.client_tls_closing = true;
        }
    }

    /// Output for the client: through its TLS while that is on.
    fn tell_client(&mut self, bytes: &[u8]) {
        match self.client_tls.as_deref_mut() {
            Some(_) if self.client_tls_closing => self.to_client.push(bytes),
            None => self.to_client.push(bytes),
            Some(tls) => {
                // rustls buffers what it cannot encrypt yet (mid-handshake); its limit
                // is above the engine's own on held output.
                let _ = tls.writer().write_all(bytes);
                self.client_tls_progress();
            }
        }
    }

    async fn read_server(&mut self) -> io::Result<()> {
        let Some(server) = self.server.as_ref() else {
            return Ok(());
        };
        if self.passage.is_some() {
            let to_client = &mut self.to_client;
            let ready = read_chunks(server, |bytes| {
                to_client.push(bytes);
                Ok(false)
            })?;
            return self.blind_read(ready, Event::ServerClosed).await;
        }
        let mut frames = Vec::new();
        let ready = match self.server_tls.as_deref_mut() {
            None => read_ready(server, &mut self.server_lines, &mut frames)?,
            Some(tls) => match read_tls(server, tls, &mut self.server_lines, &mut frames) {
                Ok(ready) => ready,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return self.server_tls_failed(&e.to_string()).await;
                }
                Err(e) => return Err(e),
            },
        };
        self.server_tls_progress();
        for frame in frames {
            self.feed(Event::Server(frame)).await?;
        }
        if let Ready::Closed = ready {
            self.feed(Event::ServerClosed).await?;
        }
        Ok(())
    }

    /// After [`Action::SecureServer`]: TLS starts on the server's leg, at once or, to
    /// check the server against the name the client asks for, once the client's
    /// hello is in; what is meant for the server meanwhile waits.
    fn secure_server(&mut self, connector: crate::tls::Connector, name: String, from_client: bool) {
        // A pool's server is known by the name in its pool, which the engine may not
        // have (a pool that picks at `USER` tells it only the address).
        let name = self
            .picked
            .as_ref()
            .map_or(name, |p| p.backend.host.clone());
        if from_client {
            self.server_tls_waits = Some((connector, name));
        } else {
            self.start_server_tls(&connector, &name);
        }
    }

    /// TLS on the server's leg, ftpgate the client, with a session cache of the
    /// session's own.
    fn start_server_tls(&mut self, connector: &crate::tls::Connector, name: &str) {
        let Some(server_name) = crate::tls::server_name(name) else {
            self.shared.metrics.tls_handshake("server", false);
            tracing::warn!(%name, reason = "not a name a certificate can be checked against", "server TLS failed");
            return self.local.push_back(Event::ServerTlsFailed);
        };
        let config = connector.for_session();
        match rustls::ClientConnection::new(config.clone(), server_name.clone()) {
            Ok(tls) => {
                self.server_tls = Some(Box::new(tls));
                self.server_tls_up = false;
                self.server_tls_session = Some(data::ServerTls::new(config, server_name));
                self.server_tls_progress();
            }
            Err(e) => {
                self.shared.metrics.tls_handshake("server", false);
                tracing::warn!(reason = %e, "server TLS failed");
                self.local.push_back(Event::ServerTlsFailed);
            }
        }
    }

    /// Queues what the server's TLS has to send, and records the handshake's end once.
    fn server_tls_progress(&mut self) {
        let Some(tls) = self.server_tls.as_deref_mut() else {
            return;
        };
        self.to_server.push(&records_of(tls));
        if !self.server_tls_up && !tls.is_handshaking() {
            self.server_tls_up = true;
            tls_up(self.shared, self.id, "server", tls, |s, d| {
                s.server_tls = Some(d)
            });
        }
    }

    /// The server's TLS failed: counted, logged with the reason (a certificate that
    /// does not check out says why), and the session ends with a `421` to the client.
    async fn server_tls_failed(&mut self, why: &str) -> io::Result<()> {
        if !self.server_tls_up {
            self.shared.metrics.tls_handshake("server", false);
        }
        tracing::warn!(reason = why, "server TLS failed");
        self.server_tls_progress();
        self.server_tls = None;
        self.feed(Event::ServerTlsFailed).await
    }

    /// Output for the server: through its TLS while that is on.
    fn tell_server(&mut self, bytes: &[u8]) {
        if self.server_tls_waits.is_some() {
            return self.server_held.extend_from_slice(bytes);
        }
        match self.server_tls.as_deref_mut() {
            None => self.to_server.push_line(bytes),
            Some(tls) => {
                let _ = tls.writer().write_all(bytes);
                self.server_tls_progress();
            }
        }
    }

    /// After a blind read: the bytes are queued for the other peer; a peer that
    /// closed ends the session.
    async fn blind_read(&mut self, ready: Ready, closed: Event) -> io::Result<()> {
        let written = self
            .to_client
            .write_to(&self.client)
            .and_then(|()| self.write_server());
        if let Ready::Closed = ready {
            self.feed(closed).await?;
        }
        written
    }

    /// After [`Action::PassThrough`]: the ruleset lets the client reach the server's
    /// passive `ports`, and the control connection is relayed blind from now on. If
    /// the ruleset cannot take the element, the session ends: the client has begun
    /// TLS with the server, which ftpgate cannot speak for it.
    fn pass_through(&mut self, ports: crate::vocab::PortRange) {
        // The data connections leave from where the control connection does: servers
        // refuse data from another address than their control peer's.
        let ends = self
            .server
            .as_ref()
            .and_then(|s| Some((s.peer_addr().ok()?, s.local_addr().ok()?)));
        let passage = ends.and_then(|(server, from)| {
            crate::net::nft::Passage::new(self.peer.ip(), server.ip(), from.ip(), ports)
        });
        let opened = match (self.shared.nft.as_ref(), passage) {
            (Some(nft), Some(passage)) => nft.open_passage(&passage).map(|()| passage),
            (None, _) => Err(io::Error::other(
                "no netlink socket (a transparent listener without the edge ruleset)",
            )),
            (_, None) => Err(io::Error::other("no server address")),
        };
        match opened {
            Ok(passage) => {
                tracing::info!(%ports, "TLS passed through: the control connection is relayed blind");
                self.shared.metrics.tls_passthrough(true);
                self.shared.tracker.update_session(self.id, |s| {
                    s.state = SessionState::Passthrough;
                    s.passthrough = Some(ports);
                });
                // What was read past the `AUTH` line is the client's TLS already.
                let rest = self.client_lines.take_unfinished();
                self.to_server.push(&rest);
                let rest = self.server_lines.take_unfinished();
                self.to_client.push(&rest);
                self.passage = Some(passage);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the passed-through session's data ports");
                self.shared.metrics.tls_passthrough(false);
                self.shared.metrics.kernel_hole_error("passthrough");
                self.on_close(CloseReason::Refused);
            }
        }
    }

    fn write_server(&mut self) -> io::Result<()> {
        match self.server.as_ref() {
            Some(server) => self.to_server.write_to(server),
            None => Ok(()),
        }
    }

    /// Hands one event to the engine and carries out what it says.
    async fn feed(&mut self, event: Event) -> io::Result<()> {
        // A reload applies to this session's decisions from now on.
        let current = self.shared.config.load_full();
        if !Arc::ptr_eq(&current, &self.rules) {
            self.session.set_policy(current.clone());
            self.rules = current;
        }
        if let Event::DataClosed { id, .. } = &event {
            self.data.remove(id);
        }
        let actions = self.session.handle(Instant::now(), event);
        self.apply(actions).await
    }

    /// Carries out actions in order, never waiting for a peer (netlink answers inside
    /// its `sendmsg`); output is queued and written as far as the sockets take it,
    /// and only then are kernel holes closed and the turn's metrics, logs and session
    /// table updated, off the path of the line that caused them.
    async fn apply(&mut self, actions: Vec<Action>) -> io::Result<()> {
        let mut queue = VecDeque::from(actions);
        let mut records = Vec::new();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::ToClient(bytes) => self.tell_client(&bytes),
                Action::SecureClient => self.secure_client(),
                Action::ClearClient => self.clear_client(),
                Action::ToServer(bytes) => self.tell_server(&bytes),
                Action::SecureServer {
                    connector,
                    name,
                    name_from_client,
                } => self.secure_server(connector, name, name_from_client),
                Action::PassThrough { ports } => {
                    self.pass_through(ports);
                    if self.closed.is_some() {
                        break;
                    }
                }
                Action::Open(req) => {
                    let event = self.open(&req);
                    queue.extend(self.session.handle(Instant::now(), event));
                }
                Action::Cancel(id) => self.end(id, HoleEnd::Cancelled),
                Action::Finished(id) => self.end(id, HoleEnd::Finished),
                Action::Expire(id) => match self.data.get(&id) {
                    Some(Handle::Task(handle)) => handle.expire(),
                    Some(Handle::Kernel(_)) => self.end(id, HoleEnd::Expired),
                    None => {}
                },
                Action::Resolve { host, port } => self.resolve(host, port),
                Action::Pick { user, host } => self.pick_for(user.as_deref(), host.as_deref()),
                Action::Connect { server } => self.connect(server.get()),
                Action::Close(reason) => {
                    self.on_close(reason);
                    break;
                }
                other => records.push(other),
            }
        }
        let written = self
            .to_client
            .write_to(&self.client)
            .and_then(|()| self.write_server());
        for action in records {
            report(self.shared, self.id, action);
        }
        for (id, hole, end) in std::mem::take(&mut self.closing) {
            let outcome = hole.close(self.shared, end);
            self.local.push_back(Event::DataClosed { id, outcome });
        }
        written
    }

    /// Ends data connection `id`: a task is told, a kernel hole is closed after the
    /// turn's output.
    fn end(&mut self, id: ExpectationId, end: HoleEnd) {
        match self.data.remove(&id) {
            Some(Handle::Task(handle)) => handle.cancel(),
            Some(Handle::Kernel(hole)) => self.closing.push((id, hole, end)),
            None => {}
        }
    }

    fn open(&mut self, req: &crate::session::ExpectationRequest) -> Event {
        let binding = data_binding(self.listener);
        let path = self.listener.data_path;
        let events = self.events.clone();
        let edge = matches!(self.listener.mode, ListenMode::Transparent(_));
        let tls = data::SessionTls {
            client: self.client_tls_session.clone(),
            server: self.server_tls_session.clone(),
        };
        let balancers = self.listener.accept_proxy.clone();
        match data::open(
            self.shared,
            self.id,
            req,
            tls,
            events,
            binding,
            path,
            edge,
            balancers,
        ) {
            Some(opened) => {
                self.data.insert(req.id, opened.handle);
                Event::ExpectationOpened {
                    id: req.id,
                    proxy: opened.proxy,
                    server_port: opened.server_port,
                    path: opened.path,
                }
            }
            None => {
                tracing::warn!("no free data port in the configured range");
                Event::ExpectationFailed { id: req.id }
            }
        }
    }

    /// A pool listener routing by what the client says first: the server of the pool
    /// that takes `host` or `user` (or the listener's), looked up; none up answers at
    /// once.
    fn pick_for(&mut self, user: Option<&str>, host: Option<&str>) {
        let picked = match &self.listener.mode {
            crate::rules::ListenMode::Pool { pool } => {
                self.rules.pool_for(pool, user, host).and_then(|pool| {
                    self.shared
                        .pools
                        .pick(self.shared, pool, self.peer.ip(), user)
                })
            }
            _ => None,
        };
        let Some(picked) = picked else {
            tracing::warn!(?user, ?host, "no server of the pool is up");
            self.pending = Some(Box::pin(async { Done::Resolved(None) }));
            return;
        };
        let pool = picked.pool.clone();
        self.shared
            .tracker
            .update_session(self.id, |s| s.pool = Some(pool));
        let (host, port) = (picked.backend.host.clone(), picked.backend.port);
        self.picked = Some(picked);
        self.resolve(host, port);
    }

    fn resolve(&mut self, host: String, port: u16) {
        let limit = self.rules.settings.connect_timeout;
        // A forward client may mistype a host; an upstream that does not resolve is
        // the operator's business.
        let forward = self.listener.mode == ListenMode::Forward;
        self.pending = Some(Box::pin(async move {
            match net::resolve(&host, port, limit).await {
                Ok(addr) => Done::Resolved(Some(addr)),
                Err(e) if forward => {
                    tracing::info!(%host, error = %e, "forward target does not resolve");
                    Done::Resolved(None)
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "cannot resolve the FTP server");
                    Done::Resolved(None)
                }
            }
        }));
    }

    fn connect(&mut self, server: SocketAddr) {
        // A fresh connection replaces one whose server never greeted; nothing of the
        // client's was sent on it.
        if self.server.take().is_some() {
            self.server_tls = None;
            self.server_tls_session = None;
            self.server_tls_waits = None;
            self.server_held.clear();
            self.to_server = Outbox::default();
            self.server_lines = LineFramer::new(self.rules.settings.max_line + 1024);
        }
        tracing::Span::current().record("server", tracing::field::display(server));
        self.shared
            .tracker
            .update_session(self.id, |s| s.server = Some(server));
        let limit = self.rules.settings.connect_timeout;
        let client = self.peer.ip();
        // With `preserve-source` the server leg leaves from the client's own address,
        // so the server sees the real client.
        let preserve = matches!(
            self.listener.mode,
            ListenMode::Transparent(Interception::Tproxy {
                source: Source::Peer
            })
        );
        self.pending = Some(Box::pin(async move {
            let connected = if preserve {
                net::connect_from(client, server, limit, Binding::Transparent).await
            } else {
                net::connect(server, limit).await
            };
            Done::Connected(connected)
        }));
    }

    async fn on_done(&mut self, done: Done) -> io::Result<()> {
        match done {
            Done::Resolved(server) => {
                let server = server.map(ServerAddr::new);
                self.feed(Event::Resolved(server)).await
            }
            Done::Connected(Ok(stream)) => match stream.local_addr().map(LocalAddr::new) {
                Ok(server_side) => {
                    self.server = Some(stream);
                    self.send_proxy_header();
                    self.shared
                        .tracker
                        .update_session(self.id, |s| s.state = SessionState::Login);
                    self.feed(Event::Connected { server_side }).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to the FTP server");
                    self.feed(Event::ConnectFailed).await
                }
            },
            Done::Connected(Err(e)) => {
                tracing::warn!(error = %e, "cannot connect to the FTP server");
                if let Some(picked) = &self.picked {
                    self.shared.pools.connect_failed(self.shared, picked);
                }
                self.feed(Event::ConnectFailed).await
            }
        }
    }

    /// `send-proxy`: the PROXY header goes first on the server's connection, ahead
    /// of anything else (an implicit TLS's hello too), naming the client and the
    /// address it dialed.
    fn send_proxy_header(&mut self) {
        let version = match (&self.listener.mode, &self.picked) {
            (ListenMode::Reverse { upstream }, _) => upstream.send_proxy,
            (ListenMode::Pool { .. }, Some(picked)) => {
                self.rules.pool(&picked.pool).and_then(|p| p.send_proxy)
            }
            _ => None,
        };
        let (Some(version), Ok(dialed)) = (version, self.client.local_addr()) else {
            return;
        };
        let header = crate::codec::proxy_header::header(version, self.peer.get(), dialed);
        self.to_server.push(&header);
    }

    fn on_close(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::ClientClosed | CloseReason::ServerClosed | CloseReason::Shutdown => {
                tracing::debug!(?reason, "closing session")
            }
            _ => tracing::info!(?reason, "closing session"),
        }
        if let Some(limit) = reason.limit() {
            self.shared.metrics.limit(limit);
        }
        if let CloseReason::UpstreamFailed(why) = reason {
            tracing::warn!(reason = why.as_str(), "the FTP server failed the session");
            self.shared.metrics.upstream_failure(why);
        }
        self.closed = Some(reason);
    }

    /// Gives queued output up to [`LINGER`] to leave, closes both connections and
    /// cancels every data connection of the session.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + LINGER;
        while !self.to_client.is_empty() || !self.to_server.is_empty() {
            let progress = tokio::select! {
                r = writable(Some(&self.client)), if !self.to_client.is_empty() => {
                    r.and_then(|()| self.to_client.write_to(&self.client))
                }
                r = writable(self.server.as_ref()), if !self.to_server.is_empty() => {
                    r.and_then(|()| self.write_server())
                }
                _ = tokio::time::sleep_until(deadline) => break,
            };
            if progress.is_err() {
                break;
            }
        }
        if let Some(tls) = self.client_tls.as_deref_mut() {
            tls.send_close_notify();
            self.client_tls_progress();
            let _ = self.to_client.write_to(&self.client);
        }
        if let Some(tls) = self.server_tls.as_deref_mut() {
            tls.send_close_notify();
            self.server_tls_progress();
            let _ = self.write_server();
        }
        if let Some(picked) = self.picked.take() {
            self.shared.pools.release(self.shared, &picked);
        }
        if let (Some(passage), Some(nft)) = (self.passage.take(), self.shared.nft.as_ref()) {
            if let Err(e) = nft.close_passage(&passage) {
                tracing::warn!(error = %e, "cannot close the passed-through session's data ports");
                self.shared.metrics.kernel_hole_error("passthrough");
            }
        }
        for (_, handle) in self.data.drain() {
            match handle {
                Handle::Task(handle) => handle.cancel(),
                Handle::Kernel(hole) => {
                    hole.close(self.shared, HoleEnd::Cancelled);
                }
            }
        }
        let _ = self.client.shutdown().await;
        if let Some(server) = self.server.as_mut() {
            let _ = server.shutdown().await;
        }
    }
}

/// What a TLS connection has to send: handshake records, alerts, and what was written
/// to it.
fn records_of<D>(tls: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut records = Vec::new();
    while tls.wants_write() {
        if tls.write_tls(&mut records).is_err() {
            break;
        }
    }
    records
}

/// The TLS on a control leg finished its handshake: counted, and its version and
/// cipher suite put in the session table by `put`.
fn tls_up(
    shared: &Shared,
    id: SessionId,
    leg: &'static str,
    tls: &rustls::CommonState,
    put: impl FnOnce(&mut crate::track::SessionEntry, String),
) {
    shared.metrics.tls_handshake(leg, true);
    if let Some((version, suite)) = crate::tls::describe(tls) {
        tracing::debug!(%version, %suite, leg, "TLS up");
        let described = format!("{version} {suite}");
        shared.tracker.update_session(id, |s| put(s, described));
    }
}

/// Data listeners of a TPROXY listener bind with `IP_TRANSPARENT`.
fn data_binding(listener: &Listener) -> Binding {
    match listener.mode {
        ListenMode::Transparent(i) if i.is_tproxy() => Binding::Transparent,
        _ => Binding::Plain,
    }
}

/// Waits until `stream` is readable, never without one. In the socket's own waker
/// slot, not an entry made in its waiter list and unmade on every turn: the session
/// task is the only one that waits on its control connections.
fn readable(stream: Option<&TcpStream>) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(move |cx| match stream {
        Some(s) => s.poll_read_ready(cx),
        None => Poll::Pending,
    })
}

/// [`readable`], for writing.
fn writable(stream: Option<&TcpStream>) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(move |cx| match stream {
        Some(s) => s.poll_write_ready(cx),
        None => Poll::Pending,
    })
}

async fn until_done(pending: &mut Option<Pending>) -> Done {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// [`read_ready`] for a connection through TLS: the records read are decrypted into
/// `lines`. The TLS's errors (a bad record, a failed handshake) are `InvalidData`; the
/// others are the socket's.
fn read_tls<D>(
    stream: &TcpStream,
    tls: &mut rustls::ConnectionCommon<D>,
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<Ready> {
    read_chunks(stream, |mut records| {
        decrypt(tls, &mut records, lines, frames)
    })
}

/// Reads what a readable socket holds, up to 16 reads (so one peer cannot keep its
/// session task busy; the socket stays readable for the next turn), handing each read
/// to `each`, which says whether the stream has ended for the reader (a TLS close).
fn read_chunks(
    stream: &TcpStream,
    each: impl FnMut(&[u8]) -> io::Result<bool>,
) -> io::Result<Ready> {
    with_read_buffer(|buf| read_chunks_into(stream, buf, each))
}

fn read_chunks_into(
    stream: &TcpStream,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]) -> io::Result<bool>,
) -> io::Result<Ready> {
    for _ in 0..16 {
        let n = match stream.try_read(buf) {
            Ok(0) => return Ok(Ready::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ready::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if each(buf.get(..n).unwrap_or_default())? {
            return Ok(Ready::Closed);
        }
    }
    Ok(Ready::Open)
}

/// Feeds `records` to the TLS and what they decrypt to into `lines`, until they are
/// used up or the peer closed its TLS (then `true`, with what follows its close left
/// in `records`).
fn decrypt<D>(
    tls: &mut rustls::ConnectionCommon<D>,
    records: &mut &[u8],
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<bool> {
    while !records.is_empty() {
        tls.read_tls(records)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let state = tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.plaintext_bytes_to_read() > 0 {
            let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
            tls.reader().read_exact(&mut plain)?;
            lines.push(&plain, frames);
        }
        if state.peer_has_closed() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where a stream of TLS records stands, so that the first byte that is no record
/// is found: after `CCC` a client may follow its own TLS close with clear text, or
/// (curl does) send clear text at once without one. A record starts with its content
/// type, 20 to 24; an FTP command with a letter.
#[derive(Debug, Default)]
struct Records {
    /// The start of a record header read so far.
    header: Vec<u8>,
    /// What is left of the record being read.
    left: usize,
}

impl Records {
    /// The offset of the first byte of `bytes` that starts no record, if any.
    fn clear_from(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            if self.left > 0 {
                let take = self.left.min(bytes.len() - at);
                self.left -= take;
                at += take;
                continue;
            }
            if self.header.is_empty() && !(20..=24).contains(&byte) {
                return Some(at);
            }
            self.header.push(byte);
            at += 1;
            if let [_, _, _, high, low] = self.header[..] {
                self.left = usize::from(u16::from_be_bytes([high, low]));
                self.header.clear();
            }
        }
        None
    }
}

/// [`read_tls`] while `CCC` closes the client's TLS: records go to rustls up to the
/// client's own close or the first byte that is no record; what follows is the client's
/// clear text and goes to `lines` as such. Returns whether the TLS is over.
fn read_tls_closing(
    stream: &TcpStream,
    tls: &mut rustls::ServerConnection,
    records: &mut Records,
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<(Ready, bool)> {
    let mut closed = false;
    let ready = read_chunks(stream, |bytes| {
        let mut clear = 0;
        if !closed {
            let end = records.clear_from(bytes).unwrap_or(bytes.len());
            closed = end < bytes.len();
            let mut tls_bytes = bytes.get(..end).unwrap_or_default();
            // Bytes behind the client's close are its clear text.
            closed |= decrypt(tls, &mut tls_bytes, lines, frames)?;
            clear = if closed {
                end - tls_bytes.len()
            } else {
                bytes.len()
            };
        }
        if closed {
            lines.push(bytes.get(clear..).unwrap_or_default(), frames);
        }
        Ok(false)
    })?;
    Ok((ready, closed))
}

/// What reading a readable control socket gave.
enum Ready {
    /// Bytes (possibly no whole line yet), or a spurious wake-up.
    Open,
    /// The peer closed (after the bytes read, if any).
    Closed,
}

/// Reads what a readable control socket holds into `lines`, through a buffer on the
/// stack: an idle session keeps no read buffer at all. A read that came back short
/// ends the turn only when it also ended a line: a read stops at TCP urgent data (the
/// Synch before `ABOR`) with more behind it, in mid-line, and taking that for an empty
/// socket stalled the session until the client sent something else. Otherwise reads
/// go on until the socket says it is empty.
fn read_ready(
    stream: &TcpStream,
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<Ready> {
    with_read_buffer(|buf| read_lines_into(stream, buf, lines, frames))
}

fn read_lines_into(
    stream: &TcpStream,
    buf: &mut [u8],
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<Ready> {
    let mut read = false;
    // Bounded, so one peer cannot keep its session task busy; the socket stays
    // readable and the next turn of the loop goes on.
    for _ in 0..16 {
        let mut drained = 0;
        let result = stream.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(stream)).read(buf)?;
            // A short read emptied the socket: its readiness is cleared with it, as
            // tokio's own `poll_read` does, which saves the read that would only say
            // WouldBlock and the turn of the loop that makes it, on every message.
            if n > 0 && n < buf.len() && buf.get(n - 1) == Some(&b'\n') {
                drained = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        if drained > 0 {
            lines.push(buf.get(..drained).unwrap_or_default(), frames);
            return Ok(Ready::Open);
        }
        match result {
            Ok(0) => return Ok(Ready::Closed),
            Ok(n) => {
                lines.push(buf.get(..n).unwrap_or_default(), frames);
                read = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ready::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // What came before the error (a reply, then a reset) is still delivered;
            // the socket stays readable and the next turn reports the end.
            Err(_) if read => return Ok(Ready::Open),
            Err(e) => return Err(e),
        }
    }
    Ok(Ready::Open)
}

#[cfg(test)]
mod tests {
    use super::Records;

    #[test]
    fn the_first_byte_that_starts_no_tls_record_is_found_across_reads() {
        // A close_notify record (TLS 1.3: application data, 19 bytes), then "PWD".
        let mut record = vec![23, 3, 3, 0, 19];
        record.extend([0xAB; 19]);
        let mut stream = record.clone();
        stream.extend(b"PWD\r\n");
        assert_eq!(Records::default().clear_from(&stream), Some(24));
        // Split anywhere, in the header or the body, the boundary is the same.
        for split in 1..stream.len() {
            let mut r = Records::default();
            let (a, b) = stream.split_at(split);
            let found = match r.clear_from(a) {
                Some(at) => at,
                None => a.len() + r.clear_from(b).unwrap(),
            };
            assert_eq!(found, 24, "split at {split}");
        }
        // Clear text right away (no close of the client's), and records only.
        assert_eq!(Records::default().clear_from(b"PWD\r\n"), Some(0));
        assert_eq!(Records::default().clear_from(&record), None);
    }
}
