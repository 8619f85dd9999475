//! `PORT`/`EPRT`: the bounce and own-socket checks, the active rewrite, and a client's
//! active request under `server-mode passive`.

use super::*;
use crate::rules::ActiveAddress;
use crate::vocab::AddressClass;

impl Control {
    /// Whether a data target is one of ftpgate's control listeners or its admin
    /// endpoint (data ports in use are checked by the shell when it dials).
    pub(super) fn is_own_socket(&self, target: SocketAddr) -> bool {
        let p = &self.params;
        let ip = target.ip().to_canonical();
        let local = p.own.is_local(ip) || ip == p.client_local || ip == p.server_side.ip();
        local && p.own.ports.contains(&target.port())
    }

    /// `PORT`/`EPRT` are always rewritten, so the client's line itself is not kept.
    pub(super) fn on_active(&mut self, form: ActiveForm, target: SocketAddr) {
        if self.epsv_all {
            return self.refuse(Say::PortAfterEpsvAll);
        }
        let mut ip = target.ip().to_canonical();
        if ip.is_unspecified() {
            // lftp announces `EPRT |2|::|port|` meaning "my control address". Taken
            // literally, `::` or `0.0.0.0` would reach the proxy host itself, so the
            // only safe reading is the client's own control address.
            ip = self.params.client.ip();
        }
        if ip != self.params.client.ip() {
            if self.rules.settings.active_address != ActiveAddress::Substitute {
                return self.refuse_target(Say::Bounce, Some(target));
            }
            // A client behind NAT names its inside address; the only host ftpgate ever
            // dials instead is the client's own, the NAT's outside address.
            self.out.push(Action::ActiveSubstituted {
                class: AddressClass::of(ip),
            });
            ip = self.params.client.ip();
        }
        if target.port() < self.params.min_data_port {
            return self.refuse(Say::PrivilegedPort);
        }
        if self.is_own_socket(SocketAddr::new(ip, target.port())) {
            return self.refuse_target(Say::OwnSocket, Some(target));
        }
        self.cancel_idle_expectation();
        if let Some(say) = self.data_refusal(DataMode::Active, target.port()) {
            return self.refuse(say);
        }
        if self.params.server_mode == Some(DataMode::Passive) {
            let sent = if self.params.server_side.is_ipv6() {
                PassiveForm::Epsv
            } else {
                PassiveForm::Pasv
            };
            let cmd = match sent {
                PassiveForm::Pasv => Command::Pasv,
                PassiveForm::Epsv => Command::Epsv(EpsvArg::Any),
            };
            self.pending.push_back(Pending::ToPassive {
                form,
                sent,
                client_port: target.port(),
            });
            return self.to_server.push(cmd.encode());
        }
        let id = self.open_expectation(Announce::Command(form), DataMode::Active, target.port());
        self.pending.push_back(Pending::Active { id });
        self.to_server.push_placeholder(id);
    }

    /// The server's answer to our `PASV`/`EPSV` for a client's `PORT`/`EPRT`: the
    /// client gets its `200`, and both legs are dialed when a transfer verb comes.
    pub(super) fn on_to_passive_reply(
        &mut self,
        reply: Reply,
        form: ActiveForm,
        sent: PassiveForm,
        client_port: u16,
    ) {
        let port = match self.announced_port(reply, sent) {
            Ok(port) => port,
            Err(Some(_)) => {
                return self.tell(Say::ServerRefusedPassive);
            }
            Err(None) => return,
        };
        let server = SocketAddr::new(self.params.server.ip(), port);
        let p = &self.params;
        self.next_id += 1;
        let id = ExpectationId(self.next_id);
        let req = ExpectationRequest {
            id,
            mode: DataMode::Active,
            listen_ip: p.server_side.ip(),
            dst_ip: p.server_side.ip(),
            expected_peer: p.server.ip(),
            onward: SocketAddr::new(p.client.ip(), client_port),
            onward_from: p.client_local,
            conversion: Some(Conversion::DialServer {
                server,
                from: p.server_side.ip(),
            }),
            // Its time starts when a transfer verb opens it.
            expires: self.now,
            client_tls: self.tls.private,
            tls_require_reuse: self.tls.private && self.params.tls.require_reuse,
            server_tls: self.server_tls.private,
        };
        self.data = Some(Data {
            id,
            phase: Phase::Deferred,
            announce: Announce::Nothing,
            transfer: None,
            mode: DataMode::Active,
            port: client_port,
            deferred: Some(req),
            client_port: None,
            expires: None,
        });
        self.live.insert(id);
        self.to_client.push(
            Say::ActiveOk {
                port: form == ActiveForm::Port,
            }
            .encode(),
        );
    }
}
