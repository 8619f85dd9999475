//! The rule-file parser: nom combinators over one line at a time, one per production,
//! with errors that point at `file:line:col`. `rules/README.md` is the reference for
//! the language; the grammar in brief (one statement per line, `#` starts a comment):
//!
//! ```text
//! statement := set | listen | metrics | table | include | tls | rule
//! set       := "set" NAME VALUE
//! listen    := "listen" ( "reverse" SOCKADDR "upstream" HOST ":" PORT ["send-proxy" ("v1" | "v2")]
//!                       | "transparent" SOCKADDR ["tproxy" ["preserve-source"]]
//!                       | "forward" SOCKADDR )
//!              ["data-path" ("relay" | "kernel")] ["tls" "implicit"]
//!              ["accept-proxy" "from" ADDRS]              (reverse and forward)
//! metrics   := "metrics" "listen" SOCKADDR ["sessions" ("on" | "off")] ["allow" ADDRS]
//!              ["token-file" PATH]
//! table     := "table" "<" NAME ">" ( "{" TARGET ("," TARGET)* "}" | "file" PATH )
//! include   := "include" PATH
//! tls       := "tls" "cert" PATH "key" PATH | "tls" "intercept" "ca" PATH "key" PATH
//! pool      := "pool" NAME "{" HOST ":" PORT ("," HOST ":" PORT)* "}"
//!              ["balance" ("round-robin" | "least-sessions" | "sticky-client" | "sticky-user")]
//!              ["check" "interval" DURATION "fall" N "rise" N] ["users" WORDS] ["hosts" WORDS]
//!              ["send-proxy" ("v1" | "v2")]
//!              (and `listen reverse SOCKADDR pool NAME`)
//! rule      := ("pass" | "block" ["return-code" CODE [QUOTED]]) ["log"]   (or log first)
//!              ["on" SOCKADDR] ["from" ADDRS] ["to" ADDRS] ["port" PORTS]
//!              [ "cmd" WORDS | "user" WORDS | "data" DATA* ]
//!              [ "server-mode" ("active" | "passive" | "keep") ]   (session pass rules)
//!              [ "tls" "client" ("deny" | "optional" | "require") ["require-reuse"] ["ccc"] ]
//!              [ "tls" "server" ("off" | "match" | "require")
//!                ["ca" (PATH | "system") | "no-verify"] ["implicit"] ]  (session pass rules)
//!              [ "tls" "passthrough" "ports" PORT "-" PORT ]   (session pass rules,
//!                                                   without tls client or tls server)
//! DATA      := "active" | "passive" | "inet" | "inet6" | "ports" PORTS
//!            | DIRECTION | "{" DIRECTION ("," DIRECTION)* "}"
//! DIRECTION := "download" | "upload" | "listing"
//! ADDRS     := "any" | ["!"] ADDR | "{" ADDR ("," ADDR)* "}"
//! ADDR      := IP | IP "/" LEN | "<" NAME ">"
//! PORTS     := PORT ["-" PORT] | "{" PORT ["-" PORT] ("," PORT ["-" PORT])* "}"
//! WORDS     := WORD | "{" WORD ("," WORD)* "}"
//! DURATION  := NUMBER ("ms" | "s" | "m" | "h")
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use nom::bytes::complete::take_while1;
use nom::character::complete::{space0, space1};
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use super::settings::{self, Setting};
use super::{
    AddrMatch, AddrSet, Admin, Balance, Check, ClientTls, Config, DataMatch, DataPath, Family,
    Interception, ListenMode, Listener, Origin, Pool, PortRange, PortSet, ReturnCode, RuleError,
    ServerTls, SessionRule, Settings, Source, Subject, Table, TlsCert, TlsIntercept, TlsPolicy,
    Upstream, Verdict, Verify,
};
use crate::codec::TransferKind;
use crate::vocab::{DataMode, ProxyVersion};

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

/// `part` is a slice of `whole`; the rest of `whole` from where `part` starts, so an
/// error inside a `{ list }` item still points at its column.
fn from_part<'a>(whole: &'a str, part: &str) -> &'a str {
    let offset = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    whole.get(offset..).unwrap_or(whole)
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

/// The next token without consuming it.
fn peek(i: &str) -> Option<&str> {
    let (at, _) = space0::<_, Failure>(i).ok()?;
    token(at).ok().map(|(_, t)| t)
}

fn socket_addr(t: &str) -> Option<SocketAddr> {
    t.parse().ok()
}

fn port_number(t: &str) -> Option<u16> {
    t.parse().ok()
}

pub(super) fn port_range(t: &str) -> Option<PortRange> {
    let (lo, hi) = t.split_once('-').unwrap_or((t, t));
    let (lo, hi) = (port_number(lo)?, port_number(hi)?);
    (lo <= hi).then_some(PortRange { lo, hi })
}

pub(super) fn duration(t: &str) -> Option<Duration> {
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = t.get(..split)?.parse().ok()?;
    let d = match t.get(split..)? {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// An address or a prefix (host bits cleared).
fn prefix(t: &str) -> Option<IpNet> {
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(IpNet::from(ip.to_canonical()));
    }
    let net: IpNet = t.parse().ok()?;
    Some(net.trunc())
}

/// `<name>`: a table reference.
fn table_name(t: &str) -> Option<&str> {
    let name = t.strip_prefix('<')?.strip_suffix('>')?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    (!name.is_empty() && name.chars().all(valid)).then_some(name)
}

/// `HOST:PORT` with `[v6]:PORT` for IPv6 literals.
fn upstream(t: &str) -> Option<Upstream> {
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(Upstream {
            host: sa.ip().to_string(),
            port: sa.port(),
            send_proxy: None,
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
        send_proxy: None,
    })
}

/// The items of a `{ a, b }` list starting at `at` (which begins with `{`), and the
/// input after it. Each item is a trimmed slice of the line, for error columns.
fn braced<'a>(at: &'a str, what: &'static str) -> PResult<'a, Vec<&'a str>> {
    let body = at.get(1..).unwrap_or_default();
    let Some(end) = body.find('}') else {
        return fail(at, "a `{` list needs its closing `}`");
    };
    let inner = body.get(..end).unwrap_or_default();
    let items: Vec<&str> = inner.split(',').map(str::trim).collect();
    if let Some(bad) = items
        .iter()
        .find(|w| w.is_empty() || w.contains(char::is_whitespace))
    {
        let at = if bad.is_empty() {
            at
        } else {
            from_part(at, bad)
        };
        return fail(at, format!("expected {what}, separated by commas"));
    }
    Ok((body.get(end + 1..).unwrap_or_default(), items))
}

/// Where a table's prefixes come from.
enum TableBody {
    Inline(Vec<IpNet>),
    File(PathBuf),
}

/// What one line says.
enum Statement {
    Set(Setting),
    /// The address, mode, data path, `tls implicit` and `accept-proxy from`.
    Listen(SocketAddr, ListenMode, DataPath, bool, Option<AddrMatch>),
    /// The address, the options, and the `token-file` to read the token from.
    Metrics(SocketAddr, Admin, Option<PathBuf>),
    Rule(SessionRule),
    Table(String, TableBody),
    Include(PathBuf),
    /// `tls cert FILE key FILE`.
    Tls {
        cert: PathBuf,
        key: PathBuf,
    },
    /// `tls intercept ca FILE key FILE`.
    TlsIntercept {
        ca: PathBuf,
        key: PathBuf,
    },
    Pool(Pool),
}

/// `pool NAME { HOST:PORT, … } [balance B] [check interval D fall N rise N]`.
fn pool_statement(i: &str, origin: Origin) -> PResult<'_, Statement> {
    let (rest, name) = next("a pool name", |t| {
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            .then_some(t)
    })(i)?;
    let (at, _) = space0(rest)?;
    if !at.starts_with('{') {
        return fail(at, "expected the pool's servers: { HOST:PORT, HOST:PORT }");
    }
    let Some(end) = at.find('}') else {
        return fail(at, "a `{` list needs its closing `}`");
    };
    let mut backends = Vec::new();
    for item in at.get(1..end).unwrap_or_default().split(',') {
        let item_at = from_part(at, item.trim_start());
        match upstream(item.trim()) {
            Some(up) => backends.push(up),
            None => {
                return fail(
                    item_at,
                    format!("expected a server HOST:PORT, found `{}`", item.trim()),
                );
            }
        }
    }
    let mut rest = at.get(end + 1..).unwrap_or_default();
    let mut balance = Balance::RoundRobin;
    let mut check = None;
    let mut users = Vec::new();
    let mut hosts = Vec::new();
    let mut send_proxy = None;
    loop {
        match peek(rest) {
            Some("balance") => {
                let (r, _) = keyword("balance")(rest)?;
                let (r, b) = next(
                    "round-robin, least-sessions, sticky-client or sticky-user",
                    |t| match t {
                        "round-robin" => Some(Balance::RoundRobin),
                        "least-sessions" => Some(Balance::LeastSessions),
                        "sticky-client" => Some(Balance::StickyClient),
                        "sticky-user" => Some(Balance::StickyUser),
                        _ => None,
                    },
                )(r)?;
                balance = b;
                rest = r;
            }
            Some("check") => {
                let (r, _) = keyword("check")(rest)?;
                let (r, _) = keyword("interval")(r)?;
                let (r, interval) = next("a duration such as 2s", |t| {
                    duration(t).filter(|d| !d.is_zero())
                })(r)?;
                let (r, _) = keyword("fall")(r)?;
                let (r, fall) = next("a number above 0", |t| t.parse().ok().filter(|n| *n > 0))(r)?;
                let (r, _) = keyword("rise")(r)?;
                let (r, rise) = next("a number above 0", |t| t.parse().ok().filter(|n| *n > 0))(r)?;
                check = Some(Check {
                    interval,
                    fall,
                    rise,
                });
                rest = r;
            }
            Some("send-proxy") => {
                let (r, _) = keyword("send-proxy")(rest)?;
                let (r, v) = next("a PROXY protocol version, v1 or v2", |t| match t {
                    "v1" => Some(ProxyVersion::V1),
                    "v2" => Some(ProxyVersion::V2),
                    _ => None,
                })(r)?;
                send_proxy = Some(v);
                rest = r;
            }
            Some("users") => {
                let (r, _) = keyword("users")(rest)?;
                let what = "user names or patterns such as alice or { ops-*, backup }";
                let (r, names) = words(what)(r)?;
                users = names;
                rest = r;
            }
            Some("hosts") => {
                let (r, _) = keyword("hosts")(rest)?;
                let what = "host names or patterns such as ftp.example.net or { *.example.org }";
                let (r, names) = words(what)(r)?;
                hosts = names;
                rest = r;
            }
            _ => break,
        }
    }
    let pool = Pool {
        name: name.to_string(),
        backends,
        balance,
        check,
        users,
        hosts,
        send_proxy,
        origin,
    };
    Ok((rest, Statement::Pool(pool)))
}

/// `tls cert FILE key FILE` or `tls intercept ca FILE key FILE`.
fn tls_statement(i: &str) -> PResult<'_, Statement> {
    let (rest, what) = next("cert or intercept", |t| {
        matches!(t, "cert" | "intercept").then_some(t)
    })(i)?;
    let rest = if what == "intercept" {
        keyword("ca")(rest)?.0
    } else {
        rest
    };
    let (rest, cert) = path(rest)?;
    let (rest, _) = keyword("key")(rest)?;
    let (rest, key) = path(rest)?;
    if what == "intercept" {
        return Ok((rest, Statement::TlsIntercept { ca: cert, key }));
    }
    Ok((rest, Statement::Tls { cert, key }))
}

/// `set NAME VALUE`, read by the settings table.
fn set_statement(i: &str) -> PResult<'_, Statement> {
    let (at, _) = space0(i)?;
    let (rest, name) = next("a setting name", Some)(at)?;
    let Some(spec) = settings::find(name) else {
        let known = settings::names();
        return fail(at, format!("unknown setting `{name}`; known: {known}"));
    };
    let (value_at, _) = space0(rest)?;
    let (rest, value) = next(spec.expects, Some)(rest)?;
    match (spec.read)(value) {
        Ok(setting) => Ok((rest, Statement::Set(setting))),
        Err(Some(why)) => fail(value_at, why),
        Err(None) => fail(
            value_at,
            format!("expected {}, found `{value}`", spec.expects),
        ),
    }
}

fn listen_statement<'a>(i: &'a str, tables: &Tables) -> PResult<'a, Statement> {
    let (rest, (addr, mode)) = listen_mode(i)?;
    let (rest, data_path) = if peek(rest) == Some("data-path") {
        let (rest, _) = keyword("data-path")(rest)?;
        next("a data path (relay or kernel)", |t| match t {
            "relay" => Some(DataPath::Relay),
            "kernel" => Some(DataPath::Kernel),
            _ => None,
        })(rest)?
    } else {
        (rest, DataPath::Relay)
    };
    let (tls_at, _) = space0(rest)?;
    let (rest, tls) = optional_keyword(rest, "tls");
    if tls && mode == ListenMode::Forward {
        // The session is decided only at `USER name@host`, inside the TLS.
        return fail(
            tls_at,
            "tls implicit goes with reverse and transparent listeners",
        );
    }
    let rest = if tls {
        keyword("implicit")(rest)?.0
    } else {
        rest
    };
    let (proxy_at, _) = space0(rest)?;
    let (rest, accept_proxy) = optional_keyword(rest, "accept-proxy");
    if !accept_proxy {
        return Ok((rest, Statement::Listen(addr, mode, data_path, tls, None)));
    }
    if matches!(mode, ListenMode::Transparent(_)) {
        // An intercepted connection comes from the client itself.
        return fail(
            proxy_at,
            "accept-proxy goes with reverse and forward listeners (behind a load balancer)",
        );
    }
    let (rest, _) = keyword("from")(rest)?;
    let (rest, trusted) = addrs(rest, tables)?;
    let listen = Statement::Listen(addr, mode, data_path, tls, Some(trusted));
    Ok((rest, listen))
}

fn listen_mode(i: &str) -> PResult<'_, (SocketAddr, ListenMode)> {
    let (rest, mode) = next("a listener mode (reverse, transparent or forward)", |t| {
        matches!(t, "reverse" | "transparent" | "forward").then_some(t)
    })(i)?;
    let (rest, addr) = next(
        "a listen address such as 127.0.0.1:2121 or [::1]:2121",
        socket_addr,
    )(rest)?;
    if mode == "forward" {
        return Ok((rest, (addr, ListenMode::Forward)));
    }
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
        let mode = ListenMode::Transparent(match (tproxy, preserve_source) {
            (false, _) => Interception::Redirect,
            (true, false) => Interception::Tproxy {
                source: Source::Proxy,
            },
            (true, true) => Interception::Tproxy {
                source: Source::Peer,
            },
        });
        return Ok((rest, (addr, mode)));
    }
    let (rest, pool) = optional_keyword(rest, "pool");
    if pool {
        let (rest, name) = next("a pool name", Some)(rest)?;
        return Ok((
            rest,
            (
                addr,
                ListenMode::Pool {
                    pool: name.to_string(),
                },
            ),
        ));
    }
    let (rest, _) = keyword("upstream")(rest)?;
    let (rest, mut up) = next("an upstream HOST:PORT", upstream)(rest)?;
    let (rest, send_proxy) = optional_keyword(rest, "send-proxy");
    let (rest, version) = if send_proxy {
        next("a PROXY protocol version, v1 or v2", |t| match t {
            "v1" => Some(ProxyVersion::V1),
            "v2" => Some(ProxyVersion::V2),
            _ => None,
        })(rest)?
    } else {
        (rest, ProxyVersion::V1)
    };
    up.send_proxy = send_proxy.then_some(version);
    Ok((rest, (addr, ListenMode::Reverse { upstream: up })))
}

fn metrics_statement<'a>(i: &'a str, tables: &Tables) -> PResult<'a, Statement> {
    let (rest, _) = keyword("listen")(i)?;
    let (mut rest, addr) = next("an address such as 127.0.0.1:9121", socket_addr)(rest)?;
    let mut admin = Admin::default();
    let mut token_file = None;
    loop {
        let (at, _) = space0(rest)?;
        match peek(rest) {
            Some("sessions") => {
                let (r, _) = keyword("sessions")(rest)?;
                let (r, on) = next("`on` or `off`", |t| match t {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                })(r)?;
                admin.sessions = on;
                rest = r;
            }
            Some("allow") => {
                let (r, _) = keyword("allow")(rest)?;
                let (r, allow) = addrs(r, tables)?;
                admin.allow = Some(allow);
                rest = r;
            }
            Some("token-file") => {
                let (r, _) = keyword("token-file")(rest)?;
                let (r, file) = path(r)?;
                token_file = Some(file);
                rest = r;
            }
            Some(t) if !t.starts_with('#') => {
                return fail(
                    at,
                    format!("expected `sessions`, `allow` or `token-file`, found `{t}`"),
                );
            }
            _ => return Ok((rest, Statement::Metrics(addr, admin, token_file))),
        }
    }
}

/// A file path: a bare token or a `"quoted"` one (which may contain blanks).
fn path(i: &str) -> PResult<'_, PathBuf> {
    let (at, _) = space0(i)?;
    if at.starts_with('"') {
        let (rest, text) = quoted(at)?;
        return Ok((rest, PathBuf::from(text)));
    }
    next("a file path", |t| Some(PathBuf::from(t)))(at)
}

fn table_statement<'a>(i: &'a str, tables: &Tables) -> PResult<'a, Statement> {
    let (at, _) = space0(i)?;
    let (rest, name) = next("a table name such as <lan>", table_name)(at)?;
    if tables.contains_key(name) {
        return fail(at, format!("table <{name}> is already defined"));
    }
    let (body_at, _) = space0(rest)?;
    if body_at.starts_with('{') {
        let (rest, items) = braced(body_at, "addresses or prefixes")?;
        let mut nets = Vec::new();
        for item in items {
            match prefix(item) {
                Some(net) => nets.push(net),
                None => {
                    return fail(
                        from_part(body_at, item),
                        format!("expected an address or a prefix, found `{item}`"),
                    );
                }
            }
        }
        return Ok((
            rest,
            Statement::Table(name.to_string(), TableBody::Inline(nets)),
        ));
    }
    let (rest, _) = keyword("file")(rest).or_else(|_| {
        fail(
            body_at,
            "expected `{ addresses }` or `file PATH` after the table name",
        )
    })?;
    let (rest, file) = path(rest)?;
    Ok((
        rest,
        Statement::Table(name.to_string(), TableBody::File(file)),
    ))
}

/// A `"double-quoted"` reply text: printable, no `"` inside, at most 200 characters.
fn quoted(at: &str) -> PResult<'_, &str> {
    let Some(body) = at.strip_prefix('"') else {
        return fail(at, "expected a \"quoted text\"");
    };
    let Some(end) = body.find('"') else {
        return fail(at, "a quoted text needs its closing `\"`");
    };
    let text = body.get(..end).unwrap_or_default();
    if text.chars().any(char::is_control) || text.chars().count() > 200 {
        return fail(
            at,
            "a quoted text must be printable and at most 200 characters",
        );
    }
    Ok((body.get(end + 1..).unwrap_or_default(), text))
}

type Tables = HashMap<String, Vec<IpNet>>;

/// `any`, an address set, or a negated one, as written after `from`/`to`.
fn addrs<'a>(i: &'a str, tables: &Tables) -> PResult<'a, AddrMatch> {
    let (at, _) = space0(i)?;
    let item =
        |at: &'a str, t: &'a str, nets: &mut Vec<IpNet>| -> Result<(), nom::Err<Failure<'a>>> {
            if let Some(name) = table_name(t) {
                match tables.get(name) {
                    Some(table) => nets.extend_from_slice(table),
                    None => {
                        return fail::<()>(
                            at,
                            format!("unknown table <{name}>; define it above its first use"),
                        )
                        .map(|_| ());
                    }
                }
            } else if let Some(net) = prefix(t) {
                nets.push(net);
            } else {
                return fail::<()>(
                    at,
                    format!("expected `any`, an address, a prefix or a <table>, found `{t}`"),
                )
                .map(|_| ());
            }
            Ok(())
        };
    let mut nets = Vec::new();
    if at.starts_with('{') {
        let (rest, items) = braced(at, "addresses, prefixes or <tables>")?;
        for t in &items {
            item(from_part(at, t), t, &mut nets)?;
        }
        let label = format!("{{ {} }}", items.join(", "));
        let set = AddrSet {
            label,
            negated: false,
            nets,
        };
        return Ok((rest, AddrMatch::Set(Arc::new(set))));
    }
    let (rest, t) = match token(at) {
        Ok(v) => v,
        Err(_) => {
            return fail(
                at,
                "expected `any`, an address, a prefix or a <table> before the end of the line",
            );
        }
    };
    if t == "any" {
        return Ok((rest, AddrMatch::Any));
    }
    let (negated, body) = match t.strip_prefix('!') {
        Some(body) => (true, body),
        None => (false, t),
    };
    if body == "any" {
        return fail(at, "`!any` matches nothing; leave the rule out");
    }
    item(
        if negated { from_part(at, body) } else { at },
        body,
        &mut nets,
    )?;
    let set = AddrSet {
        label: t.to_string(),
        negated,
        nets,
    };
    Ok((rest, AddrMatch::Set(Arc::new(set))))
}

/// A port, a range, or a `{ list }` of them.
fn ports(i: &str) -> PResult<'_, PortSet> {
    const WHAT: &str = "a port or a port range such as 21 or 2100-2199";
    let (at, _) = space0(i)?;
    if !at.starts_with('{') {
        let (rest, r) = next(WHAT, port_range)(at)?;
        return Ok((rest, PortSet(vec![r])));
    }
    let (rest, items) = braced(at, "ports or port ranges")?;
    let mut set = Vec::new();
    for t in items {
        match port_range(t) {
            Some(r) => set.push(r),
            None => return fail(from_part(at, t), format!("expected {WHAT}, found `{t}`")),
        }
    }
    Ok((rest, PortSet(set)))
}

/// `active` or `passive`, as the rules and the logs spell them.
fn data_mode(t: &str) -> Option<DataMode> {
    DataMode::ALL.into_iter().find(|m| m.as_str() == t)
}

fn direction(t: &str) -> Option<TransferKind> {
    TransferKind::ALL.into_iter().find(|d| d.as_str() == t)
}

/// The attributes after `data`, in any order, each at most once.
fn data_match(mut rest: &str) -> PResult<'_, DataMatch> {
    let mut m = DataMatch::default();
    loop {
        let (at, _) = space0(rest)?;
        let Some(word) = peek(at) else {
            return Ok((at, m));
        };
        let twice = |what: &str| format!("the data {what} is given twice");
        let after = at.get(word.len()..).unwrap_or_default();
        rest = match word {
            w if data_mode(w).is_some() => {
                if m.mode.is_some() {
                    return fail(at, twice("mode"));
                }
                m.mode = data_mode(w);
                after
            }
            "inet" | "inet6" => {
                if m.family.is_some() {
                    return fail(at, twice("family"));
                }
                m.family = Some(if word == "inet" {
                    Family::Inet
                } else {
                    Family::Inet6
                });
                after
            }
            "ports" => {
                if m.ports.is_some() {
                    return fail(at, twice("port range"));
                }
                let (rest, p) = ports(after)?;
                m.ports = Some(p);
                rest
            }
            w if w.starts_with('{') || direction(w).is_some() => {
                if !m.directions.is_empty() {
                    return fail(at, twice("direction"));
                }
                let what = "download, upload or listing";
                let (rest, items) = if w.starts_with('{') {
                    braced(at, what)?
                } else {
                    (after, vec![w])
                };
                for t in items {
                    match direction(t) {
                        Some(d) => m.directions.push(d),
                        None => {
                            return fail(from_part(at, t), format!("expected {what}, found `{t}`"));
                        }
                    }
                }
                rest
            }
            other => {
                return fail(
                    at,
                    format!(
                        "unexpected `{other}`; a data rule takes active, passive, inet, \
                         inet6, ports, download, upload or listing"
                    ),
                );
            }
        };
    }
}

fn rule_statement<'a>(
    verdict: Verdict,
    i: &'a str,
    origin: Origin,
    tables: &Tables,
) -> PResult<'a, Statement> {
    // `log` may come before or after `return-code`.
    let (i, log_first) = optional_keyword(i, "log");
    let (code_at, _) = space0(i)?;
    let (rest, has_code) = optional_keyword(i, "return-code");
    let (rest, reply) = if has_code {
        if verdict == Verdict::Pass {
            return fail(code_at, "return-code only goes with block");
        }
        let code = |t: &str| t.parse::<u16>().ok().filter(|c| (400..=599).contains(c));
        let (rest, code) = next("a reply code from 400 to 599", code)(rest)?;
        let (text_at, _) = space0(rest)?;
        let (rest, text) = if text_at.starts_with('"') {
            let (rest, text) = quoted(text_at)?;
            (rest, Some(text.to_string()))
        } else {
            (rest, None)
        };
        (rest, Some(ReturnCode { code, text }))
    } else {
        (rest, None)
    };
    let (rest, log) = if log_first {
        (rest, true)
    } else {
        optional_keyword(rest, "log")
    };
    let (rest, has_on) = optional_keyword(rest, "on");
    let (rest, on) = if has_on {
        let (rest, addr) = next(
            "a listener address such as 0.0.0.0:8021 or [::]:8021",
            socket_addr,
        )(rest)?;
        (rest, Some(addr))
    } else {
        (rest, None)
    };
    let (rest, has_from) = optional_keyword(rest, "from");
    let (rest, from) = if has_from {
        addrs(rest, tables)?
    } else {
        (rest, AddrMatch::Any)
    };
    let (rest, has_to) = optional_keyword(rest, "to");
    let (rest, to) = if has_to {
        addrs(rest, tables)?
    } else {
        (rest, AddrMatch::Any)
    };
    let (rest, has_port) = optional_keyword(rest, "port");
    let (rest, port) = if has_port {
        let (rest, p) = ports(rest)?;
        (rest, Some(p))
    } else {
        (rest, None)
    };
    let (subject_at, _) = space0(rest)?;
    let (rest, subject) = match peek(subject_at) {
        Some("cmd") => command_subject(subject_at.get(3..).unwrap_or_default())?,
        Some("user") => {
            let what = "user names or patterns such as root or { root, adm* }";
            let (rest, users) = words(what)(subject_at.get(4..).unwrap_or_default())?;
            (rest, Subject::Users(users))
        }
        Some("data") => {
            let (rest, m) = data_match(subject_at.get(4..).unwrap_or_default())?;
            (rest, Subject::Data(m))
        }
        _ => (rest, Subject::Session),
    };
    let (mode_at, _) = space0(rest)?;
    let (rest, has_mode) = optional_keyword(rest, "server-mode");
    let (rest, server_mode) = if has_mode {
        if verdict != Verdict::Pass || subject != Subject::Session {
            return fail(mode_at, "server-mode only goes with a session pass rule");
        }
        let mode = |t: &str| match t {
            "keep" => Some(None),
            t => data_mode(t).map(Some),
        };
        next("active, passive or keep", mode)(rest)?
    } else {
        (rest, None)
    };
    let session_pass = verdict == Verdict::Pass && subject == Subject::Session;
    let (rest, tls) = tls_clauses(rest, session_pass)?;
    let rule = SessionRule {
        verdict,
        log,
        on,
        from,
        to,
        port,
        subject,
        reply,
        server_mode,
        tls,
        origin,
    };
    Ok((rest, Statement::Rule(rule)))
}

/// `tls client …`, `tls server …` and `tls passthrough …`, each at most once, in any
/// order.
fn tls_clauses(i: &str, session_pass: bool) -> PResult<'_, TlsPolicy> {
    let mut tls = TlsPolicy::default();
    let (mut client_seen, mut server_seen, mut passthrough_seen) = (false, false, false);
    let mut rest = i;
    loop {
        let (tls_at, _) = space0(rest)?;
        let (after, has_tls) = optional_keyword(rest, "tls");
        if !has_tls {
            return Ok((rest, tls));
        }
        if !session_pass {
            return fail(
                tls_at,
                "tls client and tls server only go with a session pass rule",
            );
        }
        let (side_at, _) = space0(after)?;
        let (after, side) = next("client, server or passthrough", |t| {
            matches!(t, "client" | "server" | "passthrough").then_some(t)
        })(after)?;
        let seen = match side {
            "client" => &mut client_seen,
            "server" => &mut server_seen,
            _ => &mut passthrough_seen,
        };
        if std::mem::replace(seen, true) {
            return fail(side_at, format!("tls {side} is given twice"));
        }
        rest = match side {
            "client" => tls_client(after, &mut tls)?.0,
            "server" => tls_server(after, &mut tls)?.0,
            _ => tls_passthrough(after, &mut tls)?.0,
        };
        let terminated = tls.client != ClientTls::Deny || tls.server != ServerTls::Off;
        if tls.passthrough.is_some() && terminated {
            return fail(
                tls_at,
                "tls passthrough goes without tls client and tls server: ftpgate either \
                 terminates a session's TLS or passes it through",
            );
        }
    }
}

/// `ports LOW-HIGH`, after `tls passthrough`: the server's passive ports.
fn tls_passthrough<'a>(i: &'a str, tls: &mut TlsPolicy) -> PResult<'a, ()> {
    let (rest, _) = keyword("ports")(i)?;
    let (at, _) = space0(rest)?;
    let (rest, range) = next("the server's passive ports, LOW-HIGH", |t| {
        let (lo, hi) = t.split_once('-')?;
        let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
        (lo <= hi).then_some(PortRange { lo, hi })
    })(rest)?;
    if range.lo < crate::vocab::MIN_DATA_PORT {
        return fail(
            at,
            format!(
                "passthrough ports start at {} or above: below are the server's own services",
                crate::vocab::MIN_DATA_PORT
            ),
        );
    }
    tls.passthrough = Some(range);
    Ok((rest, ()))
}

/// `client (deny | optional | require) [require-reuse] [ccc]`, after `tls client`.
fn tls_client<'a>(i: &'a str, tls: &mut TlsPolicy) -> PResult<'a, ()> {
    let (mut rest, client) = next("deny, optional or require", ClientTls::parse)(i)?;
    tls.client = client;
    // `require-reuse` and `ccc`, in either order.
    loop {
        let (at, _) = space0(rest)?;
        let (after, reuse) = optional_keyword(rest, "require-reuse");
        let (after, ccc) = if reuse {
            (after, false)
        } else {
            optional_keyword(rest, "ccc")
        };
        if !reuse && !ccc {
            return Ok((rest, ()));
        }
        if client == ClientTls::Deny {
            let word = if reuse { "require-reuse" } else { "ccc" };
            return fail(
                at,
                format!("{word} goes with tls client optional or require"),
            );
        }
        tls.require_reuse |= reuse;
        tls.ccc |= ccc;
        rest = after;
    }
}

/// `(off | match | require) [ca (FILE | system) | no-verify] [implicit]`, after
/// `tls server`.
fn tls_server<'a>(i: &'a str, tls: &mut TlsPolicy) -> PResult<'a, ()> {
    let (rest, server) = next("off, match or require", ServerTls::parse)(i)?;
    tls.server = server;
    let (at, _) = space0(rest)?;
    let (rest, verify) = match peek(rest) {
        Some("ca") => {
            let (rest, _) = keyword("ca")(rest)?;
            let (rest, path) = path(rest)?;
            let verify = if path.as_os_str() == "system" {
                Verify::System
            } else {
                Verify::CaFile(path)
            };
            (rest, Some(verify))
        }
        Some("no-verify") => (keyword("no-verify")(rest)?.0, Some(Verify::Off)),
        _ => (rest, None),
    };
    let (implicit_at, _) = space0(rest)?;
    let (rest, implicit) = optional_keyword(rest, "implicit");
    if server == ServerTls::Off && (verify.is_some() || implicit) {
        let at = if verify.is_some() { at } else { implicit_at };
        return fail(at, "tls server off takes no ca, no-verify or implicit");
    }
    if implicit && server == ServerTls::Match {
        // Implicit TLS starts before the client has said anything about TLS.
        return fail(implicit_at, "implicit goes with tls server require");
    }
    tls.verify = verify.unwrap_or_default();
    tls.server_implicit = implicit;
    Ok((rest, ()))
}

/// `cmd VERB`, `cmd SITE SUB` or `cmd { VERB, SITE SUB, ... }`.
fn command_subject(i: &str) -> PResult<'_, Subject> {
    let what = "command verbs such as DELE or { SITE CHMOD, DELE }";
    let (at, _) = space0(i)?;
    let (rest, items): (&str, Vec<String>) = if at.starts_with('{') {
        let Some(end) = at.find('}') else {
            return fail(at, "a `{` list needs its closing `}`");
        };
        let inner = at.get(1..end).unwrap_or_default();
        let items: Vec<String> = inner
            .split(',')
            .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        (at.get(end + 1..).unwrap_or_default(), items)
    } else {
        let (rest, verb) = next(what, Some)(at)?;
        // `cmd SITE CHMOD`: the sub-command is the one word that may follow.
        match peek(rest) {
            Some(sub) if verb.eq_ignore_ascii_case("SITE") => {
                let (rest, _) = token(space0(rest)?.0)?;
                (rest, vec![format!("{verb} {sub}")])
            }
            _ => (rest, vec![verb.to_string()]),
        }
    };
    let mut verbs = Vec::new();
    for item in &items {
        let valid = match item.split_once(' ') {
            None => !item.is_empty() && item.chars().all(|c| c.is_ascii_alphabetic()),
            Some((site, sub)) => {
                site.eq_ignore_ascii_case("SITE")
                    && !sub.is_empty()
                    && sub.chars().all(|c| c.is_ascii_alphanumeric())
            }
        };
        if !valid {
            let shown = if item.is_empty() { "" } else { item.as_str() };
            return fail(
                at,
                if shown.contains(' ') || shown.is_empty() {
                    format!("expected {what}, separated by commas")
                } else {
                    format!("`{shown}` is not a command verb")
                },
            );
        }
        verbs.push(item.to_ascii_uppercase());
    }
    Ok((rest, Subject::Commands(verbs)))
}

/// One word, or a `{ a, b }` list of them.
fn words<'a>(what: &'static str) -> impl FnMut(&'a str) -> PResult<'a, Vec<String>> {
    move |i: &'a str| {
        let (at, _) = space0(i)?;
        if !at.starts_with('{') {
            return next(what, |t: &str| {
                (!t.starts_with('}')).then(|| vec![t.to_string()])
            })(at);
        }
        let (rest, items) = braced(at, what)?;
        Ok((rest, items.into_iter().map(str::to_string).collect()))
    }
}

fn statement<'a>(i: &'a str, origin: Origin, tables: &Tables) -> PResult<'a, Statement> {
    let (at, _) = space0(i)?;
    let (rest, word) = token(at)?;
    let (rest, stmt) = match word {
        "set" => set_statement(rest)?,
        "listen" => listen_statement(rest, tables)?,
        "metrics" => metrics_statement(rest, tables)?,
        "table" => table_statement(rest, tables)?,
        "include" => {
            let (rest, p) = path(rest)?;
            (rest, Statement::Include(p))
        }
        "tls" => tls_statement(rest)?,
        "pool" => pool_statement(rest, origin.clone())?,
        "pass" => rule_statement(Verdict::Pass, rest, origin, tables)?,
        "block" => rule_statement(Verdict::Block, rest, origin, tables)?,
        other => {
            return fail(
                at,
                format!(
                    "unknown statement `{other}`; expected set, listen, metrics, table, \
                     include, tls, pass or block"
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

/// Cuts a trailing `#` comment (a `#` inside a quoted text is text).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// Includes nest at most this deep (a cycle is reported before that).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Compiles one file and what it includes into one [`Config`].
struct Builder {
    config: Config,
    settings: Settings,
    tables: Tables,
    /// The include chain, to report cycles.
    stack: Vec<PathBuf>,
    /// Every error so far, in file order.
    errors: Vec<RuleError>,
    /// The TLS client configurations of `tls server` rules, one per way of checking
    /// servers (the system store is read once).
    connectors: HashMap<Verify, crate::tls::Connector>,
}

/// How many errors a file may have before reading stops (a file that is not a rule
/// file at all would otherwise have one per line).
const MAX_ERRORS: usize = 50;

/// An error located in `code` (the line without its comment) at `at`, a suffix of it.
fn located(
    file: &str,
    line: usize,
    full: &str,
    code: &str,
    at: &str,
    message: String,
) -> RuleError {
    let offset = code.len().saturating_sub(at.len());
    let before = code.get(..offset).unwrap_or_default();
    let width = at
        .split(char::is_whitespace)
        .next()
        .map_or(1, |t| t.chars().count().max(1));
    RuleError {
        file: file.to_string(),
        line,
        col: before.chars().count() + 1,
        message,
        source_line: full.trim_end().to_string(),
        width,
        more: Vec::new(),
    }
}

fn whole_file(file: &str, message: String) -> RuleError {
    RuleError {
        file: file.to_string(),
        line: 0,
        col: 0,
        message,
        source_line: String::new(),
        width: 0,
        more: Vec::new(),
    }
}

/// A certificate and a key file a `tls` statement names, resolved against the rule
/// file that names them, and read.
fn read_pair(file: &str, paths: [&Path; 2]) -> Result<[(PathBuf, Vec<u8>); 2], String> {
    let read = |p: &Path| {
        let p = relative_to(file, p);
        read_file(&p)
            .map(|text| (p.clone(), text.into_bytes()))
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let [cert, key] = paths;
    Ok([read(cert)?, read(key)?])
}

/// What is wrong with a certificate and its key, naming both files.
fn pair_error(cert: &Path, key: &Path, e: &str) -> String {
    format!("{} and {}: {e}", cert.display(), key.display())
}

/// Resolves `path` against the directory of the file that names it.
fn relative_to(file: &str, path: &Path) -> PathBuf {
    match Path::new(file).parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

impl Builder {
    /// Compiles every line of `file`; an error in one is recorded and the next line is
    /// read, so that `check` reports them all.
    fn file(&mut self, file: &str, text: &str) {
        let file_arc: Arc<str> = Arc::from(file);
        for (index, full) in text.lines().enumerate() {
            if self.errors.len() >= MAX_ERRORS {
                return;
            }
            let origin = Origin {
                file: file_arc.clone(),
                line: index + 1,
            };
            if let Err(e) = self.line(file, origin, full) {
                self.errors.push(e);
            }
        }
    }

    fn line(&mut self, file: &str, origin: Origin, full: &str) -> Result<(), RuleError> {
        let line_no = origin.line;
        let code = strip_comment(full);
        if code.trim().is_empty() {
            return Ok(());
        }
        let error = |at: &str, message: String| located(file, line_no, full, code, at, message);
        let warning = |at: &str, message: String| {
            let e = located(file, line_no, full, code, at, message);
            format!("{}:{}:{}: warning: {}", e.file, e.line, e.col, e.message)
        };
        let stmt = match statement(code, origin.clone(), &self.tables) {
            Ok((_, stmt)) => stmt,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                return Err(error(e.at, e.message.into_owned()));
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(error("", "incomplete statement".into()));
            }
        };
        // Where the statement's argument starts, for errors found after parsing.
        let argument = code
            .trim_start()
            .split_once(char::is_whitespace)
            .map_or(code, |(_, rest)| from_part(code, rest.trim_start()));
        match stmt {
            Statement::Set(setting) => {
                let name = argument.split_whitespace().next().unwrap_or_default();
                if let Some(first) = self.config.set_at.insert(name.to_string(), origin.clone()) {
                    self.config.parse_warnings.push(warning(
                        argument,
                        format!("`set {name}` again: this line overrides {first}"),
                    ));
                }
                setting.apply(&mut self.settings);
            }
            Statement::Listen(addr, mode, data_path, tls_implicit, accept_proxy) => {
                let at = code.find(&addr.to_string()).map_or(code, |p| &code[p..]);
                if self.config.listeners.iter().any(|l| l.addr == addr) {
                    return Err(error(at, format!("{addr} is already a listener")));
                }
                // One family, one port, and one of the two the wildcard: the second
                // bind fails (IPv6 listeners are IPv6-only, so [::] and 0.0.0.0 may
                // share a port).
                if let Some(other) = self.config.listeners.iter().find(|l| {
                    l.addr.port() == addr.port()
                        && l.addr.is_ipv4() == addr.is_ipv4()
                        && (l.addr.ip().is_unspecified() || addr.ip().is_unspecified())
                }) {
                    return Err(error(
                        at,
                        format!(
                            "{addr} cannot be bound beside {} ({}): one of them takes \
                             port {} on every address",
                            other.addr,
                            other.origin,
                            addr.port()
                        ),
                    ));
                }
                self.config.listeners.push(Listener {
                    addr,
                    mode,
                    data_path,
                    tls_implicit,
                    accept_proxy,
                    origin,
                });
            }
            Statement::Metrics(addr, mut admin, token_file) => {
                if let Some(first) = &self.config.admin.origin {
                    return Err(error(
                        code,
                        format!("`metrics listen` is already stated at {first}"),
                    ));
                }
                if let Some(token) = token_file {
                    let token = relative_to(file, &token);
                    admin.token = Some(read_token(&token).map_err(|e| error(argument, e))?);
                }
                admin.origin = Some(origin);
                self.config.metrics_listen = Some(addr);
                self.config.admin = admin;
            }
            Statement::Rule(rule) => {
                if let Subject::Commands(verbs) = &rule.subject {
                    for verb in verbs {
                        let base = verb.split(' ').next().unwrap_or_default();
                        let at = code.find(verb.as_str()).map_or(argument, |p| &code[p..]);
                        let canonical = crate::codec::canonical_verb(base);
                        let note = if canonical != base {
                            Some(format!(
                                "`{base}` reaches the rules as `{canonical}`: this rule \
                                 never matches; write `{canonical}`"
                            ))
                        } else if !crate::codec::is_known_verb(base) {
                            Some(format!(
                                "`{base}` is not a verb ftpgate knows (a typo?): with \
                                 `set unknown-commands block` it is refused anyway, with \
                                 `pass` only this rule stops it"
                            ))
                        } else {
                            None
                        };
                        if let Some(note) = note {
                            self.config.parse_warnings.push(warning(at, note));
                        }
                    }
                }
                let mut rule = rule;
                if rule.tls.server != ServerTls::Off {
                    if let Verify::CaFile(path) = &rule.tls.verify {
                        rule.tls.verify = Verify::CaFile(relative_to(file, path));
                    }
                    let at = code.find("tls server").map_or(argument, |p| &code[p..]);
                    let connector = self.connector(&rule.tls.verify).map_err(|e| error(at, e))?;
                    rule.tls.connector = Some(connector);
                }
                self.config.session_rules.push(rule);
            }
            Statement::Table(name, body) => {
                let nets = match body {
                    TableBody::Inline(nets) => nets,
                    TableBody::File(path) => {
                        let path = relative_to(file, &path);
                        table_file(&path).map_err(|e| error(argument, e))?
                    }
                };
                self.tables.insert(name.clone(), nets.clone());
                self.config.tables.push(Table { name, nets, origin });
            }
            Statement::Tls { cert, key } => {
                let [(cert, cert_pem), (key, key_pem)] =
                    read_pair(file, [&cert, &key]).map_err(|m| error(argument, m))?;
                let certified = crate::tls::Certified::from_pem(&cert_pem, &key_pem)
                    .map_err(|e| error(argument, pair_error(&cert, &key, &e)))?;
                let not_after = crate::tls::not_after(&cert_pem);
                self.config.tls_certs.push(TlsCert {
                    cert,
                    key,
                    certified,
                    not_after,
                    origin,
                });
            }
            Statement::TlsIntercept { ca, key } => {
                if let Some(first) = &self.config.tls_intercept {
                    return Err(error(
                        argument,
                        format!(
                            "tls intercept again: one CA signs for ftpgate ({})",
                            first.origin
                        ),
                    ));
                }
                let [(ca, ca_pem), (key, key_pem)] =
                    read_pair(file, [&ca, &key]).map_err(|m| error(argument, m))?;
                let interceptor = crate::tls::Interceptor::from_pem(&ca_pem, &key_pem)
                    .map_err(|e| error(argument, pair_error(&ca, &key, &e)))?;
                self.config.tls_intercept = Some(TlsIntercept {
                    ca,
                    key,
                    interceptor,
                    not_after: crate::tls::not_after(&ca_pem),
                    origin,
                });
            }
            Statement::Pool(pool) => {
                if let Some(first) = self.config.pool(&pool.name) {
                    return Err(error(
                        argument,
                        format!("pool {} again (first at {})", pool.name, first.origin),
                    ));
                }
                self.config.pools.push(pool);
            }
            Statement::Include(path) => {
                let path = relative_to(file, &path);
                // A problem with the include itself points at this line; those
                // inside the included file are recorded at their own location.
                self.include(&path)
                    .map_err(|message| error(argument, message))?;
            }
        }
        Ok(())
    }

    /// The TLS client configuration for `verify`, made once per rule set.
    fn connector(&mut self, verify: &Verify) -> Result<crate::tls::Connector, String> {
        if let Some(connector) = self.connectors.get(verify) {
            return Ok(connector.clone());
        }
        let connector = match verify {
            Verify::System => crate::tls::Connector::verifying(crate::tls::system_roots()?)?,
            Verify::CaFile(path) => {
                let pem =
                    read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let roots = crate::tls::roots_from_pem(pem.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                crate::tls::Connector::verifying(roots)?
            }
            Verify::Off => crate::tls::Connector::unverified()?,
        };
        self.connectors.insert(verify.clone(), connector.clone());
        Ok(connector)
    }

    fn include(&mut self, path: &Path) -> Result<(), String> {
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} files"
            ));
        }
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&key) {
            return Err(format!(
                "{} includes itself (through {})",
                path.display(),
                self.stack
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ));
        }
        let text = read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.stack.push(key);
        self.file(&path.display().to_string(), &text);
        self.stack.pop();
        Ok(())
    }

    fn finish(mut self, file: &str) -> Result<Config, RuleError> {
        if self.config.listeners.is_empty() && self.errors.is_empty() {
            self.errors.push(RuleError {
                file: file.to_string(),
                line: 1,
                col: 1,
                message: "no `listen` statement: ftpgate would accept nothing".into(),
                source_line: String::new(),
                width: 0,
                more: Vec::new(),
            });
        }
        if self.config.tls_certs.is_empty() && self.config.tls_intercept.is_none() {
            for l in self.config.listeners.iter().filter(|l| l.tls_implicit) {
                self.errors.push(RuleError {
                    file: l.origin.file.to_string(),
                    line: l.origin.line,
                    col: 1,
                    message: "`tls implicit` needs a certificate: add `tls cert FILE key FILE`"
                        .into(),
                    source_line: String::new(),
                    width: 1,
                    more: Vec::new(),
                });
            }
            for rule in &self.config.session_rules {
                if rule.tls.client != ClientTls::Deny {
                    self.errors.push(RuleError {
                        file: rule.origin.file.to_string(),
                        line: rule.origin.line,
                        col: 1,
                        message: format!(
                            "`tls client {}` needs a certificate: add `tls cert FILE key FILE`",
                            rule.tls.client.as_str()
                        ),
                        source_line: String::new(),
                        width: 1,
                        more: Vec::new(),
                    });
                }
            }
        }
        for l in &self.config.listeners {
            let ListenMode::Pool { pool } = &l.mode else {
                continue;
            };
            if self.config.pool(pool).is_none() {
                self.errors.push(RuleError {
                    file: l.origin.file.to_string(),
                    line: l.origin.line,
                    col: 1,
                    message: format!("no pool {pool}: add `pool {pool} {{ HOST:PORT, … }}`"),
                    source_line: String::new(),
                    width: 1,
                    more: Vec::new(),
                });
            }
        }
        let intercepts = self
            .config
            .listeners
            .iter()
            .any(|l| matches!(l.mode, ListenMode::Transparent(_)));
        for rule in &self.config.session_rules {
            if rule.tls.passthrough.is_some() && !intercepts {
                self.errors.push(RuleError {
                    file: rule.origin.file.to_string(),
                    line: rule.origin.line,
                    col: 1,
                    message: "`tls passthrough` needs a `listen transparent`: its data \
                              connections cross the edge to the server directly"
                        .into(),
                    source_line: String::new(),
                    width: 1,
                    more: Vec::new(),
                });
            }
        }
        let certs: Vec<crate::tls::Certified> = self
            .config
            .tls_certs
            .iter()
            .map(|c| c.certified.clone())
            .collect();
        match crate::tls::Server::new(&certs) {
            Ok(server) => self.config.tls = server,
            Err(message) => self.errors.push(whole_file(file, message)),
        }
        let mut errors = self.errors.into_iter();
        if let Some(mut first) = errors.next() {
            first.more = errors.collect();
            return Err(first);
        }
        self.config.settings = self.settings;
        Ok(self.config)
    }
}

/// A table file: one address or prefix per line, `#` comments.
fn table_file(path: &Path) -> Result<Vec<IpNet>, String> {
    let text = read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut nets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = strip_comment(line).trim();
        if entry.is_empty() {
            continue;
        }
        match prefix(entry) {
            Some(net) => nets.push(net),
            None => {
                return Err(format!(
                    "{}:{}: expected an address or a prefix, found `{entry}`",
                    path.display(),
                    index + 1
                ));
            }
        }
    }
    Ok(nets)
}

fn builder(file: &str) -> Builder {
    let key = Path::new(file);
    Builder {
        config: Config::default(),
        settings: Settings::default(),
        tables: Tables::new(),
        stack: vec![key.canonicalize().unwrap_or_else(|_| key.to_path_buf())],
        errors: Vec::new(),
        connectors: HashMap::new(),
    }
}

/// Parses and validates a rule file's text; `file` names it in errors and origins, and
/// `include`s and table files are read relative to its directory.
pub fn parse_str(file: &str, text: &str) -> Result<Config, RuleError> {
    let mut b = builder(file);
    b.file(file, text);
    b.finish(file)
}

/// Reads and compiles a rule file and what it includes.
pub fn parse_file(path: &Path) -> Result<Config, RuleError> {
    let name = path.display().to_string();
    let text = read_file(path).map_err(|e| whole_file(&name, format!("cannot read: {e}")))?;
    parse_str(&name, &text)
}

/// The bearer token of `token-file`: the file's first line, at least 16 characters.
/// `ftpgate sessions --token-file` reads it the same way.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{}: the token must be one line of at least 16 printable characters",
            path.display()
        ));
    }
    Ok(token)
}

/// The largest rule, include or table file ftpgate reads (a table of a million
/// prefixes fits).
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// Reads a rule, include or table file: a regular file only, so that a FIFO cannot
/// block the reader (it is opened without blocking, then refused) and a device such as
/// `/dev/zero` cannot grow the text without end; and no more than [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!("{what}, not a regular file"));
    }
    let too_big = || format!("larger than {} MiB", MAX_FILE_BYTES >> 20);
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21";

    fn err(text: &str) -> String {
        parse_str("x.rules", text).unwrap_err().to_string()
    }

    /// A certificate and its key, PEM files in `dir`.
    fn cert_files(dir: &Path) -> (String, String) {
        let pair = rcgen::generate_simple_self_signed(vec!["ftp.example.net".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    #[test]
    fn tls_client_goes_on_session_pass_rules_with_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_files(dir.path());
        let text = format!(
            "{LISTEN}\ntls cert {cert} key {key}\npass from any server-mode passive tls client require\n"
        );
        let config = parse_str("x.rules", &text).unwrap();
        assert_eq!(config.session_rules[0].tls.client, ClientTls::Require);
        assert_eq!(config.session_rules[0].server_mode, Some(DataMode::Passive));
        assert_eq!(config.tls_certs.len(), 1);
        assert!(config.tls.is_some());
        let plain = parse_str("x.rules", &format!("{LISTEN}\npass from any\n")).unwrap();
        assert_eq!(plain.session_rules[0].tls.client, ClientTls::Deny);
        assert!(plain.tls.is_none());
    }

    #[test]
    fn tls_implicit_goes_on_reverse_and_transparent_listeners_with_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_files(dir.path());
        let certs = format!("tls cert {cert} key {key}");
        let c = parse_str(
            "x.rules",
            &format!("{LISTEN} data-path kernel tls implicit\n{certs}\npass\n"),
        )
        .unwrap();
        assert!(c.listeners[0].tls_implicit);
        assert_eq!(c.listeners[0].data_path, DataPath::Kernel);
        let c = parse_str(
            "x.rules",
            &format!("listen transparent 0.0.0.0:8021 tls implicit\n{certs}\npass\n"),
        )
        .unwrap();
        assert!(c.listeners[0].tls_implicit);
        assert!(
            !parse_str("x.rules", &format!("{LISTEN}\npass\n"))
                .unwrap()
                .listeners[0]
                .tls_implicit
        );
        assert_eq!(
            err(&format!(
                "listen forward 127.0.0.1:2121 tls implicit\n{certs}\npass\n"
            )),
            "x.rules:1:31: tls implicit goes with reverse and transparent listeners"
        );
        assert_eq!(
            err(&format!("{LISTEN} tls implicit\npass\n")),
            "x.rules:1:1: `tls implicit` needs a certificate: add `tls cert FILE key FILE`"
        );
        assert_eq!(
            err(&format!("{LISTEN} tls explicit\n{certs}\npass\n")),
            "x.rules:1:57: expected implicit, found `explicit`"
        );
    }

    #[test]
    fn tls_server_takes_a_policy_a_way_to_check_the_server_and_implicit() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = cert_files(dir.path());
        let rule = |text: &str| {
            let c = parse_str("x.rules", &format!("{LISTEN}\n{text}\n")).unwrap();
            c.session_rules[0].tls.clone()
        };
        let t = rule("pass from any tls server require");
        assert_eq!((t.server, &t.verify), (ServerTls::Require, &Verify::System));
        assert!(t.connector.is_some() && !t.server_implicit);
        let t = rule(&format!("pass from any tls server match ca {ca}"));
        assert_eq!(t.verify, Verify::CaFile(ca.clone().into()));
        let t = rule("pass tls server require no-verify implicit");
        assert_eq!(t.verify, Verify::Off);
        assert!(t.server_implicit);
        // Without a certificate of ftpgate's own: it is the client on that leg.
        assert_eq!(rule("pass tls server off").server, ServerTls::Off);
        assert!(rule("pass tls server off").connector.is_none());
        // Rules that check servers the same way share one configuration.
        let c = parse_str(
            "x.rules",
            &format!("{LISTEN}\npass from 10.0.0.0/8 tls server require no-verify\npass tls server match no-verify\n"),
        )
        .unwrap();
        assert_eq!(
            c.session_rules[0].tls.connector,
            c.session_rules[1].tls.connector
        );
    }

    #[test]
    fn tls_passthrough_takes_a_port_range_on_an_edge_and_nothing_else_of_tls() {
        let edge = "listen transparent 0.0.0.0:8021";
        let c = parse_str(
            "x.rules",
            &format!("{edge}\npass from any tls passthrough ports 30000-30999\n"),
        )
        .unwrap();
        assert_eq!(
            c.session_rules[0].tls.passthrough,
            Some(PortRange {
                lo: 30000,
                hi: 30999
            })
        );
        assert_eq!(
            err(&format!("{edge}\npass tls passthrough\n")),
            "x.rules:2:21: expected ports before the end of the line"
        );
        assert_eq!(
            err(&format!("{edge}\npass tls passthrough ports 100-2000\n")),
            "x.rules:2:28: passthrough ports start at 1024 or above: below are the server's own services"
        );
        assert_eq!(
            err(&format!("{edge}\npass tls passthrough ports 3000-2000\n")),
            "x.rules:2:28: expected the server's passive ports, LOW-HIGH, found `3000-2000`"
        );
        assert_eq!(
            err(&format!(
                "{edge}\npass tls passthrough ports 30000-30999 tls server require\n"
            )),
            "x.rules:2:40: tls passthrough goes without tls client and tls server: ftpgate \
             either terminates a session's TLS or passes it through"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\npass tls passthrough ports 30000-30999\n"
            )),
            "x.rules:2:1: `tls passthrough` needs a `listen transparent`: its data \
             connections cross the edge to the server directly"
        );
    }

    #[test]
    fn tls_intercept_takes_a_ca_and_its_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let (ca_path, key_path) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let line = format!(
            "tls intercept ca {} key {}",
            ca_path.display(),
            key_path.display()
        );
        let edge = "listen transparent 0.0.0.0:8021";
        // It alone lets a rule say `tls client`.
        let c = parse_str(
            "x.rules",
            &format!("{edge}\n{line}\npass tls client optional\n"),
        )
        .unwrap();
        assert!(c.tls_intercept.is_some() && c.tls.is_none());
        assert!(crate::rules::explain::explain(&c).contains("tls intercept ca "));
        let e = err(&format!("{edge}\n{line}\n{line}\n"));
        assert!(e.starts_with("x.rules:3:5: tls intercept again"), "{e}");
        // A certificate that is no CA, with its own key.
        let (cert, leaf_key) = cert_files(dir.path());
        let e = err(&format!("{edge}\ntls intercept ca {cert} key {leaf_key}\n"));
        assert!(
            e.ends_with("the certificate is no CA (basicConstraints CA:TRUE)"),
            "{e}"
        );
        let e = err(&format!(
            "{edge}\ntls intercept ca /nonexistent.pem key {leaf_key}\n"
        ));
        assert!(
            e.starts_with("x.rules:2:5: cannot read /nonexistent.pem"),
            "{e}"
        );
        assert_eq!(
            err(&format!("{edge}\ntls intercept {cert} key {leaf_key}\n")),
            format!("x.rules:2:15: expected ca, found `{cert}`")
        );
    }

    #[test]
    fn a_listener_behind_a_balancer_names_the_balancers_it_trusts() {
        let c = parse_str(
            "x.rules",
            "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21 accept-proxy from { 10.0.0.2, 10.0.0.3 }\npass\n",
        )
        .unwrap();
        let trusted = c.listeners[0].accept_proxy.as_ref().unwrap();
        assert!(trusted.matches("10.0.0.3".parse().unwrap()));
        assert!(!trusted.matches("10.0.0.4".parse().unwrap()));
        assert!(
            parse_str(
                "x.rules",
                "listen forward 127.0.0.1:2121 accept-proxy from any\npass\n"
            )
            .is_ok()
        );
        assert_eq!(
            err("listen transparent 0.0.0.0:8021 accept-proxy from 10.0.0.2\npass\n"),
            "x.rules:1:33: accept-proxy goes with reverse and forward listeners (behind a load balancer)"
        );
        assert_eq!(
            err(
                "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21 accept-proxy 10.0.0.2\npass\n"
            ),
            "x.rules:1:66: expected from, found `10.0.0.2`"
        );
    }

    #[test]
    fn a_pool_lists_servers_a_balance_and_a_check_for_a_listener() {
        let c = parse_str(
            "x.rules",
            "listen reverse 0.0.0.0:2121 pool web\n\
             pool web { 10.0.0.1:21, ftp.example.net:2121, [2001:db8::5]:21 } balance least-sessions check interval 2s fall 3 rise 2\npass\n",
        )
        .unwrap();
        let pool = &c.pools[0];
        assert_eq!(pool.backends.len(), 3);
        assert_eq!(pool.backends[2].to_string(), "[2001:db8::5]:21");
        assert_eq!(pool.balance, Balance::LeastSessions);
        let check = pool.check.unwrap();
        assert_eq!(
            (check.interval, check.fall, check.rise),
            (Duration::from_secs(2), 3, 2)
        );
        assert_eq!(
            err("listen reverse 0.0.0.0:2121 pool web\npass\n"),
            "x.rules:1:1: no pool web: add `pool web { HOST:PORT, … }`"
        );
        assert_eq!(
            err("pool web { 10.0.0.1:21, nope }\n"),
            "x.rules:1:25: expected a server HOST:PORT, found `nope`"
        );
        assert_eq!(
            err("pool web { 10.0.0.1:21 } balance random\n"),
            "x.rules:1:34: expected round-robin, least-sessions, sticky-client or sticky-user, found `random`"
        );
    }

    #[test]
    fn an_upstream_may_send_a_proxy_header() {
        let c = parse_str(
            "x.rules",
            "listen reverse 127.0.0.1:2121 upstream ftp.example.net:21 send-proxy v2 data-path relay\npass\n",
        )
        .unwrap();
        let ListenMode::Reverse { upstream } = &c.listeners[0].mode else {
            panic!("reverse");
        };
        assert_eq!(upstream.send_proxy, Some(ProxyVersion::V2));
        assert_eq!(
            err("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21 send-proxy v3\npass\n"),
            "x.rules:1:64: expected a PROXY protocol version, v1 or v2, found `v3`"
        );
    }

    #[test]
    fn tls_server_mistakes_point_at_their_place() {
        assert_eq!(
            err(&format!("{LISTEN}\npass tls server maybe\n")),
            "x.rules:2:17: expected off, match or require, found `maybe`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass tls server off no-verify\n")),
            "x.rules:2:21: tls server off takes no ca, no-verify or implicit"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass tls server match implicit\n")),
            "x.rules:2:23: implicit goes with tls server require"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\npass tls server require tls server off\n"
            )),
            "x.rules:2:29: tls server is given twice"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock tls server require\n")),
            "x.rules:2:7: tls client and tls server only go with a session pass rule"
        );
        let e = err(&format!(
            "{LISTEN}\npass tls server require ca /nonexistent.pem\n"
        ));
        assert!(
            e.starts_with("x.rules:2:6: cannot read /nonexistent.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let e = err(&format!(
            "{LISTEN}\npass tls server require ca {}\n",
            empty.display()
        ));
        assert!(e.ends_with("the CA file holds no CERTIFICATE"), "{e}");
    }

    #[test]
    fn tls_mistakes_point_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_files(dir.path());
        let certs = format!("tls cert {cert} key {key}");
        assert_eq!(
            err(&format!(
                "{LISTEN}\n{certs}\nblock from any tls client optional\n"
            )),
            "x.rules:3:16: tls client and tls server only go with a session pass rule"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\n{certs}\npass from any tls client maybe\n"
            )),
            "x.rules:3:26: expected deny, optional or require, found `maybe`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\ntls cert {cert}\n")),
            format!(
                "x.rules:2:{}: expected key before the end of the line",
                10 + cert.len()
            )
        );
        assert!(
            err(&format!("{LISTEN}\ntls cert /nonexistent.pem key {key}\n"))
                .starts_with("x.rules:2:5: cannot read /nonexistent.pem"),
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass from any tls client optional\n")),
            "x.rules:2:1: `tls client optional` needs a certificate: add `tls cert FILE key FILE`"
        );
        // Deny needs nothing, and takes no require-reuse.
        assert!(
            parse_str(
                "x.rules",
                &format!("{LISTEN}\npass from any tls client deny\n")
            )
            .is_ok()
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\npass from any tls client deny require-reuse\n"
            )),
            "x.rules:2:31: require-reuse goes with tls client optional or require"
        );
        let c = parse_str(
            "x.rules",
            &format!("{LISTEN}\n{certs}\npass from any tls client optional require-reuse\n"),
        )
        .unwrap();
        assert!(c.session_rules[0].tls.require_reuse);
        let c = parse_str(
            "x.rules",
            &format!("{LISTEN}\n{certs}\npass from any tls client require ccc require-reuse\n"),
        )
        .unwrap();
        assert!(c.session_rules[0].tls.require_reuse && c.session_rules[0].tls.ccc);
        assert_eq!(
            err(&format!("{LISTEN}\npass from any tls client deny ccc\n")),
            "x.rules:2:31: ccc goes with tls client optional or require"
        );
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Opened without a writer, a FIFO would block the reader forever.
        assert_eq!(read_file(&fifo).unwrap_err(), "a FIFO, not a regular file");
        assert_eq!(
            read_file(Path::new("/dev/zero")).unwrap_err(),
            "a device, not a regular file"
        );
        assert_eq!(
            read_file(dir.path()).unwrap_err(),
            "a directory, not a regular file"
        );
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert_eq!(read_file(&big).unwrap_err(), "larger than 32 MiB");
        let rules = dir.path().join("x.rules");
        std::fs::write(
            &rules,
            format!(
                "{LISTEN}\ninclude /dev/zero\ntable <t> file {}\n",
                fifo.display()
            ),
        )
        .unwrap();
        let e = parse_file(&rules).unwrap_err().to_string();
        assert!(
            e.contains("cannot read /dev/zero: a device, not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn data_path_is_the_relay_unless_a_listener_says_kernel() {
        let c = parse_str(
            "x.rules",
            "listen transparent 0.0.0.0:8021 tproxy preserve-source data-path kernel\n\
             listen transparent [::]:8021 data-path relay\n\
             listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21 data-path kernel\n\
             listen forward 127.0.0.1:2122\n",
        )
        .unwrap();
        let paths: Vec<DataPath> = c.listeners.iter().map(|l| l.data_path).collect();
        assert_eq!(
            paths,
            [
                DataPath::Kernel,
                DataPath::Relay,
                DataPath::Kernel,
                DataPath::Relay
            ]
        );
        assert_eq!(
            c.listeners[0].mode,
            ListenMode::Transparent(Interception::Tproxy {
                source: Source::Peer
            })
        );
    }

    #[test]
    fn parses_every_statement() {
        let text = format!(
            "# comment\nset data-timeout 45s\nset idle-timeout 15m\nset connect-timeout 500ms\n\
             set data-ports 41000-41099\nset max-line 1024\nset advertise 198.51.100.1\n\
             set xferlog /var/log/ftpgate/xferlog\n\
             set max-sessions 100\nset max-sessions-per-client 3\nset login-timeout 20s\n\
             set max-accept-rate-per-client 7\n\
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
        assert_eq!(c.settings.max_accept_rate_per_client, 7);
        assert_eq!(c.settings.login_timeout, Duration::from_secs(20));
        assert_eq!(c.settings.data_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.settings.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9121".parse().unwrap()));
        assert_eq!(c.listeners.len(), 4);
        assert_eq!(
            c.listeners[2].mode,
            ListenMode::Transparent(Interception::Redirect)
        );
        assert_eq!(
            c.listeners[3].mode,
            ListenMode::Transparent(Interception::Tproxy {
                source: Source::Peer
            })
        );
        assert_eq!(
            c.listeners[1].mode,
            ListenMode::Reverse {
                upstream: Upstream {
                    host: "ftp.example.net".into(),
                    port: 21,
                    send_proxy: None,
                }
            }
        );
        assert_eq!(c.session_rules.len(), 2);
        assert!(c.session_rules[0].log);
        assert_eq!(
            c.session_rules[0].port,
            Some(PortSet(vec![PortRange { lo: 21, hi: 21 }]))
        );
        assert_eq!(c.session_rules[1].origin.line, 21);
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
            "x.rules:2:11: expected `any`, an address, a prefix or a <table>, found `198.51.100.0/33`"
        );
        assert_eq!(
            err("listen reverse 127.0.0.1:2121 upstreem 127.0.0.1:21\n"),
            "x.rules:1:31: expected upstream, found `upstreem`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\n  frobnicate\n")),
            "x.rules:2:3: unknown statement `frobnicate`; expected set, listen, metrics, table, include, tls, pass or block"
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
            "x.rules:1:8: expected a listener mode (reverse, transparent or forward), found `sideways`"
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
            err("listen transparent 0.0.0.0:8021 tproxy data-path fast\n"),
            "x.rules:1:50: expected a data path (relay or kernel), found `fast`"
        );
        assert_eq!(
            err("listen transparent 0.0.0.0:8021 data-path kernel tproxy\n"),
            "x.rules:1:50: unexpected `tproxy`"
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
            err(&format!("{LISTEN}\nblock cmd {{ DELE RETR }}\n")),
            "x.rules:2:11: expected command verbs such as DELE or { SITE CHMOD, DELE }, separated by commas"
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
    fn tables_lists_negation_and_port_lists() {
        let text = format!(
            "{LISTEN}\ntable <lan> {{ 198.51.100.0/24, 2001:db8:1::/48 }}\n\
             table <bad> {{ 198.51.100.66 }}\n\
             block from {{ <bad>, 192.0.2.1 }}\n\
             pass from <lan> to !203.0.113.66 port {{ 21, 2121-2122 }}\n"
        );
        let c = parse_str("x.rules", &text).unwrap();
        assert_eq!(c.tables.len(), 2);
        let client = |s: &str| s.parse::<IpAddr>().unwrap();
        let server = |s: &str| s.parse::<SocketAddr>().unwrap();
        let at = |c1: &str, s1: &str| {
            crate::rules::Parties::new("127.0.0.1:2121".parse().unwrap(), client(c1), server(s1))
        };
        let v = |c1: &str, s1: &str| c.session_decision(&at(c1, s1)).source();
        assert_eq!(v("198.51.100.2", "203.0.113.2:21"), "x.rules:5");
        assert_eq!(v("2001:db8:1::9", "[2001:db8:2::2]:2122"), "x.rules:5");
        assert_eq!(v("198.51.100.66", "203.0.113.2:21"), "x.rules:4");
        assert_eq!(v("198.51.100.2", "203.0.113.66:21"), "default");
        assert_eq!(v("198.51.100.2", "203.0.113.2:2123"), "default");
        assert_eq!(v("203.0.113.9", "203.0.113.2:21"), "default");
    }

    #[test]
    fn include_and_table_files_are_read_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules.d")).unwrap();
        std::fs::write(
            dir.path().join("lan.txt"),
            "# the client LAN\n198.51.100.0/24\n2001:db8:1::/48  # v6\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("rules.d/users.rules"),
            "block user root\ntable <lan> file ../lan.txt\n",
        )
        .unwrap();
        let main = dir.path().join("main.rules");
        std::fs::write(
            &main,
            format!("{LISTEN}\ninclude rules.d/users.rules\npass from <lan>\n"),
        )
        .unwrap();
        let c = Config::load(&main).unwrap();
        assert_eq!(c.tables[0].nets.len(), 2);
        let users = dir.path().join("rules.d/users.rules");
        assert_eq!(
            c.session_rules[0].origin.to_string(),
            format!("{}:1", users.display())
        );
        assert_eq!(c.session_rules[1].origin.line, 3);

        // An error inside the included file points there.
        std::fs::write(&users, "block user root\nblok\n").unwrap();
        let e = Config::load(&main).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.col),
            (users.to_str().unwrap(), 2, 1)
        );
        // A cycle is reported at the include that closes it.
        std::fs::write(&users, "include ../main.rules\n").unwrap();
        let e = Config::load(&main).unwrap_err();
        assert!(e.message.contains("includes itself"), "{e}");
        assert_eq!((e.line, e.col), (1, 9));
        // A missing file and a bad table entry, each at its line.
        std::fs::write(&users, "include nowhere.rules\n").unwrap();
        assert!(
            Config::load(&main)
                .unwrap_err()
                .message
                .contains("cannot read")
        );
        std::fs::write(
            dir.path().join("lan.txt"),
            "198.51.100.0/24\nnot-an-address\n",
        )
        .unwrap();
        std::fs::write(&users, "table <lan> file ../lan.txt\n").unwrap();
        let e = Config::load(&main).unwrap_err();
        assert!(
            e.message
                .ends_with("lan.txt:2: expected an address or a prefix, found `not-an-address`"),
            "{e}"
        );
    }

    #[test]
    fn rule_errors_for_the_new_constructs() {
        assert_eq!(
            err(&format!("{LISTEN}\npass from <lan>\n")),
            "x.rules:2:11: unknown table <lan>; define it above its first use"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\ntable <a> {{ 1.2.3.4 }}\ntable <a> {{ 1.2.3.5 }}\n"
            )),
            "x.rules:3:7: table <a> is already defined"
        );
        assert_eq!(
            err(&format!("{LISTEN}\ntable <a> {{ 1.2.3.4, nope }}\n")),
            "x.rules:2:22: expected an address or a prefix, found `nope`"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\npass from {{ 198.51.100.1, 10.0.0.0/33 }}\n"
            )),
            "x.rules:2:27: expected `any`, an address, a prefix or a <table>, found `10.0.0.0/33`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass to !any\n")),
            "x.rules:2:9: `!any` matches nothing; leave the rule out"
        );
        assert_eq!(
            err(&format!("{LISTEN}\npass return-code 550\n")),
            "x.rules:2:6: return-code only goes with block"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock return-code 250 cmd DELE\n")),
            "x.rules:2:19: expected a reply code from 400 to 599, found `250`"
        );
        assert_eq!(
            err(&format!(
                "{LISTEN}\nblock return-code 550 \"open cmd DELE\n"
            )),
            "x.rules:2:23: a quoted text needs its closing `\"`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock data sideways\n")),
            "x.rules:2:12: unexpected `sideways`; a data rule takes active, passive, inet, inet6, ports, download, upload or listing"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock data active passive\n")),
            "x.rules:2:19: the data mode is given twice"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nblock data {{ upload, delete }}\n")),
            "x.rules:2:22: expected download, upload or listing, found `delete`"
        );
        assert_eq!(
            err(&format!("{LISTEN}\nset max-data-connections 0\n")),
            "x.rules:2:26: expected a number of data connections from 1 to 64, found `0`"
        );
    }

    #[test]
    fn data_rules_and_return_codes_parse_into_their_parts() {
        let c = parse_str(
            "x.rules",
            &format!(
                "{LISTEN}\nblock return-code 553 \"No uploads # here.\" log data passive inet ports {{ 1024-2000, 3000 }} {{ upload, listing }}  # why\n"
            ),
        )
        .unwrap();
        let r = &c.session_rules[0];
        assert!(r.log);
        assert_eq!(
            r.reply,
            Some(ReturnCode {
                code: 553,
                text: Some("No uploads # here.".into())
            })
        );
        let Subject::Data(m) = &r.subject else {
            panic!("{r:?}")
        };
        assert_eq!(m.mode, Some(DataMode::Passive));
        assert_eq!(m.family, Some(Family::Inet));
        assert_eq!(
            m.to_string(),
            "data passive inet ports { 1024-2000, 3000 } { upload, listing }"
        );
    }

    #[test]
    fn the_caret_underlines_the_offending_token() {
        let e = parse_str(
            "x.rules",
            &format!("{LISTEN}\npass from 198.51.100.0/33 # c\n"),
        )
        .unwrap_err();
        assert_eq!(
            e.with_caret(),
            "x.rules:2:11: expected `any`, an address, a prefix or a <table>, found `198.51.100.0/33`\n\
             \x20   pass from 198.51.100.0/33 # c\n\
             \x20             ^^^^^^^^^^^^^^^"
        );
    }

    #[test]
    fn upstream_port_above_65535_is_rejected() {
        assert!(err("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:65536").contains("1:40:"));
    }

    #[test]
    fn every_shipped_rule_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rules") {
                // The certificates an example names are the deployment's own: the test
                // makes them, beside a copy of the file, where its relative paths point.
                let text = std::fs::read_to_string(&path).unwrap();
                let scratch = tempfile::tempdir().unwrap();
                let copy = scratch.path().join(path.file_name().unwrap());
                std::fs::write(&copy, &text).unwrap();
                for line in text.lines().filter(|l| l.starts_with("tls cert ")) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let (cert, key) =
                        (scratch.path().join(words[2]), scratch.path().join(words[4]));
                    std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
                    let pair =
                        rcgen::generate_simple_self_signed(vec!["ftp.example.net".to_string()])
                            .unwrap();
                    std::fs::write(&cert, pair.cert.pem()).unwrap();
                    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
                }
                // The inspection CA of its `tls intercept`.
                for line in text.lines().filter(|l| l.starts_with("tls intercept ")) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let (ca, key) = (scratch.path().join(words[3]), scratch.path().join(words[5]));
                    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
                    let pair = rcgen::KeyPair::generate().unwrap();
                    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                    std::fs::write(&ca, params.self_signed(&pair).unwrap().pem()).unwrap();
                    std::fs::write(&key, pair.serialize_pem()).unwrap();
                }
                // And the private CAs its `tls server … ca FILE` rules trust.
                let cas = text
                    .lines()
                    .filter(|l| l.starts_with("pass") || l.starts_with("block"))
                    .filter_map(|l| l.split_once(" ca ").map(|(_, rest)| rest))
                    .filter_map(|rest| rest.split_whitespace().next())
                    .filter(|ca| *ca != "system");
                for ca in cas {
                    let ca = scratch.path().join(ca);
                    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
                    let pair =
                        rcgen::generate_simple_self_signed(vec!["ca.example.net".to_string()])
                            .unwrap();
                    std::fs::write(&ca, pair.cert.pem()).unwrap();
                }
                let c = Config::load(&copy).unwrap_or_else(|e| panic!("{}", e.with_caret()));
                assert!(!c.listeners.is_empty());
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "anonymous-mirror.rules",
                "edge-redirect.rules",
                "edge-tproxy.rules",
                "example.rules",
                "forward-proxy.rules",
                "ftps-both-legs.rules",
                "ftps-edge.rules",
                "ftps-reverse.rules",
                "outbound-lan.rules",
                "server-farm-pool.rules",
                "server-farm.rules"
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str("fuzz.rules", &text);
        }
    }
}
