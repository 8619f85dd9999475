//! A session's whole life on a synthetic clock: greeting, forward login, resolve,
//! verdict, connect, and the login, idle, data-expiry and drain timers. Time moves
//! only when a test moves it.

use super::*;
use std::time::Duration;

const LOCAL: &str = "198.51.100.1:21";
const SERVER_SIDE: &str = "203.0.113.1:61000";

fn secs(n: u64) -> Instant {
    t0() + Duration::from_secs(n)
}

fn start(origin: Origin) -> Start {
    Start {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: CLIENT.parse().unwrap(),
        own: Arc::new(OwnSockets::default()),
        origin,
        tls_implicit: false,
        dialed: None,
    }
}

fn forward() -> Origin {
    Origin::Forward {
        local: LOCAL.parse().unwrap(),
    }
}

fn policy(text: &str) -> Arc<Config> {
    let rules = format!("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n{text}");
    Arc::new(crate::rules::parse_str("t.rules", &rules).unwrap())
}

/// A session driven as the shell drives it, with the time of each step chosen by
/// the test. Expectations open at once, resolves and connects wait for the test.
struct Life {
    s: Session,
    now: Instant,
    next_port: u16,
}

impl Life {
    fn new(origin: Origin, policy: Arc<Config>) -> (Self, Vec<Action>) {
        let mut s = Session::new(start(origin), policy, t0());
        let first = s.poll_actions();
        let life = Life {
            s,
            now: t0(),
            next_port: 40000,
        };
        (life, first)
    }

    fn at(&mut self, now: Instant) -> &mut Self {
        assert!(now >= self.now, "time runs forward");
        self.now = now;
        self
    }

    fn event(&mut self, event: Event) -> Vec<Action> {
        let actions = self.s.handle(self.now, event);
        self.open(actions)
    }

    fn client(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut frames = Vec::new();
        LineFramer::new(4096).push(bytes, &mut frames);
        frames
            .into_iter()
            .flat_map(|f| self.event(Event::Client(f)))
            .collect()
    }

    fn server(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut frames = Vec::new();
        LineFramer::new(4096).push(bytes, &mut frames);
        frames
            .into_iter()
            .flat_map(|f| self.event(Event::Server(f)))
            .collect()
    }

    fn timeout(&mut self) -> Vec<Action> {
        let actions = self.s.handle_timeout(self.now);
        self.open(actions)
    }

    /// Answers every `Open` at once, as the relay path does.
    fn open(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            if let Action::Open(req) = &action {
                let proxy = SocketAddr::new(req.listen_ip, self.next_port);
                self.next_port += 1;
                let opened = Event::ExpectationOpened {
                    id: req.id,
                    proxy,
                    server_port: None,
                    path: DataPath::Relay,
                };
                out.push(action);
                let more = self.s.handle(self.now, opened);
                out.extend(self.open(more));
            } else {
                out.push(action);
            }
        }
        out
    }

    /// Through the forward login to a connected, greeted, logged-in session.
    fn logged_in(policy: Arc<Config>) -> Self {
        let (mut l, _) = Life::new(forward(), policy);
        l.client(b"USER alice@203.0.113.2\r\n");
        l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
        let server_side = SERVER_SIDE.parse().unwrap();
        l.event(Event::Connected { server_side });
        l.server(b"220 ready\r\n331 password\r\n");
        l.client(b"PASS x\r\n");
        l.server(b"230 in\r\n");
        l
    }
}

fn closed(actions: &[Action]) -> Option<CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close(r) => Some(*r),
        _ => None,
    })
}

fn expired(actions: &[Action]) -> Vec<ExpectationId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Expire(id) => Some(*id),
            _ => None,
        })
        .collect()
}

fn opened(actions: &[Action]) -> Vec<ExpectationId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open(req) => Some(req.id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_forward_client_is_greeted_and_logs_in_through_user_at_host() {
    let (mut l, first) = Life::new(forward(), policy("pass\n"));
    assert_eq!(
        to_client(&first),
        "220 ftpgate: log in as USER name@host[:port].\r\n"
    );
    let a = l.client(b"NOOP\r\nUSER alice\r\n");
    assert_eq!(
        to_client(&a),
        "530 Log in with USER name@host[:port] first.\r\n501 Log in as USER name@host[:port].\r\n"
    );
    let a = l.client(b"USER alice@ftp.example:2121\r\nPASS secret\r\n");
    let resolve = Action::Resolve {
        host: "ftp.example".into(),
        port: 2121,
    };
    assert_eq!(a, [resolve]);
    let a = l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
    assert!(
        a.contains(&Action::Connect {
            server: SERVER.parse().unwrap()
        }),
        "{a:?}"
    );
    let server_side = SERVER_SIDE.parse().unwrap();
    let a = l.event(Event::Connected { server_side });
    assert_eq!(to_server(&a), "", "nothing before the server greets");
    // The server's own greeting is not passed on; the login, then what the client
    // pipelined while the proxy connected, go to it once it has greeted.
    let a = l.server(b"220-welcome\r\n220 ready\r\n");
    assert_eq!(to_client(&a), "");
    assert_eq!(to_server(&a), "USER alice\r\nPASS secret\r\n");
    let a = l.server(b"331 password please\r\n230 ok\r\n");
    assert_eq!(to_client(&a), "331 password please\r\n230 ok\r\n");
    assert!(a.contains(&Action::LoggedIn));
}

#[test]
fn a_forward_server_that_refuses_is_heard_and_a_bad_host_may_be_corrected() {
    let (mut l, _) = Life::new(forward(), policy("pass\n"));
    l.client(b"USER alice@nowhere.example\r\n");
    let a = l.event(Event::Resolved(None));
    assert_eq!(to_client(&a), "530 Cannot resolve that host.\r\n");
    assert!(closed(&a).is_none());
    let a = l.client(b"USER alice@198.51.100.1:21\r\n");
    assert_eq!(a.len(), 1);
    let a = l.event(Event::Resolved(Some(LOCAL.parse().unwrap())));
    assert_eq!(
        to_client(&a),
        "530 That is this proxy; name an FTP server.\r\n"
    );
    l.client(b"USER alice@203.0.113.2\r\n");
    l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = SERVER_SIDE.parse().unwrap();
    l.event(Event::Connected { server_side });
    let a = l.server(b"421 Too many users\r\n");
    assert_eq!(to_client(&a), "421 Too many users\r\n");
}

#[test]
fn quit_before_login_says_goodbye() {
    let (mut l, _) = Life::new(forward(), policy("pass\n"));
    let a = l.client(b"QUIT\r\n");
    assert_eq!(to_client(&a), "221 Goodbye.\r\n");
    assert_eq!(closed(&a), Some(CloseReason::ClientClosed));
    assert_eq!(l.s.poll_timeout(), None);
    assert!(l.client(b"NOOP\r\n").is_empty(), "nothing after the close");
}

#[test]
fn a_silent_forward_client_gets_421_at_the_login_timeout_and_not_before() {
    let (mut l, _) = Life::new(forward(), policy("set login-timeout 5s\npass\n"));
    assert_eq!(l.s.poll_timeout(), Some(secs(5)));
    let a = l.at(secs(4)).timeout();
    assert!(a.is_empty(), "{a:?}");
    let a = l.at(secs(5)).timeout();
    assert_eq!(
        to_client(&a),
        "421 Login timeout: closing the control connection.\r\n"
    );
    assert_eq!(closed(&a), Some(CloseReason::LoginTimeout));
}

#[test]
fn draining_ends_a_session_without_a_transfer_at_once_before_login_too() {
    let (mut l, _) = Life::new(forward(), policy("pass\n"));
    let a = l.event(Event::Drain);
    assert_eq!(
        to_client(&a),
        "421 Service not available: the proxy is shutting down.\r\n"
    );
    assert_eq!(closed(&a), Some(CloseReason::Shutdown));
}

#[test]
fn draining_waits_for_the_transfer_in_flight_and_shutdown_does_not() {
    let mut l = Life::logged_in(policy("pass\n"));
    l.client(b"PASV\r\n");
    let a = l.server(b"227 Entering Passive Mode (203,0,113,2,19,137)\r\n");
    let id = opened(&a)[0];
    l.client(b"RETR f\r\n");
    l.event(Event::DataConnected { id });
    let a = l.event(Event::Drain);
    assert!(closed(&a).is_none(), "a transfer is in flight: {a:?}");
    let mut a = l.server(b"150 here\r\n226 done\r\n");
    a.extend(l.event(Event::DataDrained { id }));
    assert!(
        closed(&a).is_none(),
        "the data connection is still open: {a:?}"
    );
    a.extend(l.event(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    }));
    assert_eq!(
        to_client(&a),
        "150 here\r\n226 done\r\n421 Service not available: the proxy is shutting down.\r\n",
        "the completion reply first, then the 421"
    );
    assert_eq!(closed(&a), Some(CloseReason::Shutdown));

    let mut l = Life::logged_in(policy("pass\n"));
    l.client(b"PASV\r\n");
    l.server(b"227 Entering Passive Mode (203,0,113,2,19,137)\r\n");
    let a = l.event(Event::Shutdown);
    assert_eq!(closed(&a), Some(CloseReason::Shutdown));
}

#[test]
fn idle_counts_only_while_no_data_connection_is_open() {
    let mut l = Life::logged_in(policy("set idle-timeout 60s\nset data-timeout 10s\npass\n"));
    assert_eq!(l.s.poll_timeout(), Some(secs(60)));
    l.at(secs(30)).client(b"PASV\r\n");
    assert_eq!(l.s.poll_timeout(), Some(secs(90)));
    let a = l.server(b"227 Entering Passive Mode (203,0,113,2,19,137)\r\n");
    let id = opened(&a)[0];
    assert_eq!(
        l.s.poll_timeout(),
        Some(secs(40)),
        "the expectation's expiry"
    );
    l.at(secs(31)).client(b"RETR big\r\n");
    l.event(Event::DataConnected { id });
    assert_eq!(l.s.poll_timeout(), None, "a transfer: no idle, no expiry");
    let a = l.at(secs(500)).timeout();
    assert!(a.is_empty(), "{a:?}");
    l.at(secs(600)).event(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    });
    assert_eq!(l.s.poll_timeout(), Some(secs(660)));
    let a = l.at(secs(660)).timeout();
    assert_eq!(
        to_client(&a),
        "421 Idle timeout: closing the control connection.\r\n"
    );
    assert_eq!(closed(&a), Some(CloseReason::IdleTimeout));
}

#[test]
fn an_unused_expectation_expires_once_and_its_close_frees_the_session() {
    let mut l = Life::logged_in(policy("set data-timeout 10s\npass\n"));
    l.at(secs(1)).client(b"PASV\r\n");
    let a = l.server(b"227 Entering Passive Mode (203,0,113,2,19,137)\r\n");
    let id = opened(&a)[0];
    match &a[..] {
        [Action::Open(req), ..] => assert_eq!(req.expires, secs(11)),
        other => panic!("{other:?}"),
    }
    assert!(expired(&l.at(secs(10)).timeout()).is_empty());
    assert_eq!(expired(&l.at(secs(11)).timeout()), [id]);
    assert!(expired(&l.at(secs(12)).timeout()).is_empty(), "said once");
    l.event(Event::DataClosed {
        id,
        outcome: DataOutcome::Expired,
    });
    // A new PASV opens a new expectation: the expired one no longer counts.
    l.client(b"PASV\r\n");
    let a = l.server(b"227 Entering Passive Mode (203,0,113,2,19,138)\r\n");
    assert_eq!(opened(&a).len(), 1);
    assert!(to_client(&a).starts_with("227 "), "{}", to_client(&a));
}

#[test]
fn a_reverse_session_resolves_its_upstream_and_says_421_when_it_cannot() {
    let origin = Origin::Upstream {
        host: "ftp.example".into(),
        port: 21,
        local: LOCAL.parse().unwrap(),
    };
    let (mut l, first) = Life::new(origin, policy("pass\n"));
    assert_eq!(
        first,
        [Action::Resolve {
            host: "ftp.example".into(),
            port: 21
        }]
    );
    // Client bytes before the server is there wait; they do not reach anything yet.
    assert!(l.client(b"USER a\r\n").is_empty());
    let a = l.event(Event::Resolved(None));
    assert_eq!(
        to_client(&a),
        "421 Service not available: cannot reach the FTP server.\r\n"
    );
    assert_eq!(
        closed(&a),
        Some(CloseReason::UpstreamFailed(UpstreamFailure::Resolve))
    );
}

#[test]
fn a_transparent_session_is_judged_by_the_session_rules_before_any_connect() {
    let intercepted = || Origin::Intercepted {
        server: SERVER.parse().unwrap(),
        client_local: "198.51.100.1".parse().unwrap(),
    };
    let (mut l, first) = Life::new(intercepted(), policy("pass\n"));
    assert!(first.contains(&Action::Connect {
        server: SERVER.parse().unwrap()
    }));
    let a = l.event(Event::ConnectFailed);
    assert_eq!(
        closed(&a),
        Some(CloseReason::UpstreamFailed(UpstreamFailure::Connect))
    );

    let blocked = policy("block return-code 421 \"not there\" to 203.0.113.0/24\npass\n");
    let (_, first) = Life::new(intercepted(), blocked);
    assert_eq!(to_client(&first), "421 not there\r\n");
    assert_eq!(closed(&first), Some(CloseReason::Refused));
    assert!(!first.iter().any(|a| matches!(a, Action::Connect { .. })));
}

#[test]
fn sessions_the_shell_rejects_are_told_why() {
    let cases = [
        (
            Rejection::Limit(crate::vocab::SessionLimit::Total),
            "421 Service not available: too many sessions.\r\n",
            SessionOutcome::Limit,
        ),
        (
            Rejection::NotIntercepted,
            "421 Service not available: connect to an FTP server, not to the proxy.\r\n",
            SessionOutcome::Refused,
        ),
    ];
    for (why, said, outcome) in cases {
        let (l, first) = Life::new(Origin::Rejected(why), policy("pass\n"));
        assert_eq!(to_client(&first), said);
        assert_eq!(closed(&first).map(CloseReason::outcome), Some(outcome));
        assert!(l.s.is_closed());
    }
}

#[test]
fn a_client_that_floods_while_the_server_is_connecting_is_closed() {
    let (mut l, _) = Life::new(forward(), policy("pass\n"));
    l.client(b"USER a@203.0.113.2\r\n");
    let line = format!("NOOP {}\r\n", "x".repeat(1000));
    let mut closed_with = None;
    for _ in 0..100 {
        let a = l.client(line.as_bytes());
        if let Some(r) = closed(&a) {
            closed_with = Some(r);
            break;
        }
    }
    assert_eq!(closed_with, Some(CloseReason::BufferLimit));
}

use crate::vocab::{SessionOutcome, UpstreamFailure};

fn reverse() -> Origin {
    Origin::Upstream {
        host: "ftp.example".into(),
        port: 21,
        local: LOCAL.parse().unwrap(),
    }
}

/// A reverse session connected to its server at `now`.
fn connected_at(l: &mut Life, now: Instant) {
    l.at(now)
        .event(Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = SERVER_SIDE.parse().unwrap();
    l.event(Event::Connected { server_side });
}

#[test]
fn a_server_that_never_greets_gets_one_fresh_connection_then_421() {
    let (mut l, _) = Life::new(reverse(), policy("set greeting-timeout 5s\npass\n"));
    connected_at(&mut l, t0());
    // The client does not wait for the greeting; its line waits for it instead.
    assert_eq!(to_server(&l.client(b"USER early\r\n")), "");
    assert_eq!(l.s.poll_timeout(), Some(secs(5)));
    let a = l.at(secs(5)).timeout();
    assert_eq!(
        a,
        [
            Action::UpstreamRetry(UpstreamFailure::GreetingTimeout),
            Action::Connect {
                server: SERVER.parse().unwrap()
            }
        ]
    );
    let server_side = SERVER_SIDE.parse().unwrap();
    l.at(secs(6)).event(Event::Connected { server_side });
    assert_eq!(l.s.poll_timeout(), Some(secs(11)));
    let a = l.at(secs(11)).timeout();
    assert_eq!(
        to_client(&a),
        "421 Service not available: the FTP server does not answer.\r\n"
    );
    assert_eq!(
        closed(&a),
        Some(CloseReason::UpstreamFailed(
            UpstreamFailure::GreetingTimeout
        ))
    );
}

#[test]
fn the_fresh_connection_carries_the_session_when_its_server_greets() {
    let (mut l, _) = Life::new(reverse(), policy("set greeting-timeout 5s\npass\n"));
    connected_at(&mut l, t0());
    l.client(b"USER early\r\n");
    l.at(secs(5)).timeout();
    let server_side = SERVER_SIDE.parse().unwrap();
    l.at(secs(6)).event(Event::Connected { server_side });
    let a = l.server(b"220 ready\r\n");
    assert_eq!(to_client(&a), "220 ready\r\n");
    assert_eq!(to_server(&a), "USER early\r\n", "the held line, once");
    let a = l.server(b"331 go on\r\n");
    assert_eq!(to_client(&a), "331 go on\r\n");
}

#[test]
fn a_server_silent_on_a_command_fails_the_session_at_the_reply_timeout() {
    let (mut l, _) = Life::new(reverse(), policy("set reply-timeout 20s\npass\n"));
    connected_at(&mut l, t0());
    l.server(b"220 ready\r\n");
    assert_eq!(l.s.poll_timeout(), Some(secs(60)), "only the login timer");
    l.at(secs(1)).client(b"USER a\r\n");
    assert_eq!(l.s.poll_timeout(), Some(secs(21)));
    // Each line of a slow multi-line reply is progress.
    l.at(secs(15)).server(b"331-still thinking\r\n");
    assert_eq!(l.s.poll_timeout(), Some(secs(35)));
    let a = l.at(secs(35)).timeout();
    assert_eq!(
        to_client(&a),
        "421 Service not available: the FTP server does not answer.\r\n"
    );
    assert_eq!(
        closed(&a),
        Some(CloseReason::UpstreamFailed(UpstreamFailure::ReplyTimeout))
    );
}

#[test]
fn a_transfer_in_flight_is_not_a_silent_server() {
    let mut l = Life::logged_in(policy("set reply-timeout 20s\npass\n"));
    l.client(b"PASV\r\n");
    let a = l.server(b"227 Entering Passive Mode (203,0,113,2,19,137)\r\n");
    let id = opened(&a)[0];
    l.client(b"RETR big\r\n");
    l.server(b"150 here\r\n");
    l.event(Event::DataConnected { id });
    assert_eq!(
        l.s.poll_timeout(),
        None,
        "the 226 comes when the data is done"
    );
    l.at(secs(900)).event(Event::DataDrained { id });
    l.event(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    });
    assert_eq!(l.s.poll_timeout(), Some(secs(920)));
}

#[test]
fn only_an_intercepted_session_passes_tls_through() {
    let rules =
        policy("listen transparent 127.0.0.1:8021\npass tls passthrough ports 30000-30999\n");
    let server_side: crate::addrs::LocalAddr = SERVER_SIDE.parse().unwrap();
    // Reverse: the rule's passthrough does not apply, and it denies TLS.
    let (mut l, _) = Life::new(reverse(), rules.clone());
    connected_at(&mut l, t0());
    l.server(b"220 ready\r\n");
    let a = l.client(b"AUTH TLS\r\n");
    assert!(to_client(&a).starts_with("534 "), "{}", to_client(&a));
    assert_eq!(to_server(&a), "");
    // Transparent: forwarded to the server, whose 234 makes the session blind.
    let intercepted = Origin::Intercepted {
        server: SERVER.parse().unwrap(),
        client_local: "198.51.100.1".parse().unwrap(),
    };
    let (mut l, _) = Life::new(intercepted, rules);
    l.event(Event::Connected { server_side });
    l.server(b"220 ready\r\n");
    assert_eq!(to_server(&l.client(b"AUTH TLS\r\n")), "AUTH TLS\r\n");
    let a = l.server(b"234 go\r\n");
    assert!(a.iter().any(|a| matches!(a, Action::PassThrough { .. })));
    // Nothing times out a blind session: not the login timer, not the idle timer.
    assert_eq!(l.s.poll_timeout(), None);
}

#[test]
fn behind_a_balancer_passive_replies_announce_the_address_the_client_dialed() {
    let start = Start {
        dialed: Some("192.0.2.10:21".parse().unwrap()),
        ..start(reverse())
    };
    let mut session = Session::new(start, policy("pass\n"), t0());
    session.poll_actions();
    session.handle(t0(), Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = SERVER_SIDE.parse().unwrap();
    session.handle(t0(), Event::Connected { server_side });
    let mut feed = |bytes: &[u8], client: bool| {
        let mut frames = Vec::new();
        LineFramer::new(4096).push(bytes, &mut frames);
        let event = |f| {
            if client {
                Event::Client(f)
            } else {
                Event::Server(f)
            }
        };
        frames
            .into_iter()
            .flat_map(|f| session.handle(t0(), event(f)))
            .collect::<Vec<_>>()
    };
    feed(b"220 ready\r\n", false);
    feed(b"PASV\r\n", true);
    let a = feed(
        b"227 Entering Passive Mode (203,0,113,2,117,49).\r\n",
        false,
    );
    let open = opens(&a);
    // The data listener binds ftpgate's own address; the connection must arrive for
    // the balancer's, which the 227 names.
    assert_eq!(open.len(), 1, "{a:?}");
    assert_eq!(open[0].listen_ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!(open[0].dst_ip, "192.0.2.10".parse::<IpAddr>().unwrap());
    let opened = Event::ExpectationOpened {
        id: open[0].id,
        proxy: "198.51.100.1:40001".parse().unwrap(),
        server_port: None,
        path: DataPath::Relay,
    };
    let a = session.handle(t0(), opened);
    assert!(
        to_client(&a).starts_with("227 Entering Passive Mode (192,0,2,10,156,65)"),
        "{}",
        to_client(&a)
    );
}

#[test]
fn a_forward_client_may_name_its_server_with_host_before_the_login() {
    let (mut l, _) = Life::new(forward(), policy("pass\n"));
    let a = l.client(b"HOST\r\nHOST [bad\r\n");
    assert_eq!(
        to_client(&a),
        "501 Name the server as HOST host[:port].\r\n501 Name the server as HOST host[:port].\r\n"
    );
    let a = l.client(b"HOST ftp.example:2121\r\n");
    let resolve = Action::Resolve {
        host: "ftp.example".into(),
        port: 2121,
    };
    assert_eq!(a, [resolve]);
    // A name that does not resolve may be corrected, as after USER name@host.
    let a = l.event(Event::Resolved(None));
    assert_eq!(to_client(&a), "530 Cannot resolve that host.\r\n");
    let a = l.client(b"HOST ftp.example\r\nUSER alice\r\n");
    assert_eq!(a.len(), 1);
    l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = SERVER_SIDE.parse().unwrap();
    l.event(Event::Connected { server_side });
    // ftpgate answers HOST once the server greeted (its greeting is not passed on),
    // and the login the client sent meanwhile goes to the server after it. The server
    // never sees HOST: it was chosen by address.
    let a = l.server(b"220 ready\r\n");
    assert_eq!(
        to_client(&a),
        "220 HOST accepted: the server is ready for USER.\r\n"
    );
    assert_eq!(to_server(&a), "USER alice\r\n");
}

#[test]
fn a_pool_routing_by_user_greets_first_and_picks_at_user() {
    let pooled = Origin::Pooled {
        local: LOCAL.parse().unwrap(),
    };
    let (mut l, first) = Life::new(pooled.clone(), policy("pass\n"));
    assert_eq!(to_client(&first), "220 ftpgate ready.\r\n");
    assert_eq!(
        to_client(&l.client(b"PWD\r\n")),
        "530 Log in with USER first.\r\n"
    );
    let a = l.client(b"USER alice\r\nPASS secret\r\n");
    assert_eq!(
        a,
        [Action::Pick {
            user: Some("alice".into()),
            host: None,
        }]
    );
    let a = l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
    assert!(
        a.iter().any(|a| matches!(a, Action::Connect { .. })),
        "{a:?}"
    );
    let server_side = SERVER_SIDE.parse().unwrap();
    l.event(Event::Connected { server_side });
    // The server's greeting is not passed on; the login goes to it as the client sent it.
    let a = l.server(b"220 ready\r\n");
    assert_eq!(to_client(&a), "");
    assert_eq!(to_server(&a), "USER alice\r\nPASS secret\r\n");
    // No server up: 421, and the session ends.
    let (mut l, _) = Life::new(pooled, policy("pass\n"));
    l.client(b"USER bob\r\n");
    let a = l.event(Event::Resolved(None));
    assert!(to_client(&a).starts_with("421 "), "{}", to_client(&a));
    assert_eq!(
        closed(&a),
        Some(CloseReason::UpstreamFailed(UpstreamFailure::Connect))
    );
}

#[test]
fn a_pool_client_may_name_a_virtual_host_which_picks_the_pool_and_reaches_the_server() {
    let pooled = Origin::Pooled {
        local: LOCAL.parse().unwrap(),
    };
    let (mut l, _) = Life::new(pooled, policy("pass\n"));
    let a = l.client(b"HOST files.example.org\r\nUSER alice\r\n");
    assert_eq!(
        a,
        [Action::Pick {
            user: None,
            host: Some("files.example.org".into()),
        }]
    );
    l.event(Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = SERVER_SIDE.parse().unwrap();
    l.event(Event::Connected { server_side });
    // The server hears HOST first (virtual hosts), and answers it to the client.
    let a = l.server(b"220 ready\r\n");
    assert_eq!(to_server(&a), "HOST files.example.org\r\nUSER alice\r\n");
    let a = l.server(b"220 files.example.org here\r\n331 password\r\n");
    assert_eq!(
        to_client(&a),
        "220 files.example.org here\r\n331 password\r\n"
    );
}
