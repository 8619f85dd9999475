//! Server replies: correlation with the command they answer, and the completion
//! reply held until the transfer's bytes are delivered.

use super::*;

impl Control {
    pub(super) fn on_server_line(&mut self, line: Line) {
        let Some(reply) = self.replies.push(line) else {
            if self.replies.buffered() > MAX_REPLY_BYTES {
                self.close_with(Say::ServerReplyTooLong, CloseReason::ServerReplyTooLong);
            }
            return;
        };
        if reply.code.is_none() {
            self.out.push(Action::MalformedReply);
            return self.to_client.push(reply.raw);
        }
        if reply.is_preliminary() {
            return self.to_client.push(reply.raw);
        }
        if reply.code == Some(230) {
            self.out.push(Action::LoggedIn);
        }
        self.release_local_replies();
        match self.pending.pop_front() {
            Some(Pending::Passive { client, sent }) => self.on_passive_reply(reply, client, sent),
            Some(Pending::Active { id }) => {
                if !is_positive(&reply) {
                    self.cancel_if_current(id);
                }
                self.forward_reply(reply);
            }
            Some(Pending::Transfer { id: Some(id) }) => self.on_transfer_reply(reply, id),
            Some(Pending::ToPassive {
                form,
                sent,
                client_port,
            }) => self.on_to_passive_reply(reply, form, sent, client_port),
            Some(Pending::ToActive { id }) => self.on_to_active_reply(reply, id),
            Some(greeting @ (Pending::Greeting | Pending::HiddenGreeting))
                if is_positive(&reply) && self.secures_server_first() =>
            {
                let hidden = matches!(greeting, Pending::HiddenGreeting);
                self.secure_server_first(if hidden { Vec::new() } else { reply.raw });
            }
            Some(Pending::HiddenGreeting) if is_positive(&reply) => {}
            Some(Pending::ServerAuth { for_client }) => self.on_server_auth(&reply, for_client),
            Some(Pending::ServerPbsz) => self.on_server_pbsz(),
            Some(Pending::ServerProt { private }) => self.on_server_prot(&reply, private),
            Some(Pending::Passthrough) => self.on_passthrough_auth(reply),
            Some(Pending::Feat) => {
                let raw = self.rewrite_feat(&reply);
                self.forward_reply(Reply { raw, ..reply });
            }
            Some(
                Pending::Greeting
                | Pending::HiddenGreeting
                | Pending::Other
                | Pending::Transfer { id: None }
                | Pending::Local(_),
            )
            | None => self.forward_reply(reply),
        }
        self.release_local_replies();
    }

    /// Passes a server reply to the client unchanged, unless it is a passive reply:
    /// those reach the client only as ftpgate's rewrite of an answer to a `PASV` or
    /// `EPSV` it forwarded, never with the server's own address or port (a `P@SW` the
    /// proxy did not know, or a `229` to a `PASV`, would otherwise open a way around it).
    pub(super) fn forward_reply(&mut self, reply: Reply) {
        if matches!(reply.code, Some(227..=229)) {
            return self.tell(Say::SpoofedReply);
        }
        self.to_client.push(reply.raw);
    }

    /// Moves local replies that are now at the head of the line to the client.
    pub(super) fn release_local_replies(&mut self) {
        while let Some(Pending::Local(_)) = self.pending.front() {
            if let Some(Pending::Local(bytes)) = self.pending.pop_front() {
                self.to_client.push(bytes);
            }
        }
    }

    pub(super) fn on_transfer_reply(&mut self, reply: Reply, id: ExpectationId) {
        let phase = self.data.as_ref().filter(|d| d.id == id).map(|d| d.phase);
        if phase == Some(Phase::Kernel) {
            // The kernel delivered (or refused) the bytes itself; the connection was
            // made or never will be, so its hole closes now rather than at expiry.
            if matches!(reply.code, Some(226 | 250)) {
                self.finish_kernel(id);
            } else {
                self.cancel_if_current(id);
            }
        } else if phase.is_some_and(|p| p != Phase::Drained)
            && matches!(reply.code, Some(226 | 250))
        {
            // The completion reply waits until the proxy has delivered every data
            // byte of the transfer.
            self.to_client.push_barrier(id);
        } else if !is_positive(&reply) {
            self.cancel_if_current(id);
        }
        self.forward_reply(reply);
    }
}
