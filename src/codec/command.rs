//! Client commands (RFC 959, 2428, 1639, 2228): the few verbs the proxy must understand
//! are parsed into typed values; every other line is kept as its verb and argument so it
//! can be forwarded unchanged.
//!
//! A command line is only ever parsed here for text that came from the *client*; server
//! text never reaches this module.

use std::net::{SocketAddr, SocketAddrV4};

use super::addr;

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
    if user.is_empty() || target.is_empty() {
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
    Some(ForwardUser {
        user: user.to_string(),
        host: host.to_string(),
        port,
    })
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
        let mut out = match self {
            Command::Port(a) => format!("PORT {}", addr::format_host_port(*a)).into_bytes(),
            Command::Eprt(a) => format!("EPRT {}", addr::format_extended_addr(*a)).into_bytes(),
            Command::Lprt(a) => format!("LPRT {}", format_long(*a)).into_bytes(),
            Command::Epsv(EpsvArg::Any) => b"EPSV".to_vec(),
            Command::Epsv(EpsvArg::Family(f)) => format!("EPSV {f}").into_bytes(),
            Command::Epsv(EpsvArg::All) => b"EPSV ALL".to_vec(),
            Command::User(name) => [&b"USER "[..], name].concat(),
            Command::Auth(mech) => [&b"AUTH "[..], mech].concat(),
            Command::Other {
                verb,
                arg: Some(arg),
            } => [verb.as_bytes(), b" ", arg].concat(),
            Command::Pasv | Command::Lpsv | Command::Abor | Command::Other { arg: None, .. } => {
                self.verb().as_bytes().to_vec()
            }
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

/// Splits `VERB[ SP arg]`; the verb is the run of ASCII letters at the start (its
/// length is bounded by the line length; metrics bound the label set themselves).
fn split_verb(text: &[u8]) -> (String, Option<&[u8]>) {
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

/// Parses one Telnet-decoded command line (without its terminator).
pub fn parse_command(text: &[u8]) -> Result<Command, SyntaxError> {
    let (verb, arg) = split_verb(text);
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
