//! One task per control session: decide whether the session may exist, connect to the
//! server, then pump both control directions through the codec and the session engine
//! and carry out every action it returns.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Shared, data};
use crate::codec::{Command, Frame, LineError, LineFramer, Reply, parse_forward_user, parse_line};
use crate::net::{self, Binding};
use crate::rules::{Config, DataPath, ListenMode, Listener, Parties, Verdict};
use crate::session::{
    Action, CloseReason, DataMode, Event, ExpectationId, Params, Refusal, Session,
};
use crate::track::{SessionEntry, SessionId, SessionLimit, SessionLimits, SessionState};

/// How a control session ended, as logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Refused,
    Limit,
    LoginTimeout,
    UpstreamFailed,
    ClientClosed,
    ServerClosed,
    IdleTimeout,
    ProtocolError,
    IoError,
    Shutdown,
}

impl Outcome {
    const ALL: [Outcome; 10] = [
        Outcome::Refused,
        Outcome::Limit,
        Outcome::LoginTimeout,
        Outcome::UpstreamFailed,
        Outcome::ClientClosed,
        Outcome::ServerClosed,
        Outcome::IdleTimeout,
        Outcome::ProtocolError,
        Outcome::IoError,
        Outcome::Shutdown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Limit => "limit",
            Outcome::LoginTimeout => "login-timeout",
            Outcome::UpstreamFailed => "upstream-failed",
            Outcome::ClientClosed => "client-closed",
            Outcome::ServerClosed => "server-closed",
            Outcome::IdleTimeout => "idle-timeout",
            Outcome::ProtocolError => "protocol-error",
            Outcome::IoError => "io-error",
            Outcome::Shutdown => "shutdown",
        }
    }
}

/// Every `outcome` label value of `ftpgate_sessions_total`.
pub fn outcomes() -> Vec<&'static str> {
    Outcome::ALL.iter().map(|o| o.as_str()).collect()
}

/// The lowest onward data port allowed until rules can allow privileged ones.
const MIN_DATA_PORT: u16 = 1024;
/// Control-channel read buffer per direction.
const READ_BUFFER: usize = 4096;

pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let peer = net::canonical(peer);
    let started = Instant::now();
    let (limits, login_timeout) = {
        let settings = &shared.config.load().settings;
        let limits = SessionLimits {
            total: settings.max_sessions,
            per_client: settings.max_sessions_per_client,
            rate_per_client: settings.max_accept_rate_per_client,
        };
        (limits, settings.login_timeout)
    };
    let entry = SessionEntry::new(listener.addr, peer, started);
    let opened = shared.tracker.open_session(entry, limits);
    let id = match opened {
        Ok(id) => id,
        Err(limit) => {
            tracing::warn!(client = %peer, limit = limit.as_str(), "session refused: limit reached");
            shared.metrics.limit(limit.as_str());
            shared
                .metrics
                .sessions_total
                .with_label_values(&[Outcome::Limit.as_str()])
                .inc();
            let text = match limit {
                SessionLimit::AcceptRate => {
                    "Service not available: too many new sessions from your address; slow down."
                }
                SessionLimit::Total | SessionLimit::PerClient => {
                    "Service not available: too many sessions."
                }
            };
            refuse(client, text).await;
            return;
        }
    };
    shared.metrics.sessions_active.inc();
    let span = tracing::info_span!("session", id, client = %peer, server = tracing::field::Empty);
    let login_deadline = tokio::time::Instant::from_std(started + login_timeout);
    let outcome = run(&shared, id, &listener, client, peer, login_deadline)
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::info!(
            outcome = outcome.as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            "session end"
        );
    });
    shared
        .metrics
        .sessions_total
        .with_label_values(&[outcome.as_str()])
        .inc();
    shared.metrics.sessions_active.dec();
    shared.tracker.close_session(id);
}

/// Says `421` and closes; errors do not matter any more at that point.
async fn refuse(client: TcpStream, text: &str) {
    refuse_with(client, 421, text).await;
}

async fn refuse_with(mut client: TcpStream, code: u16, text: &str) {
    let _ = client.write_all(&Reply::encode(code, text)).await;
    let _ = client.shutdown().await;
}

/// Which server a session goes to, and the address the client believes it dialled.
struct Target {
    server: SocketAddr,
    client_side: SocketAddr,
    client_local: IpAddr,
}

/// Works out the target of a new session; `Err` carries the 421 text and outcome.
async fn target(
    listener: &Listener,
    client: &TcpStream,
    limit: Duration,
) -> Result<Target, (&'static str, Outcome)> {
    let unreachable = "Service not available: cannot reach the FTP server.";
    let local = client
        .local_addr()
        .map(net::canonical)
        .map_err(|_| (unreachable, Outcome::IoError))?;
    match &listener.mode {
        ListenMode::Forward => Err((
            "Service not available: log in as USER name@host.",
            Outcome::Refused,
        )),
        ListenMode::Reverse { upstream } => {
            let server = net::resolve(&upstream.host, upstream.port, limit)
                .await
                .map_err(|e| {
                    tracing::warn!(%upstream, error = %e, "cannot resolve the FTP server");
                    (unreachable, Outcome::UpstreamFailed)
                })?;
            Ok(Target {
                server: net::canonical(server),
                client_side: local,
                client_local: local.ip(),
            })
        }
        ListenMode::Transparent {
            tproxy,
            preserve_source,
        } => {
            let dst = net::original_dst(client).map(net::canonical).map_err(|e| {
                tracing::warn!(error = %e, "no original destination");
                (
                    "Service not available: no original destination.",
                    Outcome::Refused,
                )
            })?;
            // Not intercepted (REDIRECT leaves no rewrite, or TPROXY hands over a local
            // address): connecting there would loop back into the proxy.
            let looped = if *tproxy {
                dst.port() == listener.addr.port()
            } else {
                dst == local
            };
            if looped {
                tracing::warn!(%dst, "connection was not intercepted; refusing to loop");
                return Err((
                    "Service not available: connect to an FTP server, not to the proxy.",
                    Outcome::Refused,
                ));
            }
            // With TPROXY the local address is the server's, not the proxy's: data
            // listeners bind the wildcard address, and onward legs to the client leave
            // from wherever the routing table says, or from the server's address when
            // the source is preserved.
            let client_local = match (*tproxy, *preserve_source) {
                (_, true) => dst.ip(),
                (true, false) => net::unspecified(dst.ip()),
                (false, _) => local.ip(),
            };
            Ok(Target {
                server: dst,
                client_side: dst,
                client_local,
            })
        }
    }
}

/// The server leg; with `preserve-source` it leaves from the client's own address so
/// the server sees the real client.
async fn connect_server(
    listener: &Listener,
    client: SocketAddr,
    server: SocketAddr,
    limit: Duration,
) -> io::Result<TcpStream> {
    match listener.mode {
        ListenMode::Transparent {
            preserve_source: true,
            ..
        } => net::connect_from(client.ip(), server, limit, Binding::Transparent).await,
        _ => net::connect(server, limit).await,
    }
}

/// Why a forward-listener client never named a server.
enum NoTarget {
    /// Say this `421` and close.
    Refuse(&'static str, Outcome),
    /// The client left (or said `QUIT` and got its `221`).
    Gone(Outcome),
}

/// Greets a forward-listener client and reads lines until `USER name@host[:port]`
/// names a server that resolves. Returns the target and the client's lines from
/// that `USER` on, rewritten to `USER name`, for the session engine.
async fn forward_login(
    client: &mut TcpStream,
    deadline: tokio::time::Instant,
    max_line: usize,
    limit: Duration,
) -> Result<(Target, Vec<Frame>), NoTarget> {
    let io_error = |_| NoTarget::Gone(Outcome::IoError);
    let local = client.local_addr().map(net::canonical).map_err(io_error)?;
    let greeting = Reply::encode(220, "ftpgate: log in as USER name@host[:port].");
    client.write_all(&greeting).await.map_err(io_error)?;
    let mut lines = LineFramer::new(max_line);
    let mut buf = [0u8; READ_BUFFER];
    loop {
        let read = tokio::time::timeout_at(deadline, client.read(&mut buf)).await;
        let n = match read {
            Err(_) => {
                let text = "Login timeout: closing the control connection.";
                return Err(NoTarget::Refuse(text, Outcome::LoginTimeout));
            }
            Ok(Ok(0)) => return Err(NoTarget::Gone(Outcome::ClientClosed)),
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Err(NoTarget::Gone(Outcome::IoError)),
        };
        let mut frames = Vec::new();
        lines.push(buf.get(..n).unwrap_or_default(), &mut frames);
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            let Frame::Line(line) = frame else {
                let reply = Reply::encode(500, "Command line too long.");
                client.write_all(&reply).await.map_err(io_error)?;
                continue;
            };
            let reply = match parse_line(&line) {
                Err(LineError::Malformed(why)) => Reply::encode(500, why.reply_text()),
                Ok(Command::User(name)) => {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    match parse_forward_user(&name) {
                        Some(f) => match net::resolve(&f.host, f.port, limit).await {
                            Ok(server) => {
                                let server = net::canonical(server);
                                if server == local {
                                    Reply::encode(530, "That is this proxy; name an FTP server.")
                                } else {
                                    let mut user = LineFramer::new(max_line);
                                    let mut rest = Vec::new();
                                    user.push(format!("USER {}\r\n", f.user).as_bytes(), &mut rest);
                                    rest.extend(frames);
                                    let target = Target {
                                        server,
                                        client_side: local,
                                        client_local: local.ip(),
                                    };
                                    return Ok((target, rest));
                                }
                            }
                            Err(e) => {
                                tracing::info!(host = %f.host, error = %e, "forward target does not resolve");
                                Reply::encode(530, "Cannot resolve that host.")
                            }
                        },
                        None => Reply::encode(501, "Log in as USER name@host[:port]."),
                    }
                }
                Ok(Command::Other { verb, .. }) if verb == "QUIT" => {
                    let _ = client.write_all(&Reply::encode(221, "Goodbye.")).await;
                    return Err(NoTarget::Gone(Outcome::ClientClosed));
                }
                _ => Reply::encode(530, "Log in with USER name@host[:port] first."),
            };
            client.write_all(&reply).await.map_err(io_error)?;
        }
    }
}

async fn run(
    shared: &Arc<Shared>,
    id: SessionId,
    listener: &Listener,
    mut client: TcpStream,
    peer: SocketAddr,
    login_deadline: tokio::time::Instant,
) -> Outcome {
    let config = shared.config.load_full();
    let limit = config.settings.connect_timeout;
    let found = if listener.mode == ListenMode::Forward {
        let max_line = config.settings.max_line;
        // A session that has not named its server yet has no transfer to finish:
        // draining ends it at once rather than at its login timeout.
        let login = tokio::select! {
            login = forward_login(&mut client, login_deadline, max_line, limit) => login,
            _ = shared.draining.cancelled() => Err(NoTarget::Refuse(
                "Service not available: the proxy is shutting down.",
                Outcome::Shutdown,
            )),
        };
        match login {
            Ok(found) => Ok(found),
            Err(NoTarget::Refuse(text, outcome)) => Err((text, outcome)),
            Err(NoTarget::Gone(outcome)) => return outcome,
        }
    } else {
        target(listener, &client, limit)
            .await
            .map(|t| (t, Vec::new()))
    };
    let (target, early) = match found {
        Ok(found) => found,
        Err((text, outcome)) => {
            refuse(client, text).await;
            return outcome;
        }
    };
    let server = target.server;
    tracing::Span::current().record("server", tracing::field::display(server));
    let server_mode = match admitted(shared, &config, listener.addr, peer, server) {
        Ok(mode) => mode,
        Err((code, text)) => {
            refuse_with(client, code, &text).await;
            return Outcome::Refused;
        }
    };
    let server_stream = match connect_server(listener, peer, server, limit).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot connect to the FTP server");
            refuse(
                client,
                "Service not available: cannot reach the FTP server.",
            )
            .await;
            return Outcome::UpstreamFailed;
        }
    };
    shared.tracker.update_session(id, |s| {
        s.server = Some(server);
        s.state = SessionState::Login;
    });
    let params = net::canonical_local(&server_stream).map(|server_side| Params {
        listener: listener.addr,
        client: peer,
        client_side: target.client_side,
        client_local: target.client_local,
        server,
        server_side,
        advertise: config.settings.advertise,
        min_data_port: MIN_DATA_PORT,
        server_mode,
        own: shared.own_sockets.load_full(),
    });
    let relayed = match params {
        Ok(params) => {
            let binding = match listener.mode {
                ListenMode::Transparent { tproxy: true, .. } => Binding::Transparent,
                _ => Binding::Plain,
            };
            let relay = Relay {
                params,
                binding,
                kernel: listener.data_path == DataPath::Kernel,
                login_deadline,
                early,
            };
            relay_control(shared, id, &config, client, server_stream, relay).await
        }
        Err(e) => Err(e),
    };
    match relayed {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(error = %e, "control connection failed");
            Outcome::IoError
        }
    }
}

/// Whether the session rules let `client` reach `server`, with the server-side data
/// mode the passing rule sets; if not, the reply to refuse with.
fn admitted(
    shared: &Shared,
    config: &Config,
    listener: SocketAddr,
    client: SocketAddr,
    server: SocketAddr,
) -> Result<Option<DataMode>, (u16, String)> {
    let decision = config.session_decision(&Parties::new(listener, client.ip(), server));
    let source = decision.source();
    shared
        .metrics
        .rule_decisions_total
        .with_label_values(&[decision.verdict.as_str(), &source])
        .inc();
    if decision.log || decision.verdict == Verdict::Block {
        tracing::info!(verdict = decision.verdict.as_str(), rule = %source, "session rule");
    }
    match decision.verdict {
        Verdict::Pass => Ok(decision.server_mode),
        Verdict::Block => Err(decision.refusal(421, "Service not available: refused by policy.")),
    }
}

/// The running half of a session: the engine and the sockets it drives.
struct Driver<'a> {
    shared: &'a Arc<Shared>,
    id: SessionId,
    session: Session,
    to_client: OwnedWriteHalf,
    to_server: OwnedWriteHalf,
    data: HashMap<ExpectationId, CancellationToken>,
    events: mpsc::UnboundedSender<Event>,
    write_timeout: Duration,
    binding: Binding,
    kernel: bool,
    logged_in: bool,
    /// The rule set the session engine decides with.
    rules: Arc<Config>,
}

/// Whether the session goes on after carrying out some actions.
enum Flow {
    Continue,
    Close,
}

/// What reading a readable control socket gave.
enum Ready {
    /// Bytes (possibly no whole line yet).
    Read,
    /// The peer closed (after the bytes read, if any).
    Closed,
    /// A spurious wake-up.
    Nothing,
}

/// Reads what a readable control socket holds into `lines`, through a buffer on the
/// stack: an idle session keeps no read buffer at all. Reads go on until the socket
/// says it is empty, not merely until one read came back short: a read stops at TCP
/// urgent data (the Synch before `ABOR`) with more behind it, and taking that for an
/// empty socket stalled the session until the client sent something else.
fn read_ready(
    stream: &TcpStream,
    lines: &mut LineFramer,
    frames: &mut Vec<Frame>,
) -> io::Result<Ready> {
    let mut buf = [0u8; READ_BUFFER];
    let mut ready = Ready::Nothing;
    // Bounded, so one peer cannot keep its session task busy; the socket stays
    // readable and the next turn of the loop goes on.
    for _ in 0..16 {
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(Ready::Closed),
            Ok(n) => {
                lines.push(buf.get(..n).unwrap_or_default(), frames);
                ready = Ready::Read;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // What came before the error (a reply, then a reset) is still delivered;
            // the socket stays readable and the next turn reports the end.
            Err(_) if matches!(ready, Ready::Read) => return Ok(ready),
            Err(e) => return Err(e),
        }
    }
    Ok(ready)
}

/// Telnet IAC and Data Mark.
const IAC: u8 = 255;
const DM: u8 = 242;

/// Where the DM byte of the first `IAC DM` in `bytes` is, skipping doubled IACs.
fn data_mark(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == IAC {
            if bytes.get(i + 1) == Some(&DM) {
                return Some(i + 1);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    None
}

/// Tells the client `421 text`, without waiting long for a client that does not read.
async fn say_421(driver: &mut Driver<'_>, text: &str) {
    let reply = Reply::encode(421, text);
    let _ = write_within(&mut driver.to_client, &reply, Duration::from_secs(1)).await;
}

async fn write_within(
    w: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    tokio::time::timeout(limit, w.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer does not read"))?
}

impl Driver<'_> {
    async fn feed(&mut self, event: Event) -> io::Result<Flow> {
        // A reload applies to this session's decisions from now on.
        let current = self.shared.config.load_full();
        if !Arc::ptr_eq(&current, &self.rules) {
            self.session.set_rules(current.clone());
            self.rules = current;
        }
        if let Event::DataClosed { id, .. } = &event {
            self.data.remove(id);
        }
        let actions = self.session.handle(event);
        self.apply(actions).await
    }

    async fn apply(&mut self, actions: Vec<Action>) -> io::Result<Flow> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::ToClient(bytes) => {
                    write_within(&mut self.to_client, &bytes, self.write_timeout).await?
                }
                Action::ToServer(bytes) => self.write_to_server(&bytes).await?,
                Action::Open(req) => {
                    let event = match data::open(
                        self.shared,
                        self.id,
                        &req,
                        self.events.clone(),
                        self.binding,
                        self.kernel,
                    ) {
                        Some(opened) => {
                            self.data.insert(req.id, opened.cancel);
                            Event::ExpectationOpened {
                                id: req.id,
                                proxy: opened.proxy,
                                server_port: opened.server_port,
                                kernel: opened.kernel,
                            }
                        }
                        None => {
                            tracing::warn!("no free data port in the configured range");
                            Event::ExpectationFailed { id: req.id }
                        }
                    };
                    queue.extend(self.session.handle(event));
                }
                Action::Cancel(id) => {
                    if let Some(token) = self.data.remove(&id) {
                        token.cancel();
                    }
                }
                Action::Transfer { id, transfer } => {
                    let key = (self.id, id);
                    self.shared
                        .tracker
                        .update_expectation(key, |e| e.transfer = Some(transfer));
                }
                Action::Command(verb) => self.shared.metrics.command(&verb),
                Action::Rule { decision, what } => {
                    let source = decision.source();
                    self.shared
                        .metrics
                        .rule_decisions_total
                        .with_label_values(&[decision.verdict.as_str(), &source])
                        .inc();
                    if decision.log || decision.verdict == Verdict::Block {
                        tracing::info!(verdict = decision.verdict.as_str(), rule = %source, %what, "rule");
                    }
                }
                Action::LoggedIn => {
                    self.logged_in = true;
                    let state = SessionState::LoggedIn;
                    self.shared
                        .tracker
                        .update_session(self.id, |s| s.state = state);
                }
                Action::User(user) => {
                    self.shared
                        .tracker
                        .update_session(self.id, |s| s.user = Some(user));
                }
                Action::Refused { why, target } => {
                    let reason = why.as_str();
                    match (why, target) {
                        (Refusal::Malformed(m), _) => {
                            tracing::warn!(reason, detail = m.as_str(), "refused")
                        }
                        (_, Some(target)) => tracing::warn!(reason, %target, "refused"),
                        (_, None) => tracing::warn!(reason, "refused"),
                    }
                    self.shared.metrics.refusal(why);
                }
                Action::MalformedReply => self.shared.metrics.parse_error("server", "reply"),
                Action::UnknownVerb { class, passed } => {
                    self.shared.metrics.unknown_command(class, passed)
                }
                Action::Close(reason) => {
                    tracing::warn!(?reason, "closing session");
                    let limit = match reason {
                        CloseReason::ServerReplyTooLong => "server-reply",
                        CloseReason::BufferLimit => "held-output",
                    };
                    self.shared.metrics.limit(limit);
                    return Ok(Flow::Close);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Writes a line to the server; a Telnet Synch in it (`IAC DM`, before `ABOR`)
    /// goes as RFC 959 describes it, with the DM as TCP urgent data.
    async fn write_to_server(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.write_timeout;
        let Some(dm) = data_mark(bytes) else {
            return write_within(&mut self.to_server, bytes, limit).await;
        };
        let (before, after) = bytes.split_at(dm);
        write_within(&mut self.to_server, before, limit).await?;
        let urgent = socket2::SockRef::from(self.to_server.as_ref())
            .send_out_of_band(after.get(..1).unwrap_or_default());
        // A full send buffer refuses urgent data; the DM then goes inline, which
        // servers accept as well.
        let rest = match urgent {
            Ok(1) => after.get(1..).unwrap_or_default(),
            _ => after,
        };
        write_within(&mut self.to_server, rest, limit).await
    }

    /// Cancels every data connection of the session.
    fn cancel_all(&mut self) {
        for (_, token) in self.data.drain() {
            token.cancel();
        }
    }
}

/// What the relaying half of a session starts with.
struct Relay {
    params: Params,
    binding: Binding,
    /// `data-path kernel`: data connections the kernel can forward get an nftables hole.
    kernel: bool,
    /// Sessions not logged in by then are closed (slow or silent peers).
    login_deadline: tokio::time::Instant,
    /// Client lines read before the server was known (forward listener); the proxy
    /// greeted the client itself then.
    early: Vec<Frame>,
}

async fn relay_control(
    shared: &Arc<Shared>,
    id: SessionId,
    config: &Config,
    client: TcpStream,
    server: TcpStream,
    relay: Relay,
) -> io::Result<Outcome> {
    let Relay {
        params,
        binding,
        kernel,
        login_deadline,
        early,
    } = relay;
    let settings = &config.settings;
    client.set_nodelay(true)?;
    // RFC 959's Synch sends the Telnet DM as TCP urgent data; read inline, it stays in
    // place in the `IAC IP IAC DM ABOR` sequence the codec understands.
    socket2::SockRef::from(&client).set_out_of_band_inline(true)?;
    let (client_rd, to_client) = client.into_split();
    let (server_rd, to_server) = server.into_split();
    let (events, mut data_events) = mpsc::unbounded_channel();
    let mut driver = Driver {
        shared,
        id,
        session: Session::new(params),
        to_client,
        to_server,
        data: HashMap::new(),
        events,
        write_timeout: settings.idle_timeout,
        binding,
        kernel,
        logged_in: false,
        rules: Arc::default(),
    };
    let mut client_lines = LineFramer::new(settings.max_line);
    // A reply may echo the longest argument a client can send, with text of its own.
    let mut server_lines = LineFramer::new(settings.max_line + 1024);
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let login = tokio::time::sleep_until(login_deadline);
    tokio::pin!(login);
    let mut draining = false;
    let (mut client_eof, mut server_eof) = (false, false);
    if !early.is_empty() {
        driver.session.greeted_by_proxy();
    }
    for frame in early {
        if let Flow::Close = driver.feed(Event::Client(frame)).await? {
            driver.cancel_all();
            return Ok(Outcome::ProtocolError);
        }
    }
    let outcome = loop {
        // Draining (SIGTERM): a session ends as soon as it has no transfer in flight.
        if draining && driver.data.is_empty() {
            say_421(
                &mut driver,
                "Service not available: the proxy is shutting down.",
            )
            .await;
            break Outcome::Shutdown;
        }
        let mut frames = Vec::new();
        let events: Vec<Event> = tokio::select! {
            r = client_rd.readable() => {
                r?;
                match read_ready(client_rd.as_ref(), &mut client_lines, &mut frames)? {
                    Ready::Closed if frames.is_empty() => break Outcome::ClientClosed,
                    Ready::Closed => client_eof = true,
                    Ready::Read | Ready::Nothing => {}
                }
                frames.into_iter().map(Event::Client).collect()
            },
            r = server_rd.readable() => {
                r?;
                match read_ready(server_rd.as_ref(), &mut server_lines, &mut frames)? {
                    Ready::Closed if frames.is_empty() => break Outcome::ServerClosed,
                    Ready::Closed => server_eof = true,
                    Ready::Read | Ready::Nothing => {}
                }
                frames.into_iter().map(Event::Server).collect()
            },
            Some(event) = data_events.recv() => vec![event],
            // A long transfer leaves the control channel silent: idle only counts
            // while no data connection is open.
            _ = &mut idle, if driver.data.is_empty() => {
                say_421(&mut driver, "Idle timeout: closing the control connection.").await;
                break Outcome::IdleTimeout;
            }
            _ = &mut login, if !driver.logged_in => {
                say_421(&mut driver, "Login timeout: closing the control connection.").await;
                break Outcome::LoginTimeout;
            }
            _ = shared.draining.cancelled(), if !draining => {
                draining = true;
                continue;
            }
            _ = shared.shutdown.cancelled() => {
                say_421(&mut driver, "Service not available: the proxy is shutting down.").await;
                break Outcome::Shutdown;
            }
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + settings.idle_timeout);
        let mut closing = false;
        for event in events {
            if let Flow::Close = driver.feed(event).await? {
                closing = true;
                break;
            }
        }
        if closing {
            break Outcome::ProtocolError;
        }
        if client_eof {
            break Outcome::ClientClosed;
        }
        if server_eof {
            break Outcome::ServerClosed;
        }
    };
    driver.cancel_all();
    let _ = driver.to_client.shutdown().await;
    let _ = driver.to_server.shutdown().await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_mark_is_found_past_doubled_iacs_only() {
        assert_eq!(data_mark(&[IAC, 244, IAC, DM, b'A']), Some(3));
        assert_eq!(
            data_mark(&[IAC, IAC, DM, b'A']),
            None,
            "a literal 0xff, then 0xf2"
        );
        assert_eq!(data_mark(b"ABOR\r\n"), None);
        assert_eq!(data_mark(&[b'x', IAC]), None);
    }
}
