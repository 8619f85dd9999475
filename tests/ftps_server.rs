//! FTPS toward the server (issue 17, `tls server`): ftpgate secures its own leg to a
//! real vsftpd that insists on TLS for logins and data and on data connections that
//! resume the control connection's TLS session (`force_anon_logins_ssl`,
//! `force_anon_data_ssl`, `require_ssl_reuse`), for FTPS clients (`match`) and for
//! clear ones (`require`); and the bad cases: a server whose certificate does not
//! check out, a server without TLS under `require` and under `match`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::lab::path_str;
use support::tls::*;
use support::*;

/// vsftpd with TLS as strict as it gets for anonymous users.
fn strict_vsftpd(ip: &str, pki: &Pki) -> Vsftpd {
    Vsftpd::start_with(
        ip,
        &format!(
            "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nallow_anon_ssl=YES\n\
             force_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\nrequire_ssl_reuse=YES\n",
            path_str(&pki.cert),
            path_str(&pki.key)
        ),
    )
}

struct Setup {
    server: Vsftpd,
    gate: Gate,
    /// ftpgate's certificate toward clients, and the CA that signed it and vsftpd's.
    pki: Pki,
    _dir: tempfile::TempDir,
    local: tempfile::TempDir,
}

/// A strict vsftpd on `ip` with `one.bin` (1 MiB), and ftpgate in front of it whose
/// pass rule for loopback clients ends in `tls` (with `CA` replaced by the path of
/// the CA that signed vsftpd's certificate).
fn setup(ip: &str, tls: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_for(dir.path(), ip);
    let server = strict_vsftpd(ip, &pki);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let tls = tls.replace("CA", &path_str(&pki.ca));
    let gate = Gate::reverse(
        server.addr,
        &format!(
            "tls cert {} key {}\npass from {{ 127.0.0.0/8, ::1 }} {tls}",
            path_str(&pki.cert),
            path_str(&pki.key)
        ),
    );
    Setup {
        server,
        gate,
        pki,
        _dir: dir,
        local: tempfile::tempdir().expect("tempdir"),
    }
}

/// ftplib in `mode`, with TLS toward ftpgate (`tls` = "P": `AUTH TLS`, `PROT P`, and
/// data connections that resume the control session) or without (`tls` = "none"):
/// a download of `remote` to `local`, its upload back as `up`, a listing.
const FTPLIB: &str = r#"
import ftplib, ssl, sys
host, port, ca, tls, mode, remote, local, up = sys.argv[1:9]

class Resuming(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session)
        return conn, size

if tls == "P":
    ftp = Resuming(context=ssl.create_default_context(cafile=ca), timeout=30)
    ftp.connect(host, int(port))
    ftp.auth()
    ftp.login()
    ftp.prot_p()
else:
    ftp = ftplib.FTP(timeout=30)
    ftp.connect(host, int(port))
    ftp.login()
ftp.set_pasv(mode == "passive")
with open(local, "wb") as f:
    ftp.retrbinary("RETR " + remote, f.write)
with open(local, "rb") as f:
    ftp.storbinary("STOR " + up, f)
ftp.retrlines("LIST pub", print)
ftp.quit()
"#;

fn ftplib(s: &Setup, ip: &str, tls: &str, mode: &str, name: &str) -> String {
    let local = s.local.path().join(name);
    let out = run_ok(Command::new("python3").args([
        "-c",
        FTPLIB,
        ip,
        &s.gate.addr.port().to_string(),
        &path_str(&s.pki.ca),
        tls,
        mode,
        "pub/one.bin",
        &path_str(&local),
        &format!("pub/up-{name}"),
    ]));
    let original = s.server.public().join("one.bin");
    same_file(&original, &local);
    same_file(&original, &s.server.public().join(format!("up-{name}")));
    text(&out)
}

#[test]
fn ftps_clients_reach_a_strict_tls_server_through_match_in_both_modes_and_families() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    for ip in ["127.0.0.1", "::1"] {
        let s = setup(ip, "tls client optional tls server match ca CA");
        for mode in ["passive", "active"] {
            let said = ftplib(&s, ip, "P", mode, &format!("{mode}.bin"));
            assert!(said.contains("one.bin"), "the listing: {said}");
        }
        let metrics = s.gate.metrics();
        assert_eq!(handshakes(&metrics, "server", "ok"), 2.0, "{ip}");
        // RETR, STOR and LIST in each mode, every one resumed (vsftpd refuses the
        // data connection otherwise, and the transfer would have failed).
        assert_eq!(handshakes(&metrics, "server-data", "ok"), 6.0, "{ip}");
        assert_eq!(handshakes(&metrics, "server-data", "failed"), 0.0);
        assert_eq!(handshakes(&metrics, "client-data", "ok"), 6.0, "{ip}");
        // vsftpd heard ftpgate's AUTH, PBSZ and PROT, and the login after them.
        let log = s.server.log();
        let auth = log.find("AUTH TLS").expect("AUTH TLS in vsftpd's log");
        let prot = log.find("PROT P").expect("PROT P in vsftpd's log");
        let user = log.find("USER anonymous").expect("USER in vsftpd's log");
        assert!(auth < prot && prot < user, "{log}");
        // The transfer log names both legs' TLS.
        let log = s.gate.log();
        let both = log
            .lines()
            .filter(|l| l.contains("\"transfer\"") || l.contains(" transfer"));
        let both = both
            .filter(|l| l.contains("tls=\"TLSv1.3") && l.contains("server_tls=\"TLSv1.3"))
            .count();
        assert_eq!(both, 6, "{log}");
    }
}

#[test]
fn curl_and_lftp_through_match_and_a_clear_client_through_require() {
    if !prerequisites(&["vsftpd", "curl", "lftp", "python3"]) {
        return;
    }
    let s = setup("127.0.0.1", "tls client optional tls server match ca CA");
    let original = s.server.public().join("one.bin");
    let ca = path_str(&s.pki.ca);
    let url = |path: &str| format!("ftp://127.0.0.1:{}/{path}", s.gate.addr.port());
    let local = s.local.path().join("curl.bin");
    let get = [
        "-sS",
        "--ssl-reqd",
        "--cacert",
        &ca,
        "-o",
        &path_str(&local),
    ];
    run_ok(Command::new("curl").args(get).arg(url("pub/one.bin")));
    same_file(&original, &local);
    let put = [
        "-sS",
        "--ssl-reqd",
        "--cacert",
        &ca,
        "-T",
        &path_str(&local),
    ];
    run_ok(Command::new("curl").args(put).arg(url("pub/curl.bin")));
    same_file(&original, &s.server.public().join("curl.bin"));
    for passive in ["true", "false"] {
        let name = format!("lftp-{passive}.bin");
        let script = format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; \
             set ftp:passive-mode {passive}; set ssl:ca-file {ca}; set net:max-retries 1; \
             set net:timeout 20; open -u anonymous,x ftp://127.0.0.1:{port}; \
             get pub/one.bin -o {down}; put {down} -o pub/{name}; bye",
            port = s.gate.addr.port(),
            down = path_str(&s.local.path().join(&name)),
        );
        run_ok(Command::new("lftp").args(["-c", &script]));
        same_file(&original, &s.local.path().join(&name));
        same_file(&original, &s.server.public().join(&name));
    }
    // A client that knows no TLS at all, in front of a server that insists on it.
    let s = setup("127.0.0.1", "tls server require ca CA");
    for mode in ["passive", "active"] {
        ftplib(&s, "127.0.0.1", "none", mode, &format!("clear-{mode}.bin"));
    }
    let sessions = s.gate.metrics();
    assert_eq!(handshakes(&sessions, "server", "ok"), 2.0);
    assert_eq!(handshakes(&sessions, "client", "ok"), 0.0);
}

/// A plain connection to ftpgate; the first reply line.
fn connect(s: &Setup) -> (BufReader<TcpStream>, TcpStream, String) {
    let stream = TcpStream::connect(s.gate.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("first line");
    (reader, stream, line)
}

fn upstream_failures(metrics: &str, reason: &str) -> f64 {
    metric_value(
        metrics,
        &format!(r#"ftpgate_upstream_failures_total{{reason="{reason}"}}"#),
    )
}

#[test]
fn a_server_certificate_that_does_not_check_out_fails_the_session_with_421() {
    if !prerequisites(&["vsftpd"]) {
        return;
    }
    // ftpgate is told to trust another CA than the one that signed vsftpd's
    // certificate, and nothing of the client's reaches vsftpd.
    let other = tempfile::tempdir().expect("tempdir");
    let other = pki_for(other.path(), "127.0.0.1");
    let s = setup(
        "127.0.0.1",
        &format!("tls server require ca {}", path_str(&other.ca)),
    );
    let (_, _, line) = connect(&s);
    assert_eq!(
        line,
        "421 Service not available: TLS with the FTP server failed.\r\n"
    );
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "server", "failed"), 1.0);
    assert_eq!(upstream_failures(&metrics, "tls"), 1.0);
    let log = s.gate.log();
    assert!(
        log.contains("server TLS failed") && log.contains("invalid peer certificate"),
        "the reason is logged: {log}"
    );
    assert!(!s.server.log().contains("USER"));
    // The same server with `no-verify`, which the operator has to write out.
    let s = setup("127.0.0.1", "tls server require no-verify");
    let (_, _, line) = connect(&s);
    assert!(line.starts_with("220"), "{line}");
}

#[test]
fn a_server_without_tls_is_refused_under_require_and_left_clear_under_match() {
    if !prerequisites(&["vsftpd"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_for(dir.path(), "127.0.0.1");
    let server = Vsftpd::start("127.0.0.1");
    let gate = |tls: &str| {
        Gate::reverse(
            server.addr,
            &format!(
                "tls cert {} key {}\npass from 127.0.0.0/8 {tls}",
                path_str(&pki.cert),
                path_str(&pki.key)
            ),
        )
    };
    let s = Setup {
        gate: gate(&format!("tls server require ca {}", path_str(&pki.ca))),
        server,
        pki,
        _dir: dir,
        local: tempfile::tempdir().expect("tempdir"),
    };
    let (_, _, line) = connect(&s);
    assert!(
        line.starts_with("421 Service not available: the FTP server does not take TLS"),
        "{line}"
    );
    assert_eq!(upstream_failures(&s.gate.metrics(), "tls"), 1.0);
    // Under `match` the client's AUTH is refused (both legs stay clear), counted.
    let s = Setup {
        gate: Gate::reverse(
            s.server.addr,
            &format!(
                "tls cert {} key {}\npass from 127.0.0.0/8 tls client optional tls server match ca {}",
                path_str(&s.pki.cert),
                path_str(&s.pki.key),
                path_str(&s.pki.ca)
            ),
        ),
        ..s
    };
    let (mut reader, mut stream, line) = connect(&s);
    assert!(line.starts_with("220"), "{line}");
    stream.write_all(b"AUTH TLS\r\n").expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    assert!(line.starts_with("534 "), "{line}");
    stream.write_all(b"USER anonymous\r\n").expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    assert!(line.starts_with("331") || line.starts_with("230"), "{line}");
    let metrics = s.gate.metrics();
    assert_eq!(
        metric_value(&metrics, r#"ftpgate_commands_refused_total{reason="tls"}"#),
        1.0,
        "{metrics}"
    );
}
