//! Watching the server leg once it is connected. Client input waits until the server
//! has greeted. A server that owes the client a reply and says nothing for
//! `greeting-timeout` (its greeting) or `reply-timeout` (any other reply, while no data
//! connection is open) fails the session with `421`, counted by reason, rather than
//! leaving the client waiting. A greeting that never comes gets one fresh connection
//! first: when a server's accept queue overflows, the proxy's connect can look
//! complete to the proxy while the server never accepts it, where a direct client's
//! SYN would simply have been retried.

use std::time::Instant;

use super::control::Owed;
use super::login::Route;
use super::say::Say;
use super::timers::Timer;
use super::{Action, CloseReason, Session, Stage};
use crate::vocab::UpstreamFailure;

/// Fresh connections a session may make when its server does not greet.
const MAX_RECONNECTS: u8 = 1;

impl Session {
    /// After every turn: arms the silence timer when the server owes a reply and no
    /// data connection is open, stops it when nothing is owed.
    pub(super) fn watch_server(&mut self, now: Instant) {
        let owed = match &self.stage {
            Stage::Relaying(control) if !control.has_live_data() => control.owed(),
            _ => None,
        };
        let settings = &self.policy.settings;
        match owed {
            Some(_) if self.timers.get(Timer::Server).is_some() => {}
            Some(Owed::Greeting) => {
                self.timers
                    .restart(Timer::Server, now, settings.greeting_timeout)
            }
            Some(Owed::Reply) => self
                .timers
                .restart(Timer::Server, now, settings.reply_timeout),
            None => self.timers.stop(Timer::Server),
        }
    }

    /// The server sent a line: its silence starts over, and once it has greeted, the
    /// client input that waited for it goes through.
    pub(super) fn server_spoke(&mut self, now: Instant) {
        self.timers.stop(Timer::Server);
        let greeted = match &self.stage {
            Stage::Relaying(control) => control.owed() != Some(Owed::Greeting),
            _ => false,
        };
        if self.awaiting_greeting && greeted {
            self.awaiting_greeting = false;
            self.release_held(now);
        }
    }

    /// The silence timer fired.
    pub(super) fn server_silent(&mut self) {
        let owed = match &self.stage {
            Stage::Relaying(control) => control.owed(),
            _ => return,
        };
        match owed {
            Some(Owed::Greeting) if self.reconnects < MAX_RECONNECTS => self.reconnect(),
            Some(Owed::Greeting) => self.end(
                Say::ServerSilent,
                CloseReason::UpstreamFailed(UpstreamFailure::GreetingTimeout),
            ),
            Some(Owed::Reply) => self.end(
                Say::ServerSilent,
                CloseReason::UpstreamFailed(UpstreamFailure::ReplyTimeout),
            ),
            None => {}
        }
    }

    /// Drops the silent server leg and connects a new one; nothing of the client's has
    /// reached the server yet (its input waits for the greeting).
    fn reconnect(&mut self) {
        let Stage::Relaying(control) = std::mem::replace(&mut self.stage, Stage::Closed) else {
            return;
        };
        let route = Route::again(
            control.params(),
            control.proxy_greeted(),
            control.owed_local_replies(),
        );
        self.reconnects += 1;
        self.out
            .push(Action::UpstreamRetry(UpstreamFailure::GreetingTimeout));
        self.out.push(Action::Connect {
            server: route.server,
        });
        self.stage = Stage::Connecting(route);
    }
}
