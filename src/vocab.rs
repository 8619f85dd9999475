//! The words every layer shares: data modes, address families, port ranges,
//! expectation ids, data and session outcomes, session limits and refusals. It sits at
//! the bottom of the module graph, below `rules` and `session`, so that neither has to
//! import the other for them; it holds plain values and their names, no policy.

use std::fmt;
use std::net::IpAddr;

use crate::codec::Malformed;

/// The lowest onward data port ftpgate opens (privileged ports are refused until rules
/// can allow them); the session engine and `check --test` both answer by it.
pub const MIN_DATA_PORT: u16 = 1024;

/// Identifies an expectation within its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectationId(pub u64);

/// Who opens the data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// The client connects to the proxy, the proxy to the server (`PASV`, `EPSV`).
    Passive,
    /// The server connects to the proxy, the proxy to the client (`PORT`, `EPRT`).
    Active,
}

impl DataMode {
    pub const ALL: [DataMode; 2] = [DataMode::Passive, DataMode::Active];

    pub fn as_str(self) -> &'static str {
        match self {
            DataMode::Passive => "passive",
            DataMode::Active => "active",
        }
    }
}

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// The address family of a data connection's client leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip.to_canonical() {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// Why a data connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    Completed,
    Expired,
    Failed,
    Cancelled,
}

impl DataOutcome {
    pub const ALL: [DataOutcome; 4] = [
        DataOutcome::Completed,
        DataOutcome::Expired,
        DataOutcome::Failed,
        DataOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataOutcome::Completed => "completed",
            DataOutcome::Expired => "expired",
            DataOutcome::Failed => "failed",
            DataOutcome::Cancelled => "cancelled",
        }
    }
}

/// Something refused, with the reason logs, metrics and the FTP reply derive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `PORT`/`EPRT` naming a host other than the client (RFC 2577 bounce).
    Bounce,
    /// An onward data port below the minimum.
    PrivilegedPort,
    /// A command whose argument does not parse.
    Syntax,
    /// A control line over the length limit.
    LineTooLong,
    /// `LPRT`/`LPSV`.
    NotImplemented,
    /// `PORT`/`EPRT`/`PASV` after `EPSV ALL`.
    EpsvAll,
    /// An address family the connection cannot carry.
    Family,
    /// `AUTH`: an encrypted control channel cannot be inspected.
    Auth,
    /// A `227`/`229` answer to our `PASV`/`EPSV` that does not parse.
    BadPassiveReply,
    /// No data port could be bound.
    NoDataPort,
    /// A command, login or data rule blocked it.
    Policy,
    /// The session holds `max-data-connections` data connections already.
    DataLimit,
    /// A line real servers would read differently from each other.
    Malformed(Malformed),
    /// A verb ftpgate does not know, under `set unknown-commands block`.
    UnknownCommand,
    /// A `227`/`228`/`229` that answers no `PASV`/`EPSV` ftpgate rewrote: the server's
    /// own data address, which must not reach the client.
    SpoofedReply,
    /// A data target that is one of ftpgate's own listening sockets.
    OwnSocket,
    /// An FTPS command out of turn or asking what ftpgate does not offer (`PBSZ`
    /// before `AUTH`, `PROT P`, `CCC`, a login before TLS under `tls client require`).
    Tls,
}

impl Refusal {
    pub const ALL: [Refusal; 16] = [
        Refusal::Policy,
        Refusal::DataLimit,
        Refusal::Bounce,
        Refusal::PrivilegedPort,
        Refusal::Syntax,
        Refusal::LineTooLong,
        Refusal::NotImplemented,
        Refusal::EpsvAll,
        Refusal::Family,
        Refusal::Auth,
        Refusal::BadPassiveReply,
        Refusal::NoDataPort,
        Refusal::UnknownCommand,
        Refusal::SpoofedReply,
        Refusal::OwnSocket,
        Refusal::Tls,
    ];

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Bounce => "bounce",
            Refusal::PrivilegedPort => "privileged-port",
            Refusal::Syntax => "syntax",
            Refusal::LineTooLong => "line-too-long",
            Refusal::NotImplemented => "not-implemented",
            Refusal::EpsvAll => "epsv-all",
            Refusal::Family => "family",
            Refusal::Auth => "auth",
            Refusal::BadPassiveReply => "bad-passive-reply",
            Refusal::NoDataPort => "no-data-port",
            Refusal::Policy => "policy",
            Refusal::DataLimit => "data-limit",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownCommand => "unknown-command",
            Refusal::SpoofedReply => "spoofed-reply",
            Refusal::OwnSocket => "own-socket",
            Refusal::Tls => "tls",
        }
    }
}

/// Why a new session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLimit {
    /// `max-sessions` are open.
    Total,
    /// `max-sessions-per-client` are open from this client address.
    PerClient,
    /// The address opened more than `max-accept-rate-per-client` sessions a second.
    AcceptRate,
}

impl SessionLimit {
    /// The `limit` label of `ftpgate_limits_hit_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionLimit::Total => "sessions",
            SessionLimit::PerClient => "sessions-per-client",
            SessionLimit::AcceptRate => "accept-rate",
        }
    }
}

/// How a control session ended, as logged and counted (`ftpgate_sessions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// A session rule, or the proxy's own checks, refused it before any server.
    Refused,
    /// A session limit refused it.
    Limit,
    LoginTimeout,
    /// The server did not resolve or did not answer the connect.
    UpstreamFailed,
    ClientClosed,
    ServerClosed,
    IdleTimeout,
    /// A peer broke the protocol's limits (over-long reply, too much held output).
    ProtocolError,
    IoError,
    Shutdown,
    /// The client's TLS handshake or a TLS record failed.
    TlsFailed,
}

impl SessionOutcome {
    pub const ALL: [SessionOutcome; 11] = [
        SessionOutcome::Refused,
        SessionOutcome::Limit,
        SessionOutcome::LoginTimeout,
        SessionOutcome::UpstreamFailed,
        SessionOutcome::ClientClosed,
        SessionOutcome::ServerClosed,
        SessionOutcome::IdleTimeout,
        SessionOutcome::ProtocolError,
        SessionOutcome::IoError,
        SessionOutcome::Shutdown,
        SessionOutcome::TlsFailed,
    ];

    /// The `outcome` label of `ftpgate_sessions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOutcome::Refused => "refused",
            SessionOutcome::Limit => "limit",
            SessionOutcome::LoginTimeout => "login-timeout",
            SessionOutcome::UpstreamFailed => "upstream-failed",
            SessionOutcome::ClientClosed => "client-closed",
            SessionOutcome::ServerClosed => "server-closed",
            SessionOutcome::IdleTimeout => "idle-timeout",
            SessionOutcome::ProtocolError => "protocol-error",
            SessionOutcome::IoError => "io-error",
            SessionOutcome::Shutdown => "shutdown",
            SessionOutcome::TlsFailed => "tls-failed",
        }
    }
}

/// Who forwards the data connections of a listener's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// ftpgate accepts each data connection and relays its bytes.
    #[default]
    Relay,
    /// ftpgate installs a one-shot nftables element per data connection and the
    /// kernel forwards it (`net::nft`); conversions between modes or address
    /// families still use the relay.
    Kernel,
}

/// What a session's client may do with `AUTH TLS` (`tls client` on a session pass
/// rule; RFC 4217).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTls {
    /// `AUTH` is refused with `534`: the session stays in clear text.
    #[default]
    Deny,
    /// ftpgate answers `AUTH TLS` itself and terminates TLS on the client's control
    /// connection; a client may also stay in clear text.
    Optional,
    /// As `Optional`, and no `USER`, `PASS` or `ACCT` before TLS (`530`).
    Require,
}

impl ClientTls {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTls::Deny => "deny",
            ClientTls::Optional => "optional",
            ClientTls::Require => "require",
        }
    }

    pub fn parse(word: &str) -> Option<ClientTls> {
        match word {
            "deny" => Some(ClientTls::Deny),
            "optional" => Some(ClientTls::Optional),
            "require" => Some(ClientTls::Require),
            _ => None,
        }
    }
}

/// Whether ftpgate speaks TLS to a session's server (`tls server` on a session pass
/// rule; RFC 4217, ftpgate the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTls {
    /// The server leg stays clear whatever the client does.
    #[default]
    Off,
    /// TLS to the server if and only if the client secured its own leg: the client's
    /// `AUTH TLS` is answered only once the server has taken ftpgate's.
    Match,
    /// TLS to the server before anything of the client's reaches it; a server that
    /// refuses fails the session.
    Require,
}

impl ServerTls {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTls::Off => "off",
            ServerTls::Match => "match",
            ServerTls::Require => "require",
        }
    }

    pub fn parse(word: &str) -> Option<ServerTls> {
        match word {
            "off" => Some(ServerTls::Off),
            "match" => Some(ServerTls::Match),
            "require" => Some(ServerTls::Require),
            _ => None,
        }
    }
}

/// What the server's certificate is checked against (`tls server … ca …`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Verify {
    /// The system's CA store (`ca system`, the default).
    #[default]
    System,
    /// The CA certificates of a PEM file (`ca FILE`).
    CaFile(std::path::PathBuf),
    /// No check at all (`no-verify`): only where the operator says so.
    Off,
}

/// `tls client …` and `tls server …` on a session pass rule: the session's FTPS on
/// each leg.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsPolicy {
    pub client: ClientTls,
    /// `require-reuse`: a protected data connection must resume its control
    /// connection's TLS session.
    pub require_reuse: bool,
    /// `ccc`: the client may end TLS on its control connection (`CCC`).
    pub ccc: bool,
    pub server: ServerTls,
    pub verify: Verify,
    /// `implicit`: the server leg is TLS from its first byte (port 990 servers).
    pub server_implicit: bool,
    /// The TLS client configuration `verify` builds, made when the rules load; set
    /// whenever `server` is not `Off`.
    pub connector: Option<crate::tls::Connector>,
    /// `tls passthrough ports LOW-HIGH` (transparent listeners): ftpgate forwards the
    /// client's `AUTH TLS` and, once the server takes it, relays the control
    /// connection blind and lets the client reach the server's passive ports in this
    /// range until the session ends.
    pub passthrough: Option<PortRange>,
}

/// The representation type in force for a transfer (`TYPE`): it decides only how
/// the transfer log records it; the proxy relays bytes as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferType {
    /// `TYPE A`, RFC 959's default.
    #[default]
    Ascii,
    /// `TYPE I` or `TYPE L 8`.
    Image,
}

/// HAProxy's PROXY protocol version (`send-proxy v1|v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 src dst sport dport`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

/// What kind of address a client announced in place of its own
/// (`ftpgate_active_address_substituted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Private, shared (CGNAT), link-local, loopback or unique-local: a client
    /// behind NAT naming its inside address.
    Private,
    /// Any other: a public address that is not the client's.
    Other,
}

impl AddressClass {
    pub const ALL: [AddressClass; 2] = [AddressClass::Private, AddressClass::Other];

    pub fn of(ip: std::net::IpAddr) -> AddressClass {
        let inside = match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_private()
                    || v4.is_loopback()
                    || v4.is_link_local()
                    // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
                    || (a == 100 && (64..128).contains(&b))
            }
            std::net::IpAddr::V6(v6) => {
                let [first, ..] = v6.segments();
                v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        };
        if inside {
            AddressClass::Private
        } else {
            AddressClass::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Private => "private",
            AddressClass::Other => "other",
        }
    }
}

/// Why a session's server leg failed it (`ftpgate_upstream_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The server's name did not resolve.
    Resolve,
    /// The connect failed or timed out.
    Connect,
    /// Connected, but no greeting within `greeting-timeout`.
    GreetingTimeout,
    /// A reply owed to the client did not come within `reply-timeout`.
    ReplyTimeout,
    /// The server refused ftpgate's `AUTH TLS`, or the TLS with it failed (its
    /// handshake, its certificate, a record).
    Tls,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 5] = [
        UpstreamFailure::Resolve,
        UpstreamFailure::Connect,
        UpstreamFailure::GreetingTimeout,
        UpstreamFailure::ReplyTimeout,
        UpstreamFailure::Tls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Resolve => "resolve",
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::GreetingTimeout => "greeting-timeout",
            UpstreamFailure::ReplyTimeout => "reply-timeout",
            UpstreamFailure::Tls => "tls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AddressClass;

    #[test]
    fn inside_addresses_are_private_and_the_rest_other() {
        let class = |s: &str| AddressClass::of(s.parse().unwrap());
        for inside in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "169.254.1.1",
            "127.0.0.1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.10",
        ] {
            assert_eq!(class(inside), AddressClass::Private, "{inside}");
        }
        for outside in ["198.51.100.2", "100.128.0.1", "8.8.8.8", "2001:db8::1"] {
            assert_eq!(class(outside), AddressClass::Other, "{outside}");
        }
    }
}
