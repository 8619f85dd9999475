//! The engine of a session whose server leg is connected: every client command and
//! server reply, the expectations they announce, and the order of what each peer
//! receives. Split by concern: `commands` (client lines), `replies` (server lines),
//! `passive` and `active` (the data-connection commands and their rewrites),
//! `expectation` (the data connection's life), `queue` (ordered output).

mod active;
mod commands;
mod expectation;
mod passive;
mod queue;
mod replies;
mod tls;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use super::api::{Action, CloseReason, Conversion, Event, ExpectationRequest, Params, Transfer};
use super::say::{Say, Scope};
use crate::codec::{
    self, Command, EpsvArg, Frame, Line, Reply, ReplyAssembler, TransferKind, addr,
};
use crate::rules::{Config, DataRequest, Decision, Parties, Verdict};
use crate::vocab::{DataMode, DataPath, ExpectationId, Family, TransferType, UpstreamFailure};
use queue::OutQueue;

/// Which passive form a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassiveForm {
    Pasv,
    Epsv,
}

/// Which active form a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActiveForm {
    Port,
    Eprt,
}

/// A command sent to the server whose final reply is still owed, or a local reply
/// waiting for its turn.
#[derive(Debug)]
enum Pending {
    Greeting,
    /// The server's greeting when the proxy greeted the client itself (forward
    /// listener): dropped if positive, passed on if the server refuses.
    HiddenGreeting,
    Passive {
        client: PassiveForm,
        sent: PassiveForm,
    },
    Active {
        id: ExpectationId,
    },
    /// Our `PASV`/`EPSV` for a client's `PORT`/`EPRT` (server-mode passive).
    ToPassive {
        form: ActiveForm,
        sent: PassiveForm,
        client_port: u16,
    },
    /// Our `PORT`/`EPRT` for a client's `PASV`/`EPSV` (server-mode active).
    ToActive {
        id: ExpectationId,
    },
    Transfer {
        id: Option<ExpectationId>,
    },
    /// `FEAT`: its reply lists ftpgate's TLS, not the server's.
    Feat,
    /// ftpgate's own `AUTH TLS` to the server (`tls server`); `for_client` when it
    /// answers the client's `AUTH` (`match`). Its reply is not passed on.
    ServerAuth {
        for_client: bool,
    },
    /// ftpgate's own `PBSZ 0` and `PROT` to a server it secured (`private`: `PROT P`);
    /// not passed on.
    ServerPbsz,
    ServerProt {
        private: bool,
    },
    /// The client's `AUTH` under `tls passthrough`, forwarded: a `234` makes the
    /// session blind.
    Passthrough,
    Other,
    Local(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ready, but opened only when a transfer verb uses it (the proxy dials both
    /// legs, and dialing a client before it expects it is impolite).
    Deferred,
    /// The shell is binding the data listener.
    Binding,
    /// Listening for the expected peer.
    Waiting,
    /// Accepted and relaying.
    Connected,
    /// The transfer's bytes are all delivered; the connection is not yet closed.
    Drained,
    /// The kernel forwards the connection; the engine never sees its bytes, so no
    /// reply waits for them, and the final reply to the transfer closes the hole.
    Kernel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    Reply(PassiveForm),
    Command(ActiveForm),
    /// Converted to server passive: the client already has its `200`.
    Nothing,
    /// Converted to server active: our `PORT`/`EPRT` goes to the server, and the
    /// client's `227`/`229` waits for the server's answer.
    ServerCommand(PassiveForm),
}

/// The current expectation of the session (FTP has one data connection at a time).
#[derive(Debug)]
struct Data {
    id: ExpectationId,
    phase: Phase,
    announce: Announce,
    transfer: Option<TransferKind>,
    /// The client's mode and the onward port, for data rules at the transfer verb.
    mode: DataMode,
    port: u16,
    /// What to open at the transfer verb, in the `Deferred` phase.
    deferred: Option<ExpectationRequest>,
    /// The proxy's port for the client, once bound (announced later when converted).
    client_port: Option<u16>,
    /// When the peer must have connected by; `None` once it has (or before the
    /// expectation is opened).
    expires: Option<Instant>,
}

/// What the server owes the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::session) enum Owed {
    Greeting,
    /// The reply to a command it was sent.
    Reply,
}

/// A reply held while waiting for a multi-line reply to end is bounded by this.
const MAX_REPLY_BYTES: usize = 256 * 1024;
/// Output held inside the engine (replies behind a data transfer, local replies
/// behind the server's) is bounded by this; past it the session is closed.
pub(super) const MAX_HELD_BYTES: usize = 1024 * 1024;
/// Longest user name kept for the session table.
pub(super) const MAX_USER: usize = 64;
/// Longest path kept for the session table and transfer log.
const MAX_PATH: usize = 1024;

/// One control session's protocol state once its server is connected.
#[derive(Debug)]
pub(super) struct Control {
    params: Params,
    pending: VecDeque<Pending>,
    replies: ReplyAssembler,
    data: Option<Data>,
    /// Expectations opened and neither cancelled nor closed yet: the current one and
    /// any earlier one still transferring.
    live: std::collections::BTreeSet<ExpectationId>,
    to_client: OutQueue,
    to_server: OutQueue,
    epsv_all: bool,
    /// The `TYPE` seen last.
    transfer_type: TransferType,
    next_id: u64,
    user: Option<String>,
    /// FTPS on the client's control connection.
    tls: tls::ClientLeg,
    /// FTPS on the server's control connection (`tls server`).
    server_tls: tls::ServerLeg,
    /// The server's greeting, held while ftpgate secures the server leg before the
    /// client may say anything (`tls server require`); empty when the proxy greeted
    /// the client itself.
    held_greeting: Option<Vec<u8>>,
    out: Vec<Action>,
    /// Once closed, the engine ignores every further event.
    closed: bool,
    /// The command and login rules in force.
    rules: Arc<Config>,
    /// The time of the event being handled.
    now: Instant,
}

impl Control {
    pub fn new(params: Params, rules: Arc<Config>, now: Instant) -> Self {
        let tls = tls::ClientLeg {
            secured: params.tls_implicit,
            private: false,
            cleared: false,
        };
        Control {
            params,
            pending: VecDeque::from([Pending::Greeting]),
            replies: ReplyAssembler::default(),
            data: None,
            live: std::collections::BTreeSet::new(),
            to_client: OutQueue::default(),
            to_server: OutQueue::default(),
            epsv_all: false,
            transfer_type: TransferType::Ascii,
            next_id: 0,
            user: None,
            tls,
            server_tls: tls::ServerLeg::default(),
            held_greeting: None,
            out: Vec::new(),
            closed: false,
            rules,
            now,
        }
    }

    /// What the server owes the client, if anything (local replies aside).
    pub fn owed(&self) -> Option<Owed> {
        // Securing the server leg is part of its greeting: the client waits, under
        // the greeting's timeout.
        if self.held_greeting.is_some() {
            return Some(Owed::Greeting);
        }
        match self
            .pending
            .iter()
            .find(|p| !matches!(p, Pending::Local(_)))?
        {
            Pending::Greeting | Pending::HiddenGreeting => Some(Owed::Greeting),
            _ => Some(Owed::Reply),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Whether the proxy greeted the client itself (forward listener).
    pub fn proxy_greeted(&self) -> bool {
        matches!(self.pending.front(), Some(Pending::HiddenGreeting))
    }

    /// A reply of ftpgate's, owed behind everything the server owes now (its greeting).
    pub fn answer_after_greeting(&mut self, bytes: Vec<u8>) {
        self.pending.push_back(Pending::Local(bytes));
    }

    /// The replies of ftpgate's still waiting behind the server's.
    pub fn owed_local_replies(&self) -> Vec<Vec<u8>> {
        self.pending
            .iter()
            .filter_map(|p| match p {
                Pending::Local(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    /// The client was greeted by the proxy (forward listener): the server's own
    /// greeting is not passed on unless it refuses the session.
    pub fn greeted_by_proxy(&mut self) {
        if let Some(first @ Pending::Greeting) = self.pending.front_mut() {
            *first = Pending::HiddenGreeting;
        }
    }

    /// Applies a rule set (at start, and after every reload) to decisions from now on.
    pub fn set_rules(&mut self, rules: Arc<Config>) {
        self.rules = rules;
    }

    /// Records a rule's decision about `what`; when it blocks, the reply to give:
    /// the rule's `return-code` or `code` and `text`.
    fn blocked_reply(
        &mut self,
        decision: Option<Decision>,
        what: impl FnOnce() -> String,
        scope: Scope,
    ) -> Option<Say> {
        let decision = decision?;
        let reply = (decision.verdict == Verdict::Block).then(|| {
            let (code, text) = scope.default_reply();
            let (code, text) = decision.refusal(code, text);
            Say::Policy(code, text)
        });
        self.out.push(Action::Rule {
            decision,
            what: what(),
        });
        reply
    }

    /// Whether the data rules or the data-connection limit refuse a connection about
    /// to be announced; the reply to give if so. Call after idle expectations are gone.
    fn data_refusal(&mut self, mode: DataMode, port: u16) -> Option<Say> {
        let request = DataRequest {
            mode,
            family: Family::of(self.params.client.ip()),
            port,
            direction: None,
        };
        let decision = self.rules.data_decision(&self.parties(), &request);
        let what = || format!("data {} port {port}", mode.as_str());
        if let Some(say) = self.blocked_reply(decision, what, Scope::Data) {
            return Some(say);
        }
        (self.live.len() >= self.rules.settings.max_data_connections).then_some(Say::DataLimit)
    }

    /// Who the rules decide about in this session.
    fn parties(&self) -> Parties {
        let p = &self.params;
        Parties::new(p.listener, p.client.ip(), p.server.get())
    }

    /// The user name the client sent, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Bytes held inside the state machine (queued output and unfinished replies).
    pub fn buffered(&self) -> usize {
        let local: usize = self
            .pending
            .iter()
            .map(|p| match p {
                Pending::Local(bytes) => bytes.len(),
                _ => 0,
            })
            .sum();
        self.to_client.held_bytes() + self.to_server.held_bytes() + self.replies.buffered() + local
    }

    /// Whether a data connection is announced or open.
    pub fn has_live_data(&self) -> bool {
        !self.live.is_empty()
    }

    /// Feeds one event of the relaying stage (others are ignored); returns what to
    /// do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        if self.closed {
            return Vec::new();
        }
        self.now = now;
        match event {
            Event::Client(Frame::Line(line)) => self.on_command(line),
            Event::Client(Frame::TooLong { .. }) => self.refuse(Say::LineTooLong),
            Event::Server(Frame::Line(line)) => self.on_server_line(line),
            Event::Server(Frame::TooLong { .. }) => {
                self.close_with(Say::ServerReplyTooLong, CloseReason::ServerReplyTooLong)
            }
            Event::ExpectationOpened {
                id,
                proxy,
                server_port,
                path,
            } => self.on_opened(id, proxy, server_port, path),
            Event::ExpectationFailed { id } => self.on_open_failed(id),
            Event::DataConnected { id } => self.on_data_connected(id),
            Event::DataDrained { id } => {
                self.set_phase(id, Phase::Drained);
                self.to_client.lift_barrier(id);
            }
            Event::DataClosed { id, .. } => self.on_data_closed(id),
            Event::ServerTlsFailed => self.close_with(
                Say::ServerTlsFailed,
                CloseReason::UpstreamFailed(UpstreamFailure::Tls),
            ),
            Event::Resolved(_)
            | Event::Connected { .. }
            | Event::ConnectFailed
            | Event::ClientClosed
            | Event::ServerClosed
            | Event::ClientTlsFailed
            | Event::Drain
            | Event::Shutdown => {}
        }
        self.finish()
    }

    /// Ends a turn: ready output goes out, and too much held output ends the session.
    fn finish(&mut self) -> Vec<Action> {
        self.flush();
        if self.buffered() > MAX_HELD_BYTES && !self.closed {
            self.close_with(Say::BufferLimit, CloseReason::BufferLimit);
        }
        std::mem::take(&mut self.out)
    }

    fn flush(&mut self) {
        let to_client = self.to_client.drain_ready().map(Action::ToClient);
        self.out.extend(to_client);
        let to_server = self.to_server.drain_ready().map(Action::ToServer);
        self.out.extend(to_server);
    }

    fn forward(&mut self, line: Line, pending: Pending) {
        self.pending.push_back(pending);
        self.to_server.push(line.raw);
    }

    /// Answers the client locally, after every reply the server still owes it.
    fn reply_locally(&mut self, bytes: Vec<u8>) {
        if self.pending.is_empty() {
            self.to_client.push(bytes);
        } else {
            self.pending.push_back(Pending::Local(bytes));
        }
    }

    /// Refuses a client command with `say`, in the order of the replies it is owed.
    fn refuse(&mut self, say: Say) {
        self.refuse_target(say, None);
    }

    /// Refuses a command that named the data address `target`.
    fn refuse_target(&mut self, say: Say, target: Option<SocketAddr>) {
        self.count(&say, target);
        self.reply_locally(say.encode());
    }

    /// Tells the client `say` now, ahead of nothing: the answer to a server reply.
    fn tell(&mut self, say: Say) {
        self.count(&say, None);
        self.to_client.push(say.encode());
    }

    fn count(&mut self, say: &Say, target: Option<SocketAddr>) {
        if let Some(why) = say.refusal() {
            self.out.push(Action::Refused { why, target });
        }
    }

    fn close_with(&mut self, say: Say, reason: CloseReason) {
        let held: Vec<Vec<u8>> = self.to_client.drain_all().collect();
        self.out.extend(held.into_iter().map(Action::ToClient));
        self.out.push(Action::ToClient(say.encode()));
        self.out.push(Action::Close(reason));
        self.closed = true;
    }

    /// Ends the session from outside (a timer, shutdown): what the client is owed
    /// goes first, then `say`.
    pub fn close(&mut self, say: Say, reason: CloseReason) -> Vec<Action> {
        if !self.closed {
            self.flush();
            self.close_with(say, reason);
        }
        std::mem::take(&mut self.out)
    }
}

/// 1yz, 2yz and 3yz replies mean the command went through.
fn is_positive(reply: &crate::codec::Reply) -> bool {
    matches!(reply.code, Some(100..=399))
}
