//! Limits and timeouts an edge daemon needs: session limits, slow and silent peers,
//! stalled data connections, and a graceful drain on SIGTERM.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn sessions_over_the_per_client_limit_get_421_and_others_go_on() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "set max-sessions-per-client 2");
    let mut first = Control::login(gate.addr);
    let _second = Control::login(gate.addr);
    let mut third = Control::connect(gate.addr);
    assert_eq!(
        third.reply(),
        "421 Service not available: too many sessions.\r\n"
    );
    assert!(third.closed());
    assert!(
        first.cmd("NOOP").starts_with("200"),
        "the sessions within the limit go on"
    );
    assert_eq!(
        gate.metric("ftpgate_limits_hit_total{limit=\"sessions-per-client\"}"),
        1.0
    );
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"limit\"}"),
        1.0
    );
    drop(first);
    eventually("a slot to free up", || {
        gate.metric("ftpgate_sessions_active") == 1.0
    });
    Control::login(gate.addr);
}

#[test]
fn sessions_over_the_total_limit_get_421() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "set max-sessions 1");
    assert_eq!(gate.metric("ftpgate_sessions_limit"), 1.0);
    let _only = Control::login(gate.addr);
    let mut refused = Control::connect(gate.addr);
    assert!(refused.reply().starts_with("421"));
    assert_eq!(
        gate.metric("ftpgate_limits_hit_total{limit=\"sessions\"}"),
        1.0
    );
}

/// A client opening sessions faster than `max-accept-rate-per-client` gets 421 for
/// the excess, its open sessions go on, and a moment later it is admitted again.
#[test]
fn sessions_over_the_accept_rate_get_421_and_the_rate_recovers() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "set max-accept-rate-per-client 1");
    let mut first = Control::login(gate.addr);
    // A burst of twice the rate passes; six attempts at once cannot all.
    let replies: Vec<String> = (0..6)
        .map(|_| Control::connect(gate.addr).reply())
        .collect();
    let refused = replies
        .iter()
        .filter(|r| {
            *r == "421 Service not available: too many new sessions from your address; slow down.\r\n"
        })
        .count();
    assert!(refused >= 3, "{replies:?}");
    assert!(
        first.cmd("NOOP").starts_with("200"),
        "admitted sessions go on"
    );
    assert_eq!(
        gate.metric("ftpgate_limits_hit_total{limit=\"accept-rate\"}"),
        refused as f64
    );
    eventually("the rate to admit again", || {
        Control::connect(gate.addr).reply().starts_with("220")
    });
}

#[test]
fn a_slowloris_client_is_cut_at_the_login_timeout() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "set login-timeout 1s");
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220"));
    // One byte at a time, never finishing a login; bounded.
    let mut cut = false;
    for b in b"USER anonymous\r\nPASS slowly\r\n"
        .iter()
        .cycle()
        .take(200)
    {
        if c.stream.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        if gate.metric("ftpgate_sessions_total{outcome=\"login-timeout\"}") == 1.0 {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cut, "the session outlived the login timeout");
    let mut rest = String::new();
    let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.stream.read_to_string(&mut rest);
    assert!(rest.contains("421 Login timeout"), "{rest:?}");
}

#[test]
fn a_server_that_never_greets_yields_421() {
    require!("curl");
    let silent = TcpListener::bind((LOCALHOST, 0)).expect("silent server");
    let gate = Gate::reverse(silent.local_addr().expect("addr"), "set login-timeout 1s");
    let mut c = Control::connect(gate.addr);
    let (_held, _) = silent.accept().expect("the proxy connects");
    assert_eq!(
        c.reply(),
        "421 Login timeout: closing the control connection.\r\n"
    );
    assert!(c.closed());
}

#[test]
fn a_stalled_data_connection_is_closed_at_the_data_idle_timeout() {
    require!("curl");
    let data = TcpListener::bind((LOCALHOST, 0)).expect("data listener");
    let port = data.local_addr().expect("addr").port();
    let (server, script) = fake_server(move |mut p| {
        p.login();
        p.pasv(port);
        assert_eq!(p.heard(), "RETR stall");
        let (mut conn, _) = data.accept().expect("accept");
        p.say("150 sending, then stalling");
        conn.write_all(b"some bytes").expect("write");
        // Stall: hold the connection open without sending until the proxy gives up.
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
        p.say("426 Connection closed; transfer aborted.");
    });
    let gate = Gate::reverse(server, "set data-idle-timeout 1s");
    let mut c = Control::login(gate.addr);
    let mut conn = TcpStream::connect(data_addr(&c.cmd("PASV"), gate.addr)).expect("data");
    c.send("RETR stall");
    assert!(c.reply().starts_with("150"));
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert_eq!(got, b"some bytes");
    assert!(c.reply().starts_with("426"));
    script.join().expect("script");
    eventually("the data connection to be counted", || {
        gate.metric("ftpgate_data_connections_total{mode=\"passive\",outcome=\"failed\"}") == 1.0
    });
    assert!(
        gate.log().contains("data connection idle"),
        "{}",
        gate.log()
    );
}

/// SIGTERM: no new sessions, the transfer in flight finishes, the process exits 0.
#[test]
fn sigterm_drains_a_transfer_in_flight_then_exits() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    let source = server.public().join("eight.bin");
    // About four seconds at the rate below: long in flight, well within the drain.
    make_file(&source, 64 << 20, 21);
    let mut gate = Gate::reverse(server.addr, "set drain-timeout 30s");
    let local = tempfile::tempdir().expect("tempdir");
    let out = local.path().join("eight.bin");
    let mut download = curl(Mode::Epsv)
        .args(["--limit-rate", "16M"])
        .arg(url(gate.addr, "pub/eight.bin"))
        .arg("-o")
        .arg(&out)
        .spawn()
        .expect("curl");
    eventually("the transfer to be in flight", || {
        gate.metric("ftpgate_expectations_active") == 1.0
    });
    gate.signal("TERM");
    gate.wait_log("draining: no new sessions");
    // The listeners close just after the log line, on their own tasks.
    eventually("no new sessions", || {
        TcpStream::connect(gate.addr)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    // Health checks see the drain, so a load balancer stops sending sessions.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(gate.http_status(path, &[]), 503, "{path}");
    }
    assert!(
        download.wait().expect("curl").success(),
        "the transfer in flight finished"
    );
    assert_same_file(&out, &source);
    let status = gate.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(gate.log().contains("drained"));
}

/// A transfer that outlasts the drain timeout is cut and the process exits.
#[test]
fn sigterm_closes_what_outlasts_the_drain_timeout() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    // Larger than every socket buffer between the proxy and curl together, so the
    // transfer cannot already sit in the kernel when the drain timeout strikes.
    make_file(&server.public().join("eight.bin"), 64 << 20, 22);
    let mut gate = Gate::reverse(server.addr, "set drain-timeout 1s");
    let mut slow = curl(Mode::Epsv)
        .args(["--limit-rate", "100K", "-o", "/dev/null"])
        .arg(url(gate.addr, "pub/eight.bin"))
        .spawn()
        .expect("curl");
    eventually("the transfer to be in flight", || {
        gate.metric("ftpgate_expectations_active") == 1.0
    });
    gate.signal("TERM");
    let status = gate.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let log = gate.log();
    assert!(log.contains("closing the sessions still open"), "{log}");
    assert!(
        log.contains("session end outcome=\"shutdown\""),
        "the slow session was cut: {log}"
    );
    // curl would now drain what its socket buffers still hold at 100 kB/s; no need.
    let _ = slow.kill();
    let _ = slow.wait();
}

/// The first port from 1000 to 1023 nothing listens on: binding it needs privileges.
fn privileged_port() -> u16 {
    (1000..1024)
        .find(|p| TcpListener::bind((LOCALHOST, *p)).is_ok())
        .expect("a free port below 1024")
}

/// Started as root with `--user nobody`, ftpgate binds a privileged port, then serves
/// as nobody with no capability left (none can come back) and still reloads its rules.
#[test]
fn after_binding_it_runs_as_the_given_user_without_capabilities() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("f.bin"), 1 << 20, 51);
    let listen = format!("{LOCALHOST}:{}", privileged_port());
    let gate = Gate::start_args(
        &format!(
            "listen reverse {listen} upstream {}\npass from 127.0.0.0/8\n",
            server.addr
        ),
        &["--user", "nobody"],
    );
    let status = gate.proc_status();
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("lookup")
        .expect("user nobody");
    assert!(
        status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}\n", nobody.uid)),
        "{status}"
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            status.contains(&format!("{set}:\t0000000000000000\n")),
            "{status}"
        );
    }
    assert!(status.contains("NoNewPrivs:\t1\n"), "{status}");
    let local = tempfile::tempdir().expect("tempdir");
    let got = local.path().join("f.bin");
    curl_get(gate.addr, Mode::Epsv, "pub/f.bin", &got);
    assert_same_file(&got, &server.public().join("f.bin"));
    gate.signal("HUP");
    eventually("the reload as nobody", || {
        gate.metric("ftpgate_reloads_total{result=\"success\"}") == 1.0
    });
}

/// A forward client that connects and says nothing has no transfer to finish:
/// SIGTERM ends it with 421 at once, not at its login timeout.
#[test]
fn sigterm_ends_a_silent_forward_client_within_the_drain_timeout() {
    let ip: std::net::IpAddr = LOCALHOST.parse().expect("ip");
    let listen = std::net::SocketAddr::new(ip, free_port(ip));
    let mut gate = Gate::start(&format!(
        "set drain-timeout 3s\nset login-timeout 60s\nlisten forward {listen}\npass from 127.0.0.0/8\n"
    ));
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220"));
    gate.signal("TERM");
    let reply = c.reply();
    assert!(reply.starts_with("421"), "{reply}");
    // Within the drain timeout and a second (issue 13), long before the 60 s login
    // timeout that used to hold the process.
    let status = gate.wait_exit(Duration::from_secs(3 + 1));
    assert!(status.success(), "{status}");
}

/// Without the privilege a listener needs, ftpgate says which one and how to get it.
#[test]
fn a_missing_privilege_is_named_with_what_to_do() {
    require!("setpriv");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    for (listen, hint) in [
        (
            "listen reverse 127.0.0.1:21 upstream 127.0.0.1:2121",
            "ports below 1024 need CAP_NET_BIND_SERVICE",
        ),
        (
            "listen transparent 127.0.0.1:8021 tproxy",
            "TPROXY listeners (IP_TRANSPARENT) need CAP_NET_ADMIN",
        ),
        (
            "listen transparent 127.0.0.1:8021",
            "reading and writing it needs CAP_NET_ADMIN",
        ),
    ] {
        let rules = dir.path().join("p.rules");
        std::fs::write(&rules, format!("{listen}\npass from any\n")).expect("rules");
        let out = run(Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all",
                env!("CARGO_BIN_EXE_ftpgate"),
                "run",
                "-c",
            ])
            .arg(&rules));
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(hint), "{listen}: {stderr}");
        assert!(stderr.contains("run as root"), "{stderr}");
    }
}
