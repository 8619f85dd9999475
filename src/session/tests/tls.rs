//! FTPS on the client's leg: `AUTH`, `PBSZ`, `PROT`, `CCC` and `FEAT` under each
//! `tls client` policy.

use super::*;
use crate::vocab::{ClientTls, TlsPolicy};

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
            ccc: false,
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
            require_reuse: false,
            ccc: true,
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
