//! The per-session state machine of one FTP control connection: client lines, server
//! replies and data-connection news go in as [`Event`]s, and [`Action`]s come out
//! (send these bytes to that peer, open or cancel an expectation, close).
//!
//! It owns every protocol and policy decision about the control channel and touches no
//! socket, task or clock, so each path is tested by feeding events. Its contract with
//! the shell: after an [`Action::Open`] the shell answers with
//! [`Event::ExpectationOpened`] or [`Event::ExpectationFailed`] before any other event.

mod queue;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use crate::codec::{
    self, Command, EpsvArg, Frame, Line, LineError, Reply, ReplyAssembler, TransferKind, addr,
};
use crate::rules::{Config, DataRequest, Decision, Parties, UnknownCommands, Verdict};
use crate::vocab::Family;
pub use crate::vocab::{DataMode, DataOutcome, ExpectationId, Refusal};
use queue::OutQueue;

/// The addresses of one control session, all in canonical form (no IPv4-mapped IPv6).
#[derive(Debug, Clone)]
pub struct Params {
    /// The listener the client came in on (for rules with `on`).
    pub listener: SocketAddr,
    /// The client's control address.
    pub client: SocketAddr,
    /// The address the client believes it is connected to: the proxy's own in reverse
    /// mode, the server's in transparent mode. Announced in `227`, and where clients
    /// that ignore the `227` address (and every `EPSV` client) connect for data.
    pub client_side: SocketAddr,
    /// Where the proxy itself is on the client's side: data listeners for the client
    /// bind here and active-mode connections to the client leave from here.
    pub client_local: IpAddr,
    /// The server's control address.
    pub server: SocketAddr,
    /// The proxy's own address on the server control connection.
    pub server_side: SocketAddr,
    /// Announced in `227` instead of the proxy's own address (proxy behind NAT).
    pub advertise: Option<IpAddr>,
    /// Onward data ports below this are refused (invariant 4).
    pub min_data_port: u16,
    /// The mode every server-side data leg uses (`server-mode` in the rules);
    /// `None` keeps the client's.
    pub server_mode: Option<DataMode>,
    /// ftpgate's own listening sockets, never a data target (invariant 4).
    pub own: Arc<OwnSockets>,
}

/// ftpgate's own listening sockets: no data connection may be sent to one (a `PORT`
/// naming the control listener would turn the server's data into a new session).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnSockets {
    /// The host's own addresses (a wildcard listener answers on each).
    pub ips: Vec<IpAddr>,
    /// The ports of the control listeners and the admin endpoint.
    pub ports: Vec<u16>,
}

impl OwnSockets {
    /// Whether `ip` reaches this host.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.ips.contains(&ip)
    }
}

/// What the shell must set up for one announced data connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationRequest {
    pub id: ExpectationId,
    pub mode: DataMode,
    /// The local address to listen on.
    pub listen_ip: IpAddr,
    /// The address the peer was told (or believes) to connect to; a data connection
    /// whose original destination is another address is refused.
    pub dst_ip: IpAddr,
    /// The only peer allowed to connect.
    pub expected_peer: IpAddr,
    /// Where the accepted connection is relayed to.
    pub onward: SocketAddr,
    /// The local address the onward leg leaves from.
    pub onward_from: IpAddr,
    /// Set when the server leg uses the other mode than the client's.
    pub conversion: Option<Conversion>,
}

/// How the server leg differs from the client's mode (`server-mode` in the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Client active, server passive: the proxy dials both legs. `mode` is `Active`,
    /// `onward` the client; instead of accepting the server's connection the proxy
    /// dials the server's announced passive port.
    DialServer { server: SocketAddr, from: IpAddr },
    /// Client passive, server active: both peers dial the proxy. `mode` is `Passive`
    /// and the client is accepted as usual; instead of dialing the server the proxy
    /// accepts it on a second port of `listen_ip`, announced to it with `PORT`/`EPRT`.
    AcceptServer {
        listen_ip: IpAddr,
        expected_peer: IpAddr,
    },
}

/// Input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(Frame),
    Server(Frame),
    ExpectationOpened {
        id: ExpectationId,
        proxy: SocketAddr,
        /// The second port, for [`Conversion::AcceptServer`].
        server_port: Option<u16>,
        /// The kernel forwards the connection (`data-path kernel`): no
        /// [`Event::DataConnected`] or [`Event::DataDrained`] will come.
        kernel: bool,
    },
    ExpectationFailed {
        id: ExpectationId,
    },
    DataConnected {
        id: ExpectationId,
    },
    /// The direction that carried the transfer has ended and all its bytes were
    /// delivered; the other direction may still be open.
    DataDrained {
        id: ExpectationId,
    },
    DataClosed {
        id: ExpectationId,
        outcome: DataOutcome,
    },
}

/// Why the session ends on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server sent a line or reply over the limits.
    ServerReplyTooLong,
    /// A peer made the engine hold more output than it may (a flood of replies behind
    /// a transfer, or of refused commands behind a slow server).
    BufferLimit,
}

/// Output of the state machine, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ToClient(Vec<u8>),
    ToServer(Vec<u8>),
    Open(ExpectationRequest),
    /// Release the expectation and tear down its data connection, if any.
    Cancel(ExpectationId),
    /// A transfer command now uses this expectation.
    Transfer {
        id: ExpectationId,
        transfer: Transfer,
    },
    /// A client command was seen (verb upper-cased), for accounting.
    Command(String),
    /// The client named its user (`USER`), for the session table.
    User(String),
    /// The server accepted a login (`230`).
    LoggedIn,
    /// A command or login rule matched (`what` names the verb or the user).
    Rule {
        decision: Decision,
        what: String,
    },
    /// Something was refused; `target` is the data address it named, if any.
    Refused {
        why: Refusal,
        target: Option<SocketAddr>,
    },
    /// A line from the server that is no reply at all; forwarded, counted.
    MalformedReply,
    /// A verb ftpgate does not know (`class` from [`codec::verb_class`]), and whether
    /// `set unknown-commands` let it through.
    UnknownVerb {
        class: &'static str,
        passed: bool,
    },
    Close(CloseReason),
}

/// What a transfer command asked for, for the session table and the transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub kind: TransferKind,
    /// The path argument as the client sent it (lossy UTF-8, bounded), may be empty.
    pub path: String,
    /// `TYPE I` (image) was in force rather than ASCII.
    pub binary: bool,
    /// The user the client named, if any.
    pub user: Option<String>,
}

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
}

/// A reply held while waiting for a multi-line reply to end is bounded by this.
const MAX_REPLY_BYTES: usize = 256 * 1024;
/// Output held inside the engine (replies behind a data transfer, local replies
/// behind the server's) is bounded by this; past it the session is closed.
const MAX_HELD_BYTES: usize = 1024 * 1024;
/// Longest user name kept for the session table.
const MAX_USER: usize = 64;
/// Longest path kept for the session table and transfer log.
const MAX_PATH: usize = 1024;

/// One control session's protocol state.
#[derive(Debug)]
pub struct Session {
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
    /// `TYPE I`/`TYPE L 8` seen last, rather than `TYPE A` (the RFC 959 default).
    binary: bool,
    next_id: u64,
    user: Option<String>,
    out: Vec<Action>,
    /// Once closed, the engine ignores every further event.
    closed: bool,
    /// The command and login rules in force.
    rules: Arc<Config>,
}

impl Session {
    pub fn new(params: Params) -> Self {
        Session {
            params,
            pending: VecDeque::from([Pending::Greeting]),
            replies: ReplyAssembler::default(),
            data: None,
            live: std::collections::BTreeSet::new(),
            to_client: OutQueue::default(),
            to_server: OutQueue::default(),
            epsv_all: false,
            binary: false,
            next_id: 0,
            user: None,
            out: Vec::new(),
            closed: false,
            rules: Arc::default(),
        }
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
        what: &str,
        code: u16,
        text: &str,
    ) -> Option<(u16, String)> {
        let decision = decision?;
        let reply = (decision.verdict == Verdict::Block).then(|| decision.refusal(code, text));
        self.out.push(Action::Rule {
            decision,
            what: what.to_string(),
        });
        reply
    }

    /// Whether the data rules or the data-connection limit refuse a connection about
    /// to be announced; the reply to give if so. Call after idle expectations are gone.
    fn data_refusal(&mut self, mode: DataMode, port: u16) -> Option<(Refusal, u16, String)> {
        let request = DataRequest {
            mode,
            family: Family::of(self.params.client.ip()),
            port,
            direction: None,
        };
        let decision = self.rules.data_decision(&self.parties(), &request);
        let what = format!("data {} port {port}", mode.as_str());
        let text = "Can't open data connection: refused by policy.";
        if let Some((code, text)) = self.blocked_reply(decision, &what, 425, text) {
            return Some((Refusal::Policy, code, text));
        }
        if self.live.len() >= self.rules.settings.max_data_connections {
            let text = "Can't open data connection: too many data connections.";
            return Some((Refusal::DataLimit, 425, text.to_string()));
        }
        None
    }

    /// Who the rules decide about in this session.
    fn parties(&self) -> Parties {
        let p = &self.params;
        Parties::new(p.listener, p.client.ip(), p.server)
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

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        if self.closed {
            return Vec::new();
        }
        match event {
            Event::Client(Frame::Line(line)) => self.on_command(line),
            Event::Client(Frame::TooLong { .. }) => {
                self.refuse(Refusal::LineTooLong, 500, "Command line too long.")
            }
            Event::Server(Frame::Line(line)) => self.on_server_line(line),
            Event::Server(Frame::TooLong { .. }) => self.close(CloseReason::ServerReplyTooLong),
            Event::ExpectationOpened {
                id,
                proxy,
                server_port,
                kernel,
            } => self.on_opened(id, proxy, server_port, kernel),
            Event::ExpectationFailed { id } => self.on_open_failed(id),
            Event::DataConnected { id } => self.set_phase(id, Phase::Connected),
            Event::DataDrained { id } => {
                self.set_phase(id, Phase::Drained);
                self.to_client.lift_barrier(id);
            }
            Event::DataClosed { id, .. } => self.on_data_closed(id),
        }
        self.flush();
        if self.buffered() > MAX_HELD_BYTES && !self.closed {
            self.close(CloseReason::BufferLimit);
        }
        std::mem::take(&mut self.out)
    }

    fn flush(&mut self) {
        let to_client = self.to_client.drain_ready().map(Action::ToClient);
        self.out.extend(to_client);
        let to_server = self.to_server.drain_ready().map(Action::ToServer);
        self.out.extend(to_server);
    }

    // ----- client commands -------------------------------------------------------

    fn on_command(&mut self, line: Line) {
        let cmd = match codec::parse_line(&line) {
            Ok(cmd) => cmd,
            Err(LineError::Malformed(why)) => {
                self.out.push(Action::Command("other".to_string()));
                return self.refuse(Refusal::Malformed(why), 500, why.reply_text());
            }
            Err(LineError::Syntax(e)) => {
                self.out.push(Action::Command(e.verb.to_string()));
                return self.refuse(
                    Refusal::Syntax,
                    501,
                    "Syntax error in parameters or arguments.",
                );
            }
        };
        self.out.push(Action::Command(cmd.verb().to_string()));
        if !codec::is_known_verb(cmd.verb()) {
            let passed = self.rules.settings.unknown_commands == UnknownCommands::Pass;
            let class = codec::verb_class(cmd.verb());
            self.out.push(Action::UnknownVerb { class, passed });
            if !passed {
                return self.refuse(Refusal::UnknownCommand, 500, "Unknown command.");
            }
        }
        let parties = self.parties();
        if let Command::User(name) = &cmd {
            let name = String::from_utf8_lossy(name).into_owned();
            let decision = self.rules.login_decision(&parties, &name);
            if let Some((code, text)) =
                self.blocked_reply(decision, &name, 530, "Login refused by policy.")
            {
                return self.refuse(Refusal::Policy, code, &text);
            }
        } else {
            let site = match &cmd {
                Command::Other {
                    verb,
                    arg: Some(arg),
                } if verb == "SITE" => arg
                    .split(|b| *b == b' ')
                    .next()
                    .map(|sub| String::from_utf8_lossy(sub).into_owned()),
                _ => None,
            };
            let decision = self
                .rules
                .command_decision(&parties, cmd.verb(), site.as_deref());
            let what = match &site {
                Some(sub) => format!("SITE {}", sub.to_ascii_uppercase()),
                None => cmd.verb().to_string(),
            };
            if let Some((code, text)) =
                self.blocked_reply(decision, &what, 550, "Command refused by policy.")
            {
                return self.refuse(Refusal::Policy, code, &text);
            }
        }
        match cmd {
            Command::Port(a) => self.on_active(ActiveForm::Port, SocketAddr::V4(a)),
            Command::Eprt(a) => self.on_active(ActiveForm::Eprt, a),
            Command::Lprt(_) | Command::Lpsv => self.refuse(
                Refusal::NotImplemented,
                502,
                "LPRT and LPSV are not implemented; use EPRT or EPSV.",
            ),
            // Single-port passive (pure-ftpd) answers `227 port`, which no rewrite
            // of ftpgate's covers.
            Command::Other { verb, .. } if verb == "SPSV" => self.refuse(
                Refusal::NotImplemented,
                502,
                "SPSV is not implemented; use PASV or EPSV.",
            ),
            Command::Pasv => self.on_passive(line, PassiveForm::Pasv, None),
            Command::Epsv(EpsvArg::Any) => self.on_passive(line, PassiveForm::Epsv, None),
            Command::Epsv(EpsvArg::Family(f)) => {
                if f == addr::family_number(self.params.client_side.ip()) {
                    self.on_passive(line, PassiveForm::Epsv, Some(f));
                } else {
                    let own = addr::family_number(self.params.client_side.ip());
                    let text = format!("Network protocol not supported, use ({own}).");
                    self.refuse(Refusal::Family, 522, &text);
                }
            }
            Command::Epsv(EpsvArg::All) => {
                self.epsv_all = true;
                if self.params.server_mode == Some(DataMode::Active) {
                    // The server leg uses PORT/EPRT, which EPSV ALL would forbid it;
                    // the promise binds the client only, so it is kept here.
                    self.reply_locally(Reply::encode(200, "EPSV ALL ok."));
                } else {
                    self.forward(line, Pending::Other);
                }
            }
            Command::Auth(_) => self.refuse(
                Refusal::Auth,
                534,
                "AUTH is not available through this proxy.",
            ),
            Command::User(name) => {
                let name: String = String::from_utf8_lossy(&name)
                    .chars()
                    .take(MAX_USER)
                    .collect();
                self.out.push(Action::User(name.clone()));
                self.user = Some(name);
                self.forward(line, Pending::Other);
            }
            Command::Abor => self.on_abort(line),
            Command::Other { verb, arg } if verb == "TYPE" => {
                if let Some(t) = arg.as_ref().and_then(|a| a.first()) {
                    self.binary = matches!(t.to_ascii_uppercase(), b'I' | b'L');
                }
                self.forward(line, Pending::Other);
            }
            cmd @ Command::Other { .. } => match cmd.transfer_kind() {
                Some(kind) => {
                    let path = match &cmd {
                        Command::Other { arg: Some(arg), .. } => String::from_utf8_lossy(arg)
                            .chars()
                            .take(MAX_PATH)
                            .collect(),
                        _ => String::new(),
                    };
                    let transfer = Transfer {
                        kind,
                        path,
                        binary: self.binary,
                        user: self.user.clone(),
                    };
                    self.on_transfer(line, transfer);
                }
                None => self.forward(line, Pending::Other),
            },
        }
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

    fn refuse(&mut self, why: Refusal, code: u16, text: &str) {
        self.refuse_target(why, None, code, text);
    }

    fn refuse_target(&mut self, why: Refusal, target: Option<SocketAddr>, code: u16, text: &str) {
        self.out.push(Action::Refused { why, target });
        self.reply_locally(Reply::encode(code, text));
    }

    fn on_passive(&mut self, line: Line, form: PassiveForm, family: Option<u8>) {
        if self.epsv_all && form == PassiveForm::Pasv {
            return self.refuse(Refusal::EpsvAll, 501, "PASV not allowed after EPSV ALL.");
        }
        if form == PassiveForm::Pasv && self.passive_v4().is_none() {
            return self.refuse(Refusal::Family, 501, "PASV needs IPv4; use EPSV.");
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
    fn passive_v4(&self) -> Option<std::net::Ipv4Addr> {
        match self
            .params
            .advertise
            .unwrap_or(self.params.client_side.ip())
        {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// Whether a data target is one of ftpgate's control listeners or its admin
    /// endpoint (data ports in use are checked by the shell when it dials).
    fn is_own_socket(&self, target: SocketAddr) -> bool {
        let p = &self.params;
        let ip = target.ip().to_canonical();
        let local = p.own.is_local(ip) || ip == p.client_local || ip == p.server_side.ip();
        local && p.own.ports.contains(&target.port())
    }

    /// `PORT`/`EPRT` are always rewritten, so the client's line itself is not kept.
    fn on_active(&mut self, form: ActiveForm, target: SocketAddr) {
        if self.epsv_all {
            return self.refuse(
                Refusal::EpsvAll,
                501,
                "PORT and EPRT not allowed after EPSV ALL.",
            );
        }
        let mut ip = target.ip().to_canonical();
        if ip.is_unspecified() {
            // lftp announces `EPRT |2|::|port|` meaning "my control address". Taken
            // literally, `::` or `0.0.0.0` would reach the proxy host itself, so the
            // only safe reading is the client's own control address.
            ip = self.params.client.ip();
        }
        if ip != self.params.client.ip() {
            return self.refuse_target(
                Refusal::Bounce,
                Some(target),
                504,
                "Data address must be the client's own address.",
            );
        }
        if target.port() < self.params.min_data_port {
            return self.refuse(
                Refusal::PrivilegedPort,
                504,
                "Privileged data port refused.",
            );
        }
        if self.is_own_socket(SocketAddr::new(ip, target.port())) {
            return self.refuse_target(
                Refusal::OwnSocket,
                Some(target),
                504,
                "Data address is one of this proxy's own sockets.",
            );
        }
        self.cancel_idle_expectation();
        if let Some((why, code, text)) = self.data_refusal(DataMode::Active, target.port()) {
            return self.refuse(why, code, &text);
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

    fn on_transfer(&mut self, line: Line, transfer: Transfer) {
        let unused = self
            .data
            .as_ref()
            .filter(|d| d.transfer.is_none())
            .map(|d| (d.id, d.mode, d.port));
        if let Some((id, mode, port)) = unused {
            let request = DataRequest {
                mode,
                family: Family::of(self.params.client.ip()),
                port,
                direction: Some(transfer.kind),
            };
            let decision = self.rules.data_decision(&self.parties(), &request);
            let what = format!(
                "data {} {} port {port}",
                mode.as_str(),
                transfer.kind.as_str()
            );
            let text = "Can't open data connection: refused by policy.";
            if let Some((code, text)) = self.blocked_reply(decision, &what, 425, text) {
                self.cancel_if_current(id);
                return self.refuse(Refusal::Policy, code, &text);
            }
        }
        if let Some(req) = self
            .data
            .as_mut()
            .filter(|d| d.phase == Phase::Deferred)
            .and_then(|d| {
                d.phase = Phase::Binding;
                d.deferred.take()
            })
        {
            self.out.push(Action::Open(req));
        }
        let id = match self.data.as_mut() {
            Some(data) if data.transfer.is_none() => {
                data.transfer = Some(transfer.kind);
                self.out.push(Action::Transfer {
                    id: data.id,
                    transfer,
                });
                Some(data.id)
            }
            _ => None,
        };
        self.forward(line, Pending::Transfer { id });
    }

    fn on_abort(&mut self, line: Line) {
        if let Some(data) = self.data.take() {
            self.cancel(data.id);
        }
        self.forward(line, Pending::Other);
    }

    // ----- expectations ----------------------------------------------------------

    /// Asks the shell for an expectation. Every address follows from the mode alone,
    /// which is where invariant 1 lives: a passive connection goes on to the server's
    /// control address, an active one to the client's, whatever a peer announced.
    fn open_expectation(
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
        });
        self.live.insert(id);
        self.out.push(Action::Open(req));
        id
    }

    /// A client's `PASV`/`EPSV` under `server-mode active`: two listeners, our
    /// `PORT`/`EPRT` to the server, and the client's answer once the server agreed.
    fn passive_to_active(&mut self, form: PassiveForm) {
        if let Some((why, code, text)) = self.data_refusal(DataMode::Passive, 0) {
            return self.refuse(why, code, &text);
        }
        // Onward port 0: the server dials the proxy, no port of the server's is used.
        let id = self.open_expectation(Announce::ServerCommand(form), DataMode::Passive, 0);
        self.pending.push_back(Pending::ToActive { id });
        self.to_server.push_placeholder(id);
    }

    /// The server's answer to our `PASV`/`EPSV` for a client's `PORT`/`EPRT`: the
    /// client gets its `200`, and both legs are dialed when a transfer verb comes.
    fn on_to_passive_reply(
        &mut self,
        reply: Reply,
        form: ActiveForm,
        sent: PassiveForm,
        client_port: u16,
    ) {
        let port = match self.announced_port(reply, sent) {
            Ok(port) => port,
            Err(Some(_)) => {
                let text = "Can't open data connection: the server refused passive mode.";
                return self.to_client.push(Reply::encode(425, text));
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
        });
        self.live.insert(id);
        let verb = match form {
            ActiveForm::Port => "PORT",
            ActiveForm::Eprt => "EPRT",
        };
        self.to_client
            .push(Reply::encode(200, &format!("{verb} command successful.")));
    }

    /// The server's answer to our `PORT`/`EPRT` for a client's `PASV`/`EPSV`.
    fn on_to_active_reply(&mut self, reply: Reply, id: ExpectationId) {
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
                let text = "Can't open data connection: the server refused active mode.";
                self.to_client.push(Reply::encode(425, text));
            }
        }
    }

    fn cancel(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        self.out.push(Action::Cancel(id));
        self.to_client.lift_barrier(id);
    }

    /// A new `PASV`/`PORT` replaces an announced connection nobody has used, or one
    /// whose transfer is over but whose peer has not closed it yet.
    fn cancel_idle_expectation(&mut self) {
        if let Some(data) = self.data.take_if(|d| {
            matches!(
                d.phase,
                Phase::Deferred | Phase::Waiting | Phase::Drained | Phase::Kernel
            )
        }) {
            self.cancel(data.id);
        }
    }

    fn set_phase(&mut self, id: ExpectationId, phase: Phase) {
        if let Some(data) = self.data.as_mut().filter(|d| d.id == id) {
            data.phase = phase;
        }
    }

    fn on_opened(
        &mut self,
        id: ExpectationId,
        proxy: SocketAddr,
        server_port: Option<u16>,
        kernel: bool,
    ) {
        let Some(data) = self
            .data
            .as_mut()
            .filter(|d| d.id == id && d.phase == Phase::Binding)
        else {
            self.out.push(Action::Cancel(id));
            return;
        };
        data.phase = if kernel {
            Phase::Kernel
        } else {
            Phase::Waiting
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

    fn on_open_failed(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        let Some(data) = self.data.take_if(|d| d.id == id) else {
            return;
        };
        self.out.push(Action::Refused {
            why: Refusal::NoDataPort,
            target: None,
        });
        let reply = Reply::encode(425, "Can't open data connection: no data port available.");
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

    fn on_data_closed(&mut self, id: ExpectationId) {
        self.live.remove(&id);
        if self.data.take_if(|d| d.id == id).is_some() {
            self.to_client.lift_barrier(id);
        }
    }

    // ----- server replies --------------------------------------------------------

    fn on_server_line(&mut self, line: Line) {
        let Some(reply) = self.replies.push(line) else {
            if self.replies.buffered() > MAX_REPLY_BYTES {
                self.close(CloseReason::ServerReplyTooLong);
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
            Some(Pending::HiddenGreeting) if is_positive(&reply) => {}
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
    fn forward_reply(&mut self, reply: Reply) {
        if matches!(reply.code, Some(227..=229)) {
            self.out.push(Action::Refused {
                why: Refusal::SpoofedReply,
                target: None,
            });
            let text = "Can't open data connection: unexpected passive reply from server.";
            return self.to_client.push(Reply::encode(425, text));
        }
        self.to_client.push(reply.raw);
    }

    /// Moves local replies that are now at the head of the line to the client.
    fn release_local_replies(&mut self) {
        while let Some(Pending::Local(_)) = self.pending.front() {
            if let Some(Pending::Local(bytes)) = self.pending.pop_front() {
                self.to_client.push(bytes);
            }
        }
    }

    fn on_passive_reply(&mut self, reply: Reply, client: PassiveForm, sent: PassiveForm) {
        let port = match self.announced_port(reply, sent) {
            Ok(port) => port,
            // An error reply (or the wrong one) opens nothing and reaches the client.
            Err(Some(reply)) => return self.forward_reply(reply),
            Err(None) => return,
        };
        if let Some((why, code, text)) = self.data_refusal(DataMode::Passive, port) {
            self.out.push(Action::Refused { why, target: None });
            return self.to_client.push(Reply::encode(code, &text));
        }
        // The address inside a 227 is never used (invariant 1).
        let id = self.open_expectation(Announce::Reply(client), DataMode::Passive, port);
        self.to_client.push_placeholder(id);
    }

    /// The data port the server announced in its answer to our `PASV`/`EPSV`, checked.
    /// `Err(Some(reply))`: no passive reply at all, the caller decides what the client
    /// sees; `Err(None)`: malformed or privileged, already refused with a `425`.
    fn announced_port(&mut self, reply: Reply, sent: PassiveForm) -> Result<u16, Option<Reply>> {
        let port = match (sent, reply.code) {
            (PassiveForm::Pasv, Some(227)) => codec::parse_227(&reply.last).map(|a| a.port()),
            (PassiveForm::Epsv, Some(229)) => codec::parse_229(&reply.last),
            _ => return Err(Some(reply)),
        };
        let Ok(port) = port else {
            self.out.push(Action::Refused {
                why: Refusal::BadPassiveReply,
                target: None,
            });
            let text = "Can't open data connection: malformed passive reply from server.";
            self.to_client.push(Reply::encode(425, text));
            return Err(None);
        };
        let target = SocketAddr::new(self.params.server.ip(), port);
        let refused = if port < self.params.min_data_port {
            Some((
                Refusal::PrivilegedPort,
                "Can't open data connection: server announced a privileged port.",
            ))
        } else if self.is_own_socket(target) {
            Some((
                Refusal::OwnSocket,
                "Can't open data connection: server announced this proxy's own socket.",
            ))
        } else {
            None
        };
        if let Some((why, text)) = refused {
            self.out.push(Action::Refused {
                why,
                target: Some(target),
            });
            self.to_client.push(Reply::encode(425, text));
            return Err(None);
        }
        Ok(port)
    }

    fn on_transfer_reply(&mut self, reply: Reply, id: ExpectationId) {
        let phase = self.data.as_ref().filter(|d| d.id == id).map(|d| d.phase);
        if phase == Some(Phase::Kernel) {
            // The kernel delivered (or refused) the bytes itself; the connection was
            // made or never will be, so its hole closes now rather than at expiry.
            self.cancel_if_current(id);
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

    fn cancel_if_current(&mut self, id: ExpectationId) {
        if self.data.take_if(|d| d.id == id).is_some() {
            self.cancel(id);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        let held: Vec<Vec<u8>> = self.to_client.drain_all().collect();
        self.out.extend(held.into_iter().map(Action::ToClient));
        let text = match reason {
            CloseReason::ServerReplyTooLong => {
                "Service not available: the server sent an over-long reply."
            }
            CloseReason::BufferLimit => "Service not available: too much output held.",
        };
        self.out.push(Action::ToClient(Reply::encode(421, text)));
        self.out.push(Action::Close(reason));
        self.closed = true;
    }
}

/// 1yz, 2yz and 3yz replies mean the command went through.
fn is_positive(reply: &Reply) -> bool {
    matches!(reply.code, Some(100..=399))
}
