//! Client commands (RFC 959, 2428, 1639, 2228): the few verbs the proxy must understand
//! are parsed into typed values; every other line is kept as its verb and argument so it
//! can be forwarded unchanged.
//!
//! A command line is only ever parsed here for text that came from the *client*; server
//! text never reaches this module.

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};

use super::addr;
use super::line::{Defect, Line};

/// The argument of `EPSV` (RFC 2428 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// Plain `EPSV`: the family of the control connection.
    Any,
    /// `EPSV 1` or `EPSV 2` (or another protocol number).
    Family(u8),
    /// `EPSV ALL`: from now on only `EPSV` may set up data connections.
    All,
}

/// What a data connection carries, derived from the verb that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// `RETR`: server to client.
    Download,
    /// `STOR`, `STOU`, `APPE`: client to server.
    Upload,
    /// `LIST`, `NLST`, `MLSD`: a directory listing, server to client.
    Listing,
}

impl TransferKind {
    pub const ALL: [TransferKind; 3] = [
        TransferKind::Download,
        TransferKind::Upload,
        TransferKind::Listing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Download => "download",
            TransferKind::Upload => "upload",
            TransferKind::Listing => "listing",
        }
    }
}

/// The kind of transfer an (upper-case) verb starts on a data connection, if any.
pub fn transfer_kind(verb: &str) -> Option<TransferKind> {
    match verb {
        "RETR" => Some(TransferKind::Download),
        "STOR" | "STOU" | "APPE" => Some(TransferKind::Upload),
        "LIST" | "NLST" | "MLSD" => Some(TransferKind::Listing),
        _ => None,
    }
}

/// Where a forward-proxy client wants to go, from `USER name@host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardUser {
    /// The user name for the server.
    pub user: String,
    /// A host name or an IP literal (without brackets).
    pub host: String,
    pub port: u16,
}

/// Splits `name@host[:port]` (`name@[v6]:port` for IPv6 literals) at the last `@`,
/// so user names may contain `@` themselves. The port defaults to 21.
pub fn parse_forward_user(arg: &str) -> Option<ForwardUser> {
    let (user, target) = arg.rsplit_once('@')?;
    if user.is_empty() {
        return None;
    }
    let (host, port) = parse_forward_host(target)?;
    Some(ForwardUser {
        user: user.to_string(),
        host,
        port,
    })
}

/// `host`, `host:port` or `[v6]:port` (port 21 by default): the server a forward
/// client names, in `USER name@…` or in `HOST …` (RFC 7151).
pub fn parse_forward_host(target: &str) -> Option<(String, u16)> {
    if target.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, 21),
            port => (host, port.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match target.split_once(':') {
            None => (target, 21),
            Some((host, port)) => (host, port.parse().ok()?),
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':');
    if host.is_empty() || !host.chars().all(valid) || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Port(SocketAddrV4),
    Eprt(SocketAddr),
    Lprt(SocketAddr),
    Pasv,
    Epsv(EpsvArg),
    Lpsv,
    User(Vec<u8>),
    Auth(Vec<u8>),
    Abor,
    /// Any other verb, upper-cased, with its argument kept verbatim.
    Other {
        verb: String,
        arg: Option<Vec<u8>>,
    },
}

/// A command whose verb the proxy understands but whose argument does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{verb}: {reason}")]
pub struct SyntaxError {
    pub verb: &'static str,
    pub reason: &'static str,
}

impl Command {
    /// The verb, upper-cased, as used in logs, metrics and rules.
    pub fn verb(&self) -> &str {
        match self {
            Command::Port(_) => "PORT",
            Command::Eprt(_) => "EPRT",
            Command::Lprt(_) => "LPRT",
            Command::Pasv => "PASV",
            Command::Epsv(_) => "EPSV",
            Command::Lpsv => "LPSV",
            Command::User(_) => "USER",
            Command::Auth(_) => "AUTH",
            Command::Abor => "ABOR",
            Command::Other { verb, .. } => verb,
        }
    }

    /// The kind of transfer this command starts on a data connection, if any.
    pub fn transfer_kind(&self) -> Option<TransferKind> {
        transfer_kind(self.verb())
    }

    /// The canonical text of this command, CRLF-terminated.
    pub fn encode(&self) -> Vec<u8> {
        // Sized once: this runs for every command ftpgate writes itself.
        let mut out = Vec::with_capacity(64);
        // Writing into a Vec cannot fail.
        let _ = match self {
            Command::Port(a) => write!(out, "PORT {}", addr::format_host_port(*a)),
            Command::Eprt(a) => write!(out, "EPRT {}", addr::format_extended_addr(*a)),
            Command::Lprt(a) => write!(out, "LPRT {}", format_long(*a)),
            Command::Epsv(EpsvArg::Family(f)) => write!(out, "EPSV {f}"),
            Command::Epsv(EpsvArg::All) => out.write_all(b"EPSV ALL"),
            Command::User(name) => out.write_all(b"USER ").and_then(|()| out.write_all(name)),
            Command::Auth(mech) => out.write_all(b"AUTH ").and_then(|()| out.write_all(mech)),
            Command::Other {
                verb,
                arg: Some(arg),
            } => write!(out, "{verb} ").and_then(|()| out.write_all(arg)),
            Command::Pasv
            | Command::Lpsv
            | Command::Abor
            | Command::Epsv(EpsvArg::Any)
            | Command::Other { arg: None, .. } => out.write_all(self.verb().as_bytes()),
        };
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn format_long(a: SocketAddr) -> String {
    let (af, host): (u8, Vec<u8>) = match a {
        SocketAddr::V4(v4) => (4, v4.ip().octets().to_vec()),
        SocketAddr::V6(v6) => (6, v6.ip().octets().to_vec()),
    };
    let [p1, p2] = a.port().to_be_bytes();
    let mut parts = vec![af.to_string(), host.len().to_string()];
    parts.extend(host.iter().map(u8::to_string));
    parts.extend(["2".to_string(), p1.to_string(), p2.to_string()]);
    parts.join(",")
}

/// Why a client line is refused before any verb is acted on: the ways in which
/// real servers would read it differently from each other or from ftpgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The framer found the line itself ambiguous.
    #[error("{}", .0.as_str())]
    Line(Defect),
    /// No verb, or a verb followed by anything but a space or the line end
    /// (`PASV/1`, `RE-TR`): pure-ftpd refuses it, vsftpd and ProFTPD split elsewhere.
    #[error("verb")]
    Verb,
    /// More than one space after the verb: ProFTPD skips them when it splits words,
    /// vsftpd and pure-ftpd keep them in the argument (`SITE  CHMOD`).
    #[error("space")]
    Space,
}

impl Malformed {
    pub const ALL: [Malformed; 5] = [
        Malformed::Line(Defect::BareLf),
        Malformed::Line(Defect::Control),
        Malformed::Line(Defect::Telnet),
        Malformed::Verb,
        Malformed::Space,
    ];

    /// The text of the `500` that refuses such a line.
    pub fn reply_text(self) -> &'static str {
        match self {
            Malformed::Line(_) => "Syntax error: the line must be plain text ended by CRLF.",
            Malformed::Verb | Malformed::Space => "Syntax error, command unrecognized.",
        }
    }

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Line(d) => d.as_str(),
            Malformed::Verb => "verb",
            Malformed::Space => "space",
        }
    }
}

/// The longest verb ftpgate accepts; no FTP verb in use is longer than eight letters.
const MAX_VERB: usize = 16;

/// Splits a defect-free line's text into its verb, upper-cased, and its argument, as
/// vsftpd, pure-ftpd and ProFTPD all split it, or refuses the line where they differ.
///
/// The verb is an ASCII letter followed by letters, digits or `@` (`P@SW`), ended by
/// one space or the line end; the argument is everything after that space and must not
/// start with another.
pub fn command_words(text: &[u8]) -> Result<(String, Option<&[u8]>), Malformed> {
    let end = text.iter().position(|b| *b == b' ').unwrap_or(text.len());
    let (verb, rest) = text.split_at(end);
    let verb_ok = verb.first().is_some_and(u8::is_ascii_alphabetic)
        && verb.len() <= MAX_VERB
        && verb.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'@');
    if !verb_ok {
        return Err(Malformed::Verb);
    }
    let arg = match rest {
        [] => None,
        [b' ', b' ', ..] => return Err(Malformed::Space),
        [b' ', arg @ ..] => Some(arg),
        _ => return Err(Malformed::Verb),
    };
    let mut verb = verb.to_vec();
    verb.make_ascii_uppercase();
    // Only ASCII letters, digits and `@` got here, so this never falls back.
    Ok((String::from_utf8(verb).unwrap_or_default(), arg))
}

/// Splits `VERB[ SP arg]` leniently, for lines already refused or for text that never
/// came from a framer: the verb is the run of ASCII letters at the start.
fn split_verb(text: &[u8]) -> (String, Option<&[u8]>) {
    if let Ok(words) = command_words(text) {
        return words;
    }
    let end = text
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (verb, rest) = text.split_at_checked(end).unwrap_or((text, &[]));
    let verb = String::from_utf8_lossy(verb).to_ascii_uppercase();
    let arg = match rest {
        [] => None,
        [b' ', rest @ ..] => Some(rest),
        rest => Some(rest),
    };
    (verb, arg)
}

/// Verbs real servers accept as another name for a standard one: ftpgate decides,
/// rules match and metrics count by the standard name. vsftpd, pure-ftpd and
/// FileZilla Server take `P@SW` for `PASV` (ftpgate sends the server `PASV`, as it
/// rewrites every passive command); the X-verbs are RFC 775's, which every server still
/// accepts, and go to the server as the client wrote them.
const ALIASES: &[(&str, &str)] = &[
    ("P@SW", "PASV"),
    ("XCUP", "CDUP"),
    ("XCWD", "CWD"),
    ("XMKD", "MKD"),
    ("XPWD", "PWD"),
    ("XRMD", "RMD"),
];

/// The standard name of a verb (upper-cased): itself, or what it is an alias of.
pub fn canonical_verb(verb: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == verb)
        .map_or(verb, |(_, standard)| standard)
}

/// Every verb ftpgate knows (by its standard name), from RFC 959, 2228, 2389, 2428,
/// 2640, 3659 and 7151, and the extensions in wide use (file hashes, `MFMT`,
/// `CLNT`…) whose replies announce no data connection. A verb outside this list is
/// unknown, and `set unknown-commands` decides whether it reaches the server.
pub const KNOWN_VERBS: &[&str] = &[
    "ABOR", "ACCT", "ADAT", "ALLO", "APPE", "AUTH", "AVBL", "CCC", "CDUP", "CLNT", "CONF", "CSID",
    "CWD", "DELE", "ENC", "EPRT", "EPSV", "FEAT", "HASH", "HELP", "HOST", "LANG", "LIST", "LPRT",
    "LPSV", "MD5", "MDTM", "MFCT", "MFF", "MFMT", "MIC", "MKD", "MLSD", "MLST", "MODE", "NLST",
    "NOOP", "OPTS", "PASS", "PASV", "PBSZ", "PORT", "PROT", "PWD", "QUIT", "REIN", "REST", "RETR",
    "RMD", "RNFR", "RNTO", "SITE", "SIZE", "SMNT", "SPSV", "STAT", "STOR", "STOU", "STRU", "SYST",
    "TYPE", "USER", "XCRC", "XMD5", "XSHA1", "XSHA256", "XSHA512",
];

/// A verb of up to eight bytes as one number, so that looking it up compares
/// integers rather than strings (it runs for every command).
fn verb_key(verb: &[u8]) -> Option<u64> {
    (verb.len() <= 8).then(|| verb.iter().fold(0, |k, b| k << 8 | u64::from(*b)))
}

/// [`KNOWN_VERBS`] as sorted keys.
static KNOWN_KEYS: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    let mut keys: Vec<u64> = KNOWN_VERBS
        .iter()
        .filter_map(|v| verb_key(v.as_bytes()))
        .collect();
    keys.sort_unstable();
    keys
});

/// Whether ftpgate knows this (standard, upper-cased) verb.
pub fn is_known_verb(verb: &str) -> bool {
    verb_key(verb.as_bytes()).is_some_and(|k| KNOWN_KEYS.binary_search(&k).is_ok())
}

/// The shape of an unknown verb, for metrics: only letters, as extensions are
/// written, or with digits and `@`, as aliases and hashes are.
pub fn verb_class(verb: &str) -> &'static str {
    if verb.bytes().all(|b| b.is_ascii_alphabetic()) {
        "letters"
    } else {
        "symbols"
    }
}

/// Runs `parser` over the whole argument, which must be consumed entirely.
fn whole<T>(
    arg: Option<&[u8]>,
    verb: &'static str,
    parser: impl Fn(&[u8]) -> nom::IResult<&[u8], T>,
) -> Result<T, SyntaxError> {
    let reason = "malformed argument";
    match arg.map(|a| parser(a.trim_ascii_end())) {
        Some(Ok(([], value))) => Ok(value),
        _ => Err(SyntaxError { verb, reason }),
    }
}

/// Why a client line is not a command ftpgate can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Servers would read the line differently from each other (refused with `500`).
    #[error("malformed line: {0}")]
    Malformed(Malformed),
    /// A verb ftpgate understands, with an argument that does not parse (`501`).
    #[error(transparent)]
    Syntax(SyntaxError),
}

/// Parses one framed client line: refuses every line real servers would read
/// differently (see [`Malformed`]), then parses the command as [`parse_command`] does.
pub fn parse_line(line: &Line) -> Result<Command, LineError> {
    if let Some(defect) = line.defect {
        return Err(LineError::Malformed(Malformed::Line(defect)));
    }
    let (verb, arg) = command_words(&line.text).map_err(LineError::Malformed)?;
    if line.signals.any() && verb != "ABOR" {
        // vsftpd knows the Telnet prefix before ABOR only; pure-ftpd before none.
        return Err(LineError::Malformed(Malformed::Line(Defect::Telnet)));
    }
    command(verb, arg).map_err(LineError::Syntax)
}

/// Parses one Telnet-decoded command line (without its terminator). Aliases become
/// their standard verb (`P@SW` is [`Command::Pasv`], `XMKD` is `MKD`).
pub fn parse_command(text: &[u8]) -> Result<Command, SyntaxError> {
    let (verb, arg) = split_verb(text);
    command(verb, arg)
}

/// The command a verb (upper-cased) and its argument make.
fn command(verb: String, arg: Option<&[u8]>) -> Result<Command, SyntaxError> {
    // An alias's standard name is a new string; any other verb keeps its own.
    let verb = match canonical_verb(&verb) {
        standard if standard != verb => standard.to_string(),
        _ => verb,
    };
    Ok(match verb.as_str() {
        "PORT" => Command::Port(whole(arg, "PORT", addr::host_port)?),
        "EPRT" => Command::Eprt(whole(arg, "EPRT", addr::extended_addr)?),
        "LPRT" => Command::Lprt(whole(arg, "LPRT", addr::long_host_port)?),
        "PASV" => Command::Pasv,
        "LPSV" => Command::Lpsv,
        "EPSV" => Command::Epsv(epsv_arg(arg)?),
        "USER" => Command::User(arg.unwrap_or_default().to_vec()),
        "AUTH" => Command::Auth(arg.unwrap_or_default().to_vec()),
        "ABOR" => Command::Abor,
        _ => Command::Other {
            verb,
            arg: arg.map(<[u8]>::to_vec),
        },
    })
}

fn epsv_arg(arg: Option<&[u8]>) -> Result<EpsvArg, SyntaxError> {
    let Some(arg) = arg.map(<[u8]>::trim_ascii) else {
        return Ok(EpsvArg::Any);
    };
    if arg.is_empty() {
        return Ok(EpsvArg::Any);
    }
    if arg.eq_ignore_ascii_case(b"ALL") {
        return Ok(EpsvArg::All);
    }
    whole(Some(arg), "EPSV", |a| {
        let (rest, n) = addr::port(a)?;
        match u8::try_from(n) {
            Ok(n) => Ok((rest, EpsvArg::Family(n))),
            Err(_) => Err(nom::Err::Error(nom::error::Error::new(
                a,
                nom::error::ErrorKind::Verify,
            ))),
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn forward_users_name_their_host_and_port() {
        let f = |s: &str| parse_forward_user(s).map(|f| (f.user, f.host, f.port));
        let t = |u: &str, h: &str, p: u16| Some((u.to_string(), h.to_string(), p));
        assert_eq!(
            f("alice@ftp.example.net"),
            t("alice", "ftp.example.net", 21)
        );
        assert_eq!(f("alice@203.0.113.2:2121"), t("alice", "203.0.113.2", 2121));
        assert_eq!(f("me@home@203.0.113.2"), t("me@home", "203.0.113.2", 21));
        assert_eq!(f("bob@[2001:db8::2]:21"), t("bob", "2001:db8::2", 21));
        assert_eq!(f("bob@[2001:db8::2]"), t("bob", "2001:db8::2", 21));
        for bad in [
            "alice",
            "@host",
            "alice@",
            "a@host:0",
            "a@host:x",
            "a@[nothost]:21",
            "a@ho st",
            "a@host/x",
            "a@[2001:db8::2]21",
            "a@host:70000",
        ] {
            assert_eq!(parse_forward_user(bad), None, "{bad}");
        }
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_split_as_every_server_does_or_not_at_all() {
        let w = |t: &[u8]| command_words(t).map(|(v, a)| (v, a.map(<[u8]>::to_vec)));
        assert_eq!(w(b"retr a b"), Ok(("RETR".into(), Some(b"a b".to_vec()))));
        assert_eq!(w(b"PASV"), Ok(("PASV".into(), None)));
        assert_eq!(w(b"PASV "), Ok(("PASV".into(), Some(Vec::new()))));
        assert_eq!(w(b"p@sw"), Ok(("P@SW".into(), None)));
        assert_eq!(w(b"XSHA256 f"), Ok(("XSHA256".into(), Some(b"f".to_vec()))));
        for bad in [&b""[..], b" NOOP", b"1ABC", b"PASV/1", b"RE-TR x", b"@PASV"] {
            assert_eq!(w(bad), Err(Malformed::Verb), "{bad:?}");
        }
        assert_eq!(w(b"SITE  CHMOD 7 x"), Err(Malformed::Space));
        assert_eq!(w(&[b'A'; MAX_VERB + 1]), Err(Malformed::Verb));
    }

    #[test]
    fn aliases_become_their_standard_verb() {
        assert_eq!(parse_command(b"P@SW"), Ok(Command::Pasv));
        assert_eq!(
            parse_command(b"xmkd d").map(|c| c.verb().to_string()),
            Ok("MKD".into())
        );
        assert_eq!(canonical_verb("XCUP"), "CDUP");
        assert_eq!(canonical_verb("NOOP"), "NOOP");
    }

    #[test]
    fn every_known_verb_is_found_and_aliases_resolve_to_known_verbs() {
        assert!(KNOWN_VERBS.iter().all(|v| is_known_verb(v)));
        assert!(!is_known_verb("XSHA2560"));
        for (alias, standard) in ALIASES {
            assert!(is_known_verb(standard), "{standard}");
            assert!(!is_known_verb(alias), "{alias}");
        }
        assert!(!is_known_verb("ESTA"));
        assert_eq!(verb_class("ESTA"), "letters");
        assert_eq!(verb_class("XSHA9"), "symbols");
    }

    #[test]
    fn a_telnet_prefix_is_accepted_before_abor_only() {
        let line = |raw: &[u8]| {
            let mut out = Vec::new();
            crate::codec::LineFramer::new(4096).push(raw, &mut out);
            match out.remove(0) {
                crate::codec::Frame::Line(l) => l,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            parse_line(&line(b"\xff\xf4\xff\xf2ABOR\r\n")),
            Ok(Command::Abor)
        );
        assert_eq!(
            parse_line(&line(b"\xff\xf4\xff\xf2STAT\r\n")),
            Err(LineError::Malformed(Malformed::Line(Defect::Telnet)))
        );
        assert_eq!(
            parse_line(&line(b"NOOP\n")),
            Err(LineError::Malformed(Malformed::Line(Defect::BareLf)))
        );
    }

    #[test]
    fn port_is_parsed_case_insensitively() {
        assert_eq!(
            parse_command(b"port 127,0,0,1,4,1"),
            Ok(Command::Port("127.0.0.1:1025".parse().unwrap()))
        );
    }

    #[test]
    fn port_with_octet_256_is_a_syntax_error_not_port_22() {
        assert!(parse_command(b"PORT 127,0,0,1,256,22").is_err());
    }

    #[test]
    fn port_with_trailing_garbage_is_a_syntax_error() {
        assert!(parse_command(b"PORT 127,0,0,1,4,1,9").is_err());
        assert!(parse_command(b"PORT").is_err());
    }

    #[test]
    fn eprt_in_both_families() {
        assert_eq!(
            parse_command(b"EPRT |2|::1|4242|"),
            Ok(Command::Eprt("[::1]:4242".parse().unwrap()))
        );
        assert!(parse_command(b"EPRT |1|::1|4242|").is_err());
    }

    #[test]
    fn epsv_forms() {
        assert_eq!(parse_command(b"EPSV"), Ok(Command::Epsv(EpsvArg::Any)));
        assert_eq!(
            parse_command(b"EPSV 2"),
            Ok(Command::Epsv(EpsvArg::Family(2)))
        );
        assert_eq!(parse_command(b"epsv all"), Ok(Command::Epsv(EpsvArg::All)));
        assert!(parse_command(b"EPSV 999").is_err());
        assert!(parse_command(b"EPSV x").is_err());
    }

    #[test]
    fn lprt_and_lpsv_are_recognised() {
        assert_eq!(
            parse_command(b"LPRT 4,4,127,0,0,1,2,4,1"),
            Ok(Command::Lprt("127.0.0.1:1025".parse().unwrap()))
        );
        assert_eq!(parse_command(b"LPSV"), Ok(Command::Lpsv));
    }

    #[test]
    fn port_text_inside_a_filename_is_just_a_filename() {
        let cmd = parse_command(b"RETR PORT 10,0,0,1,0,22").unwrap();
        assert_eq!(cmd.verb(), "RETR");
        assert_eq!(cmd.transfer_kind(), Some(TransferKind::Download));
    }

    #[test]
    fn unknown_and_long_verbs_are_kept_and_survive_encoding() {
        let cmd = parse_command(b"abcdefghijklmnop \0x").unwrap();
        assert_eq!(cmd.verb(), "ABCDEFGHIJKLMNOP");
        let line = cmd.encode();
        assert_eq!(parse_command(&line[..line.len() - 2]), Ok(cmd));
    }

    fn canonical_command() -> impl Strategy<Value = Command> {
        let arg = proptest::collection::vec(0x20u8..0x7f, 1..40);
        prop_oneof![
            any::<([u8; 4], u16)>()
                .prop_map(|(ip, p)| Command::Port(SocketAddrV4::new(ip.into(), p))),
            any::<(std::net::IpAddr, u16)>()
                .prop_map(|(ip, p)| Command::Eprt(SocketAddr::new(ip, p))),
            any::<(std::net::IpAddr, u16)>()
                .prop_map(|(ip, p)| Command::Lprt(SocketAddr::new(ip, p))),
            Just(Command::Pasv),
            Just(Command::Lpsv),
            Just(Command::Abor),
            Just(Command::Epsv(EpsvArg::Any)),
            Just(Command::Epsv(EpsvArg::All)),
            any::<u8>().prop_map(|f| Command::Epsv(EpsvArg::Family(f))),
            arg.clone().prop_map(Command::User),
            ("(RETR|STOR|CWD|NOOP|SITE|PASS)", proptest::option::of(arg))
                .prop_map(|(verb, arg)| { Command::Other { verb, arg } }),
        ]
    }

    proptest! {
        #[test]
        fn parse_of_encode_is_identity(cmd in canonical_command()) {
            let line = cmd.encode();
            let text = &line[..line.len() - 2];
            let parsed = parse_command(text).unwrap();
            prop_assert_eq!(&parsed, &cmd);
            prop_assert_eq!(parsed.encode(), line);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_command(&data);
        }
    }
}
