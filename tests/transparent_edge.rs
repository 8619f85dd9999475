//! ftpgate as a transparent proxy on an edge router, proven across real network
//! namespaces: `deploy/lab.sh` builds client — edge — server, the edge loads the shipped
//! nftables ruleset (`deploy/nftables/ftpgate-redirect.nft`, or `ftpgate-tproxy.nft`
//! with `deploy/tproxy-routing.sh`) and runs ftpgate with the matching shipped rule
//! file (`rules/edge-redirect.rules`, `rules/edge-tproxy.rules`); vsftpd serves on the
//! server; curl, lftp and Python's ftplib run on the client, which dials the server
//! and changes nothing.

mod support;

use std::net::SocketAddr;

use support::lab::{Flavour, KernelOf, Lab, LabServer, path_str};
use support::*;

const SERVER_V4: &str = "203.0.113.2:21";
const SERVER_V6: &str = "[2001:db8:2::2]:21";
const FILES: [(&str, usize); 2] = [("one.bin", 1 << 20), ("ten.bin", 10 << 20)];

struct Edge {
    lab: Lab,
    server: LabServer,
    gate: Gate,
    local: tempfile::TempDir,
}

fn edge(flavour: Flavour, extra_rules: &str) -> Edge {
    let lab = Lab::up(flavour);
    let server = LabServer::start(&lab);
    for (i, (name, size)) in FILES.iter().enumerate() {
        make_file(&server.path(name), *size, 100 + i as u64);
    }
    let shipped = flavour.rules();
    let gate = Gate::start_in(
        Some(&lab.ns("edge")),
        &format!("{extra_rules}\n{shipped}"),
        &[],
    );
    Edge {
        lab,
        server,
        gate,
        local: tempfile::tempdir().expect("tempdir"),
    }
}

fn server_addr(v6: bool) -> SocketAddr {
    (if v6 { SERVER_V6 } else { SERVER_V4 })
        .parse()
        .expect("addr")
}

/// Downloads and uploads every file with `get`/`put` in each mode; returns the number
/// of data connections used.
fn transfers(
    e: &Edge,
    client: &str,
    cases: &[(bool, Mode)],
    get: impl Fn(SocketAddr, Mode, &str, &std::path::Path),
    put: impl Fn(SocketAddr, Mode, &std::path::Path, &str),
) -> u32 {
    let mut n = 0;
    for &(v6, mode) in cases {
        let addr = server_addr(v6);
        let family = if v6 { "IPv6" } else { "IPv4" };
        for (name, _) in FILES {
            let down = e
                .local
                .path()
                .join(format!("{client}-{family}-{}-{name}", mode.verb()));
            get(addr, mode, &format!("pub/{name}"), &down);
            assert_same_file(&down, &e.server.path(name));
            let remote = format!("up-{client}-{family}-{}-{name}", mode.verb());
            put(addr, mode, &down, &format!("pub/{remote}"));
            assert_same_file(&e.server.path(&remote), &down);
            n += 2;
        }
        eprintln!(
            "{client} {} over {family} through the REDIRECT edge: ok",
            mode.verb()
        );
    }
    // Every transfer was a data connection ftpgate opened, not one the edge forwarded.
    eventually("the data connections to close", || {
        e.gate.metric("ftpgate_expectations_active") == 0.0
    });
    assert_eq!(
        e.gate
            .metric("ftpgate_expectations_total{outcome=\"completed\"}"),
        f64::from(n)
    );
    n
}

const V4_ALL: [(bool, Mode); 4] = [
    (false, Mode::Pasv),
    (false, Mode::Epsv),
    (false, Mode::Port),
    (false, Mode::Eprt),
];
const V6_ALL: [(bool, Mode); 2] = [(true, Mode::Epsv), (true, Mode::Eprt)];

fn curl_in_every_mode(flavour: Flavour) -> Option<Edge> {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let e = edge(flavour, "");
    let ns = e.lab.ns("client");
    let cases: Vec<_> = V4_ALL.iter().chain(&V6_ALL).copied().collect();
    let n = transfers(
        &e,
        "curl",
        &cases,
        |addr, mode, remote, local| {
            run_ok(
                curl_in(Some(&ns), mode)
                    .arg(url(addr, remote))
                    .arg("-o")
                    .arg(local),
            );
        },
        |addr, mode, local, remote| {
            run_ok(
                curl_in(Some(&ns), mode)
                    .arg("-T")
                    .arg(local)
                    .arg(url(addr, remote)),
            );
        },
    );
    assert_eq!(n, 24);
    let listing = run_ok(curl_in(Some(&ns), Mode::Epsv).arg(url(server_addr(false), "pub/")));
    assert!(String::from_utf8_lossy(&listing.stdout).contains("ten.bin"));
    // All of it with the capabilities left after binding: CAP_NET_ADMIN (bit 12), for
    // the ruleset's elements (and TPROXY's transparent data sockets), no other.
    let status = e.gate.proc_status();
    let kept = "0000000000001000";
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(status.contains(&format!("{set}:\t{kept}\n")), "{status}");
    }
    assert!(status.contains("NoNewPrivs:\t1\n"), "{status}");
    Some(e)
}

fn lftp_in_its_modes(flavour: Flavour) {
    require!("vsftpd", "lftp", "nft", "ip", "python3");
    let e = edge(flavour, "");
    let ns = e.lab.ns("client");
    // lftp speaks PORT for active mode over IPv4 and EPRT over IPv6.
    let cases = [
        (false, Mode::Pasv),
        (false, Mode::Epsv),
        (false, Mode::Port),
        (true, Mode::Epsv),
        (true, Mode::Eprt),
    ];
    transfers(
        &e,
        "lftp",
        &cases,
        |addr, mode, remote, local| {
            lftp_in(
                Some(&ns),
                addr,
                mode,
                &format!("get {remote} -o {}", path_str(local)),
            );
        },
        |addr, mode, local, remote| {
            lftp_in(
                Some(&ns),
                addr,
                mode,
                &format!("put {} -o {remote}", path_str(local)),
            );
        },
    );
}

fn ftplib_in_every_mode(flavour: Flavour) {
    require!("vsftpd", "python3", "nft", "ip");
    let e = edge(flavour, "");
    let ns = e.lab.ns("client");
    let cases: Vec<_> = V4_ALL.iter().chain(&V6_ALL).copied().collect();
    transfers(
        &e,
        "ftplib",
        &cases,
        |addr, mode, remote, local| {
            ftplib_in(Some(&ns), addr, mode, "get", remote, Some(local));
        },
        |addr, mode, local, remote| {
            ftplib_in(Some(&ns), addr, mode, "put", remote, Some(local));
        },
    );
}

fn port_toward_a_third_host(flavour: Flavour) {
    require!("vsftpd", "python3", "nft", "ip");
    let e = edge(flavour, "");
    let probe = e.lab.probe("server", "203.0.113.66", 4000);
    let out = e
        .lab
        .script("client", &["bounce", "203.0.113.2", "203.0.113.66", "4000"]);
    assert!(
        out.contains("PORT: 504") && out.contains("EPRT: 504"),
        "{out}"
    );
    assert!(
        out.contains("LIST: 425"),
        "the server never got the PORT: {out}"
    );
    assert_eq!(probe.report(), "nothing");
    assert!(!e.server.log().contains("203,0,113,66"));
    assert_eq!(
        e.gate
            .metric("ftpgate_expectations_refused_total{reason=\"bounce\"}"),
        2.0
    );
}

fn another_client_racing_for_the_data_port(flavour: Flavour) {
    require!("vsftpd", "python3", "nft", "ip");
    let e = edge(flavour, "");
    let out = e.lab.script(
        "client",
        &["steal", "203.0.113.2", "pub/one.bin", "198.51.100.3"],
    );
    assert!(out.contains("thief: 0"), "{out}");
    assert!(out.contains("client: 1048576 226"), "{out}");
    // The ruleset hands over only the announced (client, server, port): the thief's
    // connection is not ftpgate's, and goes where it was addressed (nothing listens
    // there on the server), and the kernel path's hole is keyed on the client too.
    assert_eq!(
        e.gate
            .metric("ftpgate_expectations_refused_total{reason=\"wrong-peer\"}"),
        0.0
    );
    assert!(!e.server.log().contains("198.51.100.3"));
}

fn session_rules_on_the_dialled_server(flavour: Flavour) {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let e = edge(flavour, "block log to 203.0.113.66");
    let ns = e.lab.ns("client");
    // curl reports any 421 as exit code 28 ("timeout"); -v shows the reply itself.
    let refused = run(curl_in(Some(&ns), Mode::Epsv).args(["-v", "ftp://203.0.113.66/pub/"]));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("< 421 Service not available: refused by policy."),
        "{stderr}"
    );
    run_ok(curl_in(Some(&ns), Mode::Epsv).arg("ftp://203.0.113.2/pub/"));
    assert!(
        !e.server.log().contains("203.0.113.66"),
        "the blocked session reached the server"
    );
    assert_eq!(
        e.gate.metric("ftpgate_sessions_total{outcome=\"refused\"}"),
        1.0
    );
}

fn nothing_crosses_without_ftpgate(flavour: Flavour) {
    require!("vsftpd", "curl", "python3", "nft", "ip");
    let lab = Lab::up(flavour);
    let _server = LabServer::start(&lab);
    let ns = lab.ns("client");
    // Control: handed to a proxy that is not there, so it fails closed.
    let out = run(curl_in(Some(&ns), Mode::Epsv)
        .args(["--connect-timeout", "5"])
        .arg("ftp://203.0.113.2/"));
    assert!(!out.status.success(), "curl reached a server: {out:?}");
    let ruleset = run_ok(lab.on("edge", "nft").args(["list", "ruleset"]));
    assert!(
        !String::from_utf8_lossy(&ruleset.stdout).contains("helper"),
        "no ct helper is assigned"
    );
}

/// The edge intercepts FTP to any server (`servers_v4 = { 0.0.0.0/0 }`, as an outbound
/// edge is set up) and leaves every other connection alone: a client's connections to
/// the server's web port and to ports in ftpgate's data range arrive from the client's
/// own address, neither redirected nor dropped, while FTP through ftpgate works and a
/// bounce gets nothing.
fn other_traffic_crosses_untouched(flavour: Flavour) {
    require!("vsftpd", "curl", "python3", "nft", "ip");
    let any_server = |text: String| {
        text.replace(
            "define servers_v4 = { 203.0.113.0/24 }",
            "define servers_v4 = { 0.0.0.0/0 }",
        )
        .replace(
            "define servers_v6 = { 2001:db8:2::/64 }",
            "define servers_v6 = { ::/0 }",
        )
    };
    let lab = Lab::up_with(flavour, any_server);
    let server = LabServer::start(&lab);
    make_file(&server.path("one.bin"), 1 << 20, 7);
    let gate = Gate::start_in(Some(&lab.ns("edge")), &flavour.rules(), &[]);
    let ns = lab.ns("client");
    lab.assert_untouched(&[
        ("203.0.113.2", 80),
        ("203.0.113.2", 40500),
        ("203.0.113.66", 40000),
        ("2001:db8:2::2", 40999),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt] {
        let down = dir.path().join(format!("{}.bin", mode.verb()));
        let url = url(server_addr(false), "pub/one.bin");
        run_ok(curl_in(Some(&ns), mode).arg(url).arg("-o").arg(&down));
        assert_same_file(&down, &server.path("one.bin"));
    }
    lab.assert_bounce_refused();
    assert!(gate.metric("ftpgate_expectations_total{outcome=\"completed\"}") >= 4.0);
}

#[test]
fn other_traffic_crosses_the_redirect_edge_untouched() {
    other_traffic_crosses_untouched(Flavour::Redirect);
    other_traffic_crosses_untouched(Flavour::Kernel(KernelOf::Redirect));
}

#[test]
fn other_traffic_crosses_the_tproxy_edge_untouched() {
    other_traffic_crosses_untouched(Flavour::Tproxy);
    other_traffic_crosses_untouched(Flavour::Kernel(KernelOf::Tproxy));
}

/// With `preserve-source` the server sees the client's address and the client sees
/// active-mode data come from the server's address, as with a kernel ALG.
fn each_end_sees_its_real_peer(v6: bool) {
    require!("vsftpd", "python3", "nft", "ip");
    let e = edge(Flavour::TproxyPreserveSource, "");
    let (server, client) = if v6 {
        ("2001:db8:2::2", "2001:db8:1::2")
    } else {
        ("203.0.113.2", "198.51.100.2")
    };
    let out = e.lab.script("client", &["active", server, "pub/one.bin"]);
    assert!(out.contains("PORT: 200"), "{out}");
    assert!(
        out.contains(&format!("data from {server} 1048576")),
        "{out}"
    );
    assert!(out.contains("reply: 226"), "{out}");
    let log = e.server.log();
    let seen = log
        .lines()
        .filter_map(|l| l.split("CONNECT: Client \"").nth(1))
        .map(|c| {
            c.trim_end_matches('"')
                .trim_start_matches("::ffff:")
                .to_string()
        })
        .collect::<Vec<_>>();
    assert!(
        !seen.is_empty() && seen.iter().all(|c| c.starts_with(client)),
        "{seen:?}"
    );
    assert!(
        !log.contains("203.0.113.1") && !log.contains("2001:db8:2::1"),
        "the server saw the edge"
    );
}

#[test]
fn with_preserve_source_the_server_and_the_client_see_each_other_over_ipv4() {
    each_end_sees_its_real_peer(false);
}

#[test]
fn with_preserve_source_the_server_and_the_client_see_each_other_over_ipv6() {
    each_end_sees_its_real_peer(true);
}

#[test]
fn curl_crosses_the_preserve_source_edge_in_every_mode_over_ipv4_and_ipv6() {
    curl_in_every_mode(Flavour::TproxyPreserveSource);
}

#[test]
fn ftplib_crosses_the_preserve_source_edge_over_ipv4_and_ipv6() {
    ftplib_in_every_mode(Flavour::TproxyPreserveSource);
}

#[test]
fn curl_crosses_the_redirect_edge_in_every_mode_over_ipv4_and_ipv6() {
    curl_in_every_mode(Flavour::Redirect);
}

#[test]
fn curl_crosses_the_tproxy_edge_in_every_mode_over_ipv4_and_ipv6() {
    curl_in_every_mode(Flavour::Tproxy);
}

#[test]
fn lftp_crosses_the_redirect_edge_over_ipv4_and_ipv6() {
    lftp_in_its_modes(Flavour::Redirect);
}

#[test]
fn lftp_crosses_the_tproxy_edge_over_ipv4_and_ipv6() {
    lftp_in_its_modes(Flavour::Tproxy);
}

#[test]
fn ftplib_crosses_the_redirect_edge_over_ipv4_and_ipv6() {
    ftplib_in_every_mode(Flavour::Redirect);
}

#[test]
fn ftplib_crosses_the_tproxy_edge_over_ipv4_and_ipv6() {
    ftplib_in_every_mode(Flavour::Tproxy);
}

#[test]
fn port_toward_a_third_host_gets_nothing_through_the_redirect_edge() {
    port_toward_a_third_host(Flavour::Redirect);
}

#[test]
fn port_toward_a_third_host_gets_nothing_through_the_tproxy_edge() {
    port_toward_a_third_host(Flavour::Tproxy);
}

#[test]
fn another_client_cannot_use_a_redirected_data_port_announced_for_someone_else() {
    another_client_racing_for_the_data_port(Flavour::Redirect);
}

#[test]
fn another_client_cannot_use_a_tproxied_data_port_announced_for_someone_else() {
    another_client_racing_for_the_data_port(Flavour::Tproxy);
}

#[test]
fn session_rules_see_the_server_the_client_dialled_through_redirect() {
    session_rules_on_the_dialled_server(Flavour::Redirect);
}

#[test]
fn session_rules_see_the_server_the_client_dialled_through_tproxy() {
    session_rules_on_the_dialled_server(Flavour::Tproxy);
}

#[test]
fn with_ftpgate_stopped_no_ftp_crosses_the_redirect_edge() {
    nothing_crosses_without_ftpgate(Flavour::Redirect);
}

#[test]
fn with_ftpgate_stopped_no_ftp_crosses_the_tproxy_edge() {
    nothing_crosses_without_ftpgate(Flavour::Tproxy);
}

/// `data-path kernel`: every transfer crossed the edge through a one-shot nftables
/// hole, none through ftpgate's relay, and no hole is left once they are done.
fn kernel_forwards_every_mode(of: KernelOf) {
    let Some(e) = curl_in_every_mode(Flavour::Kernel(of)) else {
        return;
    };
    let by_kernel = kernel_connections(&e.gate);
    // 24 transfers and one listing.
    assert_eq!(by_kernel, 25.0);
    let metrics = e.gate.metrics();
    let relayed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ftpgate_data_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(relayed, 0.0, "ftpgate relayed data bytes itself");
    assert_no_holes(&e.lab);
}

/// Data connections the kernel forwarded through a hole, in both modes.
fn kernel_connections(gate: &Gate) -> f64 {
    ["passive", "active"]
        .iter()
        .map(|m| {
            gate.metric(&format!(
                "ftpgate_kernel_data_connections_total{{mode=\"{m}\"}}"
            ))
        })
        .sum()
}

/// No element is left in the kernel path's maps and sets.
fn assert_no_holes(lab: &Lab) {
    let out = run_ok(
        lab.on("edge", "nft")
            .args(["list", "table", "inet", "ftpgate"]),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("map data_dnat4"), "{table}");
    assert!(!table.contains("elements ="), "holes left open: {table}");
}

/// A hole lets one connection through: a second one to the same announced port,
/// from the same client, gets nowhere, and the first carries the file.
fn a_hole_passes_one_connection(of: KernelOf) {
    require!("vsftpd", "python3", "nft", "ip");
    let e = edge(Flavour::Kernel(of), "");
    let out = e
        .lab
        .script("client", &["twice", "203.0.113.2", "pub/one.bin"]);
    // The second is not translated: it goes where it was addressed, a port of the
    // server where nothing listens.
    assert!(!out.contains("second: connected"), "{out}");
    assert!(out.contains("client: 1048576 226"), "{out}");
    eventually("the hole to close", || {
        e.gate.metric("ftpgate_expectations_active") == 0.0
    });
    assert_no_holes(&e.lab);
}

#[test]
fn the_kernel_forwards_redirect_edge_data_in_every_mode_over_ipv4_and_ipv6() {
    kernel_forwards_every_mode(KernelOf::Redirect);
}

#[test]
fn the_kernel_forwards_tproxy_edge_data_in_every_mode_over_ipv4_and_ipv6() {
    kernel_forwards_every_mode(KernelOf::Tproxy);
}

#[test]
fn the_kernel_forwards_preserve_source_edge_data_in_every_mode_over_ipv4_and_ipv6() {
    kernel_forwards_every_mode(KernelOf::TproxyPreserveSource);
}

#[test]
fn a_kernel_hole_through_the_redirect_edge_passes_one_connection() {
    a_hole_passes_one_connection(KernelOf::Redirect);
}

#[test]
fn a_kernel_hole_through_the_tproxy_edge_passes_one_connection() {
    a_hole_passes_one_connection(KernelOf::Tproxy);
}

#[test]
fn another_client_cannot_use_a_kernel_hole_announced_for_someone_else() {
    another_client_racing_for_the_data_port(Flavour::Kernel(KernelOf::Redirect));
    another_client_racing_for_the_data_port(Flavour::Kernel(KernelOf::Tproxy));
}

#[test]
fn port_toward_a_third_host_opens_no_kernel_hole() {
    port_toward_a_third_host(Flavour::Kernel(KernelOf::Redirect));
}

#[test]
fn lftp_crosses_the_redirect_edge_by_the_kernel_path() {
    lftp_in_its_modes(Flavour::Kernel(KernelOf::Redirect));
}

#[test]
fn ftplib_crosses_the_tproxy_edge_by_the_kernel_path() {
    ftplib_in_every_mode(Flavour::Kernel(KernelOf::Tproxy));
}

#[test]
fn a_transparent_listener_without_its_nftables_table_is_a_start_up_error() {
    require!("nft", "ip");
    let lab = Lab::up(Flavour::Redirect);
    let dir = tempfile::tempdir().expect("tempdir");
    // The client host has no table inet ftpgate: the kernel path cannot open holes,
    // and the relay cannot have its data connections handed over.
    for (listen, what) in [
        (
            "listen transparent 0.0.0.0:8021 data-path kernel",
            "data-path kernel",
        ),
        ("listen transparent 0.0.0.0:8021", "listen transparent"),
    ] {
        let rules = dir.path().join("edge.rules");
        std::fs::write(&rules, format!("{listen}\npass from any to any\n")).expect("write rules");
        let out = run(lab
            .on("client", env!("CARGO_BIN_EXE_ftpgate"))
            .args(["run", "-c"])
            .arg(&rules));
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{what}: the nftables table: nftables set or map `inet ftpgate data_dnat4`"
            )),
            "{stderr}"
        );
    }
}

/// The hole is consumed by the connection, not by its first packet: a SYN the server
/// host drops is retransmitted through the edge and the transfer completes.
#[test]
fn a_kernel_hole_survives_a_lost_syn() {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let e = edge(Flavour::Kernel(KernelOf::Redirect), "");
    // Every other SYN to vsftpd's passive ports is lost, the first one included.
    let lossy = "table inet lossy { chain input { type filter hook input priority 0; \
                 tcp dport 30000-30999 tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 \
                 counter drop; }; }";
    run_ok(e.lab.on("server", "nft").arg(lossy));
    let down = e.local.path().join("one.bin");
    run_ok(
        curl_in(Some(&e.lab.ns("client")), Mode::Epsv)
            .arg(url(server_addr(false), "pub/one.bin"))
            .arg("-o")
            .arg(&down),
    );
    assert_same_file(&down, &e.server.path("one.bin"));
    let table = run_ok(
        e.lab
            .on("server", "nft")
            .args(["list", "table", "inet", "lossy"]),
    );
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("counter packets 1 "),
        "the first SYN was dropped"
    );
}

/// `data-path kernel` is not only for transparent listeners: a reverse listener on the
/// edge's client-side address lets the kernel carry its sessions' data too (the DNAT
/// turns a connection to the edge itself into a forwarded one).
#[test]
fn the_kernel_forwards_the_data_of_a_reverse_listener() {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let lab = Lab::up(Flavour::Redirect);
    let server = LabServer::start(&lab);
    make_file(&server.path("one.bin"), 1 << 20, 7);
    let gate = Gate::start_in(
        Some(&lab.ns("edge")),
        "listen reverse 198.51.100.1:2121 upstream 203.0.113.2:21 data-path kernel\n\
         set data-ports 40000-40999\npass\n",
        &[],
    );
    let local = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "198.51.100.1:2121".parse().expect("addr");
    for mode in [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt] {
        let down = local.path().join(format!("{}.bin", mode.verb()));
        run_ok(
            curl_in(Some(&lab.ns("client")), mode)
                .arg(url(addr, "pub/one.bin"))
                .arg("-o")
                .arg(&down),
        );
        assert_same_file(&down, &server.path("one.bin"));
    }
    eventually("the holes to close", || {
        gate.metric("ftpgate_expectations_active") == 0.0
    });
    let by_kernel = kernel_connections(&gate);
    assert_eq!(by_kernel, 4.0);
    assert_no_holes(&lab);
}

/// Holes a previous ftpgate left behind (it was killed) are closed when the next one
/// starts: their sessions are gone.
#[test]
fn a_restarted_ftpgate_closes_the_holes_it_finds() {
    require!("nft", "ip");
    let lab = Lab::up(Flavour::Redirect);
    run_ok(lab.on("edge", "nft").args([
        "add",
        "element",
        "inet",
        "ftpgate",
        "data_pass4",
        "{ 198.51.100.2 . 203.0.113.2 . 30000 }",
    ]));
    run_ok(lab.on("edge", "nft").args([
        "add",
        "element",
        "inet",
        "ftpgate",
        "data_dnat6",
        "{ 2001:db8:1::2 . 2001:db8:2::2 . 40000 : 2001:db8:2::2 . 30000 }",
    ]));
    let listed = run_ok(
        lab.on("edge", "nft")
            .args(["list", "table", "inet", "ftpgate"]),
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("elements ="));
    let _gate = Gate::start_in(
        Some(&lab.ns("edge")),
        &Flavour::Kernel(KernelOf::Redirect).rules(),
        &[],
    );
    assert_no_holes(&lab);
}

/// Many sessions at once, in every mode, each with its own holes over the one netlink
/// socket: every file arrives whole and no hole is left.
#[test]
fn concurrent_sessions_through_kernel_holes() {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let e = edge(Flavour::Kernel(KernelOf::Redirect), "");
    let ns = e.lab.ns("client");
    let modes = [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt];
    let downloads: Vec<_> = (0..24)
        .map(|i| {
            let mode = modes[i % modes.len()];
            let out = e.local.path().join(format!("parallel-{i}.bin"));
            let child = curl_in(Some(&ns), mode)
                .arg(url(server_addr(false), "pub/ten.bin"))
                .arg("-o")
                .arg(&out)
                .spawn()
                .expect("curl");
            (child, out)
        })
        .collect();
    for (mut child, out) in downloads {
        assert!(child.wait().expect("curl").success());
        assert_same_file(&out, &e.server.path("ten.bin"));
    }
    eventually("the holes to close", || {
        e.gate.metric("ftpgate_expectations_active") == 0.0
    });
    let by_kernel = kernel_connections(&e.gate);
    assert_eq!(by_kernel, 24.0);
    assert_eq!(
        e.gate
            .metric("ftpgate_kernel_hole_errors_total{op=\"install\"}"),
        0.0
    );
    assert_no_holes(&e.lab);
}
