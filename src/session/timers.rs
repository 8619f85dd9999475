//! The session's own timers. The engine never reads a clock: the driver passes `now`
//! with every event, sleeps until [`super::Session::poll_timeout`] and then calls
//! [`super::Session::handle_timeout`]. Data-connection expiry lives with the
//! expectation it belongs to (`control::expectation`).

use std::time::{Duration, Instant};

/// A timer of the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Not logged in by then (`login-timeout`, counted from the accept).
    Login,
    /// No control traffic and no data connection for `idle-timeout`.
    Idle,
    /// The server owes a reply and has said nothing for `greeting-timeout` or
    /// `reply-timeout` (`upstream`).
    Server,
}

impl Timer {
    pub const ALL: [Timer; 3] = [Timer::Login, Timer::Idle, Timer::Server];
}

/// When each [`Timer`] fires; `None` when it is not armed.
#[derive(Debug, Default)]
pub(super) struct Timers {
    login: Option<Instant>,
    idle: Option<Instant>,
    server: Option<Instant>,
}

impl Timers {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        *self.slot(timer) = Some(at);
    }

    pub fn stop(&mut self, timer: Timer) {
        *self.slot(timer) = None;
    }

    /// Re-arms `timer` to fire `after` from `now`.
    pub fn restart(&mut self, timer: Timer, now: Instant, after: Duration) {
        self.set(timer, now + after);
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Login => self.login,
            Timer::Idle => self.idle,
            Timer::Server => self.server,
        }
    }

    /// The first timer due at `now`, if any, disarmed.
    pub fn expired(&mut self, now: Instant) -> Option<Timer> {
        let due = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.stop(due);
        Some(due)
    }

    fn slot(&mut self, timer: Timer) -> &mut Option<Instant> {
        match timer {
            Timer::Login => &mut self.login,
            Timer::Idle => &mut self.idle,
            Timer::Server => &mut self.server,
        }
    }
}
