//! FTPS on the client's control connection (RFC 4217), under the session rule's
//! `tls client`: ftpgate answers `AUTH`, `PBSZ`, `PROT` and `CCC` itself, because the
//! TLS it speaks is its own leg's, never the server's (whose leg stays in clear), and
//! lists in `FEAT` what it offers, not what the server does.

use super::*;
use crate::vocab::ClientTls;

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

/// The features a server's `FEAT` lists that are about its own TLS: not offered
/// through ftpgate, which offers its own instead.
const TLS_FEATURES: [&str; 4] = ["AUTH", "PBSZ", "PROT", "CCC"];

impl Control {
    pub(super) fn on_auth(&mut self, mechanism: &[u8]) {
        // Implicit TLS is secured whatever the rule says about AUTH.
        if self.tls.secured {
            return self.refuse(Say::AuthAgain);
        }
        if self.tls.cleared {
            return self.refuse(Say::AuthAfterCcc);
        }
        if self.params.tls.client == ClientTls::Deny {
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
        self.tls.secured = true;
        self.to_client.push(Say::AuthOk.encode());
        self.flush();
        self.out.push(Action::SecureClient);
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
                self.reply_locally(Say::ProtClear.encode());
            }
            ("PROT", Some("P")) => {
                self.tls.private = true;
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
        if reply.code != Some(211) {
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
