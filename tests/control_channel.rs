//! What a client sees on the control channel: the completion reply after the data,
//! ABOR mid-transfer, sessions refused by rules or by an unreachable server, commands
//! answered locally, and rule reloads.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::*;

/// The 226 reaches the client only after every data byte, even when the server sends
/// it while its data connection is still open.
#[test]
fn the_completion_reply_reaches_the_client_only_after_the_data() {
    require!("curl");
    let data = TcpListener::bind((LOCALHOST, 0)).expect("data listener");
    let port = data.local_addr().expect("addr").port();
    let payload = vec![b'x'; 32 * 1024];
    let sent = payload.clone();
    let (server, script) = fake_server(move |mut p| {
        p.login();
        p.pasv(port);
        assert_eq!(p.heard(), "RETR f");
        let (mut conn, _) = data.accept().expect("accept");
        p.say("150 sending");
        conn.write_all(&sent).expect("write");
        // A hostile or hasty server: 226 first, the data connection closes later.
        p.say("226 sent");
        std::thread::sleep(Duration::from_millis(300));
        drop(conn);
        assert_eq!(p.heard(), "QUIT");
        p.say("221 bye");
    });
    let gate = Gate::reverse(server, "");
    let mut c = Control::login(gate.addr);
    let mut conn = TcpStream::connect(data_addr(&c.cmd("PASV"), gate.addr)).expect("data");
    c.send("RETR f");
    assert!(c.reply().starts_with("150"));
    assert!(c.reply().starts_with("226"));
    // With the 226 in hand, the whole payload and its end are already here.
    conn.set_nonblocking(true).expect("nonblocking");
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            panic!("226 arrived before the data ended ({} bytes)", got.len())
        }
        Err(e) => panic!("read: {e}"),
    }
    assert_eq!(got, payload);
    assert!(c.cmd("QUIT").starts_with("221"));
    script.join().expect("script");
}

/// ABOR (with Telnet IP and Synch) during a download tears the data legs down, the
/// server's replies reach the client, and the session stays usable.
#[test]
fn abor_during_a_download_stops_it_and_the_session_goes_on() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("big.bin"), 64 << 20, 3);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let mut data = TcpStream::connect(data_addr(&c.cmd("PASV"), gate.addr)).expect("data");
    c.send("RETR pub/big.bin");
    assert!(c.reply().starts_with("150"));
    let mut first = vec![0u8; 1 << 20];
    data.read_exact(&mut first).expect("some data arrives");
    c.stream
        .write_all(b"\xff\xf4\xff\xf2ABOR\r\n")
        .expect("abor");
    drop(data);
    let mut codes = Vec::new();
    while !codes.iter().any(|c: &String| c == "225" || c == "226") {
        codes.push(c.reply()[..3].to_string());
    }
    assert!(
        codes
            .iter()
            .all(|c| ["426", "225", "226", "451"].contains(&c.as_str())),
        "{codes:?}"
    );
    assert!(
        c.cmd("NOOP").starts_with("200"),
        "the session is usable after ABOR"
    );
    eventually("the data connection to be released", || {
        gate.metric("ftpgate_expectations_active") == 0.0
    });
}

/// A session nothing passes gets 421 and never reaches the server.
#[test]
fn a_session_the_rules_block_gets_421_and_never_reaches_the_server() {
    require!("curl");
    let upstream = TcpListener::bind((LOCALHOST, 0)).expect("upstream");
    let gate = Gate::reverse(
        upstream.local_addr().expect("addr"),
        "block log from 127.0.0.1",
    );
    let mut c = Control::connect(gate.addr);
    let reply = c.reply();
    assert!(reply.starts_with("421"), "{reply}");
    assert!(c.closed());
    assert_no_connection(&upstream, "the blocked session's server");
    let rules = gate.rules.display().to_string();
    let sample = format!("ftpgate_rule_decisions_total{{rule=\"{rules}:3\",verdict=\"block\"}}");
    assert_eq!(gate.metric(&sample), 1.0, "{}", gate.metrics());
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"refused\"}"),
        1.0
    );
}

/// A server that cannot be reached yields 421.
#[test]
fn an_unreachable_server_yields_421() {
    require!("curl");
    let port = free_port(LOCALHOST.parse().expect("ip"));
    let gate = Gate::reverse(format!("127.0.0.1:{port}").parse().expect("addr"), "");
    let mut c = Control::connect(gate.addr);
    let reply = c.reply();
    assert!(reply.starts_with("421"), "{reply}");
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"upstream-failed\"}"),
        1.0
    );
}

/// LPRT/LPSV get 502, AUTH 534, an over-long line 500; none reach the server and
/// the session goes on.
#[test]
fn refused_commands_are_answered_locally_and_the_session_goes_on() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("LPSV").starts_with("502"));
    assert!(c.cmd("LPRT 4,4,127,0,0,1,2,4,1").starts_with("502"));
    assert!(c.cmd("AUTH TLS").starts_with("534"));
    let long = format!("CWD {}", "a".repeat(5000));
    assert!(c.cmd(&long).starts_with("500"));
    assert!(c.cmd("PWD").starts_with("257"));
    let log = server.log();
    assert!(
        !log.contains("LPSV") && !log.contains("AUTH") && !log.contains("aaaaaaaa"),
        "{log}"
    );
    assert_eq!(
        gate.metric("ftpgate_commands_refused_total{reason=\"not-implemented\"}"),
        2.0
    );
    assert_eq!(
        gate.metric("ftpgate_commands_refused_total{reason=\"line-too-long\"}"),
        1.0
    );
}

/// SIGHUP applies a new rule file to new sessions; a broken file is rejected and the
/// rules in force stay.
#[test]
fn sighup_reloads_rules_and_a_broken_file_keeps_the_old_ones() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    let mut kept = Control::login(gate.addr);
    let original = std::fs::read_to_string(&gate.rules).expect("rules");
    let blocking = original.replace("pass from 127.0.0.0/8", "block from 127.0.0.0/8");
    std::fs::write(&gate.rules, &blocking).expect("write");
    gate.signal("HUP");
    gate.wait_log("rules reloaded");
    assert!(
        Control::connect(gate.addr).reply().starts_with("421"),
        "new sessions see the new rules"
    );
    assert!(
        kept.cmd("NOOP").starts_with("200"),
        "sessions in progress keep working"
    );
    std::fs::write(&gate.rules, "listen reverse nonsense\n").expect("write");
    gate.signal("HUP");
    gate.wait_log("reload rejected");
    assert!(
        gate.log().contains(":1:16: expected a listen address"),
        "{}",
        gate.log()
    );
    assert!(
        Control::connect(gate.addr).reply().starts_with("421"),
        "the blocking rules stay"
    );
}

/// A rule file replaced by a FIFO (or a device) is refused at once by a reload, not
/// waited on, and SIGTERM still stops ftpgate.
#[test]
fn a_fifo_for_a_rule_file_neither_blocks_a_reload_nor_sigterm() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    let mut gate = Gate::reverse(server.addr, "");
    std::fs::remove_file(&gate.rules).expect("remove rules");
    nix::unistd::mkfifo(&gate.rules, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    gate.signal("HUP");
    gate.wait_log("reload rejected");
    assert!(
        gate.log().contains("a FIFO, not a regular file"),
        "{}",
        gate.log()
    );
    assert!(Control::login(gate.addr).cmd("NOOP").starts_with("200"));
    gate.signal("TERM");
    assert!(gate.wait_exit(Duration::from_secs(30)).success());
}

/// `ftpgate check` accepts the shipped example and points at the first error, with a
/// caret under the offending token.
#[test]
fn check_accepts_the_example_and_reports_file_line_col() {
    let bin = env!("CARGO_BIN_EXE_ftpgate");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/example.rules");
    let out = run(std::process::Command::new(bin).args(["check", example]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\nset data-timeout 30x\n",
    )
    .expect("write");
    let out = run(std::process::Command::new(bin).arg("check").arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}:2:18: expected a duration such as 30s, 15m or 500ms, found `30x`\n    \
             set data-timeout 30x\n                     ^^^",
            bad.display()
        )
    );
}

/// `ftpgate check` reports every error of a file, not only the first, and then warns,
/// at `file:line:col`, about what is valid but misbehaves.
#[test]
fn check_reports_every_error_then_warnings() {
    let bin = env!("CARGO_BIN_EXE_ftpgate");
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |text: &str| {
        let file = dir.path().join("x.rules");
        std::fs::write(&file, text).expect("write");
        let out = run(std::process::Command::new(bin).arg("check").arg(&file));
        let stderr =
            String::from_utf8_lossy(&out.stderr).replace(&format!("{}:", file.display()), "x:");
        (out.status.code(), stderr)
    };
    let (code, stderr) = check(
        "listen reverse 0.0.0.0:2121 upstream 127.0.0.1:21\n\
         set data-timeout 30x\n\
         listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n\
         pass from 198.51.100.0/33\n\
         metrics listen 127.0.0.1:9121\n\
         metrics listen 127.0.0.1:9122\n",
    );
    assert_eq!(code, Some(1));
    for expected in [
        "x:2:18: expected a duration",
        "x:3:16: 127.0.0.1:2121 cannot be bound beside 0.0.0.0:2121 (x:1)",
        "x:4:11: expected `any`, an address",
        "x:6:1: `metrics listen` is already stated at x:5",
    ] {
        assert!(stderr.contains(expected), "{expected} in:\n{stderr}");
    }

    let (code, stderr) = check(
        "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:2121\n\
         set data-timeout 10s\n\
         set data-timeout 20s\n\
         set xferlog /nonexistent-ftpgate-dir/xferlog\n\
         block cmd { DELET, XMKD }\n\
         pass on 127.0.0.1:9999 from any\n\
         pass from any\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "x:1: warning: upstream 127.0.0.1:2121 is ftpgate's own listener",
        "x:3:5: warning: `set data-timeout` again: this line overrides x:2",
        "x:4: warning: set xferlog /nonexistent-ftpgate-dir/xferlog: /nonexistent-ftpgate-dir is not writable",
        "x:5:13: warning: `DELET` is not a verb ftpgate knows",
        "x:5:20: warning: `XMKD` reaches the rules as `MKD`",
        "x:6: warning: `on 127.0.0.1:9999` names no listener",
    ] {
        assert!(stderr.contains(expected), "{expected} in:\n{stderr}");
    }

    let (code, stderr) = check("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\nblock log\n");
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("x:1: warning: no `pass` rule for sessions: every session is refused"),
        "{stderr}"
    );
}

/// `check --ruleset` compares the one value an edge's two files share: the shipped
/// pairs agree, and a listener moved to another port is caught before a start.
#[test]
fn check_ruleset_compares_the_listener_port() {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = env!("CARGO_BIN_EXE_ftpgate");
    for flavour in ["redirect", "tproxy"] {
        let out = run(std::process::Command::new(bin).args([
            "check",
            "--ruleset",
            &format!("{root}/deploy/nftables/ftpgate-{flavour}.nft"),
            &format!("{root}/rules/edge-{flavour}.rules"),
        ]));
        assert!(out.status.success(), "{out:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let moved = dir.path().join("moved.rules");
    let shipped = std::fs::read_to_string(format!("{root}/rules/edge-redirect.rules"))
        .expect("shipped rules");
    std::fs::write(&moved, shipped.replace(":8021", ":8022")).expect("write");
    let out = run(std::process::Command::new(bin)
        .args(["check", "--ruleset"])
        .arg(format!("{root}/deploy/nftables/ftpgate-redirect.nft"))
        .arg(&moved));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ftpgate_port is 8021, but no `listen transparent` line listens on it"),
        "{stderr}"
    );
}

/// Command and login rules answer locally: the server never sees a blocked `DELE` or
/// `USER root`, and its files stay.
#[test]
fn command_and_login_rules_are_enforced_before_the_server() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("keep.bin"), 1000, 4);
    let gate = Gate::reverse(
        server.addr,
        "block log cmd { DELE, SITE }\nblock user { root, adm* }",
    );
    let mut c = Control::connect(gate.addr);
    assert!(c.reply().starts_with("220"));
    assert_eq!(c.cmd("USER root"), "530 Login refused by policy.\r\n");
    assert!(c.cmd("USER anonymous").starts_with("331"));
    assert!(c.cmd("PASS guest@").starts_with("230"));
    assert_eq!(
        c.cmd("DELE pub/keep.bin"),
        "550 Command refused by policy.\r\n"
    );
    assert!(c.cmd("SITE CHMOD 777 pub/keep.bin").starts_with("550"));
    assert!(c.cmd("NOOP").starts_with("200"));
    assert!(
        server.public().join("keep.bin").exists(),
        "the file is still there"
    );
    let log = server.log();
    assert!(
        !log.contains("DELE") && !log.contains("SITE") && !log.contains("root"),
        "{log}"
    );
    let rules = gate.rules.display().to_string();
    let block = |line: u32| {
        gate.metric(&format!(
            "ftpgate_rule_decisions_total{{rule=\"{rules}:{line}\",verdict=\"block\"}}"
        ))
    };
    assert_eq!((block(3), block(4)), (2.0, 1.0));
    assert_eq!(
        gate.metric("ftpgate_commands_refused_total{reason=\"policy\"}"),
        3.0
    );
}

/// Twenty sessions transfer while SIGHUP swaps the rules fifty times: no session is
/// dropped, no transfer corrupted, every reload applied.
#[test]
fn reloading_rules_fifty_times_under_load_drops_no_session() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    let source = server.public().join("twenty.bin");
    make_file(&source, 20 << 20, 9);
    let gate = Gate::reverse(server.addr, "block log user nobody-a");
    let rules_a = std::fs::read_to_string(&gate.rules).expect("rules");
    let rules_b = rules_a.replace("nobody-a", "nobody-b");
    let local = tempfile::tempdir().expect("tempdir");
    let downloads: Vec<_> = (0..20)
        .map(|i| {
            let out = local.path().join(format!("{i}.bin"));
            let mode = MODES[i % MODES.len()];
            // Slow enough that every transfer spans many reloads.
            let child = curl(mode)
                .args(["--limit-rate", "4M"])
                .arg(url(gate.addr, "pub/twenty.bin"))
                .arg("-o")
                .arg(&out)
                .spawn()
                .expect("curl");
            (child, out)
        })
        .collect();
    eventually("the transfers to be in flight", || {
        gate.metric("ftpgate_expectations_active") >= 10.0
    });
    for n in 1..=50 {
        let text = if n % 2 == 1 { &rules_b } else { &rules_a };
        std::fs::write(&gate.rules, text).expect("write rules");
        gate.signal("HUP");
        eventually("the reload to be applied", || {
            gate.metric("ftpgate_reloads_total{result=\"success\"}") == f64::from(n)
        });
    }
    assert!(
        gate.metric("ftpgate_expectations_active") > 0.0,
        "the reloads happened while transfers were in flight"
    );
    for (mut child, out) in downloads {
        assert!(
            child.wait().expect("curl").success(),
            "a transfer was dropped"
        );
        assert_same_file(&out, &source);
    }
    assert_eq!(
        gate.metric("ftpgate_reloads_total{result=\"failure\"}"),
        0.0
    );
    assert_eq!(
        gate.metric("ftpgate_sessions_total{outcome=\"shutdown\"}"),
        0.0
    );
}

/// `ftpgate check --test` names the rule that decides each step.
#[test]
fn check_test_names_the_deciding_rule_of_each_step() {
    let bin = env!("CARGO_BIN_EXE_ftpgate");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/example.rules");
    let spec = "session from 127.0.0.1 to 127.0.0.1 port 21 user root cmd RETR SITE";
    let out = run_ok(std::process::Command::new(bin).args(["check", example, "--test", spec]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("session 127.0.0.1 -> 127.0.0.1:21: pass (")
            && text.contains("example.rules:"),
        "{text}"
    );
    assert!(text.contains("login root: block ("), "{text}");
    assert!(text.contains("cmd RETR: pass (default)"), "{text}");
    assert!(text.contains("cmd SITE: block ("), "{text}");
    let bad = run(std::process::Command::new(bin).args([
        "check",
        example,
        "--test",
        "session to 1.2.3.4",
    ]));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--test: expected `from`, found `to`"));
}

/// Data rules through a real server and client: uploads refused with the rule's own
/// reply before `STOR` reaches vsftpd, active mode refused at `PORT`, passive
/// downloads untouched; each decision counted under its rule.
#[test]
fn data_rules_refuse_uploads_and_active_mode_before_the_server() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("get.bin"), 1 << 20, 5);
    let gate = Gate::reverse(
        server.addr,
        "block return-code 553 \"Uploads are refused here.\" log data upload\n\
         block data active",
    );
    let local = tempfile::tempdir().expect("tempdir");
    let got = local.path().join("get.bin");
    curl_get(gate.addr, Mode::Pasv, "pub/get.bin", &got);
    assert_same_file(&server.public().join("get.bin"), &got);

    let up = local.path().join("up.bin");
    make_file(&up, 1000, 6);
    let out = run(curl(Mode::Epsv)
        .arg("-T")
        .arg(&up)
        .arg(url(gate.addr, "pub/up.bin")));
    assert!(!out.status.success(), "the upload must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("553"), "curl says why: {stderr}");
    assert!(!server.public().join("up.bin").exists());

    let out = run(curl(Mode::Port)
        .arg(url(gate.addr, "pub/get.bin"))
        .arg("-o")
        .arg(local.path().join("active.bin")));
    assert!(!out.status.success(), "active mode must fail");

    let log = server.log();
    assert!(!log.contains("STOR") && !log.contains("PORT"), "{log}");
    let rules = gate.rules.display().to_string();
    let block = |line: u32| {
        gate.metric(&format!(
            "ftpgate_rule_decisions_total{{rule=\"{rules}:{line}\",verdict=\"block\"}}"
        ))
    };
    assert_eq!((block(3), block(4)), (1.0, 1.0));
    gate.wait_log("what=data passive upload");
}

/// A session rule's `return-code` is what a refused client reads instead of 421.
#[test]
fn a_session_block_answers_with_its_return_code() {
    let upstream = TcpListener::bind((LOCALHOST, 0)).expect("upstream");
    let gate = Gate::reverse(
        upstream.local_addr().expect("addr"),
        "block return-code 530 \"This server is closed to you.\" from 127.0.0.0/8",
    );
    let mut c = Control::connect(gate.addr);
    assert_eq!(c.reply(), "530 This server is closed to you.\r\n");
    assert!(c.closed());
    assert_no_connection(&upstream, "the blocked session's server");
}

/// lftp interrupting a download and an upload (`kill` on the job): it sends `ABOR`
/// with Telnet IP and the Synch's DM as TCP urgent data. The proxy keeps the verb
/// whole, forwards the Synch as urgent data, tears the data legs down, and the
/// session lists the directory afterwards; nothing leaks.
#[test]
fn lftp_interrupting_transfers_aborts_them_and_the_session_goes_on() {
    require!("vsftpd", "lftp");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("big.bin"), 64 << 20, 41);
    let gate = Gate::reverse(server.addr, "");
    let baseline = gate.open_fds();
    let local = tempfile::tempdir().expect("tempdir");
    let (down, up) = (local.path().join("down.bin"), local.path().join("up.bin"));
    make_file(&up, 64 << 20, 42);
    let jobs = [
        format!("get pub/big.bin -o {}", down.display()),
        format!("put {} -o pub/up.bin", up.display()),
    ];
    for (n, job) in jobs.iter().enumerate() {
        let out = lftp(
            gate.addr,
            Mode::Epsv,
            &format!("set net:limit-rate 1M; {job} &; sleep 2; kill all; cls pub/"),
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("big.bin"), "{listing}");
        let log = server.log();
        assert_eq!(log.matches("ABOR\"").count(), n + 1, "{log}");
        // The same vsftpd process (the same session) answered the ABOR and then
        // listed: lftp did not have to time out and reconnect.
        let pid_of = |needle: &str| {
            log.lines()
                .rev()
                .find(|l| l.contains(needle))
                .and_then(|l| l.split("[pid ").nth(1))
                .and_then(|p| p.split(']').next())
                .map(str::to_string)
        };
        assert_eq!(pid_of("ABOR\""), pid_of("\"LIST"), "{log}");
    }
    assert_eq!(gate.metric("ftpgate_commands_total{verb=\"ABOR\"}"), 2.0);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(size(&down) < 64 << 20, "the download was cut short");
    assert!(
        size(&server.public().join("up.bin")) < 64 << 20,
        "the upload too"
    );
    gate.assert_nothing_left(baseline);
}

/// The Synch before `ABOR` travels as RFC 959 describes it on both legs: a client's
/// DM sent as TCP urgent data reaches the server as TCP urgent data, the line stays
/// `IAC IP IAC ABOR`, and the session answers promptly (tokio took the short read at
/// the urgent mark for an empty socket until this was handled).
#[test]
fn the_synch_before_abor_reaches_the_server_as_urgent_data() {
    let (server, script) = fake_server(|mut p| {
        p.login();
        // Urgent data is lost once a normal read passes it: wait for it first.
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            p.stream.as_fd(),
            nix::poll::PollFlags::POLLPRI,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16));
        assert_eq!(ready.expect("poll"), 1, "no urgent data arrived");
        let mut oob = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let n = socket2::SockRef::from(&p.stream)
            .recv_out_of_band(&mut oob)
            .expect("urgent data");
        assert_eq!(n, 1);
        // SAFETY: recv_out_of_band initialised the one byte it reported.
        assert_eq!(unsafe { oob[0].assume_init() }, 0xf2, "the DM");
        assert_eq!(p.heard_raw(), b"\xff\xf4\xffABOR\r\n");
        p.say("225 ABOR ok");
        assert_eq!(p.heard(), "NOOP");
        p.say("200 ok");
    });
    let gate = Gate::reverse(server, "");
    let mut c = Control::login(gate.addr);
    c.stream.write_all(&[0xff, 0xf4, 0xff]).expect("IAC IP IAC");
    socket2::SockRef::from(&c.stream)
        .send_out_of_band(&[0xf2])
        .expect("DM as urgent data");
    c.stream.write_all(b"ABOR\r\n").expect("ABOR");
    assert_eq!(c.reply(), "225 ABOR ok\r\n");
    assert_eq!(c.cmd("NOOP"), "200 ok\r\n");
    script.join().expect("script");
}

/// curl giving up mid-download (`--max-time`) sends no ABOR: it closes its data and
/// control connections. The proxy tears both legs down, vsftpd reports the broken
/// transfer, nothing leaks, and the next download is whole.
#[test]
fn curl_giving_up_mid_transfer_leaves_nothing_behind() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("big.bin"), 64 << 20, 43);
    let gate = Gate::reverse(server.addr, "");
    let baseline = gate.open_fds();
    let local = tempfile::tempdir().expect("tempdir");
    for mode in [Mode::Epsv, Mode::Port] {
        let out = run(curl(mode)
            .args(["--limit-rate", "1M", "--max-time", "1"])
            .arg(url(gate.addr, "pub/big.bin"))
            .arg("-o")
            .arg(local.path().join("cut.bin")));
        assert_eq!(out.status.code(), Some(28), "curl timed out");
        gate.assert_nothing_left(baseline);
    }
    eventually("vsftpd to report both broken transfers", || {
        server
            .log()
            .matches("426 Failure writing network stream")
            .count()
            == 2
    });
    let whole = local.path().join("whole.bin");
    curl_get(gate.addr, Mode::Epsv, "pub/big.bin", &whole);
    assert_same_file(&whole, &server.public().join("big.bin"));
}
