//! Faults on either side, and what the client sees: a server that dies mid-transfer,
//! a client that resets mid-transfer, a server that refuses the data connection,
//! running out of file descriptors, and an upstream whose name does not resolve. After each, nothing is left behind: no session, no
//! expectation, no descriptor.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::*;

/// Closes with RST, as a killed process's connections do.
fn reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
}

#[test]
fn a_server_that_dies_mid_transfer_ends_the_session_and_leaks_nothing() {
    require!("curl");
    let data = TcpListener::bind((LOCALHOST, 0)).expect("data listener");
    let port = data.local_addr().expect("addr").port();
    let (server, script) = fake_server(move |mut p| {
        p.login();
        p.pasv(port);
        assert_eq!(p.heard(), "RETR big");
        let (mut conn, _) = data.accept().expect("accept");
        p.say("150 sending");
        conn.write_all(&[7u8; 100_000]).expect("write");
        // The server process dies: both connections are reset.
        reset(conn);
        reset(p.stream.try_clone().expect("clone"));
    });
    let gate = Gate::reverse(server, "");
    let baseline = gate.open_fds();
    let mut c = Control::login(gate.addr);
    let mut conn = TcpStream::connect(data_addr(&c.cmd("PASV"), gate.addr)).expect("data");
    c.send("RETR big");
    assert!(c.reply().starts_with("150"));
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert!(got.len() <= 100_000);
    script.join().expect("script");
    assert!(
        c.closed(),
        "the client's control connection ends with the server's"
    );
    gate.assert_nothing_left(baseline);
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"io-error\"}")
            + gate.metric("ftpgate_sessions_total{outcome=\"server-closed\"}"),
        1.0
    );
}

#[test]
fn a_client_that_resets_mid_transfer_leaks_nothing_and_others_go_on() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("big.bin"), 32 << 20, 31);
    let gate = Gate::reverse(server.addr, "");
    let baseline = gate.open_fds();
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let mut conn = TcpStream::connect(data_addr(&c.cmd("EPSV"), gate.addr)).expect("data");
    c.send("RETR pub/big.bin");
    assert!(c.reply().starts_with("150"));
    let mut some = vec![0u8; 1 << 20];
    conn.read_exact(&mut some).expect("first MiB");
    reset(conn);
    reset(c.stream.try_clone().expect("clone"));
    drop(c);
    gate.assert_nothing_left(baseline);
    // The proxy is fine: a new session transfers.
    let mut d = Control::login(gate.addr);
    assert!(d.cmd("NOOP").starts_with("200"));
}

#[test]
fn a_server_that_refuses_the_data_connection_gives_the_client_a_closed_data_connection() {
    require!("curl");
    // A port where nothing listens.
    let closed_port = free_port(LOCALHOST.parse().expect("ip"));
    let (server, script) = fake_server(move |mut p| {
        p.login();
        p.pasv(closed_port);
        assert_eq!(p.heard(), "RETR x");
        p.say("425 Can't open data connection.");
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let gate = Gate::reverse(server, "");
    let baseline = gate.open_fds();
    let mut c = Control::login(gate.addr);
    let mut conn =
        TcpStream::connect(data_addr(&c.cmd("PASV"), gate.addr)).expect("the proxy accepts");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "nothing arrives on a data connection that could not be made"
    );
    gate.wait_log("onward data connection failed");
    c.send("RETR x");
    assert!(c.reply().starts_with("425"));
    assert!(c.cmd("QUIT").starts_with("221"));
    script.join().expect("script");
    gate.assert_nothing_left(baseline);
    assert_eq!(
        gate.metric("ftpgate_data_connections_total{mode=\"passive\",outcome=\"failed\"}"),
        1.0
    );
}

#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    require!("vsftpd", "prlimit");
    let server = Vsftpd::start(LOCALHOST);
    let ip = server.addr.ip();
    let addr = std::net::SocketAddr::new(ip, free_port(ip));
    let rules = format!(
        "listen reverse {addr} upstream {}\npass from 127.0.0.0/8\n",
        server.addr
    );
    let gate = Gate::start_with(None, &rules, &[], Some(64));
    // Each session holds two descriptors; hold more than the limit allows.
    let hogs: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(gate.addr).ok())
        .collect();
    gate.wait_log("accept failed");
    drop(hogs);
    eventually("the hogs' sessions to end", || {
        gate.metric("ftpgate_sessions_active") == 0.0
    });
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("NOOP").starts_with("200"), "the proxy serves again");
}

/// A network namespace with only loopback, whose resolver is its own loopback where
/// nothing answers: any name lookup fails at once and no packet leaves the machine.
struct Isolated {
    name: String,
}

impl Isolated {
    fn new() -> Isolated {
        let name = format!("ftpgate-dns-{}", std::process::id());
        run_ok(std::process::Command::new("ip").args(["netns", "add", &name]));
        run_ok(std::process::Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        // `ip netns exec` mounts these over /etc/resolv.conf and /etc/nsswitch.conf.
        let etc = std::path::Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/NAME");
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        std::fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n").expect("nsswitch.conf");
        Isolated { name }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

/// An upstream whose name does not resolve: the client gets 421, the log says why,
/// the session is counted as upstream-failed, and nothing is left behind.
#[test]
fn an_unresolvable_upstream_yields_421() {
    require!("ip", "curl", "python3");
    let ns = Isolated::new();
    let gate = Gate::start_in(
        Some(&ns.name),
        "listen reverse 127.0.0.1:2121 upstream ftp.example.invalid:21\npass from 127.0.0.0/8\n",
        &[],
    );
    let baseline = gate.open_fds();
    let greeting = run_ok(command_in(Some(&ns.name), "python3").args([
        "-c",
        "import socket; s = socket.create_connection(('127.0.0.1', 2121), timeout=30); \
         import sys; sys.stdout.buffer.write(s.makefile('rb').readline())",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&greeting.stdout),
        "421 Service not available: cannot reach the FTP server.\r\n"
    );
    gate.wait_log("cannot resolve the FTP server");
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"upstream-failed\"}"),
        1.0
    );
    gate.assert_nothing_left(baseline);
}
