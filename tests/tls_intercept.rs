//! `tls intercept` on a real edge (issue 17): the lab of `deploy/lab.sh` with the
//! shipped ruleset; on the server, a vsftpd whose certificate a public CA signed for
//! `ftp.example.net` and its addresses, insisting on TLS for logins and data and on
//! resumed data sessions. ftpgate terminates the FTPS of curl on the client, presenting
//! a certificate for the name curl asked for (or the address it dialed) signed by the
//! operator's inspection CA, which curl trusts; toward the server it checks the real
//! certificate against that same name. A client asking for a name the server's
//! certificate does not carry gets nothing.

mod support;

use support::lab::{Flavour, Lab, LabServer, path_str};
use support::tls::*;
use support::*;

fn intercept(flavour: Flavour) {
    require!("vsftpd", "curl", "nft", "ip", "python3");
    let lab = Lab::up(flavour);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let public = dir.path().join("public");
    let inspection = dir.path().join("inspection");
    for d in [&public, &inspection] {
        std::fs::create_dir(d).expect("mkdir");
    }
    // The server's own certificate, from a CA ftpgate trusts (`ca FILE`), and the
    // operator's inspection CA, which the clients trust.
    let server_pki = pki_with(
        &public,
        &["ftp.example.net", "203.0.113.2", "2001:db8:2::2"],
    );
    let inspection = pki_with(&inspection, &["unused.example"]);
    let server = LabServer::start_with(
        &lab,
        &format!(
            "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nallow_anon_ssl=YES\n\
             force_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\nrequire_ssl_reuse=YES\n",
            path_str(&server_pki.cert),
            path_str(&server_pki.key)
        ),
    );
    make_file(&server.path("one.bin"), 1 << 20, 7);
    let gate = Gate::start_in(
        Some(&lab.ns("edge")),
        &format!(
            "tls intercept ca {} key {}\n\
             pass from {{ 198.51.100.0/24, 2001:db8:1::/64 }} tls client require tls server match ca {}\n{}",
            path_str(&inspection.ca),
            path_str(&inspection.ca_key),
            path_str(&server_pki.ca),
            flavour.rules()
        ),
        &[],
    );
    let local = tempfile::tempdir().expect("tempdir");
    let curl = |args: &[&str]| {
        lab.on("client", "curl")
            .args(["-sS", "--max-time", "30", "--ssl-reqd", "--cacert"])
            .arg(&inspection.ca)
            .args(args)
            .output()
            .expect("curl")
    };
    // By name (SNI), by IPv4 address and by IPv6 address (no SNI: the address dialed).
    let cases = [
        (
            "ftp://ftp.example.net",
            vec!["--resolve", "ftp.example.net:21:203.0.113.2"],
        ),
        ("ftp://203.0.113.2", vec![]),
        ("ftp://[2001:db8:2::2]", vec![]),
    ];
    for (i, (base, extra)) in cases.iter().enumerate() {
        let got = local.path().join(format!("got-{i}.bin"));
        let mut args = extra.clone();
        let got_s = path_str(&got);
        let url = format!("{base}/pub/one.bin");
        args.extend(["-o", &got_s, &url]);
        let out = curl(&args);
        assert!(out.status.success(), "{base}: {}", text(&out));
        same_file(&server.path("one.bin"), &got);
        let mut args = extra.clone();
        let url = format!("{base}/pub/up-{i}.bin");
        args.extend(["-T", &got_s, &url]);
        let out = curl(&args);
        assert!(out.status.success(), "{base} upload: {}", text(&out));
        same_file(
            &server.path("one.bin"),
            &server.path(&format!("up-{i}.bin")),
        );
    }
    let metrics = gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "ok"), 6.0, "{metrics}");
    assert_eq!(handshakes(&metrics, "server", "ok"), 6.0, "{metrics}");
    assert_eq!(handshakes(&metrics, "server-data", "ok"), 6.0, "{metrics}");
    assert_eq!(handshakes(&metrics, "client-data", "ok"), 6.0, "{metrics}");
    // A client that does not trust the inspection CA refuses ftpgate's certificate.
    let out = lab
        .on("client", "curl")
        .args(["-sS", "--max-time", "30", "--ssl-reqd", "--cacert"])
        .arg(&server_pki.ca)
        .arg("ftp://203.0.113.2/pub/one.bin")
        .output()
        .expect("curl");
    assert!(!out.status.success());
    // A name the server's certificate does not carry: ftpgate would issue one for it,
    // but the real server does not prove it, so the session ends before any login.
    let out = curl(&[
        "--resolve",
        "other.example.net:21:203.0.113.2",
        "ftp://other.example.net/pub/one.bin",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let metrics = gate.metrics();
    assert_eq!(handshakes(&metrics, "server", "failed"), 1.0, "{metrics}");
    assert_eq!(
        metric_value(&metrics, r#"ftpgate_upstream_failures_total{reason="tls"}"#),
        1.0
    );
    assert!(
        gate.log()
            .contains("certificate not valid for name \\\"other.example.net\\\""),
        "{}",
        gate.log()
    );
}

#[test]
fn ftps_clients_behind_the_redirect_edge_are_inspected_with_the_operators_ca() {
    intercept(Flavour::Redirect);
}

#[test]
fn ftps_clients_behind_the_tproxy_edge_are_inspected_with_the_operators_ca() {
    intercept(Flavour::Tproxy);
}
