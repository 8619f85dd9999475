//! FTPS (RFC 4217) on each control connection, by the session rule's `tls client` and
//! `tls server`. Each leg's TLS is ftpgate's own: it answers the client's `AUTH`,
//! `PBSZ`, `PROT` and `CCC` itself and lists in `FEAT` what it offers, not what the
//! server does; toward the server it sends its own `AUTH TLS`, `PBSZ 0` and `PROT`
//! (`P` under `require`, the client's own level under `match`), whose replies the
//! client never sees, and holds everything of the client's behind its `AUTH`, so that
//! nothing meant for the TLS leaves in clear.

use super::*;
use crate::vocab::{ClientTls, ServerTls};

/// Where the client's control connection stands.
#[derive(Debug, Default)]
pub(super) struct ClientLeg {
    /// TLS is on: `AUTH TLS` was answered `234` (every later byte is TLS), or the
    /// listener is implicit.
    pub secured: bool,
    /// `PROT P`: data connections announced from now on are TLS on the client's leg.
    pub private: bool,
    /// `CCC` ended the TLS: the control connection is clear for good.
    pub cleared: bool,
}

/// Where the server's control connection stands.
#[derive(Debug, Default)]
pub(super) struct ServerLeg {
    /// TLS is on: the server answered ftpgate's `AUTH TLS` with `234`, or the server
    /// leg is implicit.
    pub secured: bool,
    /// The server took ftpgate's `PROT P`: data connections to it are TLS.
    pub private: bool,
}

/// The features a server's `FEAT` lists that are about its own TLS: not offered
/// through ftpgate, which offers its own instead.
const TLS_FEATURES: [&str; 4] = ["AUTH", "PBSZ", "PROT", "CCC"];

impl Control {
    pub(super) fn on_auth(&mut self, line: Line, mechanism: &[u8]) {
        // Implicit TLS is secured whatever the rule says about AUTH.
        if self.tls.secured {
            return self.refuse(Say::AuthAgain);
        }
        if self.tls.cleared {
            return self.refuse(Say::AuthAfterCcc);
        }
        let passthrough = self.params.tls.passthrough.is_some();
        if self.params.tls.client == ClientTls::Deny && !passthrough {
            return self.refuse(Say::Auth);
        }
        let mechanism = String::from_utf8_lossy(mechanism).to_ascii_uppercase();
        // `SSL` and `TLS-C` are the older names some clients still send for the same.
        if !matches!(mechanism.as_str(), "TLS" | "SSL" | "TLS-C") {
            return self.refuse(Say::AuthMechanism);
        }
        // TLS starts right after the `234`, so nothing may be owed or in flight that
        // would have to come before it, and a login in clear has shown the password.
        if self.user.is_some() {
            return self.refuse(Say::AuthAfterUser);
        }
        if !self.pending.is_empty() || self.has_live_data() || self.to_client.held_bytes() > 0 {
            return self.refuse(Say::AuthBusy);
        }
        // Passthrough: the server answers, and its TLS is the client's.
        if passthrough {
            return self.forward(line, Pending::Passthrough);
        }
        // `match`: the client's TLS waits for the server's answer to ftpgate's own.
        if self.params.tls.server == ServerTls::Match && !self.server_tls.secured {
            return self.ask_server_for_tls(true);
        }
        self.secure_client();
    }

    /// Answers the client's `AUTH` with `234`; TLS starts behind it.
    fn secure_client(&mut self) {
        self.tls.secured = true;
        self.to_client.push(Say::AuthOk.encode());
        self.flush();
        self.out.push(Action::SecureClient);
    }

    /// The client said more behind an `AUTH TLS` still waiting for the server's
    /// answer: text in clear where TLS must be.
    pub(super) fn client_auth_waits(&self) -> bool {
        self.pending.iter().any(|p| {
            matches!(
                p,
                Pending::ServerAuth { for_client: true } | Pending::Passthrough
            )
        })
    }

    /// The server's answer to a client's `AUTH` under `tls passthrough`: on `234` the
    /// session goes blind, else the client hears the refusal and goes on in clear.
    pub(super) fn on_passthrough_auth(&mut self, reply: Reply) {
        let taken = reply.code == Some(234);
        self.forward_reply(reply);
        if let (true, Some(ports)) = (taken, self.params.tls.passthrough) {
            self.flush();
            self.out.push(Action::PassThrough { ports });
            self.closed = true;
        }
    }

    /// Whether the server leg is secured right after the server's greeting, before
    /// the client may say anything: always under `require`, and under `match` when
    /// the client's leg is TLS from its first byte (an implicit listener).
    pub(super) fn secures_server_first(&self) -> bool {
        match self.params.tls.server {
            ServerTls::Off => false,
            ServerTls::Match => self.tls.secured && !self.server_tls.secured,
            ServerTls::Require => true,
        }
    }

    /// The server greeted: the greeting waits while ftpgate secures the server leg
    /// (or, implicit, only protects its data).
    pub(super) fn secure_server_first(&mut self, greeting: Vec<u8>) {
        self.held_greeting = Some(greeting);
        if self.server_tls.secured {
            // Client input waits for the greeting, so nothing is queued for the server.
            self.to_server.push_gate();
            self.protect_server_data();
        } else {
            self.ask_server_for_tls(false);
        }
    }

    /// Sends ftpgate's `AUTH TLS`; nothing queued behind it leaves until the answer.
    fn ask_server_for_tls(&mut self, for_client: bool) {
        self.pending.push_back(Pending::ServerAuth { for_client });
        self.to_server.push(b"AUTH TLS\r\n".to_vec());
        self.to_server.push_gate();
    }

    /// Starts TLS on the server leg, checked against the server's name (as given,
    /// else its address).
    pub(super) fn secure_server(&mut self, client_starts_tls: bool) {
        let Some(connector) = self.params.tls.connector.clone() else {
            // The rules give every `tls server` rule its connector.
            return self.close_with(
                Say::ServerTlsFailed,
                CloseReason::UpstreamFailed(UpstreamFailure::Tls),
            );
        };
        let name = self
            .params
            .server_name
            .clone()
            .unwrap_or_else(|| self.params.server.ip().to_string());
        let name_from_client = client_starts_tls && self.params.server_name.is_none();
        self.server_tls.secured = true;
        self.out.push(Action::SecureServer {
            connector,
            name,
            name_from_client,
        });
    }

    /// `tls server … implicit`: the server leg is TLS from its first byte, before the
    /// greeting.
    pub fn secure_server_implicitly(&mut self) -> Vec<Action> {
        self.secure_server(false);
        std::mem::take(&mut self.out)
    }

    /// The server's answer to ftpgate's `AUTH TLS`.
    pub(super) fn on_server_auth(&mut self, reply: &Reply, for_client: bool) {
        if reply.code == Some(234) {
            self.secure_server(for_client);
            // The client's 234 and its TLS first: ftpgate's PBSZ and PROT are no
            // business of the client's leg.
            if for_client {
                self.secure_client();
            }
            return self.protect_server_data();
        }
        self.to_server.open_gate(Vec::new());
        if for_client {
            // Neither leg is TLS; the client may go on in clear or leave.
            self.tell(Say::ServerRefusedTls);
        } else {
            self.close_with(
                Say::ServerWithoutTls,
                CloseReason::UpstreamFailed(UpstreamFailure::Tls),
            );
        }
    }

    /// What a secured server hears first, in line behind the gate: RFC 4217's buffer
    /// size for a stream protocol, then, under `require`, protected data (which
    /// servers such as vsftpd with `force_local_data_ssl` insist on, and a clear client
    /// cannot ask for). Under `match` the server's data leg follows the client's own
    /// `PROT`, clear until it asks for `P`, so that clear data keeps the splice relay
    /// and the kernel path.
    fn protect_server_data(&mut self) {
        let private = self.params.tls.server == ServerTls::Require || self.tls.private;
        let mut first = vec![b"PBSZ 0\r\n".to_vec()];
        if private {
            first.push(b"PROT P\r\n".to_vec());
            self.pending.push_front(Pending::ServerProt { private });
        }
        self.to_server.open_gate(first);
        self.pending.push_front(Pending::ServerPbsz);
    }

    /// The client set its `PROT`: under `match` the server's data leg follows, with a
    /// `PROT` of ftpgate's whose reply the client does not see (its own `200` comes
    /// after it).
    fn mirror_protection(&mut self, private: bool) {
        let mirrors = self.params.tls.server == ServerTls::Match && self.server_tls.secured;
        if !mirrors || self.server_tls.private == private {
            return;
        }
        let level: &[u8] = if private {
            b"PROT P\r\n"
        } else {
            b"PROT C\r\n"
        };
        self.pending.push_back(Pending::ServerProt { private });
        self.to_server.push(level.to_vec());
    }

    /// The server's answer to ftpgate's `PBSZ`: securing it is over unless a `PROT`
    /// follows.
    pub(super) fn on_server_pbsz(&mut self) {
        if !matches!(self.pending.front(), Some(Pending::ServerProt { .. })) {
            self.release_greeting();
        }
    }

    /// The server's answer to ftpgate's `PROT`: its data connections are TLS or
    /// clear as it took it (a refusal leaves them as they were), and a held greeting
    /// goes on.
    pub(super) fn on_server_prot(&mut self, reply: &Reply, private: bool) {
        if is_positive(reply) {
            self.server_tls.private = private;
        }
        // Under `require`, TLS toward the server covers its data too.
        if !self.server_tls.private && self.params.tls.server == ServerTls::Require {
            return self.close_with(
                Say::ServerWithoutTls,
                CloseReason::UpstreamFailed(UpstreamFailure::Tls),
            );
        }
        self.release_greeting();
    }

    /// The server leg is secured: the greeting held meanwhile goes to the client.
    fn release_greeting(&mut self) {
        if let Some(greeting) = self.held_greeting.take() {
            if !greeting.is_empty() {
                self.to_client.push(greeting);
            }
        }
    }

    /// `PBSZ`, `PROT` and `CCC`: about the client's leg only.
    pub(super) fn on_protection(&mut self, verb: &str, arg: Option<&[u8]>) {
        if !self.tls.secured {
            return self.refuse(Say::TlsFirst);
        }
        let arg = arg.map(|a| String::from_utf8_lossy(a).trim().to_ascii_uppercase());
        match (verb, arg.as_deref()) {
            // A stream protocol has no buffer size to agree: 0 (RFC 4217 section 8).
            ("PBSZ", _) => self.reply_locally(Say::PbszOk.encode()),
            // RFC 4217 puts PBSZ first; vsftpd does not insist, and Python's
            // `prot_c()` sends PROT C alone, so neither does ftpgate.
            ("PROT", Some("C")) => {
                self.tls.private = false;
                self.mirror_protection(false);
                self.reply_locally(Say::ProtClear.encode());
            }
            ("PROT", Some("P")) => {
                self.tls.private = true;
                self.mirror_protection(true);
                self.reply_locally(Say::ProtPrivate.encode());
            }
            // Safe and Confidential are RFC 2228's, with no TLS meaning (RFC 4217).
            ("PROT", Some("S" | "E")) => self.refuse(Say::ProtUnsupported),
            ("PROT", _) => self.refuse(Say::Syntax),
            _ if !self.params.tls.ccc => self.refuse(Say::CccRefused),
            // The 200 is the last line through TLS: nothing may be owed behind it.
            _ if !self.pending.is_empty() || self.to_client.held_bytes() > 0 => {
                self.refuse(Say::CccBusy)
            }
            _ => {
                self.tls.secured = false;
                self.tls.cleared = true;
                self.to_client.push(Say::CccOk.encode());
                self.flush();
                self.out.push(Action::ClearClient);
            }
        }
    }

    /// Under `tls client require`, what may not come before TLS.
    pub(super) fn needs_tls_first(&self, cmd: &Command) -> bool {
        let login = matches!(cmd, Command::User(_))
            || matches!(cmd, Command::Other { verb, .. } if verb == "PASS" || verb == "ACCT");
        login && self.params.tls.client == ClientTls::Require && !self.tls.secured
    }

    /// The server's `FEAT` reply as ftpgate offers it: the server's TLS features
    /// out, ftpgate's in when the session may use TLS.
    pub(super) fn rewrite_feat(&self, reply: &Reply) -> Vec<u8> {
        // Passed through, the TLS is the server's, and so are its features.
        if reply.code != Some(211) || self.params.tls.passthrough.is_some() {
            return reply.raw.clone();
        }
        let lines: Vec<&[u8]> = reply.raw.split_inclusive(|b| *b == b'\n').collect();
        let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
            return reply.raw.clone();
        };
        if lines.len() < 2 {
            return reply.raw.clone();
        }
        let keep = |line: &&&[u8]| {
            let word = line
                .split(|b| b.is_ascii_whitespace())
                .find(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase());
            !word.is_some_and(|w| TLS_FEATURES.contains(&w.as_str()))
        };
        let mut out = first.to_vec();
        let features = lines.iter().skip(1).take(lines.len().saturating_sub(2));
        for line in features.filter(keep) {
            out.extend_from_slice(line);
        }
        if self.params.tls.client != ClientTls::Deny || self.tls.secured {
            out.extend_from_slice(b" AUTH TLS\r\n PBSZ\r\n PROT\r\n");
        }
        out.extend_from_slice(last);
        out
    }
}
