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
    /// The reply's code and text, and the refusal it counts as for logs and
    /// `ftpgate_*_refused_total` (`None` for replies that refuse nothing a client
    /// asked of the server, or that a session outcome or limit counts instead).
    pub fn wire(&self) -> (u16, Cow<'static, str>, Option<Refusal>) {
        match self {
            Say::ForwardGreeting => (
                220,
                "ftpgate: log in as USER name@host[:port].".into(),
                None,
            ),
            Say::ForwardUsage => (501, "Log in as USER name@host[:port].".into(), None),
            Say::ForwardFirst => (530, "Log in with USER name@host[:port] first.".into(), None),
            Say::ForwardUnresolved => (530, "Cannot resolve that host.".into(), None),
            Say::ForwardIsProxy => (530, "That is this proxy; name an FTP server.".into(), None),
            Say::Goodbye => (221, "Goodbye.".into(), None),
            Say::SessionLimit(SessionLimit::AcceptRate) => (
                421,
                "Service not available: too many new sessions from your address; slow down.".into(),
                None,
            ),
            Say::SessionLimit(SessionLimit::Total | SessionLimit::PerClient) => (
                421,
                "Service not available: too many sessions.".into(),
                None,
            ),
            Say::NoOriginalDst => (
                421,
                "Service not available: no original destination.".into(),
                None,
            ),
            Say::NotIntercepted => (
                421,
                "Service not available: connect to an FTP server, not to the proxy.".into(),
                None,
            ),
            Say::Unreachable => (
                421,
                "Service not available: cannot reach the FTP server.".into(),
                None,
            ),
            Say::LineTooLong => (
                500,
                "Command line too long.".into(),
                Some(Refusal::LineTooLong),
            ),
            Say::Malformed(m) => (500, m.reply_text().into(), Some(Refusal::Malformed(*m))),
            Say::Syntax => (
                501,
                "Syntax error in parameters or arguments.".into(),
                Some(Refusal::Syntax),
            ),
            Say::UnknownCommand => (
                500,
                "Unknown command.".into(),
                Some(Refusal::UnknownCommand),
            ),
            Say::Policy(code, text) => (*code, Cow::Owned(text.clone()), Some(Refusal::Policy)),
            Say::LprtLpsv => (
                502,
                "LPRT and LPSV are not implemented; use EPRT or EPSV.".into(),
                Some(Refusal::NotImplemented),
            ),
            Say::Spsv => (
                502,
                "SPSV is not implemented; use PASV or EPSV.".into(),
                Some(Refusal::NotImplemented),
            ),
            Say::EpsvFamily(own) => (
                522,
                Cow::Owned(format!("Network protocol not supported, use ({own}).")),
                Some(Refusal::Family),
            ),
            Say::Auth => (
                534,
                "AUTH is not available through this proxy.".into(),
                Some(Refusal::Auth),
            ),
            Say::PasvAfterEpsvAll => (
                501,
                "PASV not allowed after EPSV ALL.".into(),
                Some(Refusal::EpsvAll),
            ),
            Say::PortAfterEpsvAll => (
                501,
                "PORT and EPRT not allowed after EPSV ALL.".into(),
                Some(Refusal::EpsvAll),
            ),
            Say::PasvNeedsV4 => (501, "PASV needs IPv4; use EPSV.".into(), None),
            Say::Bounce => (
                504,
                "Data address must be the client's own address.".into(),
                Some(Refusal::Bounce),
            ),
            Say::PrivilegedPort => (
                504,
                "Privileged data port refused.".into(),
                Some(Refusal::PrivilegedPort),
            ),
            Say::OwnSocket => (
                504,
                "Data address is one of this proxy's own sockets.".into(),
                Some(Refusal::OwnSocket),
            ),
            Say::DataLimit => (
                425,
                "Can't open data connection: too many data connections.".into(),
                Some(Refusal::DataLimit),
            ),
            Say::NoDataPort => (
                425,
                "Can't open data connection: no data port available.".into(),
                Some(Refusal::NoDataPort),
            ),
            Say::ServerPrivilegedPort => (
                425,
                "Can't open data connection: server announced a privileged port.".into(),
                Some(Refusal::PrivilegedPort),
            ),
            Say::ServerOwnSocket => (
                425,
                "Can't open data connection: server announced this proxy's own socket.".into(),
                Some(Refusal::OwnSocket),
            ),
            Say::BadPassiveReply => (
                425,
                "Can't open data connection: malformed passive reply from server.".into(),
                Some(Refusal::BadPassiveReply),
            ),
            Say::SpoofedReply => (
                425,
                "Can't open data connection: unexpected passive reply from server.".into(),
                Some(Refusal::SpoofedReply),
            ),
            Say::ServerRefusedPassive => (
                425,
                "Can't open data connection: the server refused passive mode.".into(),
                None,
            ),
            Say::ServerRefusedActive => (
                425,
                "Can't open data connection: the server refused active mode.".into(),
                None,
            ),
            Say::EpsvAllOk => (200, "EPSV ALL ok.".into(), None),
            Say::ActiveOk { port: true } => (200, "PORT command successful.".into(), None),
            Say::ActiveOk { port: false } => (200, "EPRT command successful.".into(), None),
            Say::LoginTimeout => (
                421,
                "Login timeout: closing the control connection.".into(),
                None,
            ),
            Say::IdleTimeout => (
                421,
                "Idle timeout: closing the control connection.".into(),
                None,
            ),
            Say::ShuttingDown => (
                421,
                "Service not available: the proxy is shutting down.".into(),
                None,
            ),
            Say::ServerReplyTooLong => (
                421,
                "Service not available: the server sent an over-long reply.".into(),
                None,
            ),
            Say::BufferLimit => (
                421,
                "Service not available: too much output held.".into(),
                None,
            ),
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
