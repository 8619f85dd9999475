//! The rule file: what the operator writes, compiled into an immutable [`Config`] and
//! evaluated as pure functions.
//!
//! Parsing lives in `parse`; this module holds the compiled form and the decisions. It
//! never touches a socket or the clock: the shell asks, the rules answer.

mod explain;
mod parse;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use explain::{Trial, explain, parse_trial, run_trial};
pub use parse::parse_str;

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
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

/// The FTP server a reverse listener forwards to; the host is resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
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
    /// Sessions go to the server the client dialled, intercepted by the firewall:
    /// REDIRECT (the original destination from `SO_ORIGINAL_DST`) or, with `tproxy`,
    /// TPROXY (the original destination is the accepted socket's local address).
    /// `preserve_source` (TPROXY only): the server sees the client's address and the
    /// client sees active-mode data come from the server's address.
    Transparent { tproxy: bool, preserve_source: bool },
}

/// One `listen` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub mode: ListenMode,
    pub origin: Origin,
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
    /// How long a session may take from accept to a successful login.
    pub login_timeout: Duration,
    /// How long a data connection may move no byte in either direction.
    pub data_idle_timeout: Duration,
    /// On SIGTERM, how long transfers in flight may take to finish.
    pub drain_timeout: Duration,
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
            max_line: 4096,
            advertise: None,
            xferlog: None,
            max_sessions: 4096,
            max_sessions_per_client: 32,
            login_timeout: Duration::from_secs(60),
            data_idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(20),
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

/// `any` or a prefix (a bare address is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrMatch {
    Any,
    Net(IpNet),
}

impl AddrMatch {
    fn matches(&self, ip: IpAddr) -> bool {
        match self {
            AddrMatch::Any => true,
            AddrMatch::Net(net) => net.contains(&ip),
        }
    }
}

/// What a rule decides about, besides the addresses it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Whether the control session may exist at all.
    Session,
    /// Client commands with one of these verbs (upper-case); a blocked one is answered
    /// `550` by the proxy and never reaches the server.
    Commands(Vec<String>),
    /// Logins whose user name matches one of these patterns (`*` and `?` wildcards);
    /// a blocked `USER` is answered `530` and never reaches the server.
    Users(Vec<String>),
}

/// A `pass`/`block` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRule {
    pub verdict: Verdict,
    pub log: bool,
    pub from: AddrMatch,
    pub to: AddrMatch,
    pub port: Option<PortRange>,
    pub subject: Subject,
    pub origin: Origin,
}

impl SessionRule {
    fn matches(&self, client: IpAddr, server: SocketAddr) -> bool {
        self.from.matches(client)
            && self.to.matches(server.ip())
            && self.port.is_none_or(|p| p.contains(server.port()))
    }

    fn decision(&self) -> Decision {
        Decision {
            verdict: self.verdict,
            log: self.log,
            rule: Some(self.origin.clone()),
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
}

impl Decision {
    /// Where the decision came from, for logs: `file:line` or `default`.
    pub fn source(&self) -> String {
        self.rule
            .as_ref()
            .map_or_else(|| "default".to_string(), Origin::to_string)
    }
}

/// A compiled, validated rule file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub settings: Settings,
    pub session_rules: Vec<SessionRule>,
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads and compiles a rule file.
    pub fn load(path: &Path) -> Result<Config, RuleError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: name.clone(),
            line: 0,
            col: 0,
            message: format!("cannot read: {e}"),
        })?;
        parse_str(&name, &text)
    }

    /// May `client` open a control session to `server`? First match wins; a session
    /// nothing passes is blocked.
    pub fn session_decision(&self, client: IpAddr, server: SocketAddr) -> Decision {
        let (client, server) = canonical(client, server);
        self.session_rules
            .iter()
            .filter(|r| r.subject == Subject::Session)
            .find(|r| r.matches(client, server))
            .map_or(
                Decision {
                    verdict: Verdict::Block,
                    log: true,
                    rule: None,
                },
                SessionRule::decision,
            )
    }

    /// The first command rule for `verb` in this session; `None` (the command passes)
    /// when no rule names it.
    pub fn command_decision(
        &self,
        client: IpAddr,
        server: SocketAddr,
        verb: &str,
    ) -> Option<Decision> {
        let (client, server) = canonical(client, server);
        self.session_rules
            .iter()
            .filter(|r| matches!(&r.subject, Subject::Commands(verbs) if verbs.iter().any(|v| v == verb)))
            .find(|r| r.matches(client, server))
            .map(SessionRule::decision)
    }

    /// The first login rule matching `user` in this session; `None` (the login goes to
    /// the server) when no rule matches.
    pub fn login_decision(
        &self,
        client: IpAddr,
        server: SocketAddr,
        user: &str,
    ) -> Option<Decision> {
        let (client, server) = canonical(client, server);
        self.session_rules
            .iter()
            .filter(|r| match &r.subject {
                Subject::Users(patterns) => patterns
                    .iter()
                    .any(|p| wildmatch::WildMatch::new(p).matches(user)),
                _ => false,
            })
            .find(|r| r.matches(client, server))
            .map(SessionRule::decision)
    }
}

fn canonical(client: IpAddr, server: SocketAddr) -> (IpAddr, SocketAddr) {
    (
        client.to_canonical(),
        SocketAddr::new(server.ip().to_canonical(), server.port()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(text: &str) -> Config {
        parse_str("t.rules", text).unwrap()
    }

    const LISTEN: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n";

    #[test]
    fn first_match_wins() {
        let c = config(&format!(
            "{LISTEN}block from 198.51.100.7\npass from 198.51.100.0/24\n"
        ));
        let server = "203.0.113.2:21".parse().unwrap();
        let d = c.session_decision("198.51.100.7".parse().unwrap(), server);
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.source(), "t.rules:2");
        let d = c.session_decision("198.51.100.8".parse().unwrap(), server);
        assert_eq!(d.verdict, Verdict::Pass);
        assert_eq!(d.source(), "t.rules:3");
    }

    #[test]
    fn a_session_nothing_passes_is_blocked_by_default() {
        let c = config(&format!("{LISTEN}pass from 198.51.100.0/24\n"));
        let d = c.session_decision(
            "203.0.113.9".parse().unwrap(),
            "203.0.113.2:21".parse().unwrap(),
        );
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.rule, None);
    }

    #[test]
    fn to_and_port_restrict_the_server() {
        let c = config(&format!("{LISTEN}pass to 203.0.113.0/24 port 21\n"));
        let client = "198.51.100.2".parse().unwrap();
        let pass = |s: &str| c.session_decision(client, s.parse().unwrap()).verdict;
        assert_eq!(pass("203.0.113.2:21"), Verdict::Pass);
        assert_eq!(pass("203.0.113.2:2121"), Verdict::Block);
        assert_eq!(pass("198.51.100.3:21"), Verdict::Block);
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_prefixes() {
        let c = config(&format!("{LISTEN}pass from 127.0.0.0/8\n"));
        let d = c.session_decision(
            "::ffff:127.0.0.1".parse().unwrap(),
            "127.0.0.1:21".parse().unwrap(),
        );
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
            c.session_decision(client, server).verdict,
            Verdict::Pass,
            "no session rule blocks it"
        );
        let d = c.command_decision(client, server, "DELE").unwrap();
        assert_eq!(
            (d.verdict, d.source()),
            (Verdict::Block, "t.rules:2".to_string())
        );
        assert!(d.log);
        assert_eq!(c.command_decision(client, server, "RETR"), None);
        assert_eq!(
            c.login_decision(client, server, "root").unwrap().verdict,
            Verdict::Block
        );
        assert_eq!(
            c.login_decision(client, server, "admin").unwrap().verdict,
            Verdict::Block
        );
        assert_eq!(c.login_decision(client, server, "alice"), None);
        let d = c
            .login_decision("198.51.100.7".parse().unwrap(), server, "admin")
            .unwrap();
        assert_eq!(
            d.verdict,
            Verdict::Block,
            "first match wins: the block comes first"
        );
    }

    proptest! {
        #[test]
        fn evaluation_is_total(client in any::<IpAddr>(), server in any::<SocketAddr>(), bits in 0u8..=32) {
            let c = config(&format!("{LISTEN}block from 198.51.100.0/{bits}\npass to any\n"));
            let _ = c.session_decision(client, server);
        }
    }
}
