//! Real clients (curl, lftp, Python ftplib) through ftpgate in reverse mode to a real
//! vsftpd: LIST, download and upload of 1 MiB and 100 MiB in every data mode, over
//! IPv4 and IPv6, with the content compared byte for byte.

mod support;

use std::path::Path;

use support::*;

const MIB: usize = 1 << 20;

/// The files every matrix moves: (name, size).
const SIZES: [(&str, usize); 2] = [("one.bin", MIB), ("hundred.bin", 100 * MIB)];

struct Setup {
    server: Vsftpd,
    gate: Gate,
    local: tempfile::TempDir,
}

fn setup(ip: &str) -> Setup {
    let server = Vsftpd::start(ip);
    for (i, (name, size)) in SIZES.iter().enumerate() {
        make_file(&server.public().join(name), *size, i as u64 + 1);
    }
    let gate = Gate::reverse(server.addr, "");
    Setup {
        server,
        gate,
        local: tempfile::tempdir().expect("tempdir"),
    }
}

/// One client's operations, so every client runs the same matrix.
trait Client {
    fn name(&self) -> &'static str;
    fn get(&self, s: &Setup, mode: Mode, remote: &str, local: &Path);
    fn put(&self, s: &Setup, mode: Mode, local: &Path, remote: &str);
    fn list(&self, s: &Setup, mode: Mode, dir: &str) -> String;
}

struct Curl;
impl Client for Curl {
    fn name(&self) -> &'static str {
        "curl"
    }
    fn get(&self, s: &Setup, mode: Mode, remote: &str, local: &Path) {
        curl_get(s.gate.addr, mode, remote, local);
    }
    fn put(&self, s: &Setup, mode: Mode, local: &Path, remote: &str) {
        curl_put(s.gate.addr, mode, local, remote);
    }
    fn list(&self, s: &Setup, mode: Mode, dir: &str) -> String {
        curl_list(s.gate.addr, mode, dir)
    }
}

struct Lftp;
impl Client for Lftp {
    fn name(&self) -> &'static str {
        "lftp"
    }
    fn get(&self, s: &Setup, mode: Mode, remote: &str, local: &Path) {
        lftp(
            s.gate.addr,
            mode,
            &format!("get {remote} -o {}", local.display()),
        );
    }
    fn put(&self, s: &Setup, mode: Mode, local: &Path, remote: &str) {
        lftp(
            s.gate.addr,
            mode,
            &format!("put {} -o {remote}", local.display()),
        );
    }
    fn list(&self, s: &Setup, mode: Mode, dir: &str) -> String {
        String::from_utf8_lossy(&lftp(s.gate.addr, mode, &format!("cls -l {dir}")).stdout)
            .into_owned()
    }
}

struct Ftplib;
impl Client for Ftplib {
    fn name(&self) -> &'static str {
        "ftplib"
    }
    fn get(&self, s: &Setup, mode: Mode, remote: &str, local: &Path) {
        ftplib(s.gate.addr, mode, "get", remote, Some(local));
    }
    fn put(&self, s: &Setup, mode: Mode, local: &Path, remote: &str) {
        ftplib(s.gate.addr, mode, "put", remote, Some(local));
    }
    fn list(&self, s: &Setup, mode: Mode, dir: &str) -> String {
        String::from_utf8_lossy(&ftplib(s.gate.addr, mode, "list", dir, None).stdout).into_owned()
    }
}

/// LIST, then each size down and up, compared; returns the data connections used.
fn matrix(client: &dyn Client, ip: &str, modes: &[Mode]) -> u32 {
    let s = setup(ip);
    let mut transfers = 0;
    for &mode in modes {
        let tag = format!("{}-{}", client.name(), mode.verb());
        let listing = client.list(&s, mode, "pub/");
        assert!(listing.contains("hundred.bin"), "{tag} LIST: {listing}");
        transfers += 1;
        for (name, _) in SIZES {
            let down = s.local.path().join(format!("{tag}-{name}"));
            client.get(&s, mode, &format!("pub/{name}"), &down);
            assert_same_file(&down, &s.server.public().join(name));
            let remote = format!("up-{tag}-{name}");
            client.put(&s, mode, &down, &format!("pub/{remote}"));
            assert_same_file(&s.server.public().join(&remote), &down);
            std::fs::remove_file(&down).expect("cleanup");
            transfers += 2;
        }
        eprintln!("{tag} over {ip}: LIST, 1 MiB and 100 MiB both ways: ok");
    }
    let log = s.gate.log();
    assert!(
        log.contains("transfer") && log.contains("outcome=\"completed\""),
        "{log}"
    );
    assert_eq!(
        s.gate
            .metric("ftpgate_expectations_refused_total{reason=\"bounce\"}"),
        0.0
    );
    transfers
}

#[test]
fn curl_in_every_mode_over_ipv4() {
    require!("vsftpd", "curl");
    let n = matrix(&Curl, LOCALHOST, &MODES);
    assert_eq!(n, 20);
}

#[test]
fn curl_with_epsv_and_eprt_over_ipv6() {
    require!("vsftpd", "curl");
    matrix(&Curl, LOCALHOST6, &[Mode::Epsv, Mode::Eprt]);
}

#[test]
fn lftp_in_pasv_epsv_and_port_over_ipv4() {
    require!("vsftpd", "lftp");
    // lftp speaks PORT for active mode over IPv4; its EPRT is covered over IPv6.
    matrix(&Lftp, LOCALHOST, &[Mode::Pasv, Mode::Epsv, Mode::Port]);
}

#[test]
fn lftp_with_epsv_and_eprt_over_ipv6() {
    require!("vsftpd", "lftp");
    matrix(&Lftp, LOCALHOST6, &[Mode::Epsv, Mode::Eprt]);
}

#[test]
fn ftplib_in_every_mode_over_ipv4() {
    require!("vsftpd", "python3");
    matrix(&Ftplib, LOCALHOST, &MODES);
}

#[test]
fn ftplib_with_epsv_and_eprt_over_ipv6() {
    require!("vsftpd", "python3");
    matrix(&Ftplib, LOCALHOST6, &[Mode::Epsv, Mode::Eprt]);
}

#[test]
fn curl_transfers_are_counted_in_the_metrics() {
    require!("vsftpd", "curl");
    let s = setup(LOCALHOST);
    let down = s.local.path().join("one.bin");
    curl_get(s.gate.addr, Mode::Pasv, "pub/one.bin", &down);
    curl_put(s.gate.addr, Mode::Port, &down, "pub/counted.bin");
    eventually("the data connections to close", || {
        s.gate
            .metric("ftpgate_expectations_total{outcome=\"completed\"}")
            == 2.0
    });
    let m = s.gate.metrics();
    let v = |sample: &str| metric_value(&m, sample);
    assert_eq!(
        v("ftpgate_data_bytes_total{direction=\"download\",mode=\"passive\"}"),
        MIB as f64
    );
    assert_eq!(
        v("ftpgate_data_bytes_total{direction=\"upload\",mode=\"active\"}"),
        MIB as f64
    );
    assert_eq!(v("ftpgate_expectations_total{outcome=\"completed\"}"), 2.0);
    assert_eq!(v("ftpgate_commands_total{verb=\"PASV\"}"), 1.0);
    assert_eq!(v("ftpgate_commands_total{verb=\"PORT\"}"), 1.0);
    assert_eq!(v("ftpgate_expectations_active"), 0.0);
}
