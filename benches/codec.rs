//! Micro-benchmarks of the hot pure paths: framing and parsing control traffic, the
//! passive-reply parsers, the session engine on a whole transfer's exchange, and rule
//! evaluation over a large rule set. `cargo bench`; reports land in target/criterion/.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ftpgate::codec::{Frame, LineFramer, ReplyAssembler, parse_227, parse_line};
use ftpgate::rules::{Parties, parse_str};
use ftpgate::session::{Action, Event, Params, Session};

const CLIENT: &[u8] = b"USER anonymous\r\nPASS guest@\r\nTYPE I\r\nPASV\r\nRETR pub/one.bin\r\n\
EPSV\r\nSTOR pub/up.bin\r\nPORT 198,51,100,2,195,81\r\nLIST pub\r\nQUIT\r\n";
const SERVER: &[u8] = b"220 ready\r\n331 pw\r\n230 ok\r\n200 binary\r\n\
227 Entering Passive Mode (203,0,113,2,200,10).\r\n150 here\r\n226 done\r\n\
211-status\r\n an entry\r\n211 End\r\n221 bye\r\n";

fn framing_and_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(CLIENT.len() as u64));
    g.bench_function("client commands: frame and parse", |b| {
        b.iter(|| {
            let mut framer = LineFramer::new(4096);
            let mut frames = Vec::new();
            framer.push(black_box(CLIENT), &mut frames);
            for f in frames {
                if let Frame::Line(l) = f {
                    let _ = black_box(parse_line(&l));
                }
            }
        })
    });
    g.throughput(Throughput::Bytes(SERVER.len() as u64));
    g.bench_function("server replies: frame and assemble", |b| {
        b.iter(|| {
            let mut framer = LineFramer::new(4096);
            let mut frames = Vec::new();
            framer.push(black_box(SERVER), &mut frames);
            let mut replies = ReplyAssembler::default();
            for f in frames {
                if let Frame::Line(l) = f {
                    let _ = black_box(replies.push(l));
                }
            }
        })
    });
    g.finish();
    c.bench_function("parse_227", |b| {
        b.iter(|| {
            parse_227(black_box(
                b"227 Entering Passive Mode (203,0,113,2,200,10).",
            ))
        })
    });
}

fn session_engine(c: &mut Criterion) {
    let params = Params {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: "198.51.100.2:50000".parse().unwrap(),
        client_side: "198.51.100.1:21".parse().unwrap(),
        client_local: "198.51.100.1".parse().unwrap(),
        server: "203.0.113.2:21".parse().unwrap(),
        server_name: None,
        server_side: "203.0.113.1:61000".parse().unwrap(),
        advertise: None,
        min_data_port: 1024,
        server_mode: None,
        tls: Default::default(),
        tls_implicit: false,
        own: Default::default(),
    };
    let proxy: SocketAddr = "198.51.100.1:40000".parse().unwrap();
    let lines = |bytes: &[u8]| {
        let mut framer = LineFramer::new(4096);
        let mut frames = Vec::new();
        framer.push(bytes, &mut frames);
        frames
    };
    let (greeting, pasv, reply, retr, done) = (
        lines(b"220 ready\r\n"),
        lines(b"PASV\r\n"),
        lines(b"227 Entering Passive Mode (203,0,113,2,200,10).\r\n"),
        lines(b"RETR f\r\n"),
        lines(b"150 ok\r\n226 done\r\n"),
    );
    let now = std::time::Instant::now();
    let transfer = || {
        let mut s = Session::connected(params.clone(), Default::default(), now);
        let mut out = Vec::new();
        for f in greeting.iter().cloned() {
            out.extend(s.handle(now, Event::Server(f)));
        }
        for f in pasv.iter().cloned() {
            out.extend(s.handle(now, Event::Client(f)));
        }
        for f in reply.iter().cloned() {
            for a in s.handle(now, Event::Server(f)) {
                if let Action::Open(req) = &a {
                    let opened = Event::ExpectationOpened {
                        id: req.id,
                        proxy,
                        server_port: None,
                        path: ftpgate::vocab::DataPath::Relay,
                    };
                    out.extend(s.handle(now, opened));
                }
                out.push(a);
            }
        }
        for f in retr.iter().cloned() {
            out.extend(s.handle(now, Event::Client(f)));
        }
        for f in done.iter().cloned() {
            out.extend(s.handle(now, Event::Server(f)));
        }
        out
    };
    // The path timed is the one named: the 227 is rewritten to the proxy's port and
    // the transfer verb reaches the server.
    let out = transfer();
    let sent = |to_client: bool| -> String {
        out.iter()
            .filter_map(|a| match a {
                Action::ToClient(b) if to_client => Some(String::from_utf8_lossy(b).into_owned()),
                Action::ToServer(b) if !to_client => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    };
    assert!(
        sent(true).contains("227 Entering Passive Mode (198,51,100,1,156,64)"),
        "{}",
        sent(true)
    );
    assert_eq!(sent(false), "PASV\r\nRETR f\r\n");
    c.bench_function("session: one passive transfer", |b| {
        b.iter(|| black_box(transfer()))
    });
}

fn rule_evaluation(c: &mut Criterion) {
    let mut text = String::from("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n");
    for i in 0..100 {
        text.push_str(&format!("block from 198.51.{i}.0/24 to 203.0.113.0/24\n"));
    }
    text.push_str("block cmd { SITE, DELE }\nblock user { root, adm* }\npass from 192.0.2.0/24\n");
    let config = parse_str("bench.rules", &text).unwrap();
    let who = Parties::new(
        "127.0.0.1:2121".parse().unwrap(),
        "192.0.2.7".parse().unwrap(),
        "203.0.113.2:21".parse().unwrap(),
    );
    c.bench_function("rules: session decision, 100 rules before the match", |b| {
        b.iter(|| config.session_decision(black_box(&who)))
    });
    c.bench_function("rules: command decision", |b| {
        b.iter(|| config.command_decision(black_box(&who), black_box("STOR"), None))
    });
    c.bench_function("rules: login decision with globs", |b| {
        b.iter(|| config.login_decision(black_box(&who), black_box("alice")))
    });
}

criterion_group!(
    benches,
    framing_and_parsing,
    session_engine,
    rule_evaluation
);
criterion_main!(benches);
