//! FTPS on the client's leg (`AUTH`, `PBSZ`, `PROT`, `CCC` and `FEAT` under each
//! `tls client` policy) and on the server's (`tls server`).

use super::*;
use crate::vocab::{ClientTls, ServerTls, TlsPolicy, UpstreamFailure};

fn harness(policy: ClientTls) -> Harness {
    Harness::new(Params {
        tls: TlsPolicy {
            client: policy,
            ..TlsPolicy::default()
        },
        ..params()
    })
}

#[test]
fn auth_is_refused_with_534_when_the_rule_denies_tls() {
    let mut h = harness(ClientTls::Deny);
    let a = h.client(b"AUTH TLS\r\n").take();
    assert_eq!(refusals(&a), [Refusal::Auth]);
    assert!(to_client(&a).starts_with("534 "));
    assert!(!a.contains(&Action::SecureClient));
    assert_eq!(to_server(&a), "");
}

#[test]
fn auth_tls_is_answered_234_and_tls_starts_right_after_it() {
    for mechanism in ["TLS", "tls", "SSL", "TLS-C"] {
        let mut h = harness(ClientTls::Optional);
        let a = h.client(format!("AUTH {mechanism}\r\n").as_bytes()).take();
        let reply = a
            .iter()
            .position(|a| matches!(a, Action::ToClient(b) if b.starts_with(b"234 ")));
        let secure = a.iter().position(|a| *a == Action::SecureClient);
        assert!(
            reply.is_some() && secure == reply.map(|r| r + 1),
            "{mechanism}: {a:?}"
        );
        assert_eq!(
            to_server(&a),
            "",
            "the server leg stays in clear and hears nothing"
        );
    }
}

#[test]
fn pbsz_and_prot_are_answered_for_the_clients_leg_and_prot_c_and_p_are_offered() {
    let mut h = harness(ClientTls::Optional);
    h.client(b"AUTH TLS\r\n").take();
    // Python's `prot_c()` sends no PBSZ, and vsftpd does not ask for one.
    let a = h.client(b"PROT C\r\n").take();
    assert!(to_client(&a).starts_with("200 "), "PROT C before PBSZ");
    let a = h.client(b"PBSZ 0\r\n").take();
    assert_eq!(to_client(&a), "200 PBSZ=0\r\n");
    for level in ["S", "E", "X"] {
        let a = h.client(format!("PROT {level}\r\n").as_bytes()).take();
        assert!(to_client(&a).starts_with("5"), "PROT {level}");
        assert_eq!(refusals(&a).len(), 1);
    }
    let a = h.client(b"PROT P\r\n").take();
    assert!(to_client(&a).starts_with("200 "));
    let a = h.client(b"PROT C\r\n").take();
    assert!(to_client(&a).starts_with("200 "));
    let a = h.client(b"CCC\r\n").take();
    assert!(to_client(&a).starts_with("534 "));
    assert_eq!(to_server(&h.take()), "");
    let a = h.client(b"USER anonymous\r\n").take();
    assert_eq!(to_server(&a), "USER anonymous\r\n");
}

#[test]
fn tls_commands_before_auth_are_out_of_turn() {
    let mut h = harness(ClientTls::Optional);
    for cmd in ["PBSZ 0", "PROT C", "CCC"] {
        let a = h.client(format!("{cmd}\r\n").as_bytes()).take();
        assert!(
            to_client(&a).starts_with("503 "),
            "{cmd}: {}",
            to_client(&a)
        );
        assert_eq!(refusals(&a), [Refusal::Tls]);
        assert_eq!(to_server(&a), "");
    }
}

#[test]
fn require_refuses_a_login_before_tls_and_forwards_it_after() {
    let mut h = harness(ClientTls::Require);
    for cmd in ["USER ftp", "PASS secret", "ACCT x"] {
        let a = h.client(format!("{cmd}\r\n").as_bytes()).take();
        assert!(to_client(&a).starts_with("530 "), "{cmd}");
        assert_eq!(refusals(&a), [Refusal::Tls]);
        assert_eq!(
            to_server(&a),
            "",
            "{cmd} must not reach the server in clear"
        );
    }
    // What is no login goes on in clear.
    assert_eq!(to_server(&h.client(b"SYST\r\n").take()), "SYST\r\n");
    h.server(b"215 UNIX Type: L8\r\n").take();
    h.client(b"AUTH TLS\r\n").take();
    assert_eq!(to_server(&h.client(b"USER ftp\r\n").take()), "USER ftp\r\n");
}

#[test]
fn optional_lets_a_client_stay_in_clear() {
    let mut h = harness(ClientTls::Optional);
    assert_eq!(to_server(&h.client(b"USER ftp\r\n").take()), "USER ftp\r\n");
}

#[test]
fn auth_out_of_turn_is_refused() {
    let mut h = harness(ClientTls::Optional);
    let a = h.client(b"AUTH GSSAPI\r\n").take();
    assert!(to_client(&a).starts_with("504 "));
    // A reply is still owed: the 234 would have to wait, and the client's next bytes
    // would be TLS meanwhile.
    h.client(b"NOOP\r\n").take();
    let a = h.client(b"AUTH TLS\r\n").take();
    assert!(!a.contains(&Action::SecureClient));
    let a = h.server(b"200 NOOP ok\r\n").take();
    assert_eq!(
        to_client(&a),
        "200 NOOP ok\r\n503 AUTH must wait until the replies and transfers in progress are done.\r\n"
    );
    // After USER the password may have gone in clear: too late.
    h.client(b"USER ftp\r\n").take();
    h.server(b"331 password\r\n").take();
    let a = h.client(b"AUTH TLS\r\n").take();
    assert!(to_client(&a).starts_with("503 "));
    assert!(!a.contains(&Action::SecureClient));
    // And only once.
    let mut h = harness(ClientTls::Optional);
    h.client(b"AUTH TLS\r\n").take();
    let a = h.client(b"AUTH TLS\r\n").take();
    assert!(to_client(&a).starts_with("503 "));
    assert!(!a.contains(&Action::SecureClient));
}

#[test]
fn feat_lists_ftpgates_tls_not_the_servers() {
    let server =
        b"211-Features:\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n CCC\r\n UTF8\r\n211 End\r\n";
    let mut h = harness(ClientTls::Optional);
    h.client(b"FEAT\r\n").take();
    let a = h.server(server).take();
    assert_eq!(
        to_client(&a),
        "211-Features:\r\n EPSV\r\n UTF8\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n"
    );
    let mut h = harness(ClientTls::Deny);
    h.client(b"FEAT\r\n").take();
    let a = h.server(server).take();
    assert_eq!(
        to_client(&a),
        "211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"
    );
    // A server without FEAT, or with a one-line answer, is passed on as it said.
    let mut h = harness(ClientTls::Optional);
    h.client(b"FEAT\r\n").take();
    let a = h.server(b"502 no FEAT\r\n").take();
    assert_eq!(to_client(&a), "502 no FEAT\r\n");
}

#[test]
fn a_failed_client_tls_closes_the_session_without_a_word() {
    let mut h = harness(ClientTls::Optional);
    h.client(b"AUTH TLS\r\n").take();
    h.feed(Event::ClientTlsFailed);
    let a = h.take();
    assert_eq!(a, [Action::Close(CloseReason::TlsFailed)]);
}

#[test]
fn data_connections_announced_under_prot_p_are_tls_on_the_clients_leg() {
    let opened = |h: &mut Harness| -> Vec<bool> {
        h.take()
            .iter()
            .filter_map(|a| match a {
                Action::Open(req) => Some(req.client_tls),
                _ => None,
            })
            .collect()
    };
    let mut h = harness(ClientTls::Optional);
    h.client(b"AUTH TLS\r\nPBSZ 0\r\n").take();
    h.client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,117,49).\r\n");
    assert_eq!(opened(&mut h), [false], "PROT C is the default");
    h.client(b"PROT P\r\n").take();
    h.client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,117,50).\r\n");
    assert_eq!(opened(&mut h), [true]);
    h.client(b"PORT 198,51,100,2,195,80\r\n")
        .server(b"200 PORT ok\r\n");
    assert_eq!(opened(&mut h), [true], "active mode too");
    h.client(b"PROT C\r\n").take();
    h.client(b"EPSV\r\n")
        .server(b"229 Entering Extended Passive Mode (|||30002|)\r\n");
    assert_eq!(opened(&mut h), [false]);
}

#[test]
fn require_reuse_goes_with_every_protected_data_connection() {
    let mut h = Harness::new(Params {
        tls: TlsPolicy {
            client: ClientTls::Optional,
            require_reuse: true,
            ..TlsPolicy::default()
        },
        ..params()
    });
    h.client(b"AUTH TLS\r\nPBSZ 0\r\nPROT P\r\n").take();
    h.client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,117,49).\r\n");
    let opened: Vec<(bool, bool)> = h
        .take()
        .iter()
        .filter_map(|a| match a {
            Action::Open(req) => Some((req.client_tls, req.tls_require_reuse)),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [(true, true)]);
}

#[test]
fn an_implicit_tls_session_is_secured_from_the_start() {
    // Whatever the rule says about AUTH: the listener speaks TLS already.
    let mut h = Harness::new(Params {
        tls_implicit: true,
        ..params()
    });
    let a = h.client(b"AUTH TLS\r\n").take();
    assert!(to_client(&a).starts_with("503 "));
    assert!(!a.contains(&Action::SecureClient));
    assert_eq!(to_client(&h.client(b"PBSZ 0\r\n").take()), "200 PBSZ=0\r\n");
    assert!(to_client(&h.client(b"PROT P\r\n").take()).starts_with("200 "));
    h.client(b"FEAT\r\n").take();
    let a = h.server(b"211-Features:\r\n EPSV\r\n211 End\r\n").take();
    assert!(to_client(&a).contains(" PROT\r\n"), "{}", to_client(&a));
}

#[test]
fn ccc_clears_the_control_connection_only_where_the_rule_allows_it() {
    let mut h = Harness::new(Params {
        tls: TlsPolicy {
            client: ClientTls::Optional,
            ccc: true,
            ..TlsPolicy::default()
        },
        ..params()
    });
    h.client(b"AUTH TLS\r\nPBSZ 0\r\nPROT P\r\n").take();
    // Not while a reply is owed: it would have to come after the TLS is gone.
    h.client(b"NOOP\r\n").take();
    let a = h.client(b"CCC\r\n").take();
    assert!(!a.contains(&Action::ClearClient));
    let a = h.server(b"200 ok\r\n").take();
    assert!(
        to_client(&a).ends_with("503 CCC must wait until the replies in progress are done.\r\n")
    );
    let a = h.client(b"CCC\r\n").take();
    let reply = a
        .iter()
        .position(|a| matches!(a, Action::ToClient(b) if b.starts_with(b"200 CCC")));
    let clear = a.iter().position(|a| *a == Action::ClearClient);
    assert!(reply.is_some() && clear == reply.map(|r| r + 1), "{a:?}");
    // Clear for good; data stays protected as PROT said.
    assert!(to_client(&h.client(b"AUTH TLS\r\n").take()).starts_with("503 "));
    assert!(to_client(&h.client(b"PROT C\r\n").take()).starts_with("503 "));
    h.client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,117,49).\r\n");
    assert!(
        h.take()
            .iter()
            .any(|a| matches!(a, Action::Open(r) if r.client_tls))
    );
}

// ----- the server's leg (`tls server`)

fn server_harness(client: ClientTls, server: ServerTls) -> Harness {
    Harness::ungreeted(Params {
        server_name: Some("ftp.example.net".into()),
        tls: TlsPolicy {
            client,
            server,
            connector: Some(crate::tls::Connector::unverified().unwrap()),
            ..TlsPolicy::default()
        },
        ..params()
    })
}

fn secures_server(a: &[Action]) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::SecureServer { name, .. } if name == "ftp.example.net"))
}

fn server_tls_of_opens(a: &[Action]) -> Vec<bool> {
    opens(a).iter().map(|r| r.server_tls).collect()
}

#[test]
fn require_secures_the_server_before_the_client_hears_its_greeting() {
    let mut h = server_harness(ClientTls::Deny, ServerTls::Require);
    let a = h.server(b"220 ready\r\n").take();
    assert_eq!(to_client(&a), "", "the greeting waits");
    assert_eq!(to_server(&a), "AUTH TLS\r\n");
    // The client may not wait for the greeting; its line waits for the TLS.
    assert_eq!(to_server(&h.client(b"USER ftp\r\n").take()), "");
    let a = h.server(b"234 Proceed with negotiation.\r\n").take();
    let secure = a
        .iter()
        .position(|a| matches!(a, Action::SecureServer { .. }));
    let pbsz = a
        .iter()
        .position(|a| matches!(a, Action::ToServer(b) if b == b"PBSZ 0\r\n"));
    assert!(secure.is_some() && secure < pbsz, "TLS before PBSZ: {a:?}");
    assert!(secures_server(&a));
    assert_eq!(to_server(&a), "PBSZ 0\r\nPROT P\r\n");
    assert_eq!(to_client(&a), "", "the 234 is ftpgate's, not the client's");
    let a = h.server(b"200 PBSZ set to 0.\r\n").take();
    assert_eq!(
        (to_client(&a), to_server(&a)),
        (String::new(), String::new())
    );
    let a = h.server(b"200 PROT now Private.\r\n").take();
    assert_eq!(to_client(&a), "220 ready\r\n");
    assert_eq!(to_server(&a), "USER ftp\r\n", "the held line, through TLS");
    // Data to the server is TLS now, whatever the client's leg is.
    h.server(b"331 password\r\n")
        .client(b"PASS x\r\n")
        .server(b"230 in\r\n");
    h.take();
    h.client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,117,49).\r\n");
    let a = h.take();
    assert_eq!(server_tls_of_opens(&a), [true]);
    assert!(opens(&a).iter().all(|r| !r.client_tls));
}

#[test]
fn require_closes_the_session_when_the_server_refuses_tls_or_protected_data() {
    for (auth, prot) in [
        ("530 Please login with USER and PASS.\r\n", ""),
        ("234 go\r\n", "536 no\r\n"),
    ] {
        let mut h = server_harness(ClientTls::Optional, ServerTls::Require);
        h.server(b"220 ready\r\n").server(auth.as_bytes());
        if !prot.is_empty() {
            h.server(b"200 PBSZ=0\r\n").server(prot.as_bytes());
        }
        let a = h.take();
        assert!(
            to_client(&a)
                .starts_with("421 Service not available: the FTP server does not take TLS"),
            "{}",
            to_client(&a)
        );
        assert!(!to_client(&a).contains("220"), "no greeting before the 421");
        assert_eq!(
            a.last(),
            Some(&Action::Close(CloseReason::UpstreamFailed(
                UpstreamFailure::Tls
            )))
        );
    }
}

#[test]
fn match_answers_the_clients_auth_only_once_the_server_took_ftpgates() {
    let mut h = server_harness(ClientTls::Optional, ServerTls::Match);
    let a = h.server(b"220 ready\r\n").take();
    assert_eq!(
        to_client(&a),
        "220 ready\r\n",
        "no TLS before the client asks"
    );
    assert_eq!(to_server(&a), "");
    let a = h.client(b"AUTH TLS\r\n").take();
    assert_eq!(to_server(&a), "AUTH TLS\r\n");
    assert_eq!(to_client(&a), "");
    let a = h.server(b"234 Proceed\r\n").take();
    assert!(secures_server(&a));
    let reply = a
        .iter()
        .position(|a| matches!(a, Action::ToClient(b) if b.starts_with(b"234 ")));
    let secure = a.iter().position(|a| *a == Action::SecureClient);
    assert!(reply.is_some() && secure == reply.map(|r| r + 1), "{a:?}");
    // No PROT yet: the server's data leg follows the client's, clear by default.
    assert_eq!(to_server(&a), "PBSZ 0\r\n");
    // The client's own PBSZ and PROT are answered for its leg, after ftpgate's, and
    // its PROT P is mirrored to the server.
    let a = h.client(b"PBSZ 0\r\nPROT P\r\n").take();
    assert_eq!(
        (to_client(&a), to_server(&a)),
        (String::new(), "PROT P\r\n".into())
    );
    let a = h.server(b"200 PBSZ=0\r\n200 PROT ok\r\n").take();
    assert_eq!(
        to_client(&a),
        "200 PBSZ=0\r\n200 Protection level set to Private.\r\n"
    );
    let legs = |h: &mut Harness| -> Vec<(bool, bool)> {
        h.client(b"EPSV\r\n")
            .server(b"229 Entering Extended Passive Mode (|||30002|)\r\n");
        opens(&h.take())
            .iter()
            .map(|r| (r.client_tls, r.server_tls))
            .collect()
    };
    assert_eq!(legs(&mut h), [(true, true)]);
    // PROT C: clear on both legs again (the kernel path may carry it).
    let a = h.client(b"PROT C\r\n").take();
    assert_eq!(to_server(&a), "PROT C\r\n");
    h.server(b"200 PROT now Clear.\r\n").take();
    assert_eq!(legs(&mut h), [(false, false)]);
    // A server that refuses a level leaves its leg as it was.
    h.client(b"PROT P\r\n").server(b"200 ok\r\n").take();
    let a = h
        .client(b"PROT C\r\n")
        .server(b"536 PROT C not allowed\r\n")
        .take();
    assert!(
        to_client(&a).starts_with("200 "),
        "the client's leg is ftpgate's"
    );
    assert_eq!(legs(&mut h), [(false, true)]);
}

#[test]
fn match_keeps_both_legs_clear_when_the_server_refuses_tls() {
    let mut h = server_harness(ClientTls::Optional, ServerTls::Match);
    h.server(b"220 ready\r\n").client(b"AUTH TLS\r\n").take();
    let a = h.server(b"500 AUTH not understood\r\n").take();
    assert!(to_client(&a).starts_with("534 "), "{}", to_client(&a));
    assert_eq!(refusals(&a), [Refusal::Tls]);
    assert!(!a.contains(&Action::SecureClient) && !secures_server(&a));
    assert_eq!(to_server(&h.client(b"USER ftp\r\n").take()), "USER ftp\r\n");
}

#[test]
fn a_line_behind_an_auth_that_waits_for_the_server_ends_the_session() {
    let mut h = server_harness(ClientTls::Optional, ServerTls::Match);
    h.server(b"220 ready\r\n").take();
    let a = h.client(b"AUTH TLS\r\nUSER ftp\r\n").take();
    assert_eq!(
        to_server(&a),
        "AUTH TLS\r\n",
        "USER never reaches the server"
    );
    assert_eq!(a.last(), Some(&Action::Close(CloseReason::TlsFailed)));
}

#[test]
fn a_failed_server_tls_ends_the_session_with_421() {
    let mut h = server_harness(ClientTls::Deny, ServerTls::Require);
    h.server(b"220 ready\r\n234 go\r\n").take();
    h.feed(Event::ServerTlsFailed);
    let a = h.take();
    assert_eq!(
        to_client(&a),
        "421 Service not available: TLS with the FTP server failed.\r\n"
    );
    assert_eq!(
        a.last(),
        Some(&Action::Close(CloseReason::UpstreamFailed(
            UpstreamFailure::Tls
        )))
    );
}

#[test]
fn an_implicit_server_leg_is_secured_at_connect_and_protects_data_after_the_greeting() {
    let rules = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\npass tls server require no-verify implicit\n";
    let policy = Arc::new(crate::rules::parse_str("t.rules", rules).unwrap());
    let start = Start {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: CLIENT.parse().unwrap(),
        own: Arc::new(OwnSockets::default()),
        origin: Origin::Upstream {
            host: "ftps.example.net".into(),
            port: 990,
            local: "198.51.100.1:21".parse().unwrap(),
        },
        tls_implicit: false,
        dialed: None,
    };
    let mut s = Session::new(start, policy, t0());
    s.poll_actions();
    s.handle(t0(), Event::Resolved(Some(SERVER.parse().unwrap())));
    let server_side = "203.0.113.1:61000".parse().unwrap();
    let a = s.handle(t0(), Event::Connected { server_side });
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::SecureServer { name, .. } if name == "ftps.example.net")),
        "{a:?}"
    );
    let mut frames = Vec::new();
    LineFramer::new(4096).push(b"220 ready\r\n", &mut frames);
    let a = s.handle(t0(), Event::Server(frames.remove(0)));
    assert_eq!(
        to_server(&a),
        "PBSZ 0\r\nPROT P\r\n",
        "no AUTH on implicit TLS"
    );
    assert_eq!(to_client(&a), "");
}

// ----- passed through (`tls passthrough`)

fn passthrough_harness() -> Harness {
    Harness::new(Params {
        tls: TlsPolicy {
            passthrough: Some(crate::vocab::PortRange {
                lo: 30000,
                hi: 30999,
            }),
            ..TlsPolicy::default()
        },
        ..params()
    })
}

#[test]
fn passthrough_forwards_auth_and_goes_blind_once_the_server_takes_it() {
    let mut h = passthrough_harness();
    // The server's FEAT is its own, TLS lines and all.
    h.client(b"FEAT\r\n").take();
    let feat = "211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n";
    assert_eq!(to_client(&h.server(feat.as_bytes()).take()), feat);
    let a = h.client(b"AUTH TLS\r\n").take();
    assert_eq!(to_server(&a), "AUTH TLS\r\n");
    assert_eq!(to_client(&a), "");
    let a = h.server(b"234 Proceed with negotiation.\r\n").take();
    let reply = a
        .iter()
        .position(|a| matches!(a, Action::ToClient(b) if b.starts_with(b"234 ")));
    let blind = a.iter().position(
        |a| matches!(a, Action::PassThrough { ports } if ports.lo == 30000 && ports.hi == 30999),
    );
    assert!(reply.is_some() && blind == reply.map(|r| r + 1), "{a:?}");
    // Blind: no line is read, no timer runs, only a close ends it, without a word.
    assert_eq!(h.session.poll_timeout(), None);
    assert_eq!(h.client(b"PORT 203,0,113,66,4,1\r\n").take(), []);
    h.feed(Event::Shutdown);
    assert_eq!(h.take(), [Action::Close(CloseReason::Shutdown)]);
}

#[test]
fn passthrough_refused_by_the_server_leaves_the_session_clear_and_inspected() {
    let mut h = passthrough_harness();
    h.client(b"AUTH TLS\r\n").take();
    let a = h.server(b"530 Please login with USER and PASS.\r\n").take();
    assert_eq!(to_client(&a), "530 Please login with USER and PASS.\r\n");
    assert!(!a.iter().any(|a| matches!(a, Action::PassThrough { .. })));
    let a = h.client(b"PORT 203,0,113,66,4,1\r\n").take();
    assert_eq!(refusals(&a), [Refusal::Bounce], "still read and ruled on");
    // Not after a login, and not while a reply is owed, as for ftpgate's own TLS.
    let mut h = passthrough_harness();
    h.client(b"USER ftp\r\n").server(b"331 password\r\n").take();
    let a = h.client(b"AUTH TLS\r\n").take();
    assert!(to_client(&a).starts_with("503 ") && to_server(&a).is_empty());
    // Clear text behind the AUTH before the server's answer ends the session.
    let mut h = passthrough_harness();
    let a = h.client(b"AUTH TLS\r\nPASV\r\n").take();
    assert_eq!(to_server(&a), "AUTH TLS\r\n");
    assert_eq!(a.last(), Some(&Action::Close(CloseReason::TlsFailed)));
}
