//! Before the server leg exists: the forward listener's greeting and its
//! `USER name@host[:port]`, resolving the server's name, the session verdict of the
//! rules, and connecting. Nothing here reaches a server; the client hears only
//! ftpgate's own replies.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::say::{Say, Scope};
use super::{Action, CloseReason, Control, Origin, Params, Rejection, Session, Stage};
use crate::addrs::{LocalAddr, ServerAddr};
use crate::codec::{
    Command, Frame, LineError, LineFramer, parse_forward_host, parse_forward_user, parse_line,
};
use crate::rules::{Parties, Verdict};
use crate::vocab::{DataMode, MIN_DATA_PORT, ServerTls, TlsPolicy, UpstreamFailure};

/// Where a session goes once its rules let it.
#[derive(Debug)]
pub(super) struct Route {
    pub server: ServerAddr,
    /// The server's name, if one was given (see [`Params::server_name`]).
    pub server_name: Option<String>,
    /// The address the client believes it is connected to.
    pub client_side: SocketAddr,
    /// Where data listeners for the client bind and active legs leave from.
    pub client_local: IpAddr,
    /// The server leg's data mode the session rule sets.
    pub server_mode: Option<DataMode>,
    /// The session's FTPS toward its client, as the session rule says.
    pub tls: TlsPolicy,
    /// Forward listener: the proxy greeted the client, so the server's greeting is
    /// not passed on.
    pub proxy_greeted: bool,
    /// Replies of ftpgate's the client is owed once the server has greeted (the
    /// answer to a forward client's `HOST`).
    pub answers: Vec<Vec<u8>>,
    /// Transparent listener: only its sessions may pass TLS through, since only on an
    /// edge do their data connections cross to the server directly.
    pub intercepted: bool,
}

impl Route {
    /// The same route again, for a fresh connection to the same server, with the
    /// replies still owed behind its greeting.
    pub fn again(params: &Params, proxy_greeted: bool, answers: Vec<Vec<u8>>) -> Route {
        Route {
            server: params.server,
            server_name: params.server_name.clone(),
            client_side: params.client_side,
            client_local: params.client_local,
            server_mode: params.server_mode,
            tls: params.tls.clone(),
            proxy_greeted,
            answers,
            // Decided once, at the session verdict.
            intercepted: false,
        }
    }
}

impl Session {
    pub(super) fn begin(&mut self, origin: Origin, _now: Instant) {
        match origin {
            Origin::Rejected(why) => {
                let (say, reason) = match why {
                    Rejection::Limit(limit) => {
                        (Say::SessionLimit(limit), CloseReason::Limit(limit))
                    }
                    Rejection::NoOriginalDst => (Say::NoOriginalDst, CloseReason::Refused),
                    Rejection::NotIntercepted => (Say::NotIntercepted, CloseReason::Refused),
                    Rejection::Unreachable | Rejection::NoServerUp => (
                        Say::Unreachable,
                        CloseReason::UpstreamFailed(UpstreamFailure::Connect),
                    ),
                };
                self.say_and_close(say, reason);
            }
            Origin::Forward { local } => {
                self.out
                    .push(Action::ToClient(Say::ForwardGreeting.encode()));
                self.stage = Stage::AwaitUser {
                    local,
                    by_user: false,
                };
            }
            Origin::Pooled { local } => {
                self.out.push(Action::ToClient(Say::PoolGreeting.encode()));
                self.stage = Stage::AwaitUser {
                    local,
                    by_user: true,
                };
            }
            Origin::Upstream { host, port, local } => {
                self.stage = Stage::Resolving {
                    local,
                    host: host.clone(),
                    user: None,
                    by_host: false,
                    pooled: false,
                };
                self.out.push(Action::Resolve { host, port });
            }
            Origin::Intercepted {
                server,
                client_local,
            } => self.route(Route {
                server: server.into(),
                server_name: None,
                client_side: server.get(),
                client_local,
                server_mode: None,
                tls: TlsPolicy::default(),
                proxy_greeted: false,
                answers: Vec::new(),
                intercepted: true,
            }),
        }
    }

    /// A forward client's line before it named its server, or a pool client's before
    /// its `USER` (`by_user`).
    pub(super) fn on_login_line(&mut self, local: LocalAddr, by_user: bool, frame: Frame) {
        let Frame::Line(line) = frame else {
            return self.say_refusal(Say::LineTooLong);
        };
        if by_user {
            return self.on_pool_login_line(local, &line);
        }
        match parse_line(&line) {
            Err(LineError::Malformed(why)) => self.say_refusal(Say::Malformed(why)),
            Ok(Command::User(name)) => {
                let name = String::from_utf8_lossy(&name);
                match parse_forward_user(&name) {
                    Some(f) => {
                        self.stage = Stage::Resolving {
                            local,
                            host: f.host.clone(),
                            user: Some(f.user),
                            by_host: false,
                            pooled: false,
                        };
                        self.out.push(Action::Resolve {
                            host: f.host,
                            port: f.port,
                        });
                    }
                    None => self.say_refusal(Say::ForwardUsage),
                }
            }
            // RFC 7151: the server by name, before the login.
            Ok(Command::Other { verb, arg }) if verb == "HOST" => {
                let target = arg.map(|a| String::from_utf8_lossy(&a).trim().to_string());
                match target.as_deref().and_then(parse_forward_host) {
                    Some((host, port)) => {
                        self.stage = Stage::Resolving {
                            local,
                            host: host.clone(),
                            user: None,
                            by_host: true,
                            pooled: false,
                        };
                        self.out.push(Action::Resolve { host, port });
                    }
                    None => self.say_refusal(Say::HostUsage),
                }
            }
            Ok(Command::Other { verb, .. }) if verb == "QUIT" => {
                self.say_and_close(Say::Goodbye, CloseReason::ClientClosed)
            }
            _ => self.say_refusal(Say::ForwardFirst),
        }
    }

    /// A pool client's line before `USER`: the user picks the server.
    fn on_pool_login_line(&mut self, local: LocalAddr, line: &crate::codec::Line) {
        match parse_line(line) {
            Err(LineError::Malformed(why)) => self.say_refusal(Say::Malformed(why)),
            Ok(Command::User(name)) => {
                let user = String::from_utf8_lossy(&name).into_owned();
                self.stage = Stage::Resolving {
                    local,
                    host: String::new(),
                    user: Some(user.clone()),
                    by_host: false,
                    pooled: true,
                };
                self.out.push(Action::Pick {
                    user: Some(user),
                    host: None,
                });
            }
            // RFC 7151: a virtual host picks the pool; the server hears the HOST too.
            Ok(Command::Other {
                verb,
                arg: Some(arg),
            }) if verb == "HOST" => {
                let host = String::from_utf8_lossy(&arg).trim().to_string();
                self.stage = Stage::Resolving {
                    local,
                    host: host.clone(),
                    user: None,
                    by_host: true,
                    pooled: true,
                };
                self.out.push(Action::Pick {
                    user: None,
                    host: Some(host),
                });
            }
            Ok(Command::Other { verb, .. }) if verb == "QUIT" => {
                self.say_and_close(Say::Goodbye, CloseReason::ClientClosed)
            }
            _ => self.say_refusal(Say::LoginFirst),
        }
    }

    pub(super) fn on_resolved(&mut self, now: Instant, server: Option<ServerAddr>) {
        let Stage::Resolving {
            local,
            host,
            user,
            by_host,
            pooled,
        } = std::mem::replace(&mut self.stage, Stage::Closed)
        else {
            return;
        };
        // A forward client named the server (in `USER` or `HOST`) and may name another;
        // a pool client's server was picked for what it said first.
        let forward = user.is_some() || by_host || pooled;
        match (server, forward) {
            (None, false) => self.say_and_close(
                Say::Unreachable,
                CloseReason::UpstreamFailed(UpstreamFailure::Resolve),
            ),
            // No server of the pool is up (or its name does not resolve).
            (None, true) if pooled => self.say_and_close(
                Say::Unreachable,
                CloseReason::UpstreamFailed(UpstreamFailure::Connect),
            ),
            (Some(server), true) if server.get() == local.get() => {
                self.retry_login(now, local, Say::ForwardIsProxy)
            }
            (None, true) => self.retry_login(now, local, Say::ForwardUnresolved),
            (Some(server), _) => {
                if let Some(user) = &user {
                    self.hold_login(user);
                }
                // A pool's server hears the virtual host a `HOST` named; a forward
                // client's `HOST` named the server itself and is ftpgate's to answer.
                let answers = match (by_host, pooled) {
                    (true, true) => {
                        self.hold_line(&format!("HOST {host}"));
                        Vec::new()
                    }
                    (true, false) => vec![Say::HostOk.encode()],
                    (false, _) => Vec::new(),
                };
                self.route(Route {
                    server,
                    // A pool's server is named by its pool (the shell knows it).
                    server_name: (!pooled).then_some(host),
                    client_side: self.dialed.unwrap_or(local.get()),
                    client_local: local.ip(),
                    server_mode: None,
                    tls: TlsPolicy::default(),
                    proxy_greeted: forward,
                    answers,
                    intercepted: false,
                })
            }
        }
    }

    /// A forward client named a server it cannot have: it may name another.
    fn retry_login(&mut self, now: Instant, local: LocalAddr, say: Say) {
        self.out.push(Action::ToClient(say.encode()));
        self.stage = Stage::AwaitUser {
            local,
            by_user: false,
        };
        self.release_held(now);
    }

    /// The session verdict; if the rules let the session through, connect.
    fn route(&mut self, mut route: Route) {
        let parties = Parties::new(self.listener, self.client.ip(), route.server.get());
        let decision = self.policy.session_decision(&parties);
        let blocked = (decision.verdict == Verdict::Block).then(|| {
            let (code, text) = Scope::Session.default_reply();
            decision.refusal(code, text)
        });
        route.server_mode = decision.server_mode;
        route.tls = decision.tls.clone();
        if !route.intercepted {
            route.tls.passthrough = None;
        }
        self.out.push(Action::Rule {
            decision,
            what: format!("session to {}", route.server),
        });
        if let Some((code, text)) = blocked {
            return self.say_and_close(Say::Policy(code, text), CloseReason::Refused);
        }
        self.out.push(Action::Connect {
            server: route.server,
        });
        self.stage = Stage::Connecting(route);
    }

    pub(super) fn on_connected(&mut self, now: Instant, server_side: LocalAddr) {
        let Stage::Connecting(route) = std::mem::replace(&mut self.stage, Stage::Closed) else {
            return;
        };
        let implicit = route.tls.server != ServerTls::Off && route.tls.server_implicit;
        let params = Params {
            listener: self.listener,
            client: self.client,
            client_side: route.client_side,
            client_local: route.client_local,
            server: route.server,
            server_name: route.server_name,
            server_side,
            advertise: self.policy.settings.advertise,
            min_data_port: MIN_DATA_PORT,
            server_mode: route.server_mode,
            tls: route.tls,
            tls_implicit: self.tls_implicit,
            own: self.own.clone(),
        };
        let mut control = Control::new(params, self.policy.clone(), now);
        if route.proxy_greeted {
            control.greeted_by_proxy();
        }
        for answer in route.answers {
            control.answer_after_greeting(answer);
        }
        if implicit {
            self.out.extend(control.secure_server_implicitly());
        }
        // Client input waits for the server's greeting (see `upstream`).
        self.stage = Stage::Relaying(Box::new(control));
        self.awaiting_greeting = true;
    }

    /// Puts the forward client's login first in line for the server, without the
    /// `@host` the proxy consumed.
    fn hold_login(&mut self, user: &str) {
        self.hold_line(&format!("USER {user}"));
    }

    /// Puts `line` first in line for the server.
    fn hold_line(&mut self, line: &str) {
        let mut frames = Vec::new();
        LineFramer::new(self.policy.settings.max_line)
            .push(format!("{line}\r\n").as_bytes(), &mut frames);
        self.held_bytes += frames.iter().map(super::frame_len).sum::<usize>();
        self.held.splice(0..0, frames);
    }

    /// Feeds the client input that waited for the server leg (or for a new `USER`).
    pub(super) fn release_held(&mut self, now: Instant) {
        self.held_bytes = 0;
        for frame in std::mem::take(&mut self.held) {
            self.on_client(now, frame);
        }
    }

    /// Answers the client before any server is involved; a refusal is counted.
    fn say_refusal(&mut self, say: Say) {
        if let Some(why) = say.refusal() {
            self.out.push(Action::Refused { why, target: None });
        }
        self.out.push(Action::ToClient(say.encode()));
    }

    /// Says `say` and closes, before any server is involved.
    pub(super) fn say_and_close(&mut self, say: Say, reason: CloseReason) {
        self.stage = Stage::Closed;
        self.out.push(Action::ToClient(say.encode()));
        self.out.push(Action::Close(reason));
    }
}
