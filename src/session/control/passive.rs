//! `PASV`/`EPSV` and the server's `227`/`229`: the passive rewrite, and a client's
//! passive request under `server-mode active`.

use super::*;

impl Control {
    pub(super) fn on_passive(&mut self, line: Line, form: PassiveForm, family: Option<u8>) {
        if self.epsv_all && form == PassiveForm::Pasv {
            return self.refuse(Say::PasvAfterEpsvAll);
        }
        if form == PassiveForm::Pasv && self.passive_v4().is_none() {
            return self.refuse(Say::PasvNeedsV4);
        }
        self.cancel_idle_expectation();
        if self.params.server_mode == Some(DataMode::Active) {
            return self.passive_to_active(form);
        }
        let server_family = addr::family_number(self.params.server_side.ip());
        // Across families the server gets its own family's classic form: EPSV for
        // IPv6, and PASV for IPv4, which every IPv4 server knows.
        let sent = if self.params.server_side.is_ipv6() {
            PassiveForm::Epsv
        } else if self.params.client_side.is_ipv6() {
            PassiveForm::Pasv
        } else {
            form
        };
        let bytes = match (form, sent) {
            // Canonical rather than raw, so an alias such as `P@SW` reaches the server
            // as the command ftpgate took it for.
            (PassiveForm::Pasv, PassiveForm::Pasv) => Command::Pasv.encode(),
            (PassiveForm::Epsv, PassiveForm::Epsv) if family.is_none_or(|f| f == server_family) => {
                line.raw
            }
            (_, PassiveForm::Epsv) => Command::Epsv(EpsvArg::Any).encode(),
            (_, PassiveForm::Pasv) => Command::Pasv.encode(),
        };
        self.pending
            .push_back(Pending::Passive { client: form, sent });
        self.to_server.push(bytes);
    }

    /// The IPv4 address a `227` can announce, if there is one.
    pub(super) fn passive_v4(&self) -> Option<std::net::Ipv4Addr> {
        match self
            .params
            .advertise
            .unwrap_or(self.params.client_side.ip())
        {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// A client's `PASV`/`EPSV` under `server-mode active`: two listeners, our
    /// `PORT`/`EPRT` to the server, and the client's answer once the server agreed.
    pub(super) fn passive_to_active(&mut self, form: PassiveForm) {
        if let Some(say) = self.data_refusal(DataMode::Passive, 0) {
            return self.refuse(say);
        }
        // Onward port 0: the server dials the proxy, no port of the server's is used.
        let id = self.open_expectation(Announce::ServerCommand(form), DataMode::Passive, 0);
        self.pending.push_back(Pending::ToActive { id });
        self.to_server.push_placeholder(id);
    }

    pub(super) fn on_passive_reply(
        &mut self,
        reply: Reply,
        client: PassiveForm,
        sent: PassiveForm,
    ) {
        let port = match self.announced_port(reply, sent) {
            Ok(port) => port,
            // An error reply (or the wrong one) opens nothing and reaches the client.
            Err(Some(reply)) => return self.forward_reply(reply),
            Err(None) => return,
        };
        if let Some(say) = self.data_refusal(DataMode::Passive, port) {
            return self.tell(say);
        }
        // The address inside a 227 is never used (invariant 1).
        let id = self.open_expectation(Announce::Reply(client), DataMode::Passive, port);
        self.to_client.push_placeholder(id);
    }

    /// The data port the server announced in its answer to our `PASV`/`EPSV`, checked.
    /// `Err(Some(reply))`: no passive reply at all, the caller decides what the client
    /// sees; `Err(None)`: malformed or privileged, already refused with a `425`.
    pub(super) fn announced_port(
        &mut self,
        reply: Reply,
        sent: PassiveForm,
    ) -> Result<u16, Option<Reply>> {
        let port = match (sent, reply.code) {
            (PassiveForm::Pasv, Some(227)) => codec::parse_227(&reply.last).map(|a| a.port()),
            (PassiveForm::Epsv, Some(229)) => codec::parse_229(&reply.last),
            _ => return Err(Some(reply)),
        };
        let Ok(port) = port else {
            self.tell(Say::BadPassiveReply);
            return Err(None);
        };
        let target = SocketAddr::new(self.params.server.ip(), port);
        let refused = if port < self.params.min_data_port {
            Some(Say::ServerPrivilegedPort)
        } else if self.is_own_socket(target) {
            Some(Say::ServerOwnSocket)
        } else {
            None
        };
        if let Some(say) = refused {
            self.count(&say, Some(target));
            self.to_client.push(say.encode());
            return Err(None);
        }
        Ok(port)
    }

    /// The server's answer to our `PORT`/`EPRT` for a client's `PASV`/`EPSV`.
    pub(super) fn on_to_active_reply(&mut self, reply: Reply, id: ExpectationId) {
        let current = self.data.as_ref().filter(|d| d.id == id);
        let announce = current.and_then(|d| match (d.announce, d.client_port) {
            (Announce::ServerCommand(form), Some(port)) => Some((form, port)),
            _ => None,
        });
        match announce {
            Some((form, port)) if is_positive(&reply) => {
                let bytes = match form {
                    PassiveForm::Pasv => self
                        .passive_v4()
                        .map(|ip| Reply::passive(SocketAddrV4::new(ip, port))),
                    PassiveForm::Epsv => Some(Reply::extended_passive(port)),
                };
                if let Some(bytes) = bytes {
                    self.to_client.push(bytes);
                }
            }
            _ => {
                self.cancel_if_current(id);
                self.tell(Say::ServerRefusedActive);
            }
        }
    }
}
