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
    ServerReplyTooLong,
    BufferLimit,
}

impl Say {
    /// The reply's code and text.
    pub fn reply(&self) -> (u16, Cow<'static, str>) {
        let fixed = |code, text: &'static str| (code, Cow::Borrowed(text));
        match self {
            Say::ForwardGreeting => fixed(220, "ftpgate: log in as USER name@host[:port]."),
            Say::ForwardUsage => fixed(501, "Log in as USER name@host[:port]."),
            Say::ForwardFirst => fixed(530, "Log in with USER name@host[:port] first."),
            Say::ForwardUnresolved => fixed(530, "Cannot resolve that host."),
            Say::ForwardIsProxy => fixed(530, "That is this proxy; name an FTP server."),
            Say::Goodbye => fixed(221, "Goodbye."),
            Say::SessionLimit(SessionLimit::AcceptRate) => fixed(
                421,
                "Service not available: too many new sessions from your address; slow down.",
            ),
            Say::SessionLimit(SessionLimit::Total | SessionLimit::PerClient) => {
                fixed(421, "Service not available: too many sessions.")
            }
            Say::NoOriginalDst => fixed(421, "Service not available: no original destination."),
            Say::NotIntercepted => fixed(
                421,
                "Service not available: connect to an FTP server, not to the proxy.",
            ),
            Say::Unreachable => fixed(421, "Service not available: cannot reach the FTP server."),
            Say::LineTooLong => fixed(500, "Command line too long."),
            Say::Malformed(m) => fixed(500, m.reply_text()),
            Say::Syntax => fixed(501, "Syntax error in parameters or arguments."),
            Say::UnknownCommand => fixed(500, "Unknown command."),
            Say::Policy(code, text) => (*code, Cow::Owned(text.clone())),
            Say::LprtLpsv => fixed(502, "LPRT and LPSV are not implemented; use EPRT or EPSV."),
            Say::Spsv => fixed(502, "SPSV is not implemented; use PASV or EPSV."),
            Say::EpsvFamily(own) => (
                522,
                Cow::Owned(format!("Network protocol not supported, use ({own}).")),
            ),
            Say::Auth => fixed(534, "AUTH is not available through this proxy."),
            Say::PasvAfterEpsvAll => fixed(501, "PASV not allowed after EPSV ALL."),
            Say::PortAfterEpsvAll => fixed(501, "PORT and EPRT not allowed after EPSV ALL."),
            Say::PasvNeedsV4 => fixed(501, "PASV needs IPv4; use EPSV."),
            Say::Bounce => fixed(504, "Data address must be the client's own address."),
            Say::PrivilegedPort => fixed(504, "Privileged data port refused."),
            Say::OwnSocket => fixed(504, "Data address is one of this proxy's own sockets."),
            Say::DataLimit => fixed(
                425,
                "Can't open data connection: too many data connections.",
            ),
            Say::NoDataPort => fixed(425, "Can't open data connection: no data port available."),
            Say::ServerPrivilegedPort => fixed(
                425,
                "Can't open data connection: server announced a privileged port.",
            ),
            Say::ServerOwnSocket => fixed(
                425,
                "Can't open data connection: server announced this proxy's own socket.",
            ),
            Say::BadPassiveReply => fixed(
                425,
                "Can't open data connection: malformed passive reply from server.",
            ),
            Say::SpoofedReply => fixed(
                425,
                "Can't open data connection: unexpected passive reply from server.",
            ),
            Say::ServerRefusedPassive => fixed(
                425,
                "Can't open data connection: the server refused passive mode.",
            ),
            Say::ServerRefusedActive => fixed(
                425,
                "Can't open data connection: the server refused active mode.",
            ),
            Say::EpsvAllOk => fixed(200, "EPSV ALL ok."),
            Say::ActiveOk { port: true } => fixed(200, "PORT command successful."),
            Say::ActiveOk { port: false } => fixed(200, "EPRT command successful."),
            Say::LoginTimeout => fixed(421, "Login timeout: closing the control connection."),
            Say::IdleTimeout => fixed(421, "Idle timeout: closing the control connection."),
            Say::ShuttingDown => fixed(421, "Service not available: the proxy is shutting down."),
            Say::ServerReplyTooLong => fixed(
                421,
                "Service not available: the server sent an over-long reply.",
            ),
            Say::BufferLimit => fixed(421, "Service not available: too much output held."),
        }
    }

    /// What this reply refuses, for logs and `ftpgate_*_refused_total`; `None` for
    /// replies that refuse nothing a client asked of the server, or are counted as a
    /// session outcome or limit instead.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            Say::LineTooLong => Refusal::LineTooLong,
            Say::Malformed(m) => Refusal::Malformed(*m),
            Say::Syntax => Refusal::Syntax,
            Say::UnknownCommand => Refusal::UnknownCommand,
            Say::Policy(..) => Refusal::Policy,
            Say::LprtLpsv | Say::Spsv => Refusal::NotImplemented,
            Say::EpsvFamily(_) | Say::PasvNeedsV4 => Refusal::Family,
            Say::Auth => Refusal::Auth,
            Say::PasvAfterEpsvAll | Say::PortAfterEpsvAll => Refusal::EpsvAll,
            Say::Bounce => Refusal::Bounce,
            Say::PrivilegedPort | Say::ServerPrivilegedPort => Refusal::PrivilegedPort,
            Say::OwnSocket | Say::ServerOwnSocket => Refusal::OwnSocket,
            Say::DataLimit => Refusal::DataLimit,
            Say::NoDataPort => Refusal::NoDataPort,
            Say::BadPassiveReply => Refusal::BadPassiveReply,
            Say::SpoofedReply => Refusal::SpoofedReply,
            Say::ForwardGreeting
            | Say::ForwardUsage
            | Say::ForwardFirst
            | Say::ForwardUnresolved
            | Say::ForwardIsProxy
            | Say::Goodbye
            | Say::SessionLimit(_)
            | Say::NoOriginalDst
            | Say::NotIntercepted
            | Say::Unreachable
            | Say::ServerRefusedPassive
            | Say::ServerRefusedActive
            | Say::EpsvAllOk
            | Say::ActiveOk { .. }
            | Say::LoginTimeout
            | Say::IdleTimeout
            | Say::ShuttingDown
            | Say::ServerReplyTooLong
            | Say::BufferLimit => return None,
        })
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
