//! Twenty clients at once in each data mode: every transfer arrives intact and the
//! proxy ends with no session, expectation or data port left behind.

mod support;

use std::process::Child;

use support::*;

const SESSIONS: usize = 20;

#[test]
fn twenty_concurrent_curl_sessions_in_each_mode_all_transfer_intact() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    let source = server.public().join("one.bin");
    make_file(&source, 1 << 20, 42);
    let gate = Gate::reverse(server.addr, "");
    let local = tempfile::tempdir().expect("tempdir");
    for mode in MODES {
        let children: Vec<(Child, std::path::PathBuf)> = (0..SESSIONS)
            .map(|i| {
                let out = local.path().join(format!("{}-{i}.bin", mode.verb()));
                let child = curl(mode)
                    .arg(url(gate.addr, "pub/one.bin"))
                    .arg("-o")
                    .arg(&out)
                    .spawn()
                    .expect("spawn curl");
                (child, out)
            })
            .collect();
        for (mut child, out) in children {
            let status = child.wait().expect("wait curl");
            assert!(
                status.success(),
                "{} download failed: {status}",
                mode.verb()
            );
            assert_same_file(&out, &source);
        }
    }
    // Every curl has exited, but the proxy may still be closing the last sessions and
    // data connections (the 226 leaves once the data is delivered, before the close).
    eventually("every session and data connection to end", || {
        gate.metric("ftpgate_sessions_active") == 0.0
            && gate.metric("ftpgate_expectations_active") == 0.0
    });
    let total = (SESSIONS * MODES.len()) as f64;
    assert_eq!(
        gate.metric("ftpgate_expectations_total{outcome=\"completed\"}"),
        total
    );
}
