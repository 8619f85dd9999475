//! Clients behind NAT in active mode (issue 18, `set active-address`): the lab of
//! `deploy/lab.sh`, with the edge masquerading the client's network, as a home or
//! office router does, and forwarding the client's active ports to it; ftpgate, a
//! reverse proxy in front of vsftpd on the server host, sees the router's address as
//! the client. curl announces its inside address in `PORT`: refused as a bounce by
//! default (`strict`), dialed at the router's address under `substitute`.

mod support;

use support::lab::{Lab, LabServer, path_str};
use support::*;

/// The router's NAT: the client's network leaves as the router's address, and the
/// ports curl listens on in active mode are forwarded to the client.
const NAT: &str = "table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"e1\" masquerade
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname \"e1\" tcp dport 50000-50010 dnat to 198.51.100.2
    }
}
";

#[test]
fn a_client_behind_nat_works_in_active_mode_only_under_substitute() {
    require!("vsftpd", "curl", "nft", "ip");
    let lab = Lab::bare();
    let nat = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(nat.path(), NAT).expect("write NAT");
    run_ok(lab.on("edge", "nft").arg("-f").arg(nat.path()));
    let server = LabServer::start(&lab);
    make_file(&server.path("one.bin"), 1 << 20, 7);
    let local = tempfile::tempdir().expect("tempdir");
    let fetch = |gate: &Gate, name: &str| {
        let got = local.path().join(name);
        let out = lab
            .on("client", "curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-P",
                "198.51.100.2:50000-50010",
                "-o",
            ])
            .arg(&got)
            .arg(format!("ftp://{}/pub/one.bin", gate.addr))
            .output()
            .expect("curl");
        (out, got)
    };
    let gate = |setting: &str| {
        Gate::start_in(
            Some(&lab.ns("server")),
            &format!("listen reverse 203.0.113.2:2121 upstream 203.0.113.2:21\n{setting}\npass\n"),
            &[],
        )
    };
    // strict (the default): the inside address is not the client ftpgate sees.
    let strict = gate("");
    let (out, _) = fetch(&strict, "strict.bin");
    assert!(!out.status.success(), "a bounce went through");
    // curl tries EPRT, then PORT: each refused.
    assert!(strict.metric(r#"ftpgate_expectations_refused_total{reason="bounce"}"#) >= 1.0);
    drop(strict);
    // substitute: the router's address is dialed, and its forward reaches curl.
    let substitute = gate("set active-address substitute");
    let (out, got) = fetch(&substitute, "substitute.bin");
    assert!(out.status.success(), "{}", path_str(&got));
    assert_same_file(&got, &server.path("one.bin"));
    // 198.51.100.2 is a documentation address, not a private one: class `other`.
    assert_eq!(
        substitute.metric(r#"ftpgate_active_address_substituted_total{class="other"}"#),
        1.0
    );
    assert_eq!(
        substitute.metric(r#"ftpgate_expectations_refused_total{reason="bounce"}"#),
        0.0
    );
}
