//! The whole life of one FTP control session as a pure state machine, from the accept
//! to the close. The shell passes in what happened as [`Event`]s, always with the
//! current time, and carries out the [`Action`]s that come back, in order. The engine
//! touches no socket, task or clock, so every path, timers included, is tested by
//! feeding events and moving `now` (the style of quinn-proto's `Connection`).
//!
//! # API
//! - Start: [`Session::new`]`(start, policy, now)`, then [`Session::poll_actions`] for
//!   what the start asks for (a greeting, a resolve, a connect, or a refusal).
//! - Input: [`Session::handle`]`(now, event)` returns the actions it caused.
//! - Time: sleep until [`Session::poll_timeout`], then call
//!   [`Session::handle_timeout`]`(now)`.
//! - Policy: [`Session::set_policy`] after a reload.
//! - State: [`Session::is_closed`], [`Session::buffered`], [`Session::user`].
//!
//! # Files
//! - `api.rs`: [`Start`], [`Event`], [`Action`] and the other types of the contract.
//! - `login.rs`: before the server is connected: greeting, forward `USER name@host`,
//!   resolve, session verdict, connect.
//! - `timers.rs`: the login and idle timers.
//! - `say.rs`: every reply ftpgate writes, with its code, text and refusal.
//! - `control/`: once connected: client commands, server replies, passive and active
//!   rewrites, data expectations (and their expiry), ordered output.
//!
//! # Contract with the shell
//! After an [`Action::Open`] the shell answers with [`Event::ExpectationOpened`] or
//! [`Event::ExpectationFailed`] before any other event; after [`Action::Resolve`] or
//! [`Action::Connect`] it answers with their result event. After [`Action::Close`] the
//! engine ignores everything.

mod api;
mod control;
mod login;
mod say;
#[cfg(test)]
mod tests;
mod timers;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::addrs::{ClientAddr, LocalAddr};
use crate::codec::Frame;
use crate::rules::Config;
use crate::vocab::UpstreamFailure;
pub use crate::vocab::{DataMode, DataOutcome, ExpectationId, Refusal};
pub use api::{
    Action, CloseReason, Conversion, Event, ExpectationRequest, Origin, OwnSockets, Params,
    Rejection, Start, Transfer,
};
use control::Control;
use login::Route;
use say::Say;
use timers::{Timer, Timers};

/// Client input held while the server leg is being set up is bounded by this.
const MAX_HELD_INPUT: usize = 64 * 1024;

/// Where a session is in its life.
#[derive(Debug)]
enum Stage {
    /// Forward listener: greeted, waiting for `USER name@host[:port]`.
    AwaitUser {
        local: LocalAddr,
        /// A pool listener routing by user (plain `USER name`), not a forward one.
        by_user: bool,
    },
    /// Waiting for [`Event::Resolved`].
    Resolving {
        local: LocalAddr,
        /// The name being resolved, which a server certificate must match.
        host: String,
        /// A forward client named it with `HOST` (RFC 7151), owed a reply once the
        /// server has greeted; a pool client named a virtual host, passed on to it.
        by_host: bool,
        /// A pool listener's: the shell picks the server (`host` is empty, or the
        /// virtual host a `HOST` named).
        pooled: bool,
        /// The forward client's user name (without `@host`).
        user: Option<String>,
    },
    /// Waiting for [`Event::Connected`].
    Connecting(Route),
    Relaying(Box<Control>),
    /// `tls passthrough`: the server took the client's `AUTH TLS`, and the control
    /// connection is relayed blind until a peer closes it. No timer runs: the session
    /// cannot tell a transfer from silence, and the server keeps its own.
    Blind,
    Closed,
}

/// One control session.
#[derive(Debug)]
pub struct Session {
    listener: SocketAddr,
    client: ClientAddr,
    own: Arc<OwnSockets>,
    /// `tls implicit`: the client's control connection is TLS already.
    tls_implicit: bool,
    /// [`Start::dialed`].
    dialed: Option<SocketAddr>,
    policy: Arc<Config>,
    stage: Stage,
    timers: Timers,
    /// SIGTERM was seen: close once no transfer is in flight.
    draining: bool,
    /// Client frames that came before the server leg was ready and greeted.
    held: Vec<Frame>,
    /// Connected, and the server's greeting has not come yet.
    awaiting_greeting: bool,
    /// Fresh server connections made because the server did not greet.
    reconnects: u8,
    held_bytes: usize,
    out: Vec<Action>,
}

impl Session {
    /// A session for a client that has just connected. What it asks for first (a
    /// greeting, a resolve, a connect, a refusal) is in [`Session::poll_actions`].
    pub fn new(start: Start, policy: Arc<Config>, now: Instant) -> Self {
        let mut session = Session::unstarted(&start, policy, now);
        session.begin(start.origin, now);
        session
    }

    fn unstarted(start: &Start, policy: Arc<Config>, now: Instant) -> Self {
        let mut timers = Timers::default();
        timers.restart(Timer::Login, now, policy.settings.login_timeout);
        timers.restart(Timer::Idle, now, policy.settings.idle_timeout);
        Session {
            listener: start.listener,
            client: start.client,
            own: start.own.clone(),
            tls_implicit: start.tls_implicit,
            dialed: start.dialed,
            policy,
            stage: Stage::Closed,
            timers,
            draining: false,
            held: Vec::new(),
            awaiting_greeting: false,
            reconnects: 0,
            held_bytes: 0,
            out: Vec::new(),
        }
    }

    /// A session whose server leg is connected already, waiting for the server's
    /// greeting (benchmarks and tests of the relaying engine).
    pub fn connected(params: Params, policy: Arc<Config>, now: Instant) -> Self {
        let start = Start {
            listener: params.listener,
            client: params.client,
            own: params.own.clone(),
            origin: Origin::Forward {
                local: LocalAddr::new(params.client_side),
            },
            tls_implicit: params.tls_implicit,
            dialed: None,
        };
        let mut session = Session::unstarted(&start, policy.clone(), now);
        session.stage = Stage::Relaying(Box::new(Control::new(params, policy, now)));
        session.awaiting_greeting = true;
        session
    }

    /// Actions queued outside [`Session::handle`] (by [`Session::new`]).
    pub fn poll_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Applies a rule set (after every reload) to decisions from now on. Timers
    /// already running keep the duration they started with.
    pub fn set_policy(&mut self, policy: Arc<Config>) {
        if let Stage::Relaying(control) = &mut self.stage {
            control.set_rules(policy.clone());
        }
        self.policy = policy;
    }

    /// Feeds one event that happened at `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        if self.is_closed() {
            return Vec::new();
        }
        if matches!(self.stage, Stage::Blind) {
            match event {
                Event::ClientClosed => self.close_quietly(CloseReason::ClientClosed),
                Event::ServerClosed => self.close_quietly(CloseReason::ServerClosed),
                // Nothing can be said inside the TLS that is not ftpgate's.
                Event::Shutdown => self.close_quietly(CloseReason::Shutdown),
                _ => {}
            }
            return std::mem::take(&mut self.out);
        }
        match event {
            Event::Drain => self.draining = true,
            Event::Shutdown => self.end(Say::ShuttingDown, CloseReason::Shutdown),
            Event::ClientClosed => self.close_quietly(CloseReason::ClientClosed),
            Event::ServerClosed => self.close_quietly(CloseReason::ServerClosed),
            Event::ClientTlsFailed => self.close_quietly(CloseReason::TlsFailed),
            Event::Resolved(server) => self.on_resolved(now, server),
            Event::Connected { server_side } => self.on_connected(now, server_side),
            Event::ConnectFailed => self.end(
                Say::Unreachable,
                CloseReason::UpstreamFailed(UpstreamFailure::Connect),
            ),
            Event::Client(frame) => self.on_client(now, frame),
            other => self.relay(now, other),
        }
        self.settle(now)
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let expiry = match &self.stage {
            Stage::Relaying(control) => control.next_expiry(),
            _ => None,
        };
        let timers = Timer::ALL.map(|t| self.timers.get(t));
        timers.into_iter().chain([expiry]).flatten().min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Login => self.end(Say::LoginTimeout, CloseReason::LoginTimeout),
                Timer::Idle => self.end(Say::IdleTimeout, CloseReason::IdleTimeout),
                Timer::Server => self.server_silent(),
            }
        }
        if let Stage::Relaying(control) = &mut self.stage {
            let actions = control.expire(now);
            self.out.extend(actions);
        }
        self.settle(now)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.stage, Stage::Closed)
    }

    /// The user name the client sent, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.stage {
            Stage::Relaying(control) => control.user(),
            _ => None,
        }
    }

    /// Bytes held inside the state machine (queued output, unfinished replies, client
    /// input waiting for the server leg).
    pub fn buffered(&self) -> usize {
        let control = match &self.stage {
            Stage::Relaying(control) => control.buffered(),
            _ => 0,
        };
        control + self.held_bytes
    }

    /// Whether a data connection of the session is announced or open.
    fn has_live_data(&self) -> bool {
        matches!(&self.stage, Stage::Relaying(c) if c.has_live_data())
    }

    fn on_client(&mut self, now: Instant, frame: Frame) {
        match self.stage {
            Stage::AwaitUser { local, by_user } => self.on_login_line(local, by_user, frame),
            Stage::Relaying(_) if !self.awaiting_greeting => self.relay(now, Event::Client(frame)),
            Stage::Resolving { .. } | Stage::Connecting(_) | Stage::Relaying(_) => {
                self.held_bytes += frame_len(&frame);
                self.held.push(frame);
                if self.held_bytes > MAX_HELD_INPUT {
                    self.end(Say::BufferLimit, CloseReason::BufferLimit);
                }
            }
            Stage::Blind | Stage::Closed => {}
        }
    }

    /// Passes an event to the relaying engine and takes note of what it says.
    fn relay(&mut self, now: Instant, event: Event) {
        let Stage::Relaying(control) = &mut self.stage else {
            return;
        };
        let from_server = matches!(event, Event::Server(_));
        let actions = control.handle(now, event);
        for action in &actions {
            match action {
                Action::LoggedIn => self.timers.stop(Timer::Login),
                Action::Close(_) => self.stage = Stage::Closed,
                Action::PassThrough { .. } => {
                    self.stage = Stage::Blind;
                    for timer in Timer::ALL {
                        self.timers.stop(timer);
                    }
                }
                _ => {}
            }
        }
        if self.out.is_empty() {
            self.out = actions;
        } else {
            self.out.extend(actions);
        }
        if from_server {
            self.server_spoke(now);
        }
    }

    /// After every input: the idle timer restarts (it counts only while no data
    /// connection is open), the server's silence is watched, and a draining session
    /// with no transfer left ends.
    fn settle(&mut self, now: Instant) -> Vec<Action> {
        if matches!(self.stage, Stage::Blind) {
            return std::mem::take(&mut self.out);
        }
        self.watch_server(now);
        if !self.is_closed() {
            if self.has_live_data() {
                self.timers.stop(Timer::Idle);
            } else {
                let idle = self.policy.settings.idle_timeout;
                self.timers.restart(Timer::Idle, now, idle);
                if self.draining {
                    self.end(Say::ShuttingDown, CloseReason::Shutdown);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Says `say` (after whatever the client is still owed) and closes.
    fn end(&mut self, say: Say, reason: CloseReason) {
        match std::mem::replace(&mut self.stage, Stage::Closed) {
            Stage::Relaying(mut control) => self.out.extend(control.close(say, reason)),
            // Blind, the client's stream is the server's TLS: no word of ftpgate's.
            Stage::Blind => self.out.push(Action::Close(reason)),
            Stage::Closed => {}
            _ => self.say_and_close(say, reason),
        }
    }

    /// Closes without a word: the peer that left cannot hear it, and the other one
    /// got whatever was queued for it.
    fn close_quietly(&mut self, reason: CloseReason) {
        self.stage = Stage::Closed;
        self.out.push(Action::Close(reason));
    }
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Line(line) => line.raw.len(),
        Frame::TooLong { .. } => 0,
    }
}
