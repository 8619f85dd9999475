//! Every protocol and policy path of the session engine, driven without sockets.

use super::*;
use std::net::IpAddr;
use std::time::Instant;

mod life;
mod tls;
use crate::codec::{self, Line, LineFramer, Malformed, TransferKind};
use crate::vocab::DataPath;
use control::{MAX_HELD_BYTES, MAX_USER};
use proptest::prelude::*;

const CLIENT: &str = "198.51.100.2:50000";

/// The start of every test's synthetic clock.
fn t0() -> Instant {
    static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *T0
}
const SERVER: &str = "203.0.113.2:21";

fn params() -> Params {
    Params {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: CLIENT.parse().unwrap(),
        client_side: "198.51.100.1:21".parse().unwrap(),
        client_local: "198.51.100.1".parse().unwrap(),
        server: SERVER.parse().unwrap(),
        server_name: None,
        server_side: "203.0.113.1:61000".parse().unwrap(),
        advertise: None,
        min_data_port: 1024,
        server_mode: None,
        tls: crate::vocab::TlsPolicy::default(),
        tls_implicit: false,
        own: Arc::new(OwnSockets {
            ips: Vec::new(),
            ports: vec![2121, 9121],
        }),
    }
}

fn v6_params() -> Params {
    Params {
        listener: "127.0.0.1:2121".parse().unwrap(),
        client: "[2001:db8:1::2]:50000".parse().unwrap(),
        client_side: "[2001:db8:1::1]:21".parse().unwrap(),
        client_local: "2001:db8:1::1".parse().unwrap(),
        server: "[2001:db8:2::2]:21".parse().unwrap(),
        server_name: None,
        server_side: "[2001:db8:2::1]:61000".parse().unwrap(),
        advertise: None,
        min_data_port: 1024,
        server_mode: None,
        tls: crate::vocab::TlsPolicy::default(),
        tls_implicit: false,
        own: Arc::new(OwnSockets {
            ips: Vec::new(),
            ports: vec![2121, 9121],
        }),
    }
}

/// Drives a session the way the shell does: frames bytes, answers `Open` at once.
struct Harness {
    session: Session,
    client: LineFramer,
    server: LineFramer,
    next_port: u16,
    actions: Vec<Action>,
    /// Opened expectations are forwarded by the kernel (`data-path kernel`).
    kernel: bool,
    /// The time every event happens at.
    now: Instant,
}

impl Harness {
    fn new(params: Params) -> Self {
        let mut h = Harness::ungreeted(params);
        h.server(b"220 ready\r\n");
        h.actions.clear();
        h
    }

    /// Connected, and the server's greeting not yet in.
    fn ungreeted(params: Params) -> Self {
        Harness {
            session: Session::connected(params, Arc::default(), t0()),
            client: LineFramer::new(4096),
            server: LineFramer::new(4096),
            next_port: 40000,
            actions: Vec::new(),
            kernel: false,
            now: t0(),
        }
    }

    fn feed(&mut self, event: Event) {
        let actions = self.session.handle(self.now, event);
        for action in actions {
            if let Action::Open(req) = &action {
                let proxy = SocketAddr::new(req.listen_ip, self.next_port);
                let server_port = matches!(req.conversion, Some(Conversion::AcceptServer { .. }))
                    .then_some(self.next_port + 1000);
                self.next_port += 1;
                let id = req.id;
                self.actions.push(action);
                self.feed(Event::ExpectationOpened {
                    id,
                    proxy,
                    server_port,
                    path: if self.kernel {
                        DataPath::Kernel
                    } else {
                        DataPath::Relay
                    },
                });
            } else {
                self.actions.push(action);
            }
        }
    }

    fn client(&mut self, bytes: &[u8]) -> &mut Self {
        let mut frames = Vec::new();
        self.client.push(bytes, &mut frames);
        for f in frames {
            self.feed(Event::Client(f));
        }
        self
    }

    fn server(&mut self, bytes: &[u8]) -> &mut Self {
        let mut frames = Vec::new();
        self.server.push(bytes, &mut frames);
        for f in frames {
            self.feed(Event::Server(f));
        }
        self
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

fn to_client(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn to_server(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToServer(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn opens(actions: &[Action]) -> Vec<ExpectationRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn refusals(actions: &[Action]) -> Vec<Refusal> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Refused { why, .. } => Some(*why),
            _ => None,
        })
        .collect()
}

#[test]
fn greeting_is_forwarded_unchanged() {
    let mut s = Session::connected(params(), Arc::default(), t0());
    let mut framer = LineFramer::new(4096);
    let mut frames = Vec::new();
    framer.push(b"220-Welcome\r\n220 ready\r\n", &mut frames);
    let out: Vec<Action> = frames
        .into_iter()
        .flat_map(|f| s.handle(t0(), Event::Server(f)))
        .collect();
    assert_eq!(to_client(&out), "220-Welcome\r\n220 ready\r\n");
}

#[test]
fn pasv_is_forwarded_and_227_rewritten_to_the_proxy_data_port() {
    // P@SW is PASV to vsftpd, pure-ftpd and FileZilla Server; the server gets PASV.
    for spelling in ["PASV", "pasv", "P@SW", "p@sw"] {
        let mut h = Harness::new(params());
        let a = h.client(format!("{spelling}\r\n").as_bytes()).take();
        assert_eq!(to_server(&a), "PASV\r\n");
        let a = h
            .server(b"227 Entering Passive Mode (203,0,113,2,200,10).\r\n")
            .take();
        let open = opens(&a);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].mode, DataMode::Passive);
        assert_eq!(open[0].listen_ip, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            open[0].expected_peer,
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(open[0].onward, "203.0.113.2:51210".parse().unwrap());
        assert_eq!(
            open[0].onward_from,
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            to_client(&a),
            "227 Entering Passive Mode (198,51,100,1,156,64).\r\n"
        );
    }
}

#[test]
fn in_transparent_mode_227_names_the_server_and_data_binds_on_the_proxy() {
    // REDIRECT: the client dialled the server, the proxy is the router.
    let mut p = params();
    p.client_side = "203.0.113.2:21".parse().unwrap();
    p.client_local = "198.51.100.1".parse().unwrap();
    let mut h = Harness::new(p);
    h.client(b"PASV\r\n");
    let a = h.server(b"227 (203,0,113,2,200,10)\r\n").take();
    let open = &opens(&a)[0];
    assert_eq!(open.listen_ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!(open.dst_ip, "203.0.113.2".parse::<IpAddr>().unwrap());
    assert_eq!(
        to_client(&a),
        "227 Entering Passive Mode (203,0,113,2,156,64).\r\n"
    );
    let a = h.client(b"PORT 198,51,100,2,195,81\r\n").take();
    let open = &opens(&a)[0];
    assert_eq!(open.onward_from, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!(open.dst_ip, "203.0.113.1".parse::<IpAddr>().unwrap());
}

#[test]
fn a_227_naming_a_third_host_still_connects_only_to_the_server_control_address() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n");
    let a = h
        .server(b"227 Entering Passive Mode (192,0,2,66,200,10)\r\n")
        .take();
    assert_eq!(opens(&a)[0].onward, "203.0.113.2:51210".parse().unwrap());
}

#[test]
fn advertise_replaces_the_address_in_227() {
    let mut p = params();
    p.advertise = Some("192.0.2.1".parse().unwrap());
    let mut h = Harness::new(p);
    h.client(b"PASV\r\n");
    let a = h.server(b"227 =203,0,113,2,200,10\r\n").take();
    assert_eq!(
        to_client(&a),
        "227 Entering Passive Mode (192,0,2,1,156,64).\r\n"
    );
}

#[test]
fn epsv_gets_a_229_with_the_proxy_port() {
    let mut h = Harness::new(params());
    assert_eq!(to_server(&h.client(b"EPSV\r\n").take()), "EPSV\r\n");
    let a = h
        .server(b"229 Entering Extended Passive Mode (|||51210|)\r\n")
        .take();
    assert_eq!(opens(&a)[0].onward, "203.0.113.2:51210".parse().unwrap());
    assert_eq!(
        to_client(&a),
        "229 Entering Extended Passive Mode (|||40000|)\r\n"
    );
}

#[test]
fn ipv6_epsv_and_eprt() {
    let mut h = Harness::new(v6_params());
    h.client(b"EPSV\r\n");
    let a = h
        .server(b"229 Entering Extended Passive Mode (|||51210|)\r\n")
        .take();
    assert_eq!(
        opens(&a)[0].onward,
        "[2001:db8:2::2]:51210".parse().unwrap()
    );
    assert_eq!(
        to_client(&a),
        "229 Entering Extended Passive Mode (|||40000|)\r\n"
    );
    let a = h.client(b"EPRT |2|2001:db8:1::2|50001|\r\n").take();
    assert_eq!(
        opens(&a)[0].onward,
        "[2001:db8:1::2]:50001".parse().unwrap()
    );
    assert_eq!(
        opens(&a)[0].expected_peer,
        "2001:db8:2::2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(to_server(&a), "EPRT |2|2001:db8:2::1|40001|\r\n");
}

#[test]
fn pasv_over_ipv6_and_epsv_of_the_other_family_are_refused() {
    let mut h = Harness::new(v6_params());
    let a = h.client(b"PASV\r\n").take();
    assert_eq!(to_client(&a), "501 PASV needs IPv4; use EPSV.\r\n");
    assert_eq!(to_server(&a), "");
    assert_eq!(refusals(&a), [Refusal::Family]);
    let a = h.client(b"EPSV 1\r\n").take();
    assert_eq!(
        to_client(&a),
        "522 Network protocol not supported, use (2).\r\n"
    );
    assert_eq!(refusals(&a), [Refusal::Family]);
}

#[test]
fn client_pasv_to_an_ipv6_server_leg_becomes_epsv_and_the_229_a_227() {
    let mut p = params();
    p.server = "[2001:db8:2::2]:21".parse().unwrap();
    p.server_side = "[2001:db8:2::1]:61000".parse().unwrap();
    let mut h = Harness::new(p);
    assert_eq!(to_server(&h.client(b"PASV\r\n").take()), "EPSV\r\n");
    let a = h
        .server(b"229 Entering Extended Passive Mode (|||51210|)\r\n")
        .take();
    assert_eq!(
        opens(&a)[0].onward,
        "[2001:db8:2::2]:51210".parse().unwrap()
    );
    assert_eq!(
        to_client(&a),
        "227 Entering Passive Mode (198,51,100,1,156,64).\r\n"
    );
}

#[test]
fn an_ipv6_client_reaches_an_ipv4_server_with_pasv_and_port() {
    let mut p = v6_params();
    p.server = SERVER.parse().unwrap();
    p.server_side = "203.0.113.1:61000".parse().unwrap();
    let mut h = Harness::new(p);
    assert_eq!(to_server(&h.client(b"EPSV\r\n").take()), "PASV\r\n");
    let a = h
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .take();
    assert_eq!(opens(&a)[0].onward, "203.0.113.2:51210".parse().unwrap());
    assert_eq!(
        to_client(&a),
        "229 Entering Extended Passive Mode (|||40000|)\r\n"
    );
    let a = h.client(b"EPRT |2|2001:db8:1::2|51000|\r\n").take();
    assert_eq!(to_server(&a), "PORT 203,0,113,1,156,65\r\n");
}

#[test]
fn port_is_rewritten_to_the_proxy_server_side_and_onward_goes_to_the_client() {
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 198,51,100,2,195,81\r\n").take();
    let open = opens(&a);
    assert_eq!(open[0].mode, DataMode::Active);
    assert_eq!(open[0].listen_ip, "203.0.113.1".parse::<IpAddr>().unwrap());
    assert_eq!(
        open[0].expected_peer,
        "203.0.113.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(open[0].onward, "198.51.100.2:50001".parse().unwrap());
    assert_eq!(to_server(&a), "PORT 203,0,113,1,156,64\r\n");
    assert_eq!(
        to_client(&h.server(b"200 PORT ok\r\n").take()),
        "200 PORT ok\r\n"
    );
}

#[test]
fn port_naming_a_third_host_is_refused_and_nothing_is_opened_or_forwarded() {
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 203,0,113,66,0,22\r\n").take();
    assert!(opens(&a).is_empty());
    assert_eq!(to_server(&a), "");
    assert_eq!(
        to_client(&a),
        "504 Data address must be the client's own address.\r\n"
    );
    assert_eq!(refusals(&a), [Refusal::Bounce]);
    assert!(a.contains(&Action::Refused {
        why: Refusal::Bounce,
        target: Some("203.0.113.66:22".parse().unwrap())
    }));
    let a = h.client(b"EPRT |1|203.0.113.66|2121|\r\n").take();
    assert_eq!(refusals(&a), [Refusal::Bounce]);
    assert!(opens(&a).is_empty());
}

#[test]
fn an_unspecified_active_address_means_the_client_itself_never_the_proxy_host() {
    let mut h = Harness::new(v6_params());
    let a = h.client(b"EPRT |2|::|50001|\r\n").take();
    assert_eq!(
        opens(&a)[0].onward,
        "[2001:db8:1::2]:50001".parse().unwrap()
    );
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 0,0,0,0,195,81\r\n").take();
    assert_eq!(opens(&a)[0].onward, "198.51.100.2:50001".parse().unwrap());
}

#[test]
fn privileged_onward_ports_are_refused_both_ways() {
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 198,51,100,2,0,22\r\n").take();
    assert_eq!(refusals(&a), [Refusal::PrivilegedPort]);
    assert!(opens(&a).is_empty());
    h.client(b"PASV\r\n");
    let a = h
        .server(b"227 Entering Passive Mode (203,0,113,2,0,22)\r\n")
        .take();
    assert_eq!(refusals(&a), [Refusal::PrivilegedPort]);
    assert!(opens(&a).is_empty());
    assert!(to_client(&a).starts_with("425 "));
}

#[test]
fn port_with_an_octet_of_256_is_a_syntax_error_not_port_22() {
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 198,51,100,2,256,22\r\n").take();
    assert_eq!(refusals(&a), [Refusal::Syntax]);
    assert!(to_client(&a).starts_with("501 "));
    assert!(opens(&a).is_empty());
    assert_eq!(to_server(&a), "");
}

#[test]
fn port_text_in_a_filename_or_password_opens_nothing() {
    let mut h = Harness::new(params());
    let a = h
        .client(b"USER anonymous\r\nPASS PORT 203,0,113,66,0,21\r\n")
        .client(b"RETR PORT 203,0,113,66,0,21\r\nSTOR 227 Entering Passive Mode (203,0,113,66,0,21)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert_eq!(
        to_server(&a),
        "USER anonymous\r\nPASS PORT 203,0,113,66,0,21\r\nRETR PORT 203,0,113,66,0,21\r\n\
         STOR 227 Entering Passive Mode (203,0,113,66,0,21)\r\n"
    );
    assert_eq!(h.session.user(), Some("anonymous"));
}

#[test]
fn a_227_that_answers_no_pasv_opens_nothing() {
    let mut h = Harness::new(params());
    // Unsolicited.
    let a = h
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    // Inside a STAT reply.
    h.client(b"STAT\r\n");
    let stat = b"211-status\r\n227 Entering Passive Mode (203,0,113,2,200,10)\r\n211 End\r\n";
    let a = h.server(stat).take();
    assert!(opens(&a).is_empty());
    assert_eq!(to_client(&a).as_bytes(), stat);
    // As the answer to another command.
    h.client(b"NOOP\r\n");
    let a = h
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    // In an error text, as the non-final line of the reply to PASV.
    h.client(b"PASV\r\n");
    let a = h
        .server(b"500-227 Entering Passive Mode (203,0,113,2,200,10)\r\n500 no\r\n")
        .take();
    assert!(opens(&a).is_empty());
}

#[test]
fn server_text_that_looks_like_port_means_nothing() {
    let mut h = Harness::new(params());
    h.client(b"NOOP\r\n");
    let a = h.server(b"200 PORT 203,0,113,66,0,21\r\n").take();
    assert!(opens(&a).is_empty());
}

#[test]
fn completion_reply_waits_for_the_data_connection_to_finish() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n");
    let a = h.client(b"TYPE I\r\nRETR some file.bin\r\n").take();
    let id = ExpectationId(1);
    assert!(a.contains(&Action::Transfer {
        id,
        transfer: Transfer {
            kind: TransferKind::Download,
            path: "some file.bin".into(),
            transfer_type: crate::vocab::TransferType::Image,
            user: None,
        }
    }));
    h.server(b"200 binary\r\n").take();
    h.feed(Event::DataConnected { id });
    let a = h.server(b"150 Opening\r\n226 Transfer complete\r\n").take();
    assert_eq!(to_client(&a), "150 Opening\r\n");
    let a = h.client(b"NOOP\r\n").server(b"200 ok\r\n").take();
    assert_eq!(to_client(&a), "", "later replies queue behind the held 226");
    h.feed(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    });
    assert_eq!(to_client(&h.take()), "226 Transfer complete\r\n200 ok\r\n");
}

#[test]
fn a_transfer_path_is_kept_to_its_first_1024_characters() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n");
    // Multi-byte characters and an invalid byte, which is kept as U+FFFD.
    let mut line = b"RETR \xfe".to_vec();
    line.extend("\u{e9}".repeat(1200).as_bytes());
    line.extend(b"\r\n");
    let a = h.client(&line).take();
    let path = a.iter().find_map(|a| match a {
        Action::Transfer { transfer, .. } => Some(transfer.path.clone()),
        _ => None,
    });
    let expected = format!("\u{fffd}{}", "\u{e9}".repeat(1023));
    assert_eq!(path, Some(expected));
}

#[test]
fn completion_reply_is_released_once_the_transfer_direction_drained() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n")
        .client(b"RETR f\r\n");
    let id = ExpectationId(1);
    h.feed(Event::DataConnected { id });
    h.take();
    assert_eq!(
        to_client(&h.server(b"150 Opening\r\n226 Done\r\n").take()),
        "150 Opening\r\n"
    );
    // The client keeps its data socket open until it has the 226.
    h.feed(Event::DataDrained { id });
    assert_eq!(to_client(&h.take()), "226 Done\r\n");
    // A reply arriving after the drain is not held either.
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,11)\r\n")
        .client(b"RETR g\r\n");
    let id = ExpectationId(2);
    h.feed(Event::DataConnected { id });
    h.feed(Event::DataDrained { id });
    h.take();
    assert_eq!(
        to_client(&h.server(b"150 x\r\n226 y\r\n").take()),
        "150 x\r\n226 y\r\n"
    );
}

#[test]
fn kernel_forwarded_transfer_holds_no_reply_and_closes_its_hole_at_the_end() {
    for (announce, reply) in [
        (&b"PASV\r\n"[..], &b"227 (203,0,113,2,200,10)\r\n"[..]),
        (b"EPSV\r\n", b"229 (|||51210|)\r\n"),
        (b"PORT 198,51,100,2,200,10\r\n", b"200 ok\r\n"),
    ] {
        let mut h = Harness::new(params());
        h.kernel = true;
        h.client(announce).server(reply).client(b"RETR f\r\n");
        let id = ExpectationId(1);
        assert!(!h.take().contains(&Action::Cancel(id)));
        // No DataConnected or DataDrained ever comes: the kernel carries the bytes.
        let a = h.server(b"150 Opening\r\n226 Transfer complete\r\n").take();
        assert_eq!(to_client(&a), "150 Opening\r\n226 Transfer complete\r\n");
        assert!(
            a.contains(&Action::Finished(id)) && !a.contains(&Action::Cancel(id)),
            "the hole closes at the 226, its connection made"
        );
        // The next announcement is a new expectation, within the data limit.
        h.feed(Event::DataClosed {
            id,
            outcome: DataOutcome::Completed,
        });
        let a = h.client(b"EPSV\r\n").server(b"229 (|||51211|)\r\n").take();
        assert_eq!(opens(&a).len(), 1);
    }
}

#[test]
fn kernel_forwarded_expectation_is_replaced_by_the_next_announcement() {
    let mut h = Harness::new(params());
    h.kernel = true;
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n");
    h.take();
    let a = h.client(b"PASV\r\n").take();
    assert!(a.contains(&Action::Cancel(ExpectationId(1))));
}

#[test]
fn kernel_forwarded_transfer_refused_by_the_server_closes_its_hole() {
    let mut h = Harness::new(params());
    h.kernel = true;
    h.client(b"EPSV\r\n")
        .server(b"229 (|||51210|)\r\n")
        .client(b"RETR missing\r\n");
    h.take();
    let a = h.server(b"550 No such file\r\n").take();
    assert_eq!(to_client(&a), "550 No such file\r\n");
    assert!(a.contains(&Action::Cancel(ExpectationId(1))));
    assert!(!a.contains(&Action::Finished(ExpectationId(1))));
}

/// Only a completion reply says the connection was made; after an aborted transfer
/// the shell must ask the kernel.
#[test]
fn kernel_forwarded_transfer_aborted_by_the_server_is_cancelled_not_finished() {
    let mut h = Harness::new(params());
    h.kernel = true;
    h.client(b"EPSV\r\n")
        .server(b"229 (|||51210|)\r\n")
        .client(b"RETR big\r\n");
    h.take();
    let a = h
        .server(b"150 Opening\r\n426 Connection closed; transfer aborted\r\n")
        .take();
    assert!(a.contains(&Action::Cancel(ExpectationId(1))));
    assert!(!a.contains(&Action::Finished(ExpectationId(1))));
}

#[test]
fn completion_reply_after_the_data_closed_is_not_held() {
    let mut h = Harness::new(params());
    h.client(b"EPSV\r\n")
        .server(b"229 (|||51210|)\r\n")
        .client(b"LIST\r\n");
    h.take();
    let id = ExpectationId(1);
    h.feed(Event::DataConnected { id });
    h.feed(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    });
    let a = h.server(b"150 Here\r\n226 Done\r\n").take();
    assert_eq!(to_client(&a), "150 Here\r\n226 Done\r\n");
}

#[test]
fn abor_cancels_the_data_connection_and_releases_held_replies() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n")
        .client(b"RETR f\r\n");
    let id = ExpectationId(1);
    h.feed(Event::DataConnected { id });
    h.server(b"150 Opening\r\n226 done\r\n");
    h.take();
    let a = h
        .client(&[255, 244, 255, 242, b'A', b'B', b'O', b'R', b'\r', b'\n'])
        .take();
    assert!(a.contains(&Action::Cancel(id)));
    assert_eq!(to_client(&a), "226 done\r\n");
    let sent: Vec<u8> = a
        .iter()
        .filter_map(|x| match x {
            Action::ToServer(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        sent, b"\xff\xf4\xff\xf2ABOR\r\n",
        "Telnet signals reach the server"
    );
    let a = h.server(b"225 ABOR ok\r\n").take();
    assert_eq!(to_client(&a), "225 ABOR ok\r\n");
}

#[test]
fn error_reply_to_a_transfer_cancels_its_expectation() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n")
        .client(b"RETR nothere\r\n");
    h.take();
    let a = h.server(b"550 No such file\r\n").take();
    assert!(a.contains(&Action::Cancel(ExpectationId(1))));
    assert_eq!(to_client(&a), "550 No such file\r\n");
}

#[test]
fn a_second_pasv_replaces_the_unused_first_expectation() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n");
    let a = h.client(b"PASV\r\n").take();
    assert!(a.contains(&Action::Cancel(ExpectationId(1))));
}

#[test]
fn local_replies_keep_their_place_behind_pipelined_commands() {
    let mut h = Harness::new(params());
    let a = h
        .client(b"NOOP\r\nPORT 203,0,113,66,0,22\r\nPWD\r\n")
        .take();
    assert_eq!(to_client(&a), "");
    assert_eq!(to_server(&a), "NOOP\r\nPWD\r\n");
    let a = h.server(b"200 ok\r\n").take();
    assert_eq!(
        to_client(&a),
        "200 ok\r\n504 Data address must be the client's own address.\r\n"
    );
    assert_eq!(
        to_client(&h.server(b"257 \"/\"\r\n").take()),
        "257 \"/\"\r\n"
    );
}

#[test]
fn epsv_all_refuses_every_other_data_command() {
    let mut h = Harness::new(params());
    assert_eq!(to_server(&h.client(b"EPSV ALL\r\n").take()), "EPSV ALL\r\n");
    h.server(b"200 EPSV ALL ok\r\n").take();
    for cmd in [
        &b"PASV\r\n"[..],
        b"PORT 198,51,100,2,195,81\r\n",
        b"EPRT |1|198.51.100.2|50001|\r\n",
    ] {
        let a = h.client(cmd).take();
        assert_eq!(refusals(&a), [Refusal::EpsvAll]);
        assert!(to_client(&a).starts_with("501 "));
    }
    assert_eq!(to_server(&h.client(b"EPSV\r\n").take()), "EPSV\r\n");
}

#[test]
fn long_forms_and_auth_are_refused_locally() {
    let mut h = Harness::new(params());
    let a = h
        .client(b"LPSV\r\nLPRT 4,4,198,51,100,2,2,195,81\r\nAUTH TLS\r\n")
        .take();
    assert_eq!(
        refusals(&a),
        [
            Refusal::NotImplemented,
            Refusal::NotImplemented,
            Refusal::Auth
        ]
    );
    assert_eq!(to_server(&a), "");
    assert!(to_client(&a).starts_with("502 "));
}

#[test]
fn an_over_long_command_gets_500_and_the_session_goes_on() {
    let mut h = Harness::new(params());
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    let a = h.client(&long).take();
    assert_eq!(refusals(&a), [Refusal::LineTooLong]);
    assert_eq!(to_client(&a), "500 Command line too long.\r\n");
    assert_eq!(to_server(&a), "NOOP\r\n");
}

#[test]
fn an_over_long_server_line_closes_with_421() {
    let mut h = Harness::new(params());
    let a = h.server(&vec![b'2'; 5000]).server(b"\r\n").take();
    assert!(to_client(&a).starts_with("421 "));
    assert_eq!(
        a.last(),
        Some(&Action::Close(CloseReason::ServerReplyTooLong))
    );
}

#[test]
fn a_flood_of_replies_held_behind_a_transfer_closes_the_session() {
    let mut h = Harness::new(params());
    h.client(b"PASV\r\n")
        .server(b"227 (203,0,113,2,200,10)\r\n")
        .client(b"RETR f\r\n");
    h.feed(Event::DataConnected {
        id: ExpectationId(1),
    });
    h.server(b"150 x\r\n226 held until the data is delivered\r\n");
    h.take();
    let flood = b"200 unsolicited reply that must wait behind the 226\r\n".repeat(30_000);
    let a = h.server(&flood).take();
    assert_eq!(a.last(), Some(&Action::Close(CloseReason::BufferLimit)));
    assert!(to_client(&a).ends_with("421 Service not available: too much output held.\r\n"));
    assert!(h.session.buffered() < 2 * MAX_HELD_BYTES);
}

#[test]
fn user_names_are_reported_once_and_bounded() {
    let mut h = Harness::new(params());
    let long = format!("USER {}\r\n", "u".repeat(200));
    let a = h.client(long.as_bytes()).take();
    let users: Vec<&Action> = a.iter().filter(|x| matches!(x, Action::User(_))).collect();
    assert_eq!(users, [&Action::User("u".repeat(MAX_USER))]);
    assert!(
        !h.client(b"NOOP\r\n")
            .take()
            .iter()
            .any(|x| matches!(x, Action::User(_)))
    );
}

#[test]
fn command_and_login_rules_answer_locally_and_nothing_reaches_the_server() {
    let rules = crate::rules::parse_str(
        "t.rules",
        "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n\
         block log cmd { DELE, SITE }\nblock user { root, adm* }\npass\n",
    )
    .unwrap();
    let mut h = Harness::new(params());
    h.session.set_policy(std::sync::Arc::new(rules));
    let a = h.client(b"USER root\r\n").take();
    assert_eq!(to_client(&a), "530 Login refused by policy.\r\n");
    assert_eq!(to_server(&a), "");
    assert_eq!(refusals(&a), [Refusal::Policy]);
    let a = h
        .client(b"USER alice\r\nDELE secret\r\nsite chmod 777 x\r\nRETR ok\r\n")
        .take();
    assert_eq!(to_server(&a), "USER alice\r\nRETR ok\r\n");
    assert_eq!(refusals(&a), [Refusal::Policy, Refusal::Policy]);
    let ruled: Vec<String> = a
        .iter()
        .filter_map(|x| match x {
            Action::Rule { decision, what } => Some(format!("{what} {}", decision.source())),
            _ => None,
        })
        .collect();
    assert_eq!(ruled, ["DELE t.rules:2", "SITE CHMOD t.rules:2"]);
    // The local refusals wait behind the reply the server owes for USER alice.
    assert_eq!(to_client(&a), "");
    let a = h.server(b"331 password\r\n").take();
    assert_eq!(
        to_client(&a),
        "331 password\r\n550 Command refused by policy.\r\n550 Command refused by policy.\r\n"
    );
}

#[test]
fn no_data_port_gives_425_in_place() {
    let mut s = Session::connected(params(), Arc::default(), t0());
    let mut framer = LineFramer::new(4096);
    let mut frames = Vec::new();
    framer.push(b"220 hi\r\n227 (203,0,113,2,200,10)\r\n", &mut frames);
    s.handle(t0(), Event::Server(frames.remove(0)));
    s.handle(
        t0(),
        Event::Client(Frame::Line(Line {
            raw: b"PASV\r\n".to_vec(),
            text: b"PASV".to_vec(),
            signals: Default::default(),
            defect: None,
        })),
    );
    let a = s.handle(t0(), Event::Server(frames.remove(0)));
    let id = opens(&a)[0].id;
    let a = s.handle(t0(), Event::ExpectationFailed { id });
    assert_eq!(
        to_client(&a),
        "425 Can't open data connection: no data port available.\r\n"
    );
    // Active: nothing goes to the server and the 425 keeps its place.
    let cmd = |t: &[u8]| {
        Event::Client(Frame::Line(Line {
            raw: [t, b"\r\n"].concat(),
            text: t.to_vec(),
            signals: Default::default(),
            defect: None,
        }))
    };
    s.handle(t0(), cmd(b"NOOP"));
    let a = s.handle(t0(), cmd(b"PORT 198,51,100,2,195,81"));
    let id = opens(&a)[0].id;
    let a = s.handle(t0(), Event::ExpectationFailed { id });
    assert_eq!(to_server(&a), "");
    assert_eq!(to_client(&a), "");
    let mut frames = Vec::new();
    framer.push(b"200 noop\r\n", &mut frames);
    let a = s.handle(t0(), Event::Server(frames.remove(0)));
    assert_eq!(
        to_client(&a),
        "200 noop\r\n425 Can't open data connection: no data port available.\r\n"
    );
}

/// A scripted exchange: (from client?, bytes).
fn script() -> Vec<(bool, &'static [u8])> {
    vec![
        (true, b"USER anonymous\r\nPASS x\r\n"),
        (false, b"331 pw\r\n230 ok\r\n"),
        (true, b"PASV\r\n"),
        (
            false,
            b"227 Entering Passive Mode (203,0,113,2,200,10).\r\n",
        ),
        (true, b"RETR a\r\nPORT 198,51,100,2,195,81\r\n"),
        (false, b"150 ok\r\n226-done\r\n226 done\r\n200 port ok\r\n"),
        (true, b"EPSV\r\nLIST\r\n\xff\xf4\xff\xf2ABOR\r\n"),
        (
            false,
            b"229 (|||51211|)\r\n150 x\r\n426 aborted\r\n226 abor ok\r\n",
        ),
    ]
}

fn run_split(chunk: usize) -> (String, String, Vec<ExpectationRequest>) {
    let mut h = Harness::new(params());
    for (from_client, bytes) in script() {
        for piece in bytes.chunks(chunk) {
            if from_client {
                h.client(piece);
            } else {
                h.server(piece);
            }
        }
    }
    let a = h.take();
    (to_client(&a), to_server(&a), opens(&a))
}

#[test]
fn one_byte_per_write_behaves_exactly_like_whole_lines() {
    let whole = run_split(usize::MAX);
    for chunk in [1, 2, 3, 7] {
        assert_eq!(run_split(chunk), whole, "chunk size {chunk}");
    }
    assert_eq!(whole.2.len(), 3);
}

proptest! {
    /// No byte sequence from either peer makes the engine open an expectation toward
    /// any address but the client's or the server's control address.
    #[test]
    fn onward_targets_are_only_ever_the_control_addresses(
        steps in proptest::collection::vec(
            (any::<bool>(), prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                Just(b"PASV\r\n".to_vec()),
                Just(b"EPSV\r\n".to_vec()),
                Just(b"PORT 198,51,100,2,4,1\r\n".to_vec()),
                Just(b"PORT 192,0,2,9,4,1\r\n".to_vec()),
                Just(b"227 (192,0,2,9,4,1)\r\n".to_vec()),
                Just(b"229 (|||2000|)\r\n".to_vec()),
                Just(b"RETR x\r\n".to_vec()),
                Just(b"226 ok\r\n".to_vec()),
            ]),
            0..40,
        ),
        server_mode in prop_oneof![Just(None), Just(Some(DataMode::Active)), Just(Some(DataMode::Passive))],
    ) {
        let mut h = Harness::new(Params { server_mode, ..params() });
        for (from_client, bytes) in steps {
            if from_client { h.client(&bytes); } else { h.server(&bytes); }
        }
        let client: IpAddr = "198.51.100.2".parse().unwrap();
        let server: IpAddr = "203.0.113.2".parse().unwrap();
        for open in opens(&h.take()) {
            let ok = match (open.mode, open.conversion) {
                (DataMode::Passive, None) => open.onward.ip() == server && open.expected_peer == client,
                (DataMode::Active, None) => open.onward.ip() == client && open.expected_peer == server,
                (DataMode::Passive, Some(Conversion::AcceptServer { expected_peer, .. })) => {
                    expected_peer == server && open.expected_peer == client
                }
                (DataMode::Active, Some(Conversion::DialServer { server: to, .. })) => {
                    to.ip() == server && to.port() >= 1024 && open.onward.ip() == client
                }
                _ => false,
            };
            prop_assert!(ok, "{open:?}");
            if open.conversion.is_none() || open.mode == DataMode::Active {
                prop_assert!(open.onward.port() >= 1024);
            }
        }
    }
}

fn with_rules(rules: &str) -> Harness {
    let text = format!("listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n{rules}");
    let rules = crate::rules::parse_str("t.rules", &text).unwrap();
    let mut h = Harness::new(params());
    h.session.set_policy(std::sync::Arc::new(rules));
    h
}

#[test]
fn a_data_rule_blocking_a_direction_refuses_only_that_verb_and_closes_its_connection() {
    let mut h = with_rules("block return-code 553 \"No uploads here.\" data upload\n");
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .take();
    assert_eq!(
        opens(&a).len(),
        1,
        "the connection could still be a download"
    );
    let id = opens(&a)[0].id;
    let a = h.client(b"STOR x\r\n").take();
    assert_eq!(to_server(&a), "", "the upload never reaches the server");
    assert_eq!(to_client(&a), "553 No uploads here.\r\n");
    assert!(a.contains(&Action::Cancel(id)));
    assert_eq!(refusals(&a), [Refusal::Policy]);
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,11)\r\n")
        .client(b"RETR x\r\n")
        .take();
    assert_eq!(to_server(&a), "PASV\r\nRETR x\r\n");
    assert!(refusals(&a).is_empty());
}

#[test]
fn a_data_rule_blocking_every_direction_refuses_at_the_announcement() {
    let mut h = with_rules("block data active\nblock data passive ports 1024-2000\n");
    let a = h.client(b"PORT 198,51,100,2,200,10\r\n").take();
    assert!(opens(&a).is_empty());
    assert_eq!(to_server(&a), "");
    assert_eq!(
        to_client(&a),
        "425 Can't open data connection: refused by policy.\r\n"
    );
    // A hostile server announcing a blocked port opens nothing either.
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,4,232)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert_eq!(
        to_client(&a),
        "425 Can't open data connection: refused by policy.\r\n"
    );
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .take();
    assert_eq!(opens(&a).len(), 1);
}

#[test]
fn data_connections_beyond_the_limit_get_425() {
    let mut h = with_rules("set max-data-connections 1\n");
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10)\r\n")
        .client(b"RETR big\r\n")
        .take();
    let id = opens(&a)[0].id;
    h.feed(Event::DataConnected { id });
    // While the first transfers, a second announcement is over the limit.
    let a = h
        .server(b"150 Opening\r\n226 Done\r\n")
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,11)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert_eq!(refusals(&a), [Refusal::DataLimit]);
    assert_eq!(
        to_client(&a),
        "150 Opening\r\n",
        "the rest waits for the data"
    );
    h.feed(Event::DataClosed {
        id,
        outcome: DataOutcome::Completed,
    });
    assert_eq!(
        to_client(&h.take()),
        "226 Done\r\n425 Can't open data connection: too many data connections.\r\n"
    );
    let a = h
        .client(b"PASV\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,200,12)\r\n")
        .take();
    assert_eq!(opens(&a).len(), 1, "closing the first frees its place");
}

#[test]
fn a_site_subcommand_rule_leaves_other_site_commands_alone() {
    let mut h = with_rules("block cmd SITE CHMOD\n");
    let a = h.client(b"SITE CHMOD 777 x\r\nSITE HELP\r\n").take();
    assert_eq!(to_server(&a), "SITE HELP\r\n");
    assert_eq!(refusals(&a), [Refusal::Policy]);
}

fn converting(mode: DataMode) -> Harness {
    Harness::new(Params {
        server_mode: Some(mode),
        ..params()
    })
}

#[test]
fn client_active_to_server_passive_dials_both_legs_only_at_the_transfer_verb() {
    let mut h = converting(DataMode::Passive);
    let a = h.client(b"PORT 198,51,100,2,200,10\r\n").take();
    assert_eq!(to_server(&a), "PASV\r\n");
    assert!(opens(&a).is_empty());
    // The server's 227 may name any host: only its control address is dialed.
    let a = h
        .server(b"227 Entering Passive Mode (192,0,2,66,150,20)\r\n")
        .take();
    assert_eq!(to_client(&a), "200 PORT command successful.\r\n");
    assert!(opens(&a).is_empty(), "nothing is dialed before a transfer");
    let a = h.client(b"RETR f\r\n").take();
    let open = &opens(&a)[0];
    assert_eq!(open.mode, DataMode::Active);
    assert_eq!(open.onward, "198.51.100.2:51210".parse().unwrap());
    assert_eq!(
        open.conversion,
        Some(Conversion::DialServer {
            server: "203.0.113.2:38420".parse().unwrap(),
            from: "203.0.113.1".parse().unwrap(),
        })
    );
    assert_eq!(to_server(&a), "RETR f\r\n");
    // The transfer record lands on the opened expectation.
    let open_at = a.iter().position(|x| matches!(x, Action::Open(_)));
    let transfer_at = a.iter().position(|x| matches!(x, Action::Transfer { .. }));
    assert!(open_at < transfer_at, "{a:?}");
}

#[test]
fn client_active_to_server_passive_refusals() {
    let mut h = converting(DataMode::Passive);
    let a = h
        .client(b"EPRT |1|198.51.100.2|51000|\r\n")
        .server(b"502 no passive here\r\n")
        .take();
    assert_eq!(
        to_client(&a),
        "425 Can't open data connection: the server refused passive mode.\r\n"
    );
    let a = h
        .client(b"PORT 198,51,100,2,200,10\r\n")
        .server(b"227 Entering Passive Mode (203,0,113,2,0,25)\r\n")
        .take();
    assert_eq!(refusals(&a), [Refusal::PrivilegedPort]);
    assert!(to_client(&a).starts_with("425 "));
    let a = h.client(b"RETR f\r\n").take();
    assert!(opens(&a).is_empty());
    // The bounce check still applies to the client's own PORT.
    let a = h.client(b"PORT 192,0,2,66,200,10\r\n").take();
    assert_eq!(refusals(&a), [Refusal::Bounce]);
    assert_eq!(to_server(&a), "");
}

#[test]
fn client_passive_to_server_active_announces_after_the_server_agreed() {
    let mut h = converting(DataMode::Active);
    let a = h.client(b"EPSV\r\n").take();
    let open = &opens(&a)[0];
    assert_eq!(open.mode, DataMode::Passive);
    assert_eq!(
        open.expected_peer,
        "198.51.100.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        open.conversion,
        Some(Conversion::AcceptServer {
            listen_ip: "203.0.113.1".parse().unwrap(),
            expected_peer: "203.0.113.2".parse().unwrap(),
        })
    );
    // The harness bound the server's port at 41000 = 160 * 256 + 40.
    assert_eq!(to_server(&a), "PORT 203,0,113,1,160,40\r\n");
    assert_eq!(
        to_client(&a),
        "",
        "the client waits for the server's answer"
    );
    let a = h.server(b"200 PORT ok\r\n").take();
    assert_eq!(
        to_client(&a),
        "229 Entering Extended Passive Mode (|||40000|)\r\n"
    );
    let a = h.client(b"RETR f\r\n").take();
    assert_eq!(to_server(&a), "RETR f\r\n");
    // A server that refuses active mode: the client gets 425, the ports are freed.
    let a = h
        .server(b"226 done\r\n")
        .client(b"PASV\r\n")
        .server(b"500 PORT refused\r\n")
        .take();
    let id = opens(&a)[0].id;
    assert!(a.contains(&Action::Cancel(id)));
    assert!(
        to_client(&a)
            .ends_with("425 Can't open data connection: the server refused active mode.\r\n")
    );
}

#[test]
fn epsv_all_is_kept_by_the_proxy_when_the_server_leg_is_active() {
    let mut h = converting(DataMode::Active);
    let a = h.client(b"EPSV ALL\r\n").take();
    assert_eq!(to_server(&a), "");
    assert_eq!(to_client(&a), "200 EPSV ALL ok.\r\n");
    let a = h.client(b"PASV\r\n").take();
    assert_eq!(refusals(&a), [Refusal::EpsvAll]);
    let a = h.client(b"EPSV\r\n").take();
    assert!(to_server(&a).starts_with("PORT "), "{}", to_server(&a));
}

// ----- framing and verb parity (issue 12) ------------------------------------------

const LISTEN: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n";

#[test]
fn telnet_bytes_before_an_lf_cannot_hide_a_port_behind_a_noop() {
    let mut h = Harness::new(params());
    let a = h.client(b"NOOP\xff\nPORT 127,0,0,2,4,1\r\n").take();
    // Both lines are refused locally: the first is ambiguous, the second a bounce.
    assert_eq!(to_server(&a), "");
    assert!(opens(&a).is_empty());
    assert_eq!(
        refusals(&a),
        [
            Refusal::Malformed(Malformed::Line(codec::Defect::Telnet)),
            Refusal::Bounce
        ]
    );
    assert!(to_client(&a).starts_with("500 "));
}

#[test]
fn every_ambiguous_line_is_refused_with_500_and_never_forwarded() {
    for line in [
        &b"NOOP\n"[..],
        b"DELE a\0b\r\n",
        b"NOOP\r\r\n",
        b"SITE\tCHMOD 777 x\r\n",
        b"\xff\xfb\x01NOOP\r\n",
        b"\xff\xf4\xff\xf2STAT\r\n",
        b"STOR a\xff\xffb\r\n",
        b"PASV/1\r\n",
        b" NOOP\r\n",
        b"\r\n",
        b"SITE  CHMOD 777 x\r\n",
        b"1NOOP\r\n",
    ] {
        let mut h = Harness::new(params());
        let a = h.client(line).take();
        assert_eq!(to_server(&a), "", "{line:?} was forwarded");
        assert!(
            matches!(refusals(&a)[..], [Refusal::Malformed(_)]),
            "{line:?}: {:?}",
            refusals(&a)
        );
        assert!(to_client(&a).starts_with("500 "), "{line:?}");
    }
}

#[test]
fn x_verbs_are_matched_by_rules_under_their_standard_name() {
    let rules = crate::rules::parse_str("t.rules", &format!("{LISTEN}block cmd {{ MKD }}\npass\n"))
        .unwrap();
    let mut h = Harness::new(params());
    h.session.set_policy(Arc::new(rules));
    let a = h.client(b"XMKD new\r\n").take();
    assert_eq!(to_server(&a), "");
    assert_eq!(refusals(&a), [Refusal::Policy]);
    assert!(a.contains(&Action::Command("MKD".into())));
}

#[test]
fn unknown_verbs_are_blocked_by_default_and_passed_when_set() {
    let mut h = Harness::new(params());
    let a = h.client(b"ESTA\r\n").take();
    assert_eq!(to_server(&a), "");
    assert_eq!(refusals(&a), [Refusal::UnknownCommand]);
    assert!(a.contains(&Action::UnknownVerb {
        class: "letters",
        passed: false
    }));
    assert_eq!(to_client(&a), "500 Unknown command.\r\n");

    let rules = crate::rules::parse_str(
        "t.rules",
        &format!("{LISTEN}set unknown-commands pass\npass\n"),
    )
    .unwrap();
    let mut h = Harness::new(params());
    h.session.set_policy(Arc::new(rules));
    let a = h.client(b"XFOO1 x\r\n").take();
    assert_eq!(to_server(&a), "XFOO1 x\r\n");
    assert!(a.contains(&Action::UnknownVerb {
        class: "symbols",
        passed: true
    }));
}

#[test]
fn spsv_is_not_implemented() {
    let mut h = Harness::new(params());
    let a = h.client(b"SPSV\r\n").take();
    assert_eq!(to_server(&a), "");
    assert_eq!(refusals(&a), [Refusal::NotImplemented]);
}

#[test]
fn a_passive_reply_to_a_command_ftpgate_did_not_rewrite_never_reaches_the_client() {
    let rules = crate::rules::parse_str(
        "t.rules",
        &format!("{LISTEN}set unknown-commands pass\npass\n"),
    )
    .unwrap();
    let mut h = Harness::new(params());
    h.session.set_policy(Arc::new(rules));
    h.client(b"XPSV\r\n").take();
    let a = h
        .server(b"227 Entering Passive Mode (203,0,113,2,200,10).\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert_eq!(refusals(&a), [Refusal::SpoofedReply]);
    let text = to_client(&a);
    assert!(text.starts_with("425 "), "{text}");
    assert!(!text.contains("200,10"), "{text}");
    // A 229 answering PASV is no answer to it either.
    h.client(b"PASV\r\n").take();
    let a = h
        .server(b"229 Entering Extended Passive Mode (|||51210|)\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert!(!to_client(&a).contains("51210"));
    // Nor is a 227 greeting.
    let mut s = Session::connected(params(), Arc::default(), t0());
    let mut frames = Vec::new();
    LineFramer::new(4096).push(b"227 (203,0,113,2,200,10)\r\n", &mut frames);
    let a = s.handle(t0(), Event::Server(frames.remove(0)));
    assert!(to_client(&a).starts_with("425 "));
}

#[test]
fn port_naming_the_proxys_own_listener_is_refused() {
    // A client on the proxy host: its control address is the proxy's.
    let mut p = params();
    p.client = "127.0.0.1:50000".parse().unwrap();
    let mut h = Harness::new(p);
    let a = h.client(b"PORT 127,0,0,1,8,73\r\n").take();
    assert_eq!(to_server(&a), "");
    assert!(opens(&a).is_empty());
    assert_eq!(refusals(&a), [Refusal::OwnSocket]);
    assert!(to_client(&a).starts_with("504 "));
    // The same port on the client's own (remote) address is an ordinary data port.
    let mut h = Harness::new(params());
    let a = h.client(b"PORT 198,51,100,2,8,73\r\n").take();
    assert_eq!(opens(&a).len(), 1);
}

#[test]
fn a_server_announcing_the_proxys_admin_port_on_the_proxy_host_is_refused() {
    let mut p = params();
    p.server = "127.0.0.1:21".parse().unwrap();
    p.server_side = "127.0.0.1:61000".parse().unwrap();
    let mut h = Harness::new(p);
    h.client(b"PASV\r\n").take();
    // 9121 = 35 * 256 + 161
    let a = h
        .server(b"227 Entering Passive Mode (127,0,0,1,35,161).\r\n")
        .take();
    assert!(opens(&a).is_empty());
    assert_eq!(refusals(&a), [Refusal::OwnSocket]);
    assert!(to_client(&a).starts_with("425 "));
}

#[test]
fn substitute_dials_the_client_itself_whatever_address_port_names() {
    let mut h = with_rules("set active-address substitute\npass\n");
    let substituted = |a: &[Action]| -> Vec<crate::vocab::AddressClass> {
        a.iter()
            .filter_map(|a| match a {
                Action::ActiveSubstituted { class } => Some(*class),
                _ => None,
            })
            .collect()
    };
    // A client behind NAT names its inside address.
    let a = h.client(b"PORT 10,0,0,5,195,80\r\n").take();
    assert_eq!(refusals(&a), []);
    assert_eq!(substituted(&a), [crate::vocab::AddressClass::Private]);
    let onward: Vec<SocketAddr> = opens(&a).iter().map(|r| r.onward).collect();
    assert_eq!(onward, ["198.51.100.2:50000".parse().unwrap()]);
    // A third host is never dialed: the client is, and it is counted as other.
    h.server(b"200 PORT ok\r\n").take();
    let a = h.client(b"EPRT |1|203.0.113.66|50001|\r\n").take();
    assert_eq!(substituted(&a), [crate::vocab::AddressClass::Other]);
    let onward: Vec<SocketAddr> = opens(&a).iter().map(|r| r.onward).collect();
    assert_eq!(onward, ["198.51.100.2:50001".parse().unwrap()]);
    // The client's own address is no substitution, and the port checks still hold.
    h.server(b"200 EPRT ok\r\n").take();
    let a = h.client(b"PORT 198,51,100,2,195,82\r\n").take();
    assert_eq!(substituted(&a), []);
    h.server(b"200 PORT ok\r\n").take();
    let a = h.client(b"PORT 10,0,0,5,0,21\r\n").take();
    assert_eq!(refusals(&a), [Refusal::PrivilegedPort]);
}
