//! The three ways past ftpgate an attacker found (issue 12), each first calibrated
//! against vsftpd directly (the bytes do the harm there), then sent through ftpgate,
//! where they must do none: a trap listener is never connected, blocked commands never
//! appear in vsftpd's own log, and the metrics count what was refused.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use support::*;

/// vsftpd that accepts a PORT to any host, as a misconfigured server might: what
/// ftpgate stands in front of must not matter.
fn promiscuous_vsftpd() -> Vsftpd {
    Vsftpd::start_with(LOCALHOST, "port_promiscuous=YES\n")
}

/// A listener on another loopback host that a bounced data connection would reach.
fn trap() -> TcpListener {
    let trap = TcpListener::bind("127.0.0.2:0").expect("bind the trap on 127.0.0.2");
    trap.set_nonblocking(true).expect("nonblocking");
    trap
}

fn port_arg(addr: SocketAddr) -> String {
    let [hi, lo] = addr.port().to_be_bytes();
    format!("{},{hi},{lo}", addr.ip().to_string().replace('.', ","))
}

/// The commands vsftpd's log says it read that start with `verb`.
fn commands_logged(server: &Vsftpd, verb: &str) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("FTP command:") && l.contains(&format!(", \"{verb}")))
        .count()
}

fn send_raw(c: &mut Control, bytes: &[u8]) {
    c.stream.write_all(bytes).expect("send");
}

/// Waits for a connection on the trap until `limit`: the calibration needs to see it.
fn trap_connected(trap: &TcpListener, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if trap.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn an_iac_before_lf_smuggles_a_port_past_nothing() {
    require!("vsftpd");
    let server = promiscuous_vsftpd();
    let trap = trap();
    let attack = format!(
        "NOOP\u{ff}\nPORT {}\r\n",
        port_arg(trap.local_addr().expect("trap addr"))
    );
    let attack: Vec<u8> = attack.chars().map(|c| c as u8).collect();

    // Calibration: straight to vsftpd, the PORT is executed and LIST connects.
    let mut direct = Control::login(server.addr);
    send_raw(&mut direct, &attack);
    assert!(direct.reply().starts_with("500"));
    assert!(direct.reply().starts_with("200"), "vsftpd took the PORT");
    direct.send("LIST");
    assert!(
        trap_connected(&trap, Duration::from_secs(10)),
        "calibration: vsftpd should have connected to the trap"
    );
    drop(direct);

    let gate = Gate::reverse(server.addr, "");
    let log_before = commands_logged(&server, "PORT");
    let mut c = Control::login(gate.addr);
    send_raw(&mut c, &attack);
    let first = c.reply();
    assert!(first.starts_with("500"), "{first}");
    let second = c.reply();
    assert!(second.starts_with("504"), "the PORT is a bounce: {second}");
    let list = c.cmd("LIST");
    assert!(!list.starts_with("150"), "{list}");
    assert!(c.cmd("NOOP").starts_with("200"));
    assert_no_connection(&trap, "the trap");
    assert_eq!(commands_logged(&server, "PORT"), log_before);
    assert_eq!(
        gate.metric("ftpgate_parse_errors_total{reason=\"telnet\",side=\"client\"}"),
        1.0
    );
}

#[test]
fn an_iac_before_lf_cannot_walk_past_a_command_rule() {
    require!("vsftpd");
    let server = promiscuous_vsftpd();
    fs::write(server.public().join("keep"), b"keep").expect("file");

    // Calibration: straight to vsftpd, both hidden commands run.
    let mut direct = Control::login(server.addr);
    send_raw(&mut direct, b"NOOP\xff\nSITE HELP\r\n");
    assert!(direct.reply().starts_with("500"));
    direct.reply();
    drop(direct);
    assert_eq!(commands_logged(&server, "SITE HELP"), 1, "calibration");

    let gate = Gate::reverse(server.addr, "block log cmd { SITE, DELE }");
    let mut c = Control::login(gate.addr);
    send_raw(
        &mut c,
        b"NOOP\xff\nSITE HELP\r\nNOOP\xff\nDELE pub/keep\r\n",
    );
    for expected in ["500", "550", "500", "550"] {
        let reply = c.reply();
        assert!(reply.starts_with(expected), "{expected}: {reply}");
    }
    assert!(c.cmd("NOOP").starts_with("200"));
    assert_eq!(
        commands_logged(&server, "SITE"),
        1,
        "only the calibration's SITE"
    );
    assert_eq!(commands_logged(&server, "DELE"), 0, "DELE reached vsftpd");
    assert!(server.public().join("keep").exists());
}

#[test]
fn p_at_sw_is_rewritten_like_pasv_and_obeys_the_data_rules() {
    require!("vsftpd", "curl");
    let server = promiscuous_vsftpd();
    fs::write(server.public().join("secret"), b"the secret file").expect("file");

    // Calibration: vsftpd takes P@SW for PASV and delivers the file over it.
    let mut direct = Control::login(server.addr);
    let reply = direct.cmd("P@SW");
    assert!(reply.starts_with("227"), "{reply}");
    let mut data =
        std::net::TcpStream::connect(data_addr(&reply, server.addr)).expect("data connect");
    assert!(direct.cmd("RETR pub/secret").starts_with("150"));
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read data");
    assert_eq!(got, b"the secret file");
    drop(direct);

    let gate = Gate::reverse(server.addr, "block data download");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("P@SW");
    assert!(reply.starts_with("227"), "{reply}");
    let announced = data_addr(&reply, gate.addr);
    assert_eq!(announced.ip(), gate.addr.ip());
    let log = server.log();
    assert!(
        log.lines().rev().any(|l| l.ends_with("\"PASV\"")),
        "vsftpd got the canonical PASV:\n{log}"
    );
    // The port is ftpgate's own data port, not vsftpd's passive one.
    assert_eq!(
        gate.metric("ftpgate_expectations_active"),
        1.0,
        "P@SW opened an expectation of ftpgate's"
    );
    let refused = c.cmd("RETR pub/secret");
    assert!(refused.starts_with("425"), "{refused}");
    assert_eq!(
        commands_logged(&server, "RETR"),
        1,
        "only the calibration's RETR reached vsftpd"
    );
}

#[test]
fn unknown_verbs_are_refused_and_counted_by_default() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("ESTA");
    assert!(reply.starts_with("500"), "{reply}");
    assert!(c.cmd("XPWD").starts_with("257"), "an X-verb is known");
    assert_eq!(commands_logged(&server, "ESTA"), 0);
    assert_eq!(
        gate.metric("ftpgate_unknown_commands_total{action=\"block\",class=\"letters\"}"),
        1.0
    );

    let gate = Gate::reverse(server.addr, "set unknown-commands pass");
    let mut c = Control::login(gate.addr);
    let reply = c.cmd("ESTA");
    assert!(reply.starts_with("500"), "vsftpd's own answer: {reply}");
    assert_eq!(commands_logged(&server, "ESTA"), 1);
    assert_eq!(
        gate.metric("ftpgate_unknown_commands_total{action=\"pass\",class=\"letters\"}"),
        1.0
    );
}

#[test]
fn a_data_connection_is_never_sent_to_ftpgates_own_listeners() {
    require!("vsftpd");
    let server = promiscuous_vsftpd();
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    let sessions = gate.metric("ftpgate_sessions_active");
    for own in [gate.addr, gate.admin] {
        let reply = c.cmd(&format!("PORT {}", port_arg(own)));
        assert!(reply.starts_with("504"), "{own}: {reply}");
    }
    let list = c.cmd("LIST");
    assert!(!list.starts_with("150"), "{list}");
    assert_eq!(commands_logged(&server, "PORT"), 0, "a PORT reached vsftpd");
    assert_eq!(gate.metric("ftpgate_sessions_active"), sessions);
    assert_eq!(
        gate.metric("ftpgate_expectations_refused_total{reason=\"own-socket\"}"),
        2.0
    );
}

/// A hostile server announces, as its passive port, a data port ftpgate holds for
/// another session: ftpgate must not dial it (it would take that session's transfer).
#[test]
fn a_passive_port_that_is_another_sessions_data_port_is_never_dialled() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let (announce, announced) = std::sync::mpsc::channel::<u16>();
    let (hostile, script) = fake_server(move |mut p| {
        p.login();
        let port = announced.recv().expect("the port to announce");
        p.pasv(port);
        // The client's LIST never comes: its data connection failed first.
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let ip = LOCALHOST.parse().expect("ip");
    let (a, b) = (free_port(ip), free_port(ip));
    let gate = Gate::start(&format!(
        "listen reverse {LOCALHOST}:{a} upstream {hostile}\n\
         listen reverse {LOCALHOST}:{b} upstream {}\npass from 127.0.0.0/8\n",
        server.addr
    ));
    let listener_b = SocketAddr::new(ip, b);
    let mut victim = Control::login(listener_b);
    let victims_port = data_addr(&victim.cmd("PASV"), listener_b);

    let mut attacker = Control::login(gate.addr);
    announce.send(victims_port.port()).expect("announce");
    let reply = attacker.cmd("PASV");
    let attackers_port = data_addr(&reply, gate.addr);
    assert_ne!(attackers_port, victims_port);
    let mut data = std::net::TcpStream::connect(attackers_port).expect("data connect");
    eventually("ftpgate to refuse the dial", || {
        gate.metric("ftpgate_expectations_refused_total{reason=\"own-socket\"}") == 1.0
    });
    let mut rest = Vec::new();
    let _ = data.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(attacker.cmd("QUIT").starts_with("221"));
    script.join().expect("script");

    // The victim's data port is still its own.
    let mut listing = std::net::TcpStream::connect(victims_port).expect("victim data");
    assert!(victim.cmd("LIST").starts_with("150"));
    let mut got = Vec::new();
    listing.read_to_end(&mut got).expect("listing");
    assert!(victim.reply().starts_with("226"));
}
