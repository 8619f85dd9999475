//! The `forward` listener: the client names its server in `USER name@host[:port]`,
//! and the session rules decide on that server exactly as on a dialled one.

mod support;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};

use support::*;

fn forward_gate(allowed: SocketAddr) -> Gate {
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let listen = SocketAddr::new(ip, free_port(ip));
    Gate::start(&format!(
        "listen forward {listen}\npass from 127.0.0.0/8 to {} port {}\n",
        allowed.ip(),
        allowed.port()
    ))
}

/// The login name carries the server: `anonymous@127.0.0.1:PORT`, URL-encoded.
fn forward_url(gate: &Gate, server: SocketAddr, path: &str) -> String {
    format!(
        "ftp://anonymous%40{}%3A{}:guest@{}/{path}",
        server.ip(),
        server.port(),
        gate.addr
    )
}

#[test]
fn curl_reaches_the_server_it_names_in_every_mode() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("data.bin"), 2 << 20, 31);
    let gate = forward_gate(server.addr);
    let local = tempfile::tempdir().expect("tempdir");
    for mode in MODES {
        let got = local.path().join(format!("{}.bin", mode.verb()));
        run_ok(
            curl(mode)
                .arg(forward_url(&gate, server.addr, "pub/data.bin"))
                .arg("-o")
                .arg(&got),
        );
        assert_same_file(&got, &server.public().join("data.bin"));
        let up = format!("pub/up-{}.bin", mode.verb());
        run_ok(
            curl(mode)
                .arg("-T")
                .arg(&got)
                .arg(forward_url(&gate, server.addr, &up)),
        );
        assert_same_file(&server.public().join(&up[4..]), &got);
    }
    // vsftpd saw the plain user name, never the target.
    let log = server.log();
    assert!(log.contains("\"USER anonymous\""), "{log}");
    assert!(!log.contains('@'), "{log}");
    assert_eq!(
        gate.metric("ftpgate_data_connections_total{mode=\"passive\",outcome=\"completed\"}"),
        4.0
    );
}

#[test]
fn a_target_the_rules_block_is_never_contacted() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let other = TcpListener::bind((LOCALHOST, 0)).expect("other server");
    let other_addr = other.local_addr().expect("addr");
    let gate = forward_gate(server.addr);
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220 ftpgate"));
    assert!(c.cmd("PASV").starts_with("530"), "nothing before USER");
    assert!(
        c.cmd("USER anonymous").starts_with("501"),
        "no target named"
    );
    assert_eq!(
        c.cmd("USER anonymous@[::1]:0"),
        "501 Log in as USER name@host[:port].\r\n"
    );
    let refused = c.cmd(&format!("USER anonymous@{other_addr}"));
    assert!(refused.starts_with("421"), "{refused}");
    assert!(c.closed());
    assert_no_connection(&other, "the blocked target");
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"refused\"}"),
        1.0
    );

    // The allowed one, with the password pipelined behind the USER line.
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220 ftpgate"));
    c.send(&format!(
        "USER anonymous@{}:{}\r\nPASS guest@",
        server.addr.ip(),
        server.addr.port()
    ));
    assert!(c.reply().starts_with("331"));
    assert!(c.reply().starts_with("230"));
    assert!(c.cmd("QUIT").starts_with("221"));

    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220 ftpgate"));
    assert_eq!(c.cmd("QUIT"), "221 Goodbye.\r\n");
    assert!(c.closed());
}

#[test]
fn an_ambiguous_login_line_is_refused_before_any_server_is_named() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = forward_gate(server.addr);
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220"));
    let user = format!("USER anonymous@{}:{}", server.addr.ip(), server.addr.port());
    c.stream
        .write_all(format!("{user}\n").as_bytes())
        .expect("send");
    let reply = c.reply();
    assert!(reply.starts_with("500"), "a bare LF: {reply}");
    assert!(
        !server.log().contains("USER"),
        "the server was contacted for an ambiguous line"
    );
    assert!(c.cmd(&user).starts_with("331"));
    assert!(c.cmd("PASS guest@").starts_with("230"));
}

/// Names the server with `HOST`, logs in, downloads `path`; prints the HOST reply and
/// the size.
const HOST: &str = r#"
import ftplib, sys
gate_host, gate_port, target, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ftp = ftplib.FTP(timeout=20)
print(ftp.connect(gate_host, gate_port))
print(ftp.sendcmd("HOST " + target))
ftp.login()
data = []
ftp.retrbinary("RETR " + path, data.append)
print("got", sum(len(d) for d in data))
ftp.quit()
"#;

#[test]
fn a_client_names_its_server_with_host_then_logs_in_as_usual() {
    require!("vsftpd", "python3");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("data.bin"), 1 << 20, 5);
    let gate = forward_gate(server.addr);
    let out = run_ok(std::process::Command::new("python3").args([
        "-c",
        HOST,
        &gate.addr.ip().to_string(),
        &gate.addr.port().to_string(),
        &server.addr.to_string(),
        "pub/data.bin",
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("220 HOST accepted"), "{said}");
    assert!(said.contains("got 1048576"), "{said}");
    // The server was chosen by address: it never hears HOST.
    assert!(!server.log().contains("HOST"), "{}", server.log());
}
