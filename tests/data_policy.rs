//! The data-channel policy of the rules through real vsftpd and real clients: the
//! server leg converted to passive or active mode (seen in vsftpd's own log), and an
//! IPv6 client reaching an IPv4 server.

mod support;

use std::net::{IpAddr, SocketAddr};

use support::*;

/// The FTP commands vsftpd logged, in order (`log_ftp_protocol`).
fn commands(server: &Vsftpd) -> Vec<String> {
    server
        .log()
        .lines()
        .filter_map(|l| l.split("FTP command: ").nth(1))
        .filter_map(|rest| rest.split(", \"").nth(1))
        .map(|c| c.trim_end_matches('"').to_string())
        .collect()
}

fn count(commands: &[String], verb: &str) -> usize {
    commands.iter().filter(|c| c.starts_with(verb)).count()
}

/// Down and up through `gate` in `mode` with curl, compared.
fn round_trip(server: &Vsftpd, gate: &Gate, mode: Mode, local: &std::path::Path) {
    let tag = mode.verb();
    let down = local.join(format!("{tag}.bin"));
    curl_get(gate.addr, mode, "pub/data.bin", &down);
    assert_same_file(&down, &server.public().join("data.bin"));
    let remote = format!("up-{tag}.bin");
    curl_put(gate.addr, mode, &down, &format!("pub/{remote}"));
    assert_same_file(&server.public().join(&remote), &down);
}

/// `server-mode passive`: active clients (PORT, EPRT; curl and lftp) reach a server
/// that only ever sees PASV.
#[test]
fn active_clients_reach_the_server_in_passive_mode() {
    require!("vsftpd", "curl", "lftp");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("data.bin"), 3 << 20, 21);
    let gate = Gate::reverse(server.addr, "pass from 127.0.0.0/8 server-mode passive");
    let local = tempfile::tempdir().expect("tempdir");
    for mode in [Mode::Port, Mode::Eprt] {
        round_trip(&server, &gate, mode, local.path());
    }
    let got = local.path().join("lftp.bin");
    lftp(
        gate.addr,
        Mode::Port,
        &format!("get pub/data.bin -o {}", got.display()),
    );
    assert_same_file(&got, &server.public().join("data.bin"));
    let seen = commands(&server);
    assert_eq!(count(&seen, "PASV"), 5, "{seen:?}");
    assert_eq!(count(&seen, "PORT") + count(&seen, "EPRT"), 0, "{seen:?}");
    assert_eq!(
        gate.metric("ftpgate_data_connections_total{mode=\"active\",outcome=\"completed\"}"),
        5.0
    );
}

/// `server-mode active`: passive clients (PASV, EPSV; curl and ftplib) reach a server
/// that only ever sees PORT, and EPSV ALL is kept by the proxy.
#[test]
fn passive_clients_reach_the_server_in_active_mode() {
    require!("vsftpd", "curl", "python3");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("data.bin"), 3 << 20, 22);
    let gate = Gate::reverse(server.addr, "pass from 127.0.0.0/8 server-mode active");
    let local = tempfile::tempdir().expect("tempdir");
    for mode in [Mode::Pasv, Mode::Epsv] {
        round_trip(&server, &gate, mode, local.path());
    }
    let got = local.path().join("ftplib.bin");
    ftplib(gate.addr, Mode::Epsv, "get", "pub/data.bin", Some(&got));
    assert_same_file(&got, &server.public().join("data.bin"));
    let mut c = Control::login(gate.addr);
    assert_eq!(c.cmd("EPSV ALL"), "200 EPSV ALL ok.\r\n");
    assert!(c.cmd("PASV").starts_with("501"));
    let seen = commands(&server);
    assert_eq!(count(&seen, "PORT"), 5, "{seen:?}");
    let passive = count(&seen, "PASV") + count(&seen, "EPSV");
    assert_eq!(passive, 0, "{seen:?}");
}

/// An IPv6 client through an IPv6 listener to an IPv4-only server: EPSV becomes
/// PASV and EPRT becomes PORT on the server leg.
#[test]
fn an_ipv6_client_reaches_an_ipv4_server() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("data.bin"), 3 << 20, 23);
    let v6: IpAddr = LOCALHOST6.parse().expect("ip");
    let listen = SocketAddr::new(v6, free_port(v6));
    let gate = Gate::start(&format!(
        "listen reverse {listen} upstream {}\npass from ::1\n",
        server.addr
    ));
    assert_eq!(gate.addr, listen);
    let local = tempfile::tempdir().expect("tempdir");
    for mode in [Mode::Epsv, Mode::Eprt] {
        round_trip(&server, &gate, mode, local.path());
    }
    let seen = commands(&server);
    assert_eq!(
        (count(&seen, "PASV"), count(&seen, "PORT")),
        (2, 2),
        "{seen:?}"
    );
    assert_eq!(count(&seen, "EPSV") + count(&seen, "EPRT"), 0, "{seen:?}");
}
