//! The rule-file parser: nom combinators over one line at a time, one per production,
//! with errors that point at `file:line:col`.
//!
//! Grammar (one statement per line, `#` starts a comment):
//!
//! ```text
//! statement := set | listen | metrics | rule
//! set       := "set" ( ("data-timeout" | "idle-timeout" | "connect-timeout"
//!                      | "login-timeout" | "data-idle-timeout" | "drain-timeout") DURATION
//!                    | "data-ports" PORT "-" PORT | "max-line" NUMBER
//!                    | ("max-sessions" | "max-sessions-per-client") NUMBER
//!                    | "advertise" IP | "xferlog" PATH )
//! listen    := "listen" ( "reverse" SOCKADDR "upstream" HOST ":" PORT
//!                       | "transparent" SOCKADDR ["tproxy" ["preserve-source"]] )
//! metrics   := "metrics" "listen" SOCKADDR
//! rule      := ("pass" | "block") ["log"] ["from" TARGET] ["to" TARGET] ["port" PORTS]
//!              [ "cmd" WORDS | "user" WORDS ]
//! WORDS     := WORD | "{" WORD ("," WORD)* "}"
//! TARGET    := "any" | IP | IP "/" LEN
//! DURATION  := NUMBER ("ms" | "s" | "m" | "h")
//! ```

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use nom::bytes::complete::take_while1;
use nom::character::complete::{space0, space1};
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use super::{
    AddrMatch, Config, ListenMode, Listener, Origin, PortRange, RuleError, SessionRule, Settings,
    Subject, Upstream, Verdict,
};

/// A parse failure at a position inside the line.
#[derive(Debug)]
struct Failure<'a> {
    at: &'a str,
    message: Cow<'static, str>,
}

impl<'a> ParseError<&'a str> for Failure<'a> {
    fn from_error_kind(input: &'a str, kind: ErrorKind) -> Self {
        Failure {
            at: input,
            message: Cow::Owned(format!("unexpected input ({kind:?})")),
        }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, Failure<'a>>;

fn fail<T>(at: &str, message: impl Into<Cow<'static, str>>) -> PResult<'_, T> {
    Err(nom::Err::Failure(Failure {
        at,
        message: message.into(),
    }))
}

/// A run of non-blank characters.
fn token(i: &str) -> PResult<'_, &str> {
    take_while1(|c: char| !c.is_whitespace())(i)
}

/// The next token, after at least one blank, converted by `convert`; a missing or
/// unconvertible token is a failure that names `what` was expected.
fn next<'a, T>(
    what: &'static str,
    convert: impl Fn(&'a str) -> Option<T>,
) -> impl FnMut(&'a str) -> PResult<'a, T> {
    move |i: &'a str| {
        let (at, _) = space0(i)?;
        match token(at) {
            Ok((rest, tok)) => match convert(tok) {
                Some(v) => Ok((rest, v)),
                None => fail(at, format!("expected {what}, found `{tok}`")),
            },
            Err(_) => fail(at, format!("expected {what} before the end of the line")),
        }
    }
}

fn keyword<'a>(word: &'static str) -> impl FnMut(&'a str) -> PResult<'a, ()> {
    next(word, move |t| (t == word).then_some(()))
}

/// A keyword that may be absent.
fn optional_keyword<'a>(i: &'a str, word: &str) -> (&'a str, bool) {
    let peek: PResult<'_, (&str, &str)> = (space1, token).parse(i);
    match peek {
        Ok((rest, (_, tok))) if tok == word => (rest, true),
        _ => (i, false),
    }
}

fn socket_addr(t: &str) -> Option<SocketAddr> {
    t.parse().ok()
}

fn port_number(t: &str) -> Option<u16> {
    t.parse().ok()
}

fn port_range(t: &str) -> Option<PortRange> {
    let (lo, hi) = t.split_once('-').unwrap_or((t, t));
    let (lo, hi) = (port_number(lo)?, port_number(hi)?);
    (lo <= hi).then_some(PortRange { lo, hi })
}

fn duration(t: &str) -> Option<Duration> {
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = t[..split].parse().ok()?;
    let d = match &t[split..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

fn target(t: &str) -> Option<AddrMatch> {
    if t == "any" {
        return Some(AddrMatch::Any);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(AddrMatch::Net(IpNet::from(ip)));
    }
    let net: IpNet = t.parse().ok()?;
    Some(AddrMatch::Net(net.trunc()))
}

/// `HOST:PORT` with `[v6]:PORT` for IPv6 literals.
fn upstream(t: &str) -> Option<Upstream> {
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(Upstream {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let (host, port) = t.rsplit_once(':')?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || !host.chars().all(valid) {
        return None;
    }
    Some(Upstream {
        host: host.to_string(),
        port: port_number(port)?,
    })
}

/// One `set` statement.
enum Setting {
    DataTimeout(Duration),
    IdleTimeout(Duration),
    ConnectTimeout(Duration),
    DataPorts(PortRange),
    MaxLine(usize),
    Advertise(IpAddr),
    Xferlog(PathBuf),
    MaxSessions(usize),
    MaxSessionsPerClient(usize),
    LoginTimeout(Duration),
    DataIdleTimeout(Duration),
    DrainTimeout(Duration),
}

impl Setting {
    fn apply(self, s: &mut Settings) {
        match self {
            Setting::DataTimeout(d) => s.data_timeout = d,
            Setting::IdleTimeout(d) => s.idle_timeout = d,
            Setting::ConnectTimeout(d) => s.connect_timeout = d,
            Setting::DataPorts(r) => s.data_ports = r,
            Setting::MaxLine(n) => s.max_line = n,
            Setting::Advertise(ip) => s.advertise = Some(ip),
            Setting::Xferlog(path) => s.xferlog = Some(path),
            Setting::MaxSessions(n) => s.max_sessions = n,
            Setting::MaxSessionsPerClient(n) => s.max_sessions_per_client = n,
            Setting::LoginTimeout(d) => s.login_timeout = d,
            Setting::DataIdleTimeout(d) => s.data_idle_timeout = d,
            Setting::DrainTimeout(d) => s.drain_timeout = d,
        }
    }
}

/// What one line says.
enum Statement {
    Set(Setting),
    Listen(SocketAddr, ListenMode),
    Metrics(SocketAddr),
    Rule(SessionRule),
}

const DURATION: &str = "a duration such as 30s, 15m or 500ms";

fn set_statement(i: &str) -> PResult<'_, Statement> {
    let (at, _) = space0(i)?;
    let (rest, name) = next("a setting name", Some)(at)?;
    let (value_at, _) = space0(rest)?;
    let (rest, setting) = match name {
        "data-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::DataTimeout(d))
        }
        "idle-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::IdleTimeout(d))
        }
        "connect-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::ConnectTimeout(d))
        }
        "data-ports" => {
            let (rest, r) = next("a port range such as 40000-40999", port_range)(rest)?;
            if r.lo < 1024 {
                return fail(value_at, "data ports must be 1024 or above");
            }
            (rest, Setting::DataPorts(r))
        }
        "max-line" => {
            let (rest, n) = next("a line length in bytes", |t| t.parse::<usize>().ok())(rest)?;
            if !(512..=65536).contains(&n) {
                return fail(value_at, "max-line must be between 512 and 65536");
            }
            (rest, Setting::MaxLine(n))
        }
        "advertise" => {
            let (rest, ip) = next("an IP address", |t| t.parse::<IpAddr>().ok())(rest)?;
            (rest, Setting::Advertise(ip))
        }
        "xferlog" => {
            let (rest, path) = next("a file path", |t| Some(PathBuf::from(t)))(rest)?;
            (rest, Setting::Xferlog(path))
        }
        "max-sessions" | "max-sessions-per-client" => {
            let positive = |t: &str| t.parse::<usize>().ok().filter(|n| *n > 0);
            let (rest, n) = next("a number of sessions above 0", positive)(rest)?;
            let setting = if name == "max-sessions" {
                Setting::MaxSessions(n)
            } else {
                Setting::MaxSessionsPerClient(n)
            };
            (rest, setting)
        }
        "login-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::LoginTimeout(d))
        }
        "data-idle-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::DataIdleTimeout(d))
        }
        "drain-timeout" => {
            let (rest, d) = next(DURATION, duration)(rest)?;
            (rest, Setting::DrainTimeout(d))
        }
        other => {
            return fail(
                at,
                format!(
                    "unknown setting `{other}`; known: data-timeout, idle-timeout, \
                     connect-timeout, login-timeout, data-idle-timeout, drain-timeout, \
                     data-ports, max-line, max-sessions, max-sessions-per-client, \
                     advertise, xferlog"
                ),
            );
        }
    };
    Ok((rest, Statement::Set(setting)))
}

fn listen_statement(i: &str) -> PResult<'_, Statement> {
    let (rest, mode) = next("a listener mode (reverse or transparent)", |t| {
        matches!(t, "reverse" | "transparent").then_some(t)
    })(i)?;
    let (rest, addr) = next(
        "a listen address such as 127.0.0.1:2121 or [::1]:2121",
        socket_addr,
    )(rest)?;
    if mode == "transparent" {
        let (rest, tproxy) = optional_keyword(rest, "tproxy");
        let (at, _) = space0(rest)?;
        let (rest, preserve_source) = optional_keyword(rest, "preserve-source");
        if preserve_source && !tproxy {
            return fail(
                at,
                "preserve-source needs tproxy (REDIRECT rewrites addresses)",
            );
        }
        let mode = ListenMode::Transparent {
            tproxy,
            preserve_source,
        };
        return Ok((rest, Statement::Listen(addr, mode)));
    }
    let (rest, _) = keyword("upstream")(rest)?;
    let (rest, up) = next("an upstream HOST:PORT", upstream)(rest)?;
    Ok((
        rest,
        Statement::Listen(addr, ListenMode::Reverse { upstream: up }),
    ))
}

fn metrics_statement(i: &str) -> PResult<'_, Statement> {
    let (rest, _) = keyword("listen")(i)?;
    let (rest, addr) = next("an address such as 127.0.0.1:9121", socket_addr)(rest)?;
    Ok((rest, Statement::Metrics(addr)))
}

fn rule_statement<'a>(verdict: Verdict, i: &'a str, origin: Origin) -> PResult<'a, Statement> {
    let (rest, log) = optional_keyword(i, "log");
    let (rest, has_from) = optional_keyword(rest, "from");
    let (rest, from) = if has_from {
        next("`any`, an address or a prefix", target)(rest)?
    } else {
        (rest, AddrMatch::Any)
    };
    let (rest, has_to) = optional_keyword(rest, "to");
    let (rest, to) = if has_to {
        next("`any`, an address or a prefix", target)(rest)?
    } else {
        (rest, AddrMatch::Any)
    };
    let (rest, has_port) = optional_keyword(rest, "port");
    let (rest, port) = if has_port {
        let (rest, p) = next("a port or a port range such as 21 or 2100-2199", port_range)(rest)?;
        (rest, Some(p))
    } else {
        (rest, None)
    };
    let (rest, has_cmd) = optional_keyword(rest, "cmd");
    let (rest, has_user) = if has_cmd {
        (rest, false)
    } else {
        optional_keyword(rest, "user")
    };
    let (rest, subject) = if has_cmd {
        let (at, _) = space0(rest)?;
        let (rest, verbs) = words("command verbs such as DELE or { SITE, DELE }")(rest)?;
        if let Some(bad) = verbs
            .iter()
            .find(|v| !v.chars().all(|c| c.is_ascii_alphabetic()))
        {
            return fail(at, format!("`{bad}` is not a command verb"));
        }
        let verbs = verbs.iter().map(|v| v.to_ascii_uppercase()).collect();
        (rest, Subject::Commands(verbs))
    } else if has_user {
        let (rest, users) = words("user names or patterns such as root or { root, adm* }")(rest)?;
        (rest, Subject::Users(users))
    } else {
        (rest, Subject::Session)
    };
    let rule = SessionRule {
        verdict,
        log,
        from,
        to,
        port,
        subject,
        origin,
    };
    Ok((rest, Statement::Rule(rule)))
}

/// One word, or a `{ a, b }` list of them.
fn words<'a>(what: &'static str) -> impl FnMut(&'a str) -> PResult<'a, Vec<String>> {
    move |i: &'a str| {
        let (at, _) = space0(i)?;
        let Some(body) = at.strip_prefix('{') else {
            return next(what, |t: &str| {
                (!t.starts_with('}')).then(|| vec![t.to_string()])
            })(at);
        };
        let Some(end) = body.find('}') else {
            return fail(at, "a `{` list needs its closing `}`");
        };
        let items: Vec<String> = body[..end]
            .split(',')
            .map(|w| w.trim().to_string())
            .collect();
        if items
            .iter()
            .any(|w| w.is_empty() || w.contains(char::is_whitespace))
        {
            return fail(at, format!("expected {what}, separated by commas"));
        }
        Ok((&body[end + 1..], items))
    }
}

fn statement<'a>(i: &'a str, origin: Origin) -> PResult<'a, Statement> {
    let (at, _) = space0(i)?;
    let (rest, word) = token(at)?;
    let (rest, stmt) = match word {
        "set" => set_statement(rest)?,
        "listen" => listen_statement(rest)?,
        "metrics" => metrics_statement(rest)?,
        "pass" => rule_statement(Verdict::Pass, rest, origin)?,
        "block" => rule_statement(Verdict::Block, rest, origin)?,
        other => {
            return fail(
                at,
                format!(
                    "unknown statement `{other}`; expected set, listen, metrics, pass or block"
                ),
            );
        }
    };
    let (end, _) = space0(rest)?;
    match token(end) {
        Ok((_, extra)) => fail(end, format!("unexpected `{extra}`")),
        Err(_) => Ok((end, stmt)),
    }
}

/// Cuts a trailing `#` comment.
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(code, _)| code)
}

/// Parses and validates a whole rule file; `file` names it in errors and origins.
pub fn parse_str(file: &str, text: &str) -> Result<Config, RuleError> {
    let file_arc: Arc<str> = Arc::from(file);
    // `at` is always a suffix of `code`, the line without its comment.
    let error = |line: usize, code: &str, at: &str, message: String| RuleError {
        file: file.to_string(),
        line,
        col: code[..code.len() - at.len()].chars().count() + 1,
        message,
    };
    let mut settings = Settings::default();
    let mut config = Config {
        listeners: Vec::new(),
        settings: Settings::default(),
        session_rules: Vec::new(),
        metrics_listen: None,
    };
    for (index, full) in text.lines().enumerate() {
        let line_no = index + 1;
        let code = strip_comment(full);
        if code.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            file: file_arc.clone(),
            line: line_no,
        };
        let stmt = match statement(code, origin.clone()) {
            Ok((_, stmt)) => stmt,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                return Err(error(line_no, code, e.at, e.message.into_owned()));
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(error(line_no, code, "", "incomplete statement".into()));
            }
        };
        match stmt {
            Statement::Set(setting) => setting.apply(&mut settings),
            Statement::Listen(addr, mode) => {
                if config.listeners.iter().any(|l| l.addr == addr) {
                    let at = code.find(&addr.to_string()).map_or(code, |p| &code[p..]);
                    return Err(error(
                        line_no,
                        code,
                        at,
                        format!("{addr} is already a listener"),
                    ));
                }
                config.listeners.push(Listener { addr, mode, origin });
            }
            Statement::Metrics(addr) => config.metrics_listen = Some(addr),
            Statement::Rule(rule) => config.session_rules.push(rule),
        }
    }
    if config.listeners.is_empty() {
        return Err(RuleError {
            file: file.to_string(),
            line: 1,
            col: 1,
            message: "no `listen` statement: ftpgate would accept nothing".into(),
        });
    }
    config.settings = settings;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21";

    fn err(text: &str) -> String {
        parse_str("x.rules", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_statement() {
        let text = format!(
            "# comment\nset data-timeout 45s\nset idle-timeout 15m\nset connect-timeout 500ms\n\
             set data-ports 41000-41099\nset max-line 1024\nset advertise 198.51.100.1\n\
             set xferlog /var/log/ftpgate/xferlog\n\
             set max-sessions 100\nset max-sessions-per-client 3\nset login-timeout 20s\n\
             set data-idle-timeout 1m\nset drain-timeout 5s\n\
             metrics listen 127.0.0.1:9121\n{LISTEN}  # trailing\n\
             listen reverse [::1]:2121 upstream ftp.example.net:21\n\
             listen transparent 0.0.0.0:8021\nlisten transparent [::]:8021 tproxy preserve-source\n\
             pass log from 198.51.100.0/24 to 203.0.113.2 port 21\nblock\n"
        );
        let c = parse_str("x.rules", &text).unwrap();
        assert_eq!(c.settings.data_timeout, Duration::from_secs(45));
        assert_eq!(c.settings.idle_timeout, Duration::from_secs(900));
        assert_eq!(c.settings.connect_timeout, Duration::from_millis(500));
        assert_eq!(
            c.settings.data_ports,
            PortRange {
                lo: 41000,
                hi: 41099
            }
        );
        assert_eq!(c.settings.max_line, 1024);
        assert_eq!(c.settings.advertise, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(
            c.settings.xferlog,
            Some(PathBuf::from("/var/log/ftpgate/xferlog"))
        );
        assert_eq!(c.settings.max_sessions, 100);
        assert_eq!(c.settings.max_sessions_per_client, 3);
        assert_eq!(c.settings.login_timeout, Duration::from_secs(20));
        assert_eq!(c.settings.data_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.settings.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9121".parse().unwrap()));
        assert_eq!(c.listeners.len(), 4);
        assert_eq!(
            c.listeners[2].mode,
            ListenMode::Transparent {
                tproxy: false,
                preserve_source: false
            }
        );
        assert_eq!(
            c.listeners[3].mode,
            ListenMode::Transparent {
                tproxy: true,
                preserve_source: true
            }
        );
        assert_eq!(
            c.listeners[1].mode,
            ListenMode::Reverse {
                upstream: Upstream {
                    host: "ftp.example.net".into(),
                    port: 21
                }
            }
        );
        assert_eq!(c.session_rules.len(), 2);
        assert!(c.session_rules[0].log);
        assert_eq!(c.session_rules[0].port, Some(PortRange { lo: 21, hi: 21 }));
        assert_eq!(c.session_rules[1].origin.line, 20);
        assert_eq!(c.session_rules[1].from, AddrMatch::Any);
    }

    #[test]
    fn errors_point_at_line_and_column() {
        assert_eq!(
            err(&format!("{LISTEN}\nset data-timeout 30x\n")),
            "x.rules:2:18: expected a duration such as 30s, 15m or 500ms, found `30x`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass from 198.51.100.0/33\n")),
            "x.rules:2:11: expected `any`, an address or a prefix, found `198.51.100.0/33`"
        );
        assert_eq!(
            err("listen reverse 127.0.0.1:2121 upstreem 127.0.0.1:21\n"),
            "x.rules:1:31: expected upstream, found `upstreem`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\n  frobnicate\n")),
            "x.rules:2:3: unknown statement `frobnicate`; expected set, listen, metrics, pass or block"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass from any extra\n")),
            "x.rules:2:15: unexpected `extra`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nset data-ports 41000-40000\n")),
            "x.rules:2:16: expected a port range such as 40000-40999, found `41000-40000`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nset data-ports 20-30\n")),
            "x.rules:2:16: data ports must be 1024 or above"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\nlisten reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n"
            )),
            "x.rules:2:16: 127.0.0.1:2121 is already a listener"
        );
        assert_eq!(
            err("listen sideways 127.0.0.1:2121\n"),
            "x.rules:1:8: expected a listener mode (reverse or transparent), found `sideways`"
        );
        assert_eq!(
            err("listen transparent 0.0.0.0:8021 tproxi\n"),
            "x.rules:1:33: unexpected `tproxi`"
        );
        assert_eq!(
            err("listen transparent 0.0.0.0:8021 preserve-source\n"),
            "x.rules:1:33: preserve-source needs tproxy (REDIRECT rewrites addresses)"
        );
        assert_eq!(
            err("listen reverse 127.0.0.1:2121\n"),
            "x.rules:1:30: expected upstream before the end of the line"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nset max-sessions 0\n")),
            "x.rules:2:18: expected a number of sessions above 0, found `0`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock cmd {{ SITE DELE }}\n")),
            "x.rules:2:11: expected command verbs such as DELE or { SITE, DELE }, separated by commas"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock cmd {{ SITE, DELE\n")),
            "x.rules:2:11: a `{` list needs its closing `}`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock cmd SITE2\n")),
            "x.rules:2:11: `SITE2` is not a command verb"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock user\n")),
            "x.rules:2:11: expected user names or patterns such as root or { root, adm* } before the end of the line"
        );
        assert_eq!(
            err("pass\n"),
            "x.rules:1:1: no `listen` statement: ftpgate would accept nothing"
        );
    }

    #[test]
    fn upstream_port_above_65535_is_rejected() {
        assert!(err("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:65536").contains("1:40:"));
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../rules/example.rules");
        let c = parse_str("rules/example.rules", text).unwrap();
        assert!(!c.listeners.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str("fuzz.rules", &text);
        }
    }
}
