//! The session engine fed arbitrary event sequences over its whole life, from a
//! forward listener's greeting on: client bytes, server bytes, data-connection news,
//! drain and shutdown, in any order, with time moving forward by arbitrary steps and
//! timers fired when due. It must never panic, never act after it closed, and no
//! input may make it open an expectation toward anything but the client's or the
//! server's control address, or to a privileged port.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ftpgate::codec::LineFramer;
use ftpgate::rules::Config;
use ftpgate::session::{
    Action, DataMode, DataOutcome, Event, ExpectationId, Origin, Session, Start,
};
use libfuzzer_sys::fuzz_target;

const CLIENT: &str = "198.51.100.2:50000";
const SERVER: &str = "203.0.113.2:21";

static POLICY: LazyLock<Arc<Config>> = LazyLock::new(|| {
    let text = "listen forward 127.0.0.1:2121\nset data-timeout 2s\nset idle-timeout 10s\npass\n";
    Arc::new(ftpgate::rules::parse_str("fuzz.rules", text).unwrap())
});

fuzz_target!(|data: &[u8]| {
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let start = Start {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: CLIENT.parse().unwrap(),
        own: Default::default(),
        origin: Origin::Forward {
            local: "198.51.100.1:21".parse().unwrap(),
        },
        tls_implicit: false,
    };
    let mut now = Instant::now();
    let mut session = Session::new(start, POLICY.clone(), now);
    let mut pending: Vec<Action> = session.poll_actions();
    let mut closed = false;
    let mut client = LineFramer::new(256);
    let mut server = LineFramer::new(256);
    let mut port = 40000u16;
    let mut opened: Vec<ExpectationId> = Vec::new();
    // Each chunk: a selector byte, a length byte, then that many bytes.
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let mut events = Vec::new();
        let mut frames = Vec::new();
        let last = opened.last().copied().unwrap_or(ExpectationId(0));
        match selector % 9 {
            0 => {
                client.push(chunk, &mut frames);
                events.extend(frames.into_iter().map(Event::Client));
            }
            1 => {
                server.push(chunk, &mut frames);
                events.extend(frames.into_iter().map(Event::Server));
            }
            2 => events.push(Event::DataConnected { id: last }),
            3 => events.push(Event::DataDrained { id: last }),
            4 => events.push(Event::DataClosed {
                id: last,
                outcome: DataOutcome::Completed,
            }),
            5 => events.push(Event::ExpectationFailed { id: last }),
            6 => {
                // Time only moves forward; timers fire when due.
                now += Duration::from_millis(u64::from(*len) * 100);
                if session.poll_timeout().is_some_and(|at| at <= now) {
                    pending.extend(session.handle_timeout(now));
                }
            }
            7 => events.push(Event::Drain),
            _ => events.push(if n % 2 == 0 {
                Event::ServerClosed
            } else {
                Event::Shutdown
            }),
        }
        loop {
            for action in std::mem::take(&mut pending) {
                assert!(!closed, "an action after the close: {action:?}");
                match action {
                    Action::Resolve { .. } => events.push(Event::Resolved(SERVER.parse().ok())),
                    Action::Connect { .. } => events.push(Event::Connected {
                        server_side: "203.0.113.1:61000".parse().unwrap(),
                    }),
                    Action::Close(_) => closed = true,
                    Action::Open(req) => {
                        assert!(req.expires >= now, "expires in the past: {req:?}");
                        let ok = match req.mode {
                            DataMode::Passive => {
                                req.onward.ip() == server_addr.ip()
                                    && req.expected_peer == client_addr.ip()
                            }
                            DataMode::Active => {
                                req.onward.ip() == client_addr.ip()
                                    && req.expected_peer == server_addr.ip()
                            }
                        };
                        assert!(ok, "expectation toward a third host: {req:?}");
                        assert!(req.onward.port() >= 1024, "privileged onward port: {req:?}");
                        port = port.wrapping_add(1).max(40000);
                        opened.push(req.id);
                        let proxy = SocketAddr::new(IpAddr::from(req.listen_ip), port);
                        events.push(Event::ExpectationOpened {
                            id: req.id,
                            proxy,
                            server_port: None,
                            path: ftpgate::vocab::DataPath::Relay,
                        });
                    }
                    _ => {}
                }
            }
            // The shell answers an Open before any other event.
            let Some(event) = events.pop() else { break };
            pending = session.handle(now, event);
        }
        if closed {
            assert_eq!(session.poll_timeout(), None);
        }
    }
});
