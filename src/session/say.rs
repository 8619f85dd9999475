//! Every FTP reply ftpgate writes itself, with its code, its text and the refusal it
//! counts as, in one exhaustive match. Replies the server sent pass through untouched;
//! the `227`/`229` rewrites are built in the codec from an address.

use std::borrow::Cow;

use crate::codec::{Malformed, Reply};
use crate::vocab::{Refusal, SessionLimit};

/// Which kind of rule refused something; each has its own default reply, which a
/// rule's `return-code` and `text` replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Session,
    Login,
    Command,
    Data,
}

impl Scope {
    pub fn default_reply(self) -> (u16, &'static str) {
        match self {
            Scope::Session => (421, "Service not available: refused by policy."),
            Scope::Login => (530, "Login refused by policy."),
            Scope::Command => (550, "Command refused by policy."),
            Scope::Data => (425, "Can't open data connection: refused by policy."),
        }
    }
}

/// A reply of ftpgate's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Say {
    // ----- before the server is connected
    /// The forward listener's greeting.
    ForwardGreeting,
    /// `USER` without `@host`.
    ForwardUsage,
    /// `HOST` without a usable `host[:port]`.
    HostUsage,
    /// A pool listener routing by user: ftpgate's own greeting.
    PoolGreeting,
    /// Anything but `USER` (or `QUIT`) before it, there.
    LoginFirst,
    /// `HOST host[:port]` on a forward listener: connected, the server greeted.
    HostOk,
    /// Any other command before `USER name@host`.
    ForwardFirst,
    ForwardUnresolved,
    /// `USER name@host` naming the proxy itself.
    ForwardIsProxy,
    Goodbye,
    SessionLimit(SessionLimit),
    /// Transparent listener: no original destination could be read.
    NoOriginalDst,
    /// Transparent listener: the connection was made to the proxy, not intercepted.
    NotIntercepted,
    Unreachable,
    // ----- refusals of client commands
    LineTooLong,
    Malformed(Malformed),
    Syntax,
    UnknownCommand,
    /// A rule blocked it, with the rule's reply (or the scope's default).
    Policy(u16, String),
    LprtLpsv,
    Spsv,
    /// `EPSV n` for the other family; carries the family the client may use.
    EpsvFamily(u8),
    Auth,
    // ----- FTPS on the client's leg (RFC 4217)
    /// `234`: TLS starts after this line.
    AuthOk,
    AuthAgain,
    AuthMechanism,
    /// `AUTH` after `USER`: the password may have gone in clear already.
    AuthAfterUser,
    /// `AUTH` while a reply or a data transfer is still owed.
    AuthBusy,
    /// A login before TLS under `tls client require`.
    TlsRequired,
    /// `PBSZ`, `PROT` or `CCC` before `AUTH`.
    TlsFirst,
    PbszOk,
    ProtClear,
    ProtPrivate,
    /// `PROT S` or `E`: no TLS meaning.
    ProtUnsupported,
    CccRefused,
    /// `CCC` while a reply is still owed.
    CccBusy,
    /// `200`: the last line through TLS.
    CccOk,
    /// `AUTH` after `CCC`.
    AuthAfterCcc,
    /// `tls server match`: the server refused ftpgate's `AUTH TLS`, so the client's
    /// is refused too and both legs stay clear.
    ServerRefusedTls,
    PasvAfterEpsvAll,
    PortAfterEpsvAll,
    PasvNeedsV4,
    Bounce,
    PrivilegedPort,
    OwnSocket,
    DataLimit,
    NoDataPort,
    // ----- what the server said, made safe
    ServerPrivilegedPort,
    ServerOwnSocket,
    BadPassiveReply,
    SpoofedReply,
    ServerRefusedPassive,
    ServerRefusedActive,
    // ----- answers given for the server
    EpsvAllOk,
    /// The client's `PORT` (`true`) or `EPRT`, converted to a passive server leg.
    ActiveOk {
        port: bool,
    },
    // ----- the session ends
    LoginTimeout,
    IdleTimeout,
    ShuttingDown,
    /// The server owes a reply and says nothing.
    ServerSilent,
    ServerReplyTooLong,
    BufferLimit,
    /// `tls server require`: the server refused ftpgate's `AUTH TLS`.
    ServerWithoutTls,
    /// The TLS with the server failed (handshake, certificate, record).
    ServerTlsFailed,
    /// The client sent more behind its `AUTH TLS` before the answer: clear text
    /// where TLS must be.
    ClearAfterAuth,
}

/// A reply's code and text, and the refusal it counts as.
type Wire = (u16, Cow<'static, str>, Option<Refusal>);

fn say(code: u16, text: &'static str) -> Wire {
    (code, Cow::Borrowed(text), None)
}

fn refuse(code: u16, text: &'static str, why: Refusal) -> Wire {
    (code, Cow::Borrowed(text), Some(why))
}

impl Say {
    /// The reply's code and text, and the refusal it counts as for logs and
    /// `ftpgate_*_refused_total` (`None` for replies that refuse nothing a client
    /// asked of the server, or that a session outcome or limit counts instead).
    pub fn wire(&self) -> Wire {
        match self {
            Say::ForwardGreeting => say(220, "ftpgate: log in as USER name@host[:port]."),
            Say::ForwardUsage => say(501, "Log in as USER name@host[:port]."),
            Say::HostUsage => say(501, "Name the server as HOST host[:port]."),
            Say::PoolGreeting => say(220, "ftpgate ready."),
            Say::LoginFirst => say(530, "Log in with USER first."),
            Say::HostOk => say(220, "HOST accepted: the server is ready for USER."),
            Say::ForwardFirst => say(530, "Log in with USER name@host[:port] first."),
            Say::ForwardUnresolved => say(530, "Cannot resolve that host."),
            Say::ForwardIsProxy => say(530, "That is this proxy; name an FTP server."),
            Say::Goodbye => say(221, "Goodbye."),
            Say::SessionLimit(SessionLimit::AcceptRate) => say(
                421,
                "Service not available: too many new sessions from your address; slow down.",
            ),
            Say::SessionLimit(SessionLimit::Total | SessionLimit::PerClient) => {
                say(421, "Service not available: too many sessions.")
            }
            Say::NoOriginalDst => say(421, "Service not available: no original destination."),
            Say::NotIntercepted => say(
                421,
                "Service not available: connect to an FTP server, not to the proxy.",
            ),
            Say::Unreachable => say(421, "Service not available: cannot reach the FTP server."),
            Say::LineTooLong => refuse(500, "Command line too long.", Refusal::LineTooLong),
            Say::Malformed(m) => (500, m.reply_text().into(), Some(Refusal::Malformed(*m))),
            Say::Syntax => refuse(
                501,
                "Syntax error in parameters or arguments.",
                Refusal::Syntax,
            ),
            Say::UnknownCommand => refuse(500, "Unknown command.", Refusal::UnknownCommand),
            Say::Policy(code, text) => (*code, Cow::Owned(text.clone()), Some(Refusal::Policy)),
            Say::LprtLpsv => refuse(
                502,
                "LPRT and LPSV are not implemented; use EPRT or EPSV.",
                Refusal::NotImplemented,
            ),
            Say::Spsv => refuse(
                502,
                "SPSV is not implemented; use PASV or EPSV.",
                Refusal::NotImplemented,
            ),
            Say::EpsvFamily(own) => (
                522,
                Cow::Owned(format!("Network protocol not supported, use ({own}).")),
                Some(Refusal::Family),
            ),
            Say::Auth => refuse(
                534,
                "AUTH is not available through this proxy.",
                Refusal::Auth,
            ),
            Say::AuthOk => say(234, "AUTH TLS successful; TLS with ftpgate starts now."),
            Say::AuthAgain => refuse(503, "TLS is already in use.", Refusal::Tls),
            Say::AuthMechanism => refuse(504, "AUTH TLS only.", Refusal::Tls),
            Say::AuthAfterUser => refuse(
                503,
                "AUTH must come before USER; reconnect and secure the session first.",
                Refusal::Tls,
            ),
            Say::AuthBusy => refuse(
                503,
                "AUTH must wait until the replies and transfers in progress are done.",
                Refusal::Tls,
            ),
            Say::TlsRequired => refuse(
                530,
                "This session must use TLS: send AUTH TLS before logging in.",
                Refusal::Tls,
            ),
            Say::TlsFirst => refuse(503, "Send AUTH TLS first.", Refusal::Tls),
            Say::PbszOk => say(200, "PBSZ=0"),
            Say::ProtClear => say(200, "Protection level set to Clear."),
            Say::ProtPrivate => say(200, "Protection level set to Private."),
            Say::ProtUnsupported => refuse(
                536,
                "PROT S and E are not supported; use PROT P or PROT C.",
                Refusal::Tls,
            ),
            Say::CccBusy => refuse(
                503,
                "CCC must wait until the replies in progress are done.",
                Refusal::Tls,
            ),
            Say::CccOk => say(200, "CCC OK; the control connection is clear from now on."),
            Say::AuthAfterCcc => refuse(
                503,
                "TLS was ended with CCC; reconnect to use it again.",
                Refusal::Tls,
            ),
            Say::CccRefused => refuse(534, "CCC is not allowed through this proxy.", Refusal::Tls),
            Say::ServerRefusedTls => refuse(
                534,
                "The FTP server does not take TLS; the session stays in clear text.",
                Refusal::Tls,
            ),
            Say::PasvAfterEpsvAll => {
                refuse(501, "PASV not allowed after EPSV ALL.", Refusal::EpsvAll)
            }
            Say::PortAfterEpsvAll => refuse(
                501,
                "PORT and EPRT not allowed after EPSV ALL.",
                Refusal::EpsvAll,
            ),
            Say::PasvNeedsV4 => refuse(501, "PASV needs IPv4; use EPSV.", Refusal::Family),
            Say::Bounce => refuse(
                504,
                "Data address must be the client's own address.",
                Refusal::Bounce,
            ),
            Say::PrivilegedPort => refuse(
                504,
                "Privileged data port refused.",
                Refusal::PrivilegedPort,
            ),
            Say::OwnSocket => refuse(
                504,
                "Data address is one of this proxy's own sockets.",
                Refusal::OwnSocket,
            ),
            Say::DataLimit => refuse(
                425,
                "Can't open data connection: too many data connections.",
                Refusal::DataLimit,
            ),
            Say::NoDataPort => refuse(
                425,
                "Can't open data connection: no data port available.",
                Refusal::NoDataPort,
            ),
            Say::ServerPrivilegedPort => refuse(
                425,
                "Can't open data connection: server announced a privileged port.",
                Refusal::PrivilegedPort,
            ),
            Say::ServerOwnSocket => refuse(
                425,
                "Can't open data connection: server announced this proxy's own socket.",
                Refusal::OwnSocket,
            ),
            Say::BadPassiveReply => refuse(
                425,
                "Can't open data connection: malformed passive reply from server.",
                Refusal::BadPassiveReply,
            ),
            Say::SpoofedReply => refuse(
                425,
                "Can't open data connection: unexpected passive reply from server.",
                Refusal::SpoofedReply,
            ),
            Say::ServerRefusedPassive => say(
                425,
                "Can't open data connection: the server refused passive mode.",
            ),
            Say::ServerRefusedActive => say(
                425,
                "Can't open data connection: the server refused active mode.",
            ),
            Say::EpsvAllOk => say(200, "EPSV ALL ok."),
            Say::ActiveOk { port: true } => say(200, "PORT command successful."),
            Say::ActiveOk { port: false } => say(200, "EPRT command successful."),
            Say::LoginTimeout => say(421, "Login timeout: closing the control connection."),
            Say::IdleTimeout => say(421, "Idle timeout: closing the control connection."),
            Say::ShuttingDown => say(421, "Service not available: the proxy is shutting down."),
            Say::ServerSilent => say(
                421,
                "Service not available: the FTP server does not answer.",
            ),
            Say::ServerReplyTooLong => say(
                421,
                "Service not available: the server sent an over-long reply.",
            ),
            Say::BufferLimit => say(421, "Service not available: too much output held."),
            Say::ServerWithoutTls => say(
                421,
                "Service not available: the FTP server does not take TLS, which this proxy requires.",
            ),
            Say::ServerTlsFailed => say(
                421,
                "Service not available: TLS with the FTP server failed.",
            ),
            Say::ClearAfterAuth => say(421, "Clear text after AUTH TLS; closing."),
        }
    }

    pub fn reply(&self) -> (u16, Cow<'static, str>) {
        let (code, text, _) = self.wire();
        (code, text)
    }

    pub fn refusal(&self) -> Option<Refusal> {
        self.wire().2
    }

    /// The reply on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (code, text) = self.reply();
        Reply::encode(code, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_reply_that_says_it() {
        let says = [
            Say::LineTooLong,
            Say::Malformed(Malformed::Verb),
            Say::Syntax,
            Say::UnknownCommand,
            Say::Policy(550, "no".into()),
            Say::LprtLpsv,
            Say::EpsvFamily(2),
            Say::Auth,
            Say::TlsRequired,
            Say::PasvAfterEpsvAll,
            Say::Bounce,
            Say::PrivilegedPort,
            Say::OwnSocket,
            Say::DataLimit,
            Say::NoDataPort,
            Say::BadPassiveReply,
            Say::SpoofedReply,
        ];
        for why in Refusal::ALL {
            let said = says.iter().find(|s| s.refusal() == Some(why));
            let said = said.unwrap_or_else(|| panic!("no reply refuses as {why:?}"));
            let (code, _) = said.reply();
            assert!((400..600).contains(&code), "{why:?} refused with {code}");
        }
    }

    #[test]
    fn replies_are_single_crlf_lines() {
        for say in [
            Say::ForwardGreeting,
            Say::SessionLimit(SessionLimit::AcceptRate),
            Say::EpsvFamily(1),
            Say::ShuttingDown,
        ] {
            let bytes = say.encode();
            assert!(bytes.ends_with(b"\r\n"));
            assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        }
    }
}
