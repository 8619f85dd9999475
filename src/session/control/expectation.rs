//! The life of the session's data connection: opened, announced, expired, closed.

use super::*;

impl Control {
    /// Asks the shell for an expectation. Every address follows from the mode alone,
    /// which is where invariant 1 lives: a passive connection goes on to the server's
    /// control address, an active one to the client's, whatever a peer announced.
    pub(super) fn open_expectation(
        &mut self,
        announce: Announce,
        mode: DataMode,
        onward_port: u16,
    ) -> ExpectationId {
        let p = &self.params;
        let (listen_ip, dst_ip, expected_peer, onward_ip, onward_from) = match mode {
            DataMode::Passive => (
                p.client_local,
                p.client_side.ip(),
                p.client.ip(),
                p.server.ip(),
                p.server_side.ip(),
            ),
            DataMode::Active => (
                p.server_side.ip(),
                p.server_side.ip(),
                p.server.ip(),
                p.client.ip(),
                p.client_local,
            ),
        };
        self.next_id += 1;
        let id = ExpectationId(self.next_id);
        let conversion = match (mode, self.params.server_mode) {
            (DataMode::Passive, Some(DataMode::Active)) => Some(Conversion::AcceptServer {
                listen_ip: p.server_side.ip(),
                expected_peer: p.server.ip(),
            }),
            _ => None,
        };
        let req = ExpectationRequest {
            id,
            mode,
            listen_ip,
            dst_ip,
            expected_peer,
            onward: SocketAddr::new(onward_ip, onward_port),
            onward_from,
            conversion,
            expires: self.expiry(),
            client_tls: self.tls.private,
            tls_require_reuse: self.tls.private && self.params.tls.require_reuse,
            server_tls: self.server_tls.private,
        };
        self.data = Some(Data {
            id,
            phase: Phase::Binding,
            announce,
            transfer: None,
            mode,
            port: onward_port,
            deferred: None,
            client_port: None,
            expires: Some(req.expires),
        });
        self.live.insert(id);
        self.out.push(Action::Open(req));
        id
    }

    pub(super) fn cancel(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        self.out.push(Action::Cancel(id));
        self.to_client.lift_barrier(id);
    }

    /// A new `PASV`/`PORT` replaces an announced connection nobody has used, or one
    /// whose transfer is over but whose peer has not closed it yet.
    pub(super) fn cancel_idle_expectation(&mut self) {
        if let Some(data) = self.data.take_if(|d| {
            matches!(
                d.phase,
                Phase::Deferred | Phase::Waiting | Phase::Drained | Phase::Kernel
            )
        }) {
            self.cancel(data.id);
        }
    }

    pub(super) fn cancel_if_current(&mut self, id: ExpectationId) {
        if self.data.take_if(|d| d.id == id).is_some() {
            self.cancel(id);
        }
    }

    /// The server reported the transfer over kernel-forwarded expectation `id` done.
    pub(super) fn finish_kernel(&mut self, id: ExpectationId) {
        if self.data.take_if(|d| d.id == id).is_some() {
            self.live.remove(&id);
            self.out.push(Action::Finished(id));
            self.to_client.lift_barrier(id);
        }
    }

    pub(super) fn set_phase(&mut self, id: ExpectationId, phase: Phase) {
        if let Some(data) = self.data.as_mut().filter(|d| d.id == id) {
            data.phase = phase;
        }
    }

    pub(super) fn on_opened(
        &mut self,
        id: ExpectationId,
        proxy: SocketAddr,
        server_port: Option<u16>,
        path: DataPath,
    ) {
        let Some(data) = self
            .data
            .as_mut()
            .filter(|d| d.id == id && d.phase == Phase::Binding)
        else {
            self.out.push(Action::Cancel(id));
            return;
        };
        data.phase = match path {
            DataPath::Kernel => Phase::Kernel,
            DataPath::Relay => Phase::Waiting,
        };
        data.client_port = Some(proxy.port());
        let proxy = SocketAddr::new(proxy.ip().to_canonical(), proxy.port());
        match data.announce {
            Announce::Nothing => {}
            Announce::ServerCommand(_) => {
                let Some(port) = server_port else {
                    return self.on_open_failed(id);
                };
                let ours = SocketAddr::new(self.params.server_side.ip(), port);
                let cmd = match ours {
                    SocketAddr::V4(v4) => Command::Port(v4),
                    SocketAddr::V6(_) => Command::Eprt(ours),
                };
                self.to_server.fill(id, Some(cmd.encode()));
            }
            Announce::Reply(PassiveForm::Pasv) => {
                let reply = self
                    .passive_v4()
                    .map(|ip| Reply::passive(SocketAddrV4::new(ip, proxy.port())));
                self.to_client.fill(id, reply);
            }
            Announce::Reply(PassiveForm::Epsv) => {
                self.to_client
                    .fill(id, Some(Reply::extended_passive(proxy.port())));
            }
            Announce::Command(form) => {
                // Across families an IPv4 server gets PORT, which every one knows.
                let classic = form == ActiveForm::Port || self.params.client_side.is_ipv6();
                let cmd = match proxy {
                    SocketAddr::V4(v4) if classic => Command::Port(v4),
                    _ => Command::Eprt(proxy),
                };
                self.to_server.fill(id, Some(cmd.encode()));
            }
        }
    }

    pub(super) fn on_open_failed(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        let Some(data) = self.data.take_if(|d| d.id == id) else {
            return;
        };
        self.count(&Say::NoDataPort, None);
        let reply = Say::NoDataPort.encode();
        match data.announce {
            Announce::Reply(_) => {
                self.to_client.fill(id, Some(reply));
            }
            // Opened at the transfer verb, which is on its way to the server: its
            // reply tells the client (no dial happened, so the server times out).
            Announce::Nothing => {}
            Announce::Command(_) | Announce::ServerCommand(_) => {
                // The command never reaches the server, so the reply it would have
                // owed becomes a local one in the same place.
                self.to_server.fill(id, None);
                if let Some(slot) = self
                    .pending
                    .iter_mut()
                    .find(|p| matches!(p, Pending::Active { id: p } | Pending::ToActive { id: p } if *p == id))
                {
                    *slot = Pending::Local(reply);
                }
                self.release_local_replies();
            }
        }
    }

    /// When an expectation opened now must have been used by (`data-timeout`).
    pub(super) fn expiry(&self) -> Instant {
        self.now + self.rules.settings.data_timeout
    }

    /// Opens the expectation prepared for a transfer verb (the proxy dials both legs
    /// under `server-mode passive`); its time starts now.
    pub(super) fn open_deferred(&mut self) {
        let expires = self.expiry();
        let Some(data) = self.data.as_mut().filter(|d| d.phase == Phase::Deferred) else {
            return;
        };
        if let Some(mut req) = data.deferred.take() {
            data.phase = Phase::Binding;
            data.expires = Some(expires);
            req.expires = expires;
            self.out.push(Action::Open(req));
        }
    }

    pub(super) fn on_data_connected(&mut self, id: ExpectationId) {
        if let Some(data) = self.data.as_mut().filter(|d| d.id == id) {
            data.phase = Phase::Connected;
            data.expires = None;
        }
    }

    /// When the current expectation expires, while it waits for its peer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.data.as_ref().and_then(|d| d.expires)
    }

    /// Expires the current expectation if its time is up at `now`. The shell ends it
    /// and says [`Event::DataClosed`], which releases it here.
    pub fn expire(&mut self, now: Instant) -> Vec<Action> {
        self.now = now;
        let due = self
            .data
            .as_mut()
            .filter(|d| d.expires.is_some_and(|at| at <= now));
        if let Some(data) = due {
            data.expires = None;
            self.out.push(Action::Expire(data.id));
        }
        self.finish()
    }

    pub(super) fn on_data_closed(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        if self.data.take_if(|d| d.id == id).is_some() {
            self.to_client.lift_barrier(id);
        }
    }
}
