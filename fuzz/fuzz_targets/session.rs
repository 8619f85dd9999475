//! The session engine fed arbitrary event sequences: client bytes, server bytes and
//! data-connection news in any order. It must never panic, and no input may make it
//! open an expectation toward anything but the client's or the server's control
//! address, or to a privileged port.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use ftpgate::codec::LineFramer;
use ftpgate::session::{Action, DataMode, DataOutcome, Event, ExpectationId, Params, Session};
use libfuzzer_sys::fuzz_target;

fn params() -> Params {
    Params {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: "198.51.100.2:50000".parse().unwrap(),
        client_side: "198.51.100.1:21".parse().unwrap(),
        client_local: "198.51.100.1".parse().unwrap(),
        server: "203.0.113.2:21".parse().unwrap(),
        server_side: "203.0.113.1:61000".parse().unwrap(),
        advertise: None,
        min_data_port: 1024,
        server_mode: None,
        own: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let p = params();
    let mut session = Session::new(p.clone());
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
        match selector % 6 {
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
            _ => events.push(Event::ExpectationFailed { id: last }),
        }
        while let Some(event) = events.pop() {
            for action in session.handle(event) {
                if let Action::Open(req) = action {
                    let ok = match req.mode {
                        DataMode::Passive => {
                            req.onward.ip() == p.server.ip() && req.expected_peer == p.client.ip()
                        }
                        DataMode::Active => {
                            req.onward.ip() == p.client.ip() && req.expected_peer == p.server.ip()
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
                        kernel: false,
                    });
                }
            }
        }
    }
});
