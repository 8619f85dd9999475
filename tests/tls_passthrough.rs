//! `tls passthrough` on a real edge (issue 17): the lab of `deploy/lab.sh` with the
//! shipped ruleset, and on the edge an operator's firewall that forwards nothing but
//! established traffic and what carries ftpgate's mark. A vsftpd that insists on TLS
//! serves curl through ftpgate, which relays the control connection blind after the
//! server's `234`; the client's data connections go straight to the server's passive
//! ports, which the ruleset opens for that client and that server only, for as long as
//! the session lasts, and for no other host or port.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::Value;
use support::lab::{Flavour, Lab, LabServer, path_str};
use support::tls::*;
use support::*;

/// The operator's own firewall on the edge: forwarding drops by default and accepts
/// what ftpgate takes or lets through (deploy/README.md, "On a real router").
const FIREWALL: &str = "table inet operator {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        meta l4proto { icmp, ipv6-icmp } accept
        ct mark and 0x40000000 == 0x40000000 accept
    }
}
";

/// Logs in with TLS and holds the session until told to quit.
const HOLD: &str = r#"
import ftplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ftp = ftplib.FTP_TLS(context=ctx, timeout=20)
ftp.connect(sys.argv[1], 21)
ftp.auth()
ftp.login()
ftp.prot_p()
print("ready", flush=True)
sys.stdin.readline()
ftp.quit()
"#;

fn passthrough(flavour: Flavour) {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let lab = Lab::up(flavour);
    let firewall = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(firewall.path(), FIREWALL).expect("write firewall");
    run_ok(lab.on("edge", "nft").arg("-f").arg(firewall.path()));
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_for(dir.path(), "203.0.113.2");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let server = LabServer::start_with(
        &lab,
        &format!(
            "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nallow_anon_ssl=YES\n\
             force_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\n",
            path_str(&pki.cert),
            path_str(&pki.key)
        ),
    );
    make_file(&server.path("one.bin"), 1 << 20, 7);
    // The lab's vsftpd has its passive ports at 30000-30999.
    let gate = Gate::start_in(
        Some(&lab.ns("edge")),
        &format!(
            "pass from {{ 198.51.100.0/24, 2001:db8:1::/64 }} tls passthrough ports 30000-30999\n{}",
            flavour.rules()
        ),
        &[],
    );
    let dropped = |addr: &str, port: u16| {
        let probe = lab.probe("server", addr, port);
        let tried = lab.script("client", &["connect", addr, &port.to_string(), "3"]);
        assert_eq!(
            (tried.trim(), probe.report().as_str()),
            ("timeout", "nothing"),
            "{addr} port {port} must not be reachable"
        );
    };
    // Nothing is open before a session passes its TLS through.
    dropped("203.0.113.2", 30500);

    let local = tempfile::tempdir().expect("tempdir");
    let mut sessions = 0.0;
    for (host, up) in [("203.0.113.2", "up4.bin"), ("[2001:db8:2::2]", "up6.bin")] {
        let got = local.path().join("one.bin");
        let url = |path: &str| format!("ftp://{host}/pub/{path}");
        let curl = |args: &[&str], url: String| {
            run_ok(
                lab.on("client", "curl")
                    .args(["-sS", "--max-time", "30", "--ssl-reqd", "-k"])
                    .args(args)
                    .arg(url),
            )
        };
        curl(&["-o", &path_str(&got)], url("one.bin"));
        same_file(&server.path("one.bin"), &got);
        curl(&["-T", &path_str(&got)], url(up));
        same_file(&server.path("one.bin"), &server.path(up));
        sessions += 2.0;
    }
    assert_eq!(
        gate.metric(r#"ftpgate_tls_passthrough_total{outcome="opened"}"#),
        sessions
    );
    // ftpgate relayed no data connection: they went to the server directly.
    assert_eq!(gate.metric("ftpgate_expectations_active"), 0.0);
    assert_eq!(
        gate.metric(r#"ftpgate_expectations_total{outcome="completed"}"#),
        0.0
    );

    // While a session is passed through, its client reaches the server's passive
    // ports, and nothing else.
    let mut hold = lab
        .on("client", "python3")
        .args(["-c", HOLD, "203.0.113.2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the held session");
    let mut line = String::new();
    BufReader::new(hold.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    let (code, body) = gate.http("/sessions", &[]);
    assert_eq!(code, 200);
    let table: Value = serde_json::from_str(&body).expect("JSON");
    let held = &table["sessions"][0];
    assert_eq!(held["state"], "passthrough", "{table}");
    assert_eq!(held["tls_passthrough_ports"], "30000-30999", "{table}");
    let probe = lab.probe("server", "203.0.113.2", 30500);
    let tried = lab.script("client", &["connect", "203.0.113.2", "30500", "3"]);
    assert_eq!(tried.trim(), "connected");
    // From the address ftpgate's control connection to the server leaves from, as
    // the server insists.
    assert_eq!(probe.report(), "connected 203.0.113.1");
    dropped("203.0.113.2", 29999);
    dropped("203.0.113.66", 30500);
    hold.stdin
        .take()
        .expect("stdin")
        .write_all(b"quit\n")
        .expect("quit");
    assert!(hold.wait().is_ok_and(|s| s.success()), "the held session");
    eventually("the session to end", || {
        gate.metric("ftpgate_sessions_active") == 0.0
    });
    // Its ports are closed with it.
    dropped("203.0.113.2", 30500);
    assert_eq!(
        gate.metric(r#"ftpgate_kernel_hole_errors_total{op="passthrough"}"#),
        0.0
    );
}

#[test]
fn tls_passes_through_the_redirect_edge_with_only_the_sessions_ports_open() {
    passthrough(Flavour::Redirect);
}

#[test]
fn tls_passes_through_the_tproxy_edge_with_only_the_sessions_ports_open() {
    passthrough(Flavour::Tproxy);
}
