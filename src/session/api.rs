//! The session engine's vocabulary with the shell: what a session starts from, the
//! events it takes and the actions it asks for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::addrs::{ClientAddr, LocalAddr, OrigDstAddr, ServerAddr};
use crate::codec::{Frame, TransferKind};
use crate::rules::Decision;
use crate::vocab::{
    DataMode, DataOutcome, DataPath, ExpectationId, Refusal, SessionLimit, SessionOutcome,
    TlsPolicy, TransferType, UpstreamFailure,
};

/// What the shell knows when a client connects, before any server is known.
#[derive(Debug, Clone)]
pub struct Start {
    /// The listener the client came in on (for rules with `on`).
    pub listener: SocketAddr,
    pub client: ClientAddr,
    /// ftpgate's own listening sockets, never a data target (invariant 4).
    pub own: Arc<OwnSockets>,
    pub origin: Origin,
    /// `tls implicit`: the shell speaks TLS with the client from its first byte.
    pub tls_implicit: bool,
    /// Behind a load balancer (`accept-proxy`): the address the client dialed, as the
    /// balancer's PROXY header says; the client believes it is connected there, so
    /// passive replies announce it and data connections must arrive for it.
    pub dialed: Option<SocketAddr>,
}

/// Where a session's server comes from, by listener mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `listen reverse`: a configured upstream, by name. `local` is the proxy's own end
    /// of the client connection.
    Upstream {
        host: String,
        port: u16,
        local: LocalAddr,
    },
    /// `listen transparent`: the intercepted connection's original destination.
    Intercepted {
        server: OrigDstAddr,
        /// Where data listeners for the client bind and active legs leave from.
        client_local: IpAddr,
    },
    /// `listen forward`: the client names the server in `USER name@host[:port]`.
    Forward { local: LocalAddr },
    /// A pool listener that routes by user: ftpgate greets the client and, at `USER`,
    /// asks the shell for the server ([`Action::Pick`]).
    Pooled { local: LocalAddr },
    /// The shell could not take the session on.
    Rejected(Rejection),
}

/// Why the shell could not take a session on; the engine says so and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Limit(SessionLimit),
    /// Transparent listener without an original destination.
    NoOriginalDst,
    /// Transparent listener reached directly: relaying would loop into the proxy.
    NotIntercepted,
    /// The connection's own addresses could not be read.
    Unreachable,
    /// A pool listener: none of the pool's servers is up.
    NoServerUp,
}

/// The addresses of one control session, all in canonical form (no IPv4-mapped IPv6).
#[derive(Debug, Clone)]
pub struct Params {
    /// The listener the client came in on (for rules with `on`).
    pub listener: SocketAddr,
    pub client: ClientAddr,
    /// The address the client believes it is connected to: the proxy's own in reverse
    /// mode, the server's in transparent mode. Announced in `227`, and where clients
    /// that ignore the `227` address (and every `EPSV` client) connect for data.
    pub client_side: SocketAddr,
    /// Where the proxy itself is on the client's side: data listeners for the client
    /// bind here and active-mode connections to the client leave from here.
    pub client_local: IpAddr,
    pub server: ServerAddr,
    /// The server's name as the rules (`upstream`) or the client (`USER name@host`)
    /// gave it: what its certificate must be valid for under `tls server`. `None` for
    /// an intercepted session, whose server is known by its address only.
    pub server_name: Option<String>,
    /// The proxy's own address on the server control connection.
    pub server_side: LocalAddr,
    /// Announced in `227` instead of the proxy's own address (proxy behind NAT).
    pub advertise: Option<IpAddr>,
    /// Onward data ports below this are refused (invariant 4).
    pub min_data_port: u16,
    /// The mode every server-side data leg uses (`server-mode` in the rules);
    /// `None` keeps the client's.
    pub server_mode: Option<DataMode>,
    /// The session's FTPS toward its client (`tls client …` in the rules).
    pub tls: TlsPolicy,
    /// The client's control connection is TLS from its first byte (`tls implicit`).
    pub tls_implicit: bool,
    /// ftpgate's own listening sockets, never a data target (invariant 4).
    pub own: Arc<OwnSockets>,
}

/// ftpgate's own listening sockets: no data connection may be sent to one (a `PORT`
/// naming the control listener would turn the server's data into a new session).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnSockets {
    /// The host's own addresses (a wildcard listener answers on each).
    pub ips: Vec<IpAddr>,
    /// The ports of the control listeners and the admin endpoint.
    pub ports: Vec<u16>,
}

impl OwnSockets {
    /// Whether `ip` reaches this host.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.ips.contains(&ip)
    }
}

/// What the shell must set up for one announced data connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationRequest {
    pub id: ExpectationId,
    pub mode: DataMode,
    /// The local address to listen on.
    pub listen_ip: IpAddr,
    /// The address the peer was told (or believes) to connect to; a data connection
    /// whose original destination is another address is refused.
    pub dst_ip: IpAddr,
    /// The only peer allowed to connect.
    pub expected_peer: IpAddr,
    /// Where the accepted connection is relayed to.
    pub onward: SocketAddr,
    /// The local address the onward leg leaves from.
    pub onward_from: IpAddr,
    /// Set when the server leg uses the other mode than the client's.
    pub conversion: Option<Conversion>,
    /// When the peer must have connected by (`data-timeout`); the engine says
    /// [`Action::Expire`] then.
    pub expires: Instant,
    /// The client's leg is TLS (`PROT P`), ftpgate the TLS server in either mode
    /// (RFC 4217); the server's leg stays clear. Only the relay can do that.
    pub client_tls: bool,
    /// With `client_tls`: its handshake must resume the control connection's session.
    pub tls_require_reuse: bool,
    /// The server's leg is TLS (ftpgate's `PROT P` to a server under `tls server`),
    /// ftpgate the TLS client in either mode, resuming the control connection's
    /// session. Only the relay can do that.
    pub server_tls: bool,
}

/// How the server leg differs from the client's mode (`server-mode` in the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Client active, server passive: the proxy dials both legs. `mode` is `Active`,
    /// `onward` the client; instead of accepting the server's connection the proxy
    /// dials the server's announced passive port.
    DialServer { server: SocketAddr, from: IpAddr },
    /// Client passive, server active: both peers dial the proxy. `mode` is `Passive`
    /// and the client is accepted as usual; instead of dialing the server the proxy
    /// accepts it on a second port of `listen_ip`, announced to it with `PORT`/`EPRT`.
    AcceptServer {
        listen_ip: IpAddr,
        expected_peer: IpAddr,
    },
}

/// Input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(Frame),
    Server(Frame),
    ExpectationOpened {
        id: ExpectationId,
        proxy: SocketAddr,
        /// The second port, for [`Conversion::AcceptServer`].
        server_port: Option<u16>,
        /// Who forwards the connection. With [`DataPath::Kernel`] no
        /// [`Event::DataConnected`] or [`Event::DataDrained`] will come.
        path: DataPath,
    },
    ExpectationFailed {
        id: ExpectationId,
    },
    DataConnected {
        id: ExpectationId,
    },
    /// The direction that carried the transfer has ended and all its bytes were
    /// delivered; the other direction may still be open.
    DataDrained {
        id: ExpectationId,
    },
    DataClosed {
        id: ExpectationId,
        outcome: DataOutcome,
    },
    /// The answer to [`Action::Resolve`]: the server's address, if the name resolved.
    Resolved(Option<ServerAddr>),
    /// The answer to [`Action::Connect`]: the proxy's own end of the server leg.
    Connected {
        server_side: LocalAddr,
    },
    ConnectFailed,
    /// The client closed its side of the control connection.
    ClientClosed,
    ServerClosed,
    /// The TLS the client started after [`Action::SecureClient`] failed (its
    /// handshake, or a record); nothing can be said to it any more.
    ClientTlsFailed,
    /// The TLS with the server after [`Action::SecureServer`] failed (its handshake,
    /// the server's certificate, or a record).
    ServerTlsFailed,
    /// SIGTERM: end once no transfer is in flight.
    Drain,
    /// The drain time is over: end now.
    Shutdown,
}

/// Why the session ends; every reason but the driver's own I/O errors comes from the
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A rule or the proxy's own checks refused the session before any server.
    Refused,
    /// A session limit refused it.
    Limit(SessionLimit),
    LoginTimeout,
    IdleTimeout,
    /// The server did not resolve, could not be connected, or fell silent while it
    /// owed the client a reply.
    UpstreamFailed(UpstreamFailure),
    ClientClosed,
    ServerClosed,
    /// SIGTERM: no transfer is left, or the drain time is over.
    Shutdown,
    /// The server sent a line or reply over the limits.
    ServerReplyTooLong,
    /// A peer made the engine hold more output than it may (a flood of replies behind
    /// a transfer, or of refused commands behind a slow server).
    BufferLimit,
    /// The client's TLS failed ([`Event::ClientTlsFailed`]).
    TlsFailed,
}

impl CloseReason {
    /// The `outcome` label of `ftpgate_sessions_total`.
    pub fn outcome(self) -> SessionOutcome {
        match self {
            CloseReason::Refused => SessionOutcome::Refused,
            CloseReason::Limit(_) => SessionOutcome::Limit,
            CloseReason::LoginTimeout => SessionOutcome::LoginTimeout,
            CloseReason::IdleTimeout => SessionOutcome::IdleTimeout,
            CloseReason::UpstreamFailed(_) => SessionOutcome::UpstreamFailed,
            CloseReason::ClientClosed => SessionOutcome::ClientClosed,
            CloseReason::ServerClosed => SessionOutcome::ServerClosed,
            CloseReason::Shutdown => SessionOutcome::Shutdown,
            CloseReason::ServerReplyTooLong | CloseReason::BufferLimit => {
                SessionOutcome::ProtocolError
            }
            CloseReason::TlsFailed => SessionOutcome::TlsFailed,
        }
    }

    /// The `limit` label of `ftpgate_limits_hit_total`, when a limit was hit.
    pub fn limit(self) -> Option<&'static str> {
        match self {
            CloseReason::Limit(limit) => Some(limit.as_str()),
            CloseReason::ServerReplyTooLong => Some("server-reply"),
            CloseReason::BufferLimit => Some("held-output"),
            _ => None,
        }
    }
}

/// Output of the state machine, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ToClient(Vec<u8>),
    ToServer(Vec<u8>),
    Open(ExpectationRequest),
    /// Release the expectation and tear down its data connection, if any.
    Cancel(ExpectationId),
    /// The server reported the transfer over this kernel-forwarded expectation
    /// complete (`226`/`250`), so its one connection was made: release it as
    /// [`Action::Cancel`] does, without asking the kernel whether the connection came.
    /// [`Event::DataClosed`] follows.
    Finished(ExpectationId),
    /// A transfer command now uses this expectation.
    Transfer {
        id: ExpectationId,
        transfer: Transfer,
    },
    /// A client command was seen (verb upper-cased), for accounting.
    Command(String),
    /// The client named its user (`USER`), for the session table.
    User(String),
    /// The server accepted a login (`230`).
    LoggedIn,
    /// A command or login rule matched (`what` names the verb or the user).
    Rule {
        decision: Decision,
        what: String,
    },
    /// `set active-address substitute`: a `PORT`/`EPRT` named another address than
    /// the client's, of `class`; the client's own is dialed instead.
    ActiveSubstituted {
        class: crate::vocab::AddressClass,
    },
    /// Something was refused; `target` is the data address it named, if any.
    Refused {
        why: Refusal,
        target: Option<SocketAddr>,
    },
    /// A line from the server that is no reply at all; forwarded, counted.
    MalformedReply,
    /// A verb ftpgate does not know (`class` from [`codec::verb_class`]), and whether
    /// `set unknown-commands` let it through.
    UnknownVerb {
        class: &'static str,
        passed: bool,
    },
    /// Pick the server of a pool that routes by user for `user` (or, after `HOST`,
    /// for `host`), and look it up; answered by [`Event::Resolved`] (`None`: no
    /// server is up).
    Pick {
        user: Option<String>,
        /// The name the client gave with `HOST`, before any `USER`.
        host: Option<String>,
    },
    /// Look up the server's name (reverse listener, or forward `USER name@host`);
    /// answered by [`Event::Resolved`].
    Resolve {
        host: String,
        port: u16,
    },
    /// Connect the server leg; answered by [`Event::Connected`] or
    /// [`Event::ConnectFailed`].
    Connect {
        server: ServerAddr,
    },
    /// The server did not greet: the session tries a fresh connection (a
    /// [`Action::Connect`] follows), counted by reason.
    UpstreamRetry(UpstreamFailure),
    /// The expectation's time is up: stop waiting for its peer (or close its kernel
    /// hole); a connection already made is not touched. [`Event::DataClosed`] follows.
    Expire(ExpectationId),
    /// Start TLS on the client's control connection, ftpgate the server: what was
    /// queued before (the `234`) leaves in clear, everything after through TLS, and
    /// every later client byte is TLS. Client bytes already read past the `AUTH` line
    /// are clear text where TLS must be: the shell closes the session, as it does when
    /// the handshake fails.
    SecureClient,
    /// End TLS on the client's control connection (`CCC`): what was queued before
    /// (the `200`) leaves through TLS, then TLS's close; output after it is clear, and
    /// so are the client's bytes after its own TLS close.
    ClearClient,
    /// Start TLS on the server's control connection, ftpgate the client, checking the
    /// server's certificate with `connector` against `name`: what was queued before
    /// (the `AUTH TLS`) leaves in clear, everything after through TLS. Failure is
    /// answered by [`Event::ServerTlsFailed`].
    SecureServer {
        connector: crate::tls::Connector,
        name: String,
        /// The client is starting its own TLS with ftpgate, and the server is known
        /// by its address only (a transparent listener): the name to check is the
        /// one the client asks ftpgate for (its SNI) when it asks for one, so the
        /// server's TLS waits for the client's hello.
        name_from_client: bool,
    },
    /// The server took the client's `AUTH TLS` under `tls passthrough`: what was
    /// queued (the server's `234`) goes out, then the control connection is relayed
    /// blind both ways, and the client may reach the server's passive `ports` until
    /// the session ends. The engine hears nothing more of the session's bytes; only
    /// [`Event::ClientClosed`], [`Event::ServerClosed`] and [`Event::Shutdown`] end it.
    PassThrough {
        ports: crate::vocab::PortRange,
    },
    /// Write what is queued, then close both control connections and cancel every data
    /// connection of the session. The engine ignores every later event.
    Close(CloseReason),
}

/// What a transfer command asked for, for the session table and the transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub kind: TransferKind,
    /// The path argument as the client sent it (lossy UTF-8, bounded), may be empty.
    pub path: String,
    /// The `TYPE` in force.
    pub transfer_type: TransferType,
    /// The user the client named, if any.
    pub user: Option<String>,
}
