//! DESIGN.md's security invariants 1–7, each proven across real sockets: against real
//! vsftpd where a real server shows the situation, against a scripted peer where only
//! a hostile server would.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use support::*;

const PAYLOAD: &[u8] = b"data from the server's real data port\n";

/// Invariant 1 (passive): a server whose 227 names a third host makes the proxy
/// connect only to the server's control address.
#[test]
fn a_227_naming_a_third_host_is_ignored_and_only_the_server_is_connected() {
    require!("curl");
    let third = TcpListener::bind("127.0.0.2:0").expect("third host");
    let port = third.local_addr().expect("addr").port();
    let real = TcpListener::bind(("127.0.0.1", port)).expect("same port on the server address");
    let (server, script) = fake_server(move |mut p| {
        p.login();
        assert_eq!(p.heard(), "PASV");
        p.say(&format!(
            "227 Entering Passive Mode (127,0,0,2,{},{})",
            port >> 8,
            port & 0xff
        ));
        assert_eq!(p.heard(), "RETR x");
        let (mut data, peer) = real.accept().expect("proxy connects to the real data port");
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
        p.say("150 here it comes");
        data.write_all(PAYLOAD).expect("write");
        drop(data);
        p.say("226 done");
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let gate = Gate::reverse(server, "");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("PASV");
    let data_addr = data_addr(&reply, gate.addr);
    assert_eq!(
        data_addr.ip(),
        gate.addr.ip(),
        "227 names the proxy: {reply}"
    );
    let mut data = TcpStream::connect(data_addr).expect("connect data");
    c.send("RETR x");
    assert!(c.reply().starts_with("150"));
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read data");
    assert_eq!(got, PAYLOAD);
    assert!(c.reply().starts_with("226"));
    assert!(c.cmd("QUIT").starts_with("221"));
    script.join().expect("script");
    assert_no_connection(&third, "the third host named in the 227");
}

/// Invariant 1 (active): PORT/EPRT naming another host are refused, never forwarded,
/// and nothing connects there.
#[test]
fn port_to_a_third_host_is_refused_and_nothing_connects_there() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let third = TcpListener::bind("127.0.0.2:0").expect("third host");
    let third_addr = third.local_addr().expect("addr");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd(&format!("PORT {}", host_port(third_addr)));
    assert!(reply.starts_with("504"), "{reply}");
    let reply = c.cmd(&format!("EPRT |1|127.0.0.2|{}|", third_addr.port()));
    assert!(reply.starts_with("504"), "{reply}");
    let reply = c.cmd("LIST");
    assert!(
        reply.starts_with("425"),
        "the server never got a PORT: {reply}"
    );
    assert_no_connection(&third, "the third host named in PORT");
    assert!(
        !server.log().contains("127,0,0,2"),
        "PORT reached the server"
    );
    assert_eq!(
        gate.metric("ftpgate_expectations_refused_total{reason=\"bounce\"}"),
        2.0
    );
}

/// Invariant 2: a wrong peer racing to the data port is refused, and the expectation
/// still serves the right peer.
#[test]
fn a_wrong_peer_racing_for_the_data_port_is_refused_and_the_client_still_transfers() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 1 << 20, 9);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let data_addr = data_addr(&c.cmd("PASV"), gate.addr);
    let intruder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    intruder
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind 127.0.0.2");
    intruder
        .connect(&data_addr.into())
        .expect("the intruder reaches the port");
    let mut intruder: TcpStream = intruder.into();
    let mut stolen = Vec::new();
    let _ = intruder.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "the intruder got data");
    gate.wait_log("reason=\"wrong-peer\"");
    let mut data = TcpStream::connect(data_addr).expect("the client still connects");
    c.send("RETR pub/one.bin");
    assert!(c.reply().starts_with("150"));
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(
        got,
        std::fs::read(server.public().join("one.bin")).expect("source")
    );
    assert!(c.reply().starts_with("226"));
    assert_eq!(
        gate.metric("ftpgate_expectations_refused_total{reason=\"wrong-peer\"}"),
        1.0
    );
}

/// Invariant 3: expectations expire and then nothing listens on their port.
#[test]
fn an_unused_expectation_expires_and_its_port_closes() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "set data-timeout 1s");
    let mut c = Control::login(gate.addr);
    let data_addr = data_addr(&c.cmd("PASV"), gate.addr);
    gate.wait_log("expectation expired unused");
    let err = TcpStream::connect(data_addr).expect_err("the port is closed after expiry");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(c.cmd("NOOP").starts_with("200"), "the session goes on");
    assert_eq!(
        gate.metric("ftpgate_expectations_total{outcome=\"expired\"}"),
        1.0
    );
}

/// Invariant 3: one-shot — a second connection to a used data port is refused.
#[test]
fn a_data_port_takes_exactly_one_connection() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    let data_addr = data_addr(&c.cmd("EPSV"), gate.addr);
    let mut data = TcpStream::connect(data_addr).expect("first connection");
    c.send("LIST pub");
    assert!(c.reply().starts_with("150"));
    let mut listing = Vec::new();
    data.read_to_end(&mut listing).expect("read");
    assert!(c.reply().starts_with("226"));
    let err = TcpStream::connect(data_addr).expect_err("no second connection");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// Invariant 4: privileged onward ports are refused in both directions.
#[test]
fn privileged_onward_ports_are_refused() {
    require!("curl");
    let (server, script) = fake_server(|mut p| {
        p.login();
        assert_eq!(p.heard(), "PASV");
        p.say("227 Entering Passive Mode (127,0,0,1,0,22)");
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let gate = Gate::reverse(server, "");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("PORT 127,0,0,1,0,22");
    assert!(reply.starts_with("504"), "{reply}");
    let reply = c.cmd("PASV");
    assert!(reply.starts_with("425"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));
    script.join().expect("script");
    assert_eq!(
        gate.metric("ftpgate_expectations_refused_total{reason=\"privileged-port\"}"),
        2.0
    );
    assert_eq!(
        gate.metric("ftpgate_expectations_total{outcome=\"completed\"}"),
        0.0
    );
}

/// Invariant 7: an octet above 255 is a syntax error, never truncated to port 22.
#[test]
fn port_with_an_octet_of_256_is_a_syntax_error_not_port_22() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("PORT 127,0,0,1,256,22");
    assert!(reply.starts_with("501"), "{reply}");
    assert!(
        !server.log().contains("256,22"),
        "the bad PORT reached the server"
    );
    assert_eq!(
        gate.metric("ftpgate_parse_errors_total{reason=\"syntax\",side=\"client\"}"),
        1.0
    );
    assert_eq!(gate.metric("ftpgate_expectations_active"), 0.0);
}

/// Invariant 5: PORT/227 text inside a password, a file name or a listing on the
/// control channel opens nothing.
#[test]
fn port_and_227_text_in_passwords_file_names_and_stat_listings_open_nothing() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let trap = "227 Entering Passive Mode (127,0,0,2,4,1)";
    std::fs::write(server.public().join(trap), b"x").expect("trap file");
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("USER anonymous").starts_with("331"));
    assert!(c.cmd("PASS PORT 127,0,0,2,4,1").starts_with("230"));
    assert!(c.cmd("RETR PORT 127,0,0,2,4,1").starts_with("425"));
    assert!(c.cmd(&format!("STOR {trap}")).starts_with("425"));
    let stat = c.cmd("STAT pub");
    assert!(
        stat.contains(trap),
        "STAT lists the file over the control channel: {stat}"
    );
    assert!(c.cmd("NOOP").starts_with("200"));
    assert_eq!(gate.metric("ftpgate_expectations_active"), 0.0);
    assert!(
        !gate.log().contains("data{"),
        "an expectation was opened:\n{}",
        gate.log()
    );
}

/// Invariant 6: a 227 in a STAT reply or an unsolicited reply opens nothing, and a
/// 227 that is a reply of its own but answers no PASV never reaches the client with
/// the server's address in it.
#[test]
fn a_227_that_answers_no_pasv_opens_nothing() {
    require!("curl");
    let (server, script) = fake_server(|mut p| {
        p.login();
        p.say("227 Entering Passive Mode (127,0,0,1,200,1)");
        assert_eq!(p.heard(), "STAT");
        p.say("211-status\r\n227 Entering Passive Mode (127,0,0,1,200,2)\r\n211 End");
        assert_eq!(p.heard(), "NOOP");
        p.say("227 Entering Passive Mode (127,0,0,1,200,3)");
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let gate = Gate::reverse(server, "");
    let mut c = Control::login(gate.addr);
    let spoofed = "425 Can't open data connection: unexpected passive reply from server.\r\n";
    assert_eq!(c.reply(), spoofed);
    // Text inside another reply is the client's to read, and opens nothing.
    assert!(c.cmd("STAT").contains("(127,0,0,1,200,2)"));
    assert_eq!(c.cmd("NOOP"), spoofed);
    assert!(c.cmd("QUIT").starts_with("221"));
    script.join().expect("script");
    assert_eq!(
        gate.metric("ftpgate_expectations_refused_total{reason=\"spoofed-reply\"}"),
        2.0
    );
    assert!(
        !gate.log().contains("data{"),
        "an expectation was opened:\n{}",
        gate.log()
    );
}

/// Invariant 5: the same session written one byte per segment behaves identically.
#[test]
fn a_session_written_one_byte_at_a_time_behaves_like_whole_lines() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 100_000, 5);
    let gate = Gate::reverse(server.addr, "");
    let run = |bytewise: bool| -> (Vec<String>, Vec<u8>) {
        let mut c = Control::connect(gate.addr);
        let mut codes = vec![c.reply()[..3].to_string()];
        let send = |c: &mut Control, line: &str| {
            let bytes = format!("{line}\r\n");
            if bytewise {
                for b in bytes.as_bytes() {
                    c.stream.write_all(&[*b]).expect("write");
                    c.stream.flush().expect("flush");
                }
            } else {
                c.stream.write_all(bytes.as_bytes()).expect("write");
            }
        };
        let mut data_addr = None;
        for line in ["USER anonymous", "PASS x", "TYPE I", "PASV"] {
            send(&mut c, line);
            let reply = c.reply();
            if line == "PASV" {
                data_addr = Some(support::data_addr(&reply, gate.addr));
            }
            codes.push(reply[..3].to_string());
        }
        let mut data = TcpStream::connect(data_addr.expect("pasv")).expect("data");
        send(&mut c, "RETR pub/one.bin");
        codes.push(c.reply()[..3].to_string());
        let mut got = Vec::new();
        data.read_to_end(&mut got).expect("read");
        codes.push(c.reply()[..3].to_string());
        send(&mut c, "QUIT");
        codes.push(c.reply()[..3].to_string());
        (codes, got)
    };
    let whole = run(false);
    assert_eq!(
        whole.0,
        ["220", "331", "230", "200", "227", "150", "226", "221"]
    );
    assert_eq!(whole.1.len(), 100_000);
    assert_eq!(run(true), whole);
}
