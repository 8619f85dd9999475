//! The rule file: what the operator writes, compiled into an immutable [`Config`] and
//! evaluated as pure functions.
//!
//! Parsing lives in `parse`; this module holds the compiled form and the decisions. It
//! never touches a socket or the clock: the shell asks, the rules answer.

mod explain;
mod parse;
mod settings;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::codec::TransferKind;
pub use crate::vocab::{
    ClientTls, DataMode, DataPath, Family, PortRange, ServerTls, TlsPolicy, Verify,
};

pub use explain::{Trial, explain, parse_trial, run_trial};
pub use parse::{parse_file, parse_str, read_token};

/// Where a rule was written, carried into logs and metrics with every decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A rule file that does not parse or does not make sense, located at `file:line:col`.
///
/// `Display` is the one-line form for logs; [`RuleError::with_caret`] adds the line and
/// a caret under the offending token, for a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The offending line (empty when the error is about the file as a whole).
    pub source_line: String,
    /// How many characters the caret underlines (at least one).
    pub width: usize,
    /// The errors found after this one, in file order (empty in each of them).
    pub more: Vec<RuleError>,
}

impl RuleError {
    /// Every error, each followed by the offending line with `^` under the token it is
    /// about.
    pub fn with_caret(&self) -> String {
        std::iter::once(self)
            .chain(&self.more)
            .map(RuleError::one_with_caret)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn one_with_caret(&self) -> String {
        let head = self.one_line();
        if self.source_line.trim().is_empty() {
            return head;
        }
        let pad = " ".repeat(self.col.saturating_sub(1));
        let carets = "^".repeat(self.width.max(1));
        format!("{head}\n    {}\n    {pad}{carets}", self.source_line)
    }

    fn one_line(&self) -> String {
        format!("{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// `file:line:col: message`, one line per error (a reload logs them so).
impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())?;
        for more in &self.more {
            write!(f, "\n{}", more.one_line())?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleError {}

/// Ports and port ranges: `21`, `2100-2199` or `{ 21, 2121 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet(pub Vec<PortRange>);

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let items: Vec<String> = many.iter().map(PortRange::to_string).collect();
                write!(f, "{{ {} }}", items.join(", "))
            }
        }
    }
}

/// The FTP server a reverse listener forwards to; the host is resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `send-proxy v1|v2`: a PROXY protocol header ahead of each control connection.
    pub send_proxy: Option<crate::vocab::ProxyVersion>,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How a listener finds the server for each client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenMode {
    /// Every session goes to one fixed server.
    Reverse { upstream: Upstream },
    /// Sessions go to the server the client dialled, intercepted by the firewall.
    Transparent(Interception),
    /// The client names the server when it logs in, `USER name@host[:port]`; the
    /// proxy greets it, resolves the host and applies the session rules to it.
    Forward,
    /// Every session goes to one server of a `pool`, as its balance picks.
    Pool { pool: String },
}

/// `pool NAME { HOST:PORT, … } …`: servers that share a reverse listener's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Upstream>,
    pub balance: Balance,
    /// `check interval D fall N rise N`: active health checks (a connect and a `220`).
    pub check: Option<Check>,
    /// `users WORDS`: the users (names or patterns) whose sessions this pool takes, on
    /// any pool listener; ftpgate then greets clients itself and picks after `USER`.
    pub users: Vec<String>,
    /// `hosts WORDS`: the host names (or patterns) a client may name with `HOST`
    /// (RFC 7151) to reach this pool, on any pool listener.
    pub hosts: Vec<String>,
    /// `send-proxy v1|v2`: a PROXY header ahead of each control connection to its
    /// servers.
    pub send_proxy: Option<crate::vocab::ProxyVersion>,
    pub origin: Origin,
}

impl Pool {
    pub fn takes_user(&self, user: &str) -> bool {
        self.users
            .iter()
            .any(|p| wildmatch::WildMatch::new(p).matches(user))
    }

    /// Host names are compared without case, as DNS does.
    pub fn takes_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|p| wildmatch::WildMatch::new(&p.to_ascii_lowercase()).matches(&host))
    }
}

impl Config {
    /// Whether a session of pool listener `pool` is routed by what the client says
    /// first: the pool's balance is `sticky-user`, or some pool takes users or hosts by
    /// name. Such sessions are greeted by ftpgate and connected only at `USER` (or
    /// `HOST`).
    pub fn routes_by_user(&self, pool: &str) -> bool {
        let sticky = self
            .pool(pool)
            .is_some_and(|p| p.balance == Balance::StickyUser);
        sticky
            || self
                .pools
                .iter()
                .any(|p| !p.users.is_empty() || !p.hosts.is_empty())
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pool for a client of a listener of pool `default` that named `host` (with
    /// `HOST`) or logs in as `user`: the first pool that takes the host, else the first
    /// that takes the user, else `default`.
    pub fn pool_for(&self, default: &str, user: Option<&str>, host: Option<&str>) -> Option<&Pool> {
        let by_host = host.and_then(|h| self.pools.iter().find(|p| p.takes_host(h)));
        let by_user = || user.and_then(|u| self.pools.iter().find(|p| p.takes_user(u)));
        by_host.or_else(by_user).or_else(|| self.pool(default))
    }
}

/// How a pool picks a server for a new session, among those up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn (the default).
    RoundRobin,
    /// The one with the fewest sessions now.
    LeastSessions,
    /// The same server for the same client address while the set of servers up stays
    /// the same (rendezvous hashing: a server going down moves only its clients).
    StickyClient,
    /// The same for the same user name: ftpgate greets the client and picks after
    /// `USER`.
    StickyUser,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastSessions => "least-sessions",
            Balance::StickyClient => "sticky-client",
            Balance::StickyUser => "sticky-user",
        }
    }
}

/// A pool's active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub interval: Duration,
    /// Failed checks (or connects of sessions) in a row that take a server out.
    pub fall: u32,
    /// Passed checks in a row that bring it back.
    pub rise: u32,
}

/// How the firewall hands a transparent listener its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interception {
    /// nftables REDIRECT: the original destination comes from `SO_ORIGINAL_DST`.
    Redirect,
    /// TPROXY (`tproxy`): the accepted socket's local address is the original
    /// destination; the proxy's own legs leave from `source`.
    Tproxy { source: Source },
}

impl Interception {
    pub fn is_tproxy(self) -> bool {
        matches!(self, Interception::Tproxy { .. })
    }
}

/// Which address the proxy's outgoing legs of a TPROXY session leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The proxy's own address.
    Proxy,
    /// `preserve-source`: the peer's, so the server sees the client's address and the
    /// client sees active-mode data come from the server's address.
    Peer,
}

/// One `listen` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub mode: ListenMode,
    pub data_path: DataPath,
    /// `tls implicit`: TLS from the first byte (FTPS on port 990), before the greeting.
    pub tls_implicit: bool,
    /// `accept-proxy from ADDRS`: behind a load balancer, every connection (control,
    /// and the client's passive data connections) starts with a PROXY protocol header
    /// from one of these addresses, naming the real client.
    pub accept_proxy: Option<AddrMatch>,
    pub origin: Origin,
}

/// What happens to a command whose verb ftpgate does not know
/// (`set unknown-commands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCommands {
    /// Forwarded to the server (command rules still apply).
    Pass,
    /// Answered `500` by ftpgate; the server never sees it. The default: a server may
    /// take a verb ftpgate does not know for a data-connection command.
    Block,
}

impl UnknownCommands {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownCommands::Pass => "pass",
            UnknownCommands::Block => "block",
        }
    }
}

/// Global settings (`set NAME VALUE`), with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long an expectation waits for its peer.
    pub data_timeout: Duration,
    /// How long a control session may stay silent in both directions.
    pub idle_timeout: Duration,
    /// How long connecting to a server or an active-mode client may take.
    pub connect_timeout: Duration,
    /// The ports the proxy listens on for data connections.
    pub data_ports: PortRange,
    /// Longest control line, terminator included.
    pub max_line: usize,
    /// The address announced in `227` replies instead of the proxy's own (NAT).
    pub advertise: Option<IpAddr>,
    /// Where to append an xferlog line per finished transfer.
    pub xferlog: Option<PathBuf>,
    /// Control sessions open at once, in all.
    pub max_sessions: usize,
    /// Control sessions open at once from one client address.
    pub max_sessions_per_client: usize,
    /// New sessions a second from one client address (bursts of twice as many).
    pub max_accept_rate_per_client: u32,
    /// Data connections (announced or transferring) one session may hold at once.
    pub max_data_connections: usize,
    /// How long a session may take from accept to a successful login.
    pub login_timeout: Duration,
    /// How long a connected server may take to greet before the proxy connects
    /// again (once) or gives up with `421`.
    pub greeting_timeout: Duration,
    /// How long a server may stay silent while it owes the client a reply and no
    /// data connection is open.
    pub reply_timeout: Duration,
    /// How long a data connection may move no byte in either direction.
    pub data_idle_timeout: Duration,
    /// On SIGTERM, how long transfers in flight may take to finish.
    pub drain_timeout: Duration,
    /// Whether commands with a verb ftpgate does not know reach the server.
    pub unknown_commands: UnknownCommands,
    /// What a `PORT`/`EPRT` naming another address than the client's gets.
    pub active_address: ActiveAddress,
}

/// What ftpgate does with a `PORT`/`EPRT` whose address is not the client's own
/// (`set active-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveAddress {
    /// Refused with `504` (a bounce, or a client behind NAT announcing its private
    /// address). The default.
    Strict,
    /// The address is ignored and the client's own (its control connection's peer,
    /// the NAT's outside address) is dialed at the announced port: clients behind NAT
    /// work in active mode where the NAT forwards that port. Never a third host.
    Substitute,
}

impl ActiveAddress {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveAddress::Strict => "strict",
            ActiveAddress::Substitute => "substitute",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            connect_timeout: Duration::from_secs(10),
            data_ports: PortRange {
                lo: 40000,
                hi: 40999,
            },
            max_line: 3072,
            advertise: None,
            xferlog: None,
            max_sessions: 4096,
            max_sessions_per_client: 32,
            max_data_connections: 2,
            max_accept_rate_per_client: 100,
            login_timeout: Duration::from_secs(60),
            greeting_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
            data_idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(20),
            unknown_commands: UnknownCommands::Block,
            active_address: ActiveAddress::Strict,
        }
    }
}

/// What a rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Block => "block",
        }
    }
}

/// The reply a `block return-code N "text"` rule gives instead of the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnCode {
    pub code: u16,
    pub text: Option<String>,
}

/// A set of prefixes: an address, a prefix, a `<table>`, a `{ list }` of them, or
/// the negation (`!`) of one of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSet {
    /// As written (after `from`/`to`), for `check --explain`.
    pub label: String,
    pub negated: bool,
    pub nets: Vec<IpNet>,
}

/// `any` or a set of prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrMatch {
    Any,
    Set(Arc<AddrSet>),
}

impl AddrMatch {
    pub fn matches(&self, ip: IpAddr) -> bool {
        match self {
            AddrMatch::Any => true,
            AddrMatch::Set(set) => set.nets.iter().any(|n| n.contains(&ip)) != set.negated,
        }
    }
}

impl fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrMatch::Any => f.write_str("any"),
            AddrMatch::Set(set) => f.write_str(&set.label),
        }
    }
}

/// What a data rule matches; every field left out matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataMatch {
    /// The client's mode (`active`: PORT/EPRT, `passive`: PASV/EPSV).
    pub mode: Option<DataMode>,
    /// The family of the client's data connection.
    pub family: Option<Family>,
    /// The onward port: the server's announced port (passive) or the client's (active).
    pub ports: Option<PortSet>,
    /// What the transfer does, from the verb that uses the connection; empty: any.
    pub directions: Vec<TransferKind>,
}

/// One data connection as a data rule sees it. `direction` is `None` while it is only
/// announced (`PASV`, `PORT`), before a transfer verb uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRequest {
    pub mode: DataMode,
    pub family: Family,
    pub port: u16,
    pub direction: Option<TransferKind>,
}

impl DataMatch {
    fn matches(&self, d: &DataRequest, direction: TransferKind) -> bool {
        self.mode.is_none_or(|m| m == d.mode)
            && self.family.is_none_or(|f| f == d.family)
            && self.ports.as_ref().is_none_or(|p| p.contains(d.port))
            && (self.directions.is_empty() || self.directions.contains(&direction))
    }
}

impl fmt::Display for DataMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("data")?;
        if let Some(m) = self.mode {
            write!(f, " {}", m.as_str())?;
        }
        if let Some(fam) = self.family {
            write!(f, " {}", fam.as_str())?;
        }
        if let Some(p) = &self.ports {
            write!(f, " ports {p}")?;
        }
        match self.directions.as_slice() {
            [] => Ok(()),
            [one] => write!(f, " {}", one.as_str()),
            many => {
                let names: Vec<&str> = many.iter().map(|d| d.as_str()).collect();
                write!(f, " {{ {} }}", names.join(", "))
            }
        }
    }
}

/// What a rule decides about, besides the addresses it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Whether the control session may exist at all.
    Session,
    /// Client commands with one of these verbs (upper-case; `SITE CHMOD` names a
    /// `SITE` sub-command); a blocked one is answered `550` by the proxy and never
    /// reaches the server.
    Commands(Vec<String>),
    /// Logins whose user name matches one of these patterns (`*` and `?` wildcards);
    /// a blocked `USER` is answered `530` and never reaches the server.
    Users(Vec<String>),
    /// Data connections; a blocked one is answered `425` and never opened.
    Data(DataMatch),
}

/// Who a decision is about: the listener the client came in on, the client's address
/// and the server's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub listener: SocketAddr,
    pub client: IpAddr,
    pub server: SocketAddr,
}

impl Parties {
    pub fn new(listener: SocketAddr, client: IpAddr, server: SocketAddr) -> Self {
        Parties {
            listener,
            client: client.to_canonical(),
            server: SocketAddr::new(server.ip().to_canonical(), server.port()),
        }
    }
}

/// A `pass`/`block` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRule {
    pub verdict: Verdict,
    pub log: bool,
    /// `on`: only sessions that came in on this listener.
    pub on: Option<SocketAddr>,
    pub from: AddrMatch,
    pub to: AddrMatch,
    pub port: Option<PortSet>,
    pub subject: Subject,
    /// `block return-code`: the reply instead of the decision point's default.
    pub reply: Option<ReturnCode>,
    /// `server-mode` (session pass rules): the mode the server leg of every data
    /// connection uses, whatever the client's; `None` keeps the client's.
    pub server_mode: Option<DataMode>,
    /// `tls client …` (session pass rules): the session's FTPS toward its client.
    pub tls: TlsPolicy,
    pub origin: Origin,
}

impl SessionRule {
    fn matches(&self, p: &Parties) -> bool {
        self.on.is_none_or(|l| l == p.listener)
            && self.from.matches(p.client)
            && self.to.matches(p.server.ip())
            && self
                .port
                .as_ref()
                .is_none_or(|r| r.contains(p.server.port()))
    }

    fn decision(&self) -> Decision {
        Decision {
            verdict: self.verdict,
            log: self.log,
            rule: Some(self.origin.clone()),
            reply: self.reply.clone(),
            server_mode: self.server_mode,
            tls: self.tls.clone(),
        }
    }
}

/// The outcome of evaluating rules: the verdict and the rule that gave it (`None` when
/// no rule matched and the default applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub log: bool,
    pub rule: Option<Origin>,
    /// The reply to a blocked request, when the rule chose one.
    pub reply: Option<ReturnCode>,
    /// The server leg's data mode the session must use (`server-mode`).
    pub server_mode: Option<DataMode>,
    /// The session's FTPS toward its client (`tls client …`).
    pub tls: TlsPolicy,
}

impl Decision {
    /// Where the decision came from, for logs: `file:line` or `default`.
    pub fn source(&self) -> String {
        self.rule
            .as_ref()
            .map_or_else(|| "default".to_string(), Origin::to_string)
    }

    /// The code and text to refuse with: the rule's, or the decision point's default.
    pub fn refusal(&self, code: u16, text: &str) -> (u16, String) {
        match &self.reply {
            Some(r) => (r.code, r.text.clone().unwrap_or_else(|| text.to_string())),
            None => (code, text.to_string()),
        }
    }
}

/// A named set of prefixes (`table <name> { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub nets: Vec<IpNet>,
    pub origin: Origin,
}

/// Certificates that expire sooner than this are warned about.
const CERT_WARN_DAYS: i64 = 30;

/// A compiled, validated rule file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub settings: Settings,
    pub session_rules: Vec<SessionRule>,
    pub tables: Vec<Table>,
    pub metrics_listen: Option<SocketAddr>,
    /// Who may read what on the admin endpoint.
    pub admin: Admin,
    /// What the parser found valid but suspicious, `file:line:col: warning: …`.
    pub parse_warnings: Vec<String>,
    /// Where each `set` that is in force was stated.
    pub set_at: std::collections::BTreeMap<String, Origin>,
    /// `tls cert FILE key FILE`, in order.
    pub tls_certs: Vec<TlsCert>,
    /// What FTPS clients are presented, built from `tls_certs`.
    pub tls: Option<crate::tls::Server>,
    /// `tls intercept ca FILE key FILE`.
    pub tls_intercept: Option<TlsIntercept>,
    /// `pool` statements.
    pub pools: Vec<Pool>,
}

/// `tls intercept ca FILE key FILE`: the operator's CA, which signs the certificates
/// ftpgate presents to the FTPS clients of transparent listeners, one per server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIntercept {
    pub ca: PathBuf,
    pub key: PathBuf,
    pub interceptor: crate::tls::Interceptor,
    /// When the CA certificate expires, in Unix seconds.
    pub not_after: Option<i64>,
    pub origin: Origin,
}

/// `tls cert FILE key FILE`: a certificate chain and key ftpgate presents to FTPS
/// clients, as read (and checked to belong together) when the rules were loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The two, loaded and checked to belong together.
    pub certified: crate::tls::Certified,
    /// When the leaf certificate expires, in Unix seconds.
    pub not_after: Option<i64>,
    pub origin: Origin,
}

/// Does the nftables ruleset `text` (deploy/nftables/*.nft) hand control connections
/// to a port this rule file listens on? The port is the one value both files hold:
/// the ruleset's `define ftpgate_port = N` and a `listen transparent ADDR:N` line.
pub fn agrees_with_ruleset(config: &Config, text: &str) -> Result<(), String> {
    let port = text
        .lines()
        .filter_map(|l| l.split('#').next())
        .find_map(|l| {
            let rest = l.trim().strip_prefix("define")?.trim_start();
            let value = rest
                .strip_prefix("ftpgate_port")?
                .trim_start()
                .strip_prefix('=')?;
            value.trim().parse::<u16>().ok()
        })
        .ok_or("no `define ftpgate_port = PORT` line")?;
    let transparent: Vec<&Listener> = config
        .listeners
        .iter()
        .filter(|l| matches!(l.mode, ListenMode::Transparent(_)))
        .collect();
    if transparent.iter().any(|l| l.addr.port() == port) {
        return Ok(());
    }
    let have = transparent
        .iter()
        .map(|l| format!("{} ({})", l.addr, l.origin))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "ftpgate_port is {port}, but no `listen transparent` line listens on it{}",
        if have.is_empty() {
            " (there is none)".to_string()
        } else {
            format!(": {have}")
        }
    ))
}

/// Can the transfer log at `path` be opened for appending (created if missing)?
fn writable(path: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    let target = if path.exists() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        }
    };
    access(&target, AccessFlags::W_OK)
        .map_err(|e| format!("{} is not writable: {}", target.display(), e.desc()))
}

/// The options of `metrics listen`.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// `/sessions` is served (`sessions off` turns it off).
    pub sessions: bool,
    /// Only these peers are answered at all (`allow ADDRS`).
    pub allow: Option<AddrMatch>,
    /// `/sessions` needs `Authorization: Bearer` with this token (`token-file PATH`).
    pub token: Option<String>,
    /// Where `metrics listen` is stated.
    pub origin: Option<Origin>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            sessions: true,
            allow: None,
            token: None,
            origin: None,
        }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log line or a panic message.
        f.debug_struct("Admin")
            .field("sessions", &self.sessions)
            .field("allow", &self.allow)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("origin", &self.origin)
            .finish()
    }
}

impl Admin {
    /// May `peer` use the endpoint at all?
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|a| a.matches(peer.to_canonical()))
    }

    /// Protected: an allow-list, or `/sessions` off or behind a token.
    pub fn protected(&self) -> bool {
        self.allow.is_some() || !self.sessions || self.token.is_some()
    }
}

impl Config {
    /// What is valid but probably not meant, each as `file:line: warning: …`, for
    /// `ftpgate check` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.parse_warnings.clone();
        for rule in &self.session_rules {
            // No let-chains: the MSRV (1.85, Debian 13's rustc) predates them.
            let stray = rule
                .on
                .filter(|on| !self.listeners.iter().any(|l| l.addr == *on));
            if let Some(on) = stray {
                out.push(format!(
                    "{}: warning: `on {on}` names no listener: this rule never matches",
                    rule.origin
                ));
            }
        }
        if !self
            .session_rules
            .iter()
            .any(|r| r.verdict == Verdict::Pass && r.subject == Subject::Session)
        {
            let at = self
                .listeners
                .first()
                .map_or_else(|| "?".to_string(), |l| l.origin.to_string());
            out.push(format!(
                "{at}: warning: no `pass` rule for sessions: every session is refused"
            ));
        }
        for l in &self.listeners {
            let own = match &l.mode {
                ListenMode::Reverse { upstream } if self.is_own_listener(upstream) => {
                    Some(upstream)
                }
                _ => None,
            };
            if let Some(upstream) = own {
                out.push(format!(
                    "{}: warning: upstream {upstream} is ftpgate's own listener: each \
                     session would connect to ftpgate again, until the per-client limit",
                    l.origin
                ));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(i) = &self.tls_intercept {
            if i.not_after
                .is_some_and(|end| end <= now + CERT_WARN_DAYS * 86_400)
            {
                out.push(format!(
                    "{}: warning: the interception CA {} expires within {CERT_WARN_DAYS} days \
                     (or has): the certificates it issues will not be trusted",
                    i.origin,
                    i.ca.display()
                ));
            }
        }
        for cert in &self.tls_certs {
            let Some(end) = cert.not_after else { continue };
            let days = (end - now).div_euclid(86_400);
            if end <= now {
                out.push(format!(
                    "{}: warning: the certificate {} has expired: clients that check it \
                     refuse TLS",
                    cert.origin,
                    cert.cert.display()
                ));
            } else if days < CERT_WARN_DAYS {
                out.push(format!(
                    "{}: warning: the certificate {} expires in {days} days",
                    cert.origin,
                    cert.cert.display()
                ));
            }
        }
        let unwritable = self
            .settings
            .xferlog
            .as_ref()
            .and_then(|path| writable(path).err().map(|why| (path, why)));
        if let Some((path, why)) = unwritable {
            out.push(format!(
                "{}: warning: set xferlog {}: {why} (for the user this check runs as)",
                self.setting_origin("xferlog"),
                path.display()
            ));
        }
        let exposed = match (self.metrics_listen, &self.admin.origin) {
            (Some(addr), Some(origin)) if !addr.ip().is_loopback() && !self.admin.protected() => {
                Some((addr, origin))
            }
            _ => None,
        };
        if let Some((addr, origin)) = exposed {
            out.push(format!(
                "{origin}: warning: the admin endpoint on {addr} is reachable beyond this \
                 host and unprotected: /sessions shows client and server addresses, user \
                 names and file names to anyone who can connect; add `allow ADDRS`, \
                 `token-file PATH` or `sessions off`"
            ));
        }
        out
    }

    /// Does `upstream` name one of ftpgate's listeners (by address, or a wildcard
    /// listener's port on loopback)?
    fn is_own_listener(&self, upstream: &Upstream) -> bool {
        let host = upstream.host.trim_start_matches('[').trim_end_matches(']');
        let ip: Option<IpAddr> = match host {
            "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            other => other.parse().ok(),
        };
        let Some(ip) = ip else {
            return false;
        };
        self.listeners.iter().any(|l| {
            l.addr.port() == upstream.port
                && (l.addr.ip() == ip || (l.addr.ip().is_unspecified() && ip.is_loopback()))
        })
    }

    /// Where a setting is stated, for warnings about it.
    fn setting_origin(&self, name: &str) -> String {
        self.set_at
            .get(name)
            .map_or_else(|| "?".to_string(), Origin::to_string)
    }

    /// Reads and compiles a rule file and the files it includes.
    pub fn load(path: &Path) -> Result<Config, RuleError> {
        parse::parse_file(path)
    }

    fn rules_for<'a>(&'a self, p: &'a Parties) -> impl Iterator<Item = &'a SessionRule> + 'a {
        self.session_rules.iter().filter(move |r| r.matches(p))
    }

    /// May `client` open a control session to `server`? First match wins; a session
    /// nothing passes is blocked.
    pub fn session_decision(&self, p: &Parties) -> Decision {
        self.rules_for(p)
            .find(|r| r.subject == Subject::Session)
            .map_or(
                Decision {
                    verdict: Verdict::Block,
                    log: true,
                    rule: None,
                    reply: None,
                    server_mode: None,
                    tls: TlsPolicy::default(),
                },
                SessionRule::decision,
            )
    }

    /// The first command rule for `verb` (and, for `SITE`, `SITE <sub>`) in this
    /// session; `None` (the command passes) when no rule names it.
    pub fn command_decision(
        &self,
        p: &Parties,
        verb: &str,
        site: Option<&str>,
    ) -> Option<Decision> {
        let site = site.map(|s| format!("SITE {}", s.to_ascii_uppercase()));
        self.rules_for(p)
            .find(|r| match &r.subject {
                Subject::Commands(verbs) => verbs
                    .iter()
                    .any(|v| v == verb || site.as_deref() == Some(v.as_str())),
                _ => false,
            })
            .map(SessionRule::decision)
    }

    /// The first login rule matching `user` in this session; `None` (the login goes to
    /// the server) when no rule matches.
    pub fn login_decision(&self, p: &Parties, user: &str) -> Option<Decision> {
        self.rules_for(p)
            .find(|r| match &r.subject {
                Subject::Users(patterns) => patterns
                    .iter()
                    .any(|p| wildmatch::WildMatch::new(p).matches(user)),
                _ => false,
            })
            .map(SessionRule::decision)
    }

    /// The first data rule matching `data`; `None` (the connection passes) when none
    /// does. An announced connection (no direction yet) is blocked only when it would
    /// be blocked whatever verb then used it, so a later `download`-only rule still
    /// gets its say at the verb.
    pub fn data_decision(&self, p: &Parties, data: &DataRequest) -> Option<Decision> {
        let decide = |direction: TransferKind| {
            self.rules_for(p)
                .find(|r| matches!(&r.subject, Subject::Data(m) if m.matches(data, direction)))
                .map(SessionRule::decision)
        };
        match data.direction {
            Some(direction) => decide(direction),
            None => {
                // Refused only if every direction is, with the first direction's rule;
                // the first direction that may pass settles it.
                let mut first = None;
                for direction in TransferKind::ALL {
                    match decide(direction) {
                        Some(d) if d.verdict == Verdict::Block => {
                            first.get_or_insert(d);
                        }
                        _ => return None,
                    }
                }
                first
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ruleset_port_must_be_a_transparent_listeners() {
        let c = parse::parse_str(
            "x.rules",
            "listen transparent 0.0.0.0:8021\npass from any\n",
        )
        .unwrap();
        let nft = |port: &str| format!("# ftpgate\ndefine ftpgate_port = {port}   # = listen\n");
        assert_eq!(agrees_with_ruleset(&c, &nft("8021")), Ok(()));
        assert_eq!(
            agrees_with_ruleset(&c, &nft("8022")),
            Err(
                "ftpgate_port is 8022, but no `listen transparent` line listens on it: \
                 0.0.0.0:8021 (x.rules:1)"
                    .into()
            )
        );
        assert_eq!(
            agrees_with_ruleset(&c, "define ftp_port = 21\n"),
            Err("no `define ftpgate_port = PORT` line".into())
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn config(text: &str) -> Config {
        parse_str("t.rules", text).unwrap()
    }

    const LISTEN: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n";

    fn at(client: IpAddr, server: SocketAddr) -> Parties {
        Parties::new("127.0.0.1:2121".parse().unwrap(), client, server)
    }

    #[test]
    fn first_match_wins() {
        let c = config(&format!(
            "{LISTEN}block from 198.51.100.7\npass from 198.51.100.0/24\n"
        ));
        let server = "203.0.113.2:21".parse().unwrap();
        let d = c.session_decision(&at("198.51.100.7".parse().unwrap(), server));
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.source(), "t.rules:2");
        let d = c.session_decision(&at("198.51.100.8".parse().unwrap(), server));
        assert_eq!(d.verdict, Verdict::Pass);
        assert_eq!(d.source(), "t.rules:3");
    }

    #[test]
    fn a_session_nothing_passes_is_blocked_by_default() {
        let c = config(&format!("{LISTEN}pass from 198.51.100.0/24\n"));
        let d = c.session_decision(&at(
            "203.0.113.9".parse().unwrap(),
            "203.0.113.2:21".parse().unwrap(),
        ));
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.rule, None);
    }

    #[test]
    fn to_and_port_restrict_the_server() {
        let c = config(&format!("{LISTEN}pass to 203.0.113.0/24 port 21\n"));
        let client = "198.51.100.2".parse().unwrap();
        let pass = |s: &str| c.session_decision(&at(client, s.parse().unwrap())).verdict;
        assert_eq!(pass("203.0.113.2:21"), Verdict::Pass);
        assert_eq!(pass("203.0.113.2:2121"), Verdict::Block);
        assert_eq!(pass("198.51.100.3:21"), Verdict::Block);
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_prefixes() {
        let c = config(&format!("{LISTEN}pass from 127.0.0.0/8\n"));
        let d = c.session_decision(&at(
            "::ffff:127.0.0.1".parse().unwrap(),
            "127.0.0.1:21".parse().unwrap(),
        ));
        assert_eq!(d.verdict, Verdict::Pass);
    }

    #[test]
    fn command_and_login_rules_decide_only_their_subject() {
        let c = config(&format!(
            "{LISTEN}block log cmd {{ SITE, DELE }}\nblock user {{ root, adm* }}\n\
             pass from 198.51.100.7 user admin\npass from 198.51.100.0/24\n"
        ));
        let server = "203.0.113.2:21".parse().unwrap();
        let client = "198.51.100.2".parse().unwrap();
        assert_eq!(
            c.session_decision(&at(client, server)).verdict,
            Verdict::Pass,
            "no session rule blocks it"
        );
        let d = c
            .command_decision(&at(client, server), "DELE", None)
            .unwrap();
        assert_eq!(
            (d.verdict, d.source()),
            (Verdict::Block, "t.rules:2".to_string())
        );
        assert!(d.log);
        assert_eq!(c.command_decision(&at(client, server), "RETR", None), None);
        assert_eq!(
            c.login_decision(&at(client, server), "root")
                .unwrap()
                .verdict,
            Verdict::Block
        );
        assert_eq!(
            c.login_decision(&at(client, server), "admin")
                .unwrap()
                .verdict,
            Verdict::Block
        );
        assert_eq!(c.login_decision(&at(client, server), "alice"), None);
        let d = c
            .login_decision(&at("198.51.100.7".parse().unwrap(), server), "admin")
            .unwrap();
        assert_eq!(
            d.verdict,
            Verdict::Block,
            "first match wins: the block comes first"
        );
    }

    #[test]
    fn on_restricts_a_rule_to_one_listener() {
        let c = config(&format!(
            "{LISTEN}listen transparent 0.0.0.0:8021\n\
             pass on 0.0.0.0:8021 to 203.0.113.0/24\nblock on 127.0.0.1:2121 cmd STOR\n"
        ));
        let (client, server) = (
            "198.51.100.2".parse().unwrap(),
            "203.0.113.2:21".parse().unwrap(),
        );
        let on = |l: &str| Parties::new(l.parse().unwrap(), client, server);
        assert_eq!(
            c.session_decision(&on("0.0.0.0:8021")).source(),
            "t.rules:3"
        );
        assert_eq!(
            c.session_decision(&on("127.0.0.1:2121")).source(),
            "default"
        );
        assert!(
            c.command_decision(&on("0.0.0.0:8021"), "STOR", None)
                .is_none()
        );
        assert!(
            c.command_decision(&on("127.0.0.1:2121"), "STOR", None)
                .is_some()
        );
    }

    fn data(mode: DataMode, port: u16, direction: Option<TransferKind>) -> DataRequest {
        DataRequest {
            mode,
            family: Family::Inet,
            port,
            direction,
        }
    }

    #[test]
    fn data_rules_decide_at_the_verb_and_block_an_announcement_only_when_every_verb_would_be() {
        let c = config(&format!(
            "{LISTEN}pass data passive download\nblock data passive\n\
             block return-code 504 data active ports 1024-4999\n"
        ));
        let (client, server) = (
            "198.51.100.2".parse().unwrap(),
            "203.0.113.2:21".parse().unwrap(),
        );
        let d = |r: DataRequest| {
            c.data_decision(&at(client, server), &r)
                .map(|d| (d.verdict, d.source()))
        };
        use TransferKind::*;
        assert_eq!(
            d(data(DataMode::Passive, 50000, None)),
            None,
            "a download may still use it"
        );
        assert_eq!(
            d(data(DataMode::Passive, 50000, Some(Download))),
            Some((Verdict::Pass, "t.rules:2".into()))
        );
        assert_eq!(
            d(data(DataMode::Passive, 50000, Some(Upload))),
            Some((Verdict::Block, "t.rules:3".into()))
        );
        let blocked = c
            .data_decision(&at(client, server), &data(DataMode::Active, 2000, None))
            .unwrap();
        assert_eq!(blocked.verdict, Verdict::Block);
        assert_eq!(blocked.refusal(425, "x"), (504, "x".to_string()));
        assert_eq!(
            d(data(DataMode::Active, 5000, Some(Upload))),
            None,
            "default: pass"
        );
    }

    /// One rule line assembled from valid parts, most of them optional.
    fn rule_line() -> impl Strategy<Value = String> {
        let addr = prop_oneof![
            Just("any".to_string()),
            Just("<t>".to_string()),
            Just("!<t>".to_string()),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| format!("{}/{l}", IpAddr::from(a))),
            (any::<[u16; 8]>(), 0u8..=128).prop_map(|(a, l)| format!("{}/{l}", IpAddr::from(a))),
            Just("{ 198.51.100.0/24, <t>, 2001:db8::/32 }".to_string()),
        ];
        let ports = (1u16.., 1u16..).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b)));
        let subject = prop_oneof![
            Just(String::new()),
            Just(" cmd { DELE, SITE CHMOD }".to_string()),
            Just(" user { root, a*, ?x }".to_string()),
            Just(" data".to_string()),
            Just(" data passive inet6 upload".to_string()),
            ports
                .clone()
                .prop_map(|p| format!(" data active ports {p} {{ download, listing }}")),
        ];
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(addr.clone()),
            proptest::option::of(addr),
            proptest::option::of(ports),
            subject,
        )
            .prop_map(|(pass, log, from, to, port, subject)| {
                let mut l = String::from(if pass {
                    "pass"
                } else {
                    "block return-code 550 \"no\""
                });
                if log {
                    l.push_str(" log");
                }
                for (kw, v) in [("from", from), ("to", to), ("port", port)] {
                    if let Some(v) = v {
                        l.push_str(&format!(" {kw} {v}"));
                    }
                }
                l.push_str(&subject);
                l
            })
    }

    proptest! {
        /// Random rule sets parse and every decision point answers, for any parties.
        #[test]
        fn random_rule_sets_never_panic_the_evaluator(
            lines in proptest::collection::vec(rule_line(), 0..20),
            client in any::<IpAddr>(),
            server in any::<SocketAddr>(),
            port in any::<u16>(),
            user in "\\PC{0,12}",
        ) {
            let text = format!(
                "{LISTEN}table <t> {{ 203.0.113.0/24, 2001:db8:2::/48 }}\n{}\n",
                lines.join("\n")
            );
            let c = parse_str("t.rules", &text).map_err(|e| TestCaseError::fail(e.with_caret()))?;
            let who = at(client, server);
            let d = c.session_decision(&who);
            prop_assert!(d.rule.is_some() || d.verdict == Verdict::Block);
            let _ = c.login_decision(&who, &user);
            let _ = c.command_decision(&who, "SITE", Some("chmod"));
            for mode in DataMode::ALL {
                for direction in [None, Some(TransferKind::Upload)] {
                    let r = DataRequest { mode, family: Family::of(client), port, direction };
                    let _ = c.data_decision(&who, &r);
                }
            }
        }

        #[test]
        fn evaluation_is_total(client in any::<IpAddr>(), server in any::<SocketAddr>(), bits in 0u8..=32) {
            let c = config(&format!("{LISTEN}block from 198.51.100.0/{bits}\npass to any\n"));
            let _ = c.session_decision(&at(client, server));
        }
    }
}
