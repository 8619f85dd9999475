//! FTPS on the client's control connection (issue 17, first part): real clients
//! (curl, Python ftplib, lftp) secure their control connection with ftpgate's
//! certificate (`AUTH TLS`), log in through it and move files over clear data
//! connections (`PROT C`) from a real vsftpd, whose leg stays in clear. And the bad
//! inputs: clear text where TLS belongs, a handshake that never finishes, a login
//! before TLS under `tls client require`, a rule without a certificate, a client that
//! renegotiates (OpenSSL's `s_client`).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::lab::path_str;
use support::tls::*;
use support::*;

/// vsftpd with `one.bin` (1 MiB), and ftpgate in front of it with `tls client
/// POLICY` for loopback clients.
fn setup(policy: &str, settings: &str) -> Setup {
    setup_on("127.0.0.1", policy, settings)
}

fn setup_on(ip: &str, policy: &str, settings: &str) -> Setup {
    setup_with(ip, |server, pki| {
        Gate::reverse(
            server.addr,
            &format!(
                "{settings}\ntls cert {} key {}\npass from {{ 127.0.0.0/8, ::1 }} tls client {policy}",
                path_str(&pki.cert),
                path_str(&pki.key)
            ),
        )
    })
}

/// vsftpd on `ip` with `one.bin` (1 MiB), a certificate for `ip`, and the ftpgate
/// `gate` makes in front of them.
fn setup_with(ip: &str, gate: impl FnOnce(&Vsftpd, &Pki) -> Gate) -> Setup {
    Setup::new(ip, |_| Vsftpd::start(ip), gate)
}

/// ftplib's `FTP_TLS`: `AUTH TLS` with certificate verification against the CA,
/// login, `PBSZ 0` and `PROT` as asked (`prot_p()` sends both, `prot_c()` only
/// `PROT C`), then in `mode` a `RETR` to `local`, a `STOR` of it back as `up`, and a
/// listing; prints the listing and `FEAT`.
const FTPLIB: &str = r#"
import ftplib, ssl, sys
host, port, ca, prot, mode, remote, local, up = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=ca)

class Resuming(ftplib.FTP_TLS):
    """Offers the control connection's TLS session on each data connection, as RFC
    4217 clients do (stock ftplib does not), and records whether it was resumed."""
    resumed = []

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session)
            self.resumed.append(conn.session_reused)
        return conn, size

ftp = Resuming(context=ctx, timeout=30)
ftp.connect(host, int(port))
ftp.auth()
ftp.login()
ftp.prot_p() if prot == "P" else ftp.prot_c()
ftp.set_pasv(mode == "passive")
with open(local, "wb") as f:
    ftp.retrbinary("RETR " + remote, f.write)
with open(local, "rb") as f:
    ftp.storbinary("STOR " + up, f)
ftp.retrlines("LIST pub", print)
print(ftp.sendcmd("FEAT"))
print("resumed", ftp.resumed)
ftp.quit()
"#;

#[test]
fn ftplib_with_prot_c_and_prot_p_in_both_modes_and_families() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    for ip in ["127.0.0.1", "::1"] {
        ftplib_both_modes(ip);
    }
}

fn ftplib_both_modes(ip: &str) {
    let s = setup_on(ip, "optional", "");
    let original = s.server.public().join("one.bin");
    for prot in ["C", "P"] {
        for mode in ["passive", "active"] {
            let name = format!("{mode}-{prot}.bin");
            let local = s.local.path().join(&name);
            let out = run_ok(Command::new("python3").args([
                "-c",
                FTPLIB,
                ip,
                &s.gate.addr.port().to_string(),
                &path_str(&s.pki.ca),
                prot,
                mode,
                "pub/one.bin",
                &path_str(&local),
                &format!("pub/up-{name}"),
            ]));
            same_file(&original, &local);
            same_file(&original, &s.server.public().join(format!("up-{name}")));
            let said = text(&out);
            assert!(said.contains("one.bin"), "the listing: {said}");
            let resumed = if prot == "P" {
                "resumed [True, True, True]"
            } else {
                "resumed []"
            };
            assert!(said.contains(resumed), "{prot} {mode}: {said}");
            assert!(
                said.contains("AUTH TLS") && said.contains("PROT"),
                "FEAT: {said}"
            );
        }
    }
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "ok"), 4.0);
    // RETR, STOR and LIST in both modes under PROT P; none under PROT C.
    assert_eq!(handshakes(&metrics, "client-data", "ok"), 6.0);
    assert_eq!(handshakes(&metrics, "client-data", "failed"), 0.0);
    // The transfer log says which data connections were protected, and how.
    let log = s.gate.log();
    let protected = log
        .lines()
        .filter(|l| l.contains("transfer") && l.contains("tls=\"TLSv1.3 "));
    assert_eq!(protected.count(), 6, "{log}");
    // The server heard the login, in clear on its own leg, and never an AUTH or PROT.
    let log = s.server.log();
    assert!(
        log.contains("USER anonymous") || log.contains("\"USER"),
        "{log}"
    );
    assert!(!log.contains("AUTH") && !log.contains("PROT"), "{log}");
}

#[test]
fn curl_and_lftp_with_clear_and_protected_data() {
    if !prerequisites(&["vsftpd", "curl", "lftp"]) {
        return;
    }
    // Both clients resume their control connection's TLS session on every data
    // connection, as require-reuse asks (vsftpd's require_ssl_reuse, its default).
    let s = setup("require require-reuse", "");
    let original = s.server.public().join("one.bin");
    let ca = path_str(&s.pki.ca);
    let url = |path: &str| format!("ftp://127.0.0.1:{}/{path}", s.gate.addr.port());
    // curl: --ftp-ssl-control keeps the data in clear, --ssl-reqd protects it (PROT P);
    // passive only (curl 7.88 never starts TLS on an active data connection).
    for (flag, name) in [("--ftp-ssl-control", "clear"), ("--ssl-reqd", "private")] {
        let local = s.local.path().join(format!("curl-{name}.bin"));
        let get = ["-sS", flag, "--cacert", &ca, "-o", &path_str(&local)];
        run_ok(Command::new("curl").args(get).arg(url("pub/one.bin")));
        same_file(&original, &local);
        let put = ["-sS", flag, "--cacert", &ca, "-T", &path_str(&local)];
        run_ok(
            Command::new("curl")
                .args(put)
                .arg(url(&format!("pub/curl-{name}.bin"))),
        );
        same_file(
            &original,
            &s.server.public().join(format!("curl-{name}.bin")),
        );
    }
    // lftp: passive and active, data in clear and protected, listings too.
    let upload = s.local.path().join("up.bin");
    make_file(&upload, 300_000, 9);
    for protect in ["false", "true"] {
        for passive in ["true", "false"] {
            let name = format!("lftp-{protect}-{passive}");
            let script = format!(
                "set ftp:ssl-force true; set ftp:ssl-protect-data {protect}; \
                 set ftp:ssl-protect-list {protect}; set ftp:passive-mode {passive}; \
                 set ssl:ca-file {ca}; set net:max-retries 1; set net:timeout 20; \
                 open -u anonymous,x ftp://127.0.0.1:{port}; put {up} -o pub/{name}.bin; \
                 get pub/one.bin -o {down}; cls pub; bye",
                port = s.gate.addr.port(),
                up = path_str(&upload),
                down = path_str(&s.local.path().join(format!("{name}.bin"))),
            );
            let out = run_ok(Command::new("lftp").args(["-c", &script]));
            same_file(&upload, &s.server.public().join(format!("{name}.bin")));
            same_file(&original, &s.local.path().join(format!("{name}.bin")));
            assert!(text(&out).contains("one.bin"), "{name}: {}", text(&out));
        }
    }
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "ok"), 8.0);
    assert_eq!(handshakes(&metrics, "client", "failed"), 0.0);
    // curl: 2 transfers protected; lftp: put, get and cls, twice, protected.
    assert!(
        handshakes(&metrics, "client-data", "ok") >= 8.0,
        "{metrics}"
    );
    assert_eq!(handshakes(&metrics, "client-data", "failed"), 0.0);
    assert_eq!(
        metric_value(
            &metrics,
            r#"ftpgate_expectations_refused_total{reason="tls-session"}"#
        ),
        0.0
    );
}

/// A plain connection to ftpgate, past the greeting.
fn greeted(s: &Setup) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(s.gate.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("220"), "{line}");
    (reader, stream)
}

fn reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    line
}

/// Reads until the peer closes; what came.
fn until_closed(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    rest
}

#[test]
fn clear_text_where_tls_belongs_ends_the_session_and_reaches_no_server() {
    if !prerequisites(&["vsftpd"]) {
        return;
    }
    let s = setup("optional", "");
    // After the 234: a command in clear instead of a ClientHello.
    let (mut r, mut w) = greeted(&s);
    w.write_all(b"AUTH TLS\r\n").expect("write");
    assert!(reply(&mut r).starts_with("234 "));
    w.write_all(b"USER anonymous\r\nPASS x\r\n").expect("write");
    let rest = until_closed(&mut r);
    assert!(
        !rest.starts_with(b"2") && !rest.starts_with(b"3"),
        "{rest:?}"
    );
    // Behind the AUTH, in the same segment: a whole line, and part of one.
    for behind in [&b"USER anonymous\r\n"[..], b"USER anon"] {
        let (mut r, mut w) = greeted(&s);
        w.write_all(&[&b"AUTH TLS\r\n"[..], behind].concat())
            .expect("write");
        assert!(reply(&mut r).starts_with("234 "));
        until_closed(&mut r);
    }
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "failed"), 3.0);
    assert_eq!(
        metric_value(&metrics, r#"ftpgate_sessions_total{outcome="tls-failed"}"#),
        3.0
    );
    assert!(
        !s.server.log().contains("USER"),
        "a clear-text login reached the server: {}",
        s.server.log()
    );
}

#[test]
fn a_handshake_that_never_finishes_meets_the_login_timeout_and_holds_up_no_one() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    let s = setup("optional", "set login-timeout 2s");
    let (mut r, mut w) = greeted(&s);
    w.write_all(b"AUTH TLS\r\n").expect("write");
    assert!(reply(&mut r).starts_with("234 "));
    // Half a ClientHello, then nothing; meanwhile another client goes through.
    w.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    let local = s.local.path().join("other.bin");
    run_ok(Command::new("python3").args([
        "-c",
        FTPLIB,
        "127.0.0.1",
        &s.gate.addr.port().to_string(),
        &path_str(&s.pki.ca),
        "P",
        "passive",
        "pub/one.bin",
        &path_str(&local),
        "pub/other-up.bin",
    ]));
    same_file(&s.server.public().join("one.bin"), &local);
    until_closed(&mut r);
    let metrics = s.gate.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            r#"ftpgate_sessions_total{outcome="login-timeout"}"#
        ),
        1.0
    );
}

#[test]
fn require_refuses_a_clear_login_with_530_and_tells_the_server_nothing() {
    if !prerequisites(&["vsftpd"]) {
        return;
    }
    let s = setup("require", "");
    let (mut r, mut w) = greeted(&s);
    w.write_all(b"USER anonymous\r\n").expect("write");
    assert!(reply(&mut r).starts_with("530 "));
    w.write_all(b"PASS x\r\n").expect("write");
    assert!(reply(&mut r).starts_with("530 "));
    w.write_all(b"QUIT\r\n").expect("write");
    assert!(reply(&mut r).starts_with("221"));
    assert!(!s.server.log().contains("USER"), "{}", s.server.log());
    let metrics = s.gate.metrics();
    assert_eq!(
        metric_value(&metrics, r#"ftpgate_commands_refused_total{reason="tls"}"#),
        2.0
    );
}

#[test]
fn a_policy_without_a_certificate_or_a_key_that_does_not_match_is_a_rule_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = pki(&dir.path().join("a").tap_mkdir());
    let b = pki(&dir.path().join("b").tap_mkdir());
    let check = |rules: &str| {
        let file = dir.path().join("x.rules");
        std::fs::write(&file, rules).expect("write rules");
        let out =
            run(Command::new(env!("CARGO_BIN_EXE_ftpgate")).args(["check", &path_str(&file)]));
        (out.status.success(), text(&out))
    };
    let listen = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n";
    let (ok, out) = check(&format!("{listen}pass from any tls client optional\n"));
    assert!(
        !ok && out.contains("x.rules:2:1") && out.contains("tls cert"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "{listen}tls cert {} key {}\npass from any tls client optional\n",
        path_str(&a.cert),
        path_str(&b.key)
    ));
    assert!(
        !ok && out.contains("x.rules:2:") && out.contains("does not belong"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "{listen}tls cert {} key {}\npass from any tls client optional\n",
        path_str(&a.cert),
        path_str(&a.key)
    ));
    assert!(ok && !out.contains("warning"), "{out}");
    // An expired certificate is valid for the rules and warned about.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("p");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let old = dir.path().join("old.pem");
    std::fs::write(&old, params.self_signed(&key).expect("cert").pem()).expect("write");
    let old_key = dir.path().join("old.key");
    std::fs::write(&old_key, key.serialize_pem()).expect("write");
    let (ok, out) = check(&format!(
        "{listen}tls cert {} key {}\npass from any tls client optional\n",
        path_str(&old),
        path_str(&old_key)
    ));
    assert!(
        ok && out.contains("x.rules:2: warning:") && out.contains("has expired"),
        "{out}"
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

/// A protected download through ftplib, its data connection offering `session`:
/// `own` (the control connection's TLS session, as RFC 4217 clients do), `none` (a full
/// handshake, as stock ftplib does) or `other` (the session of a second, concurrent
/// control connection of the same client). Prints `ok` once the bytes match. With
/// `pause` after the arguments, it says `ready` once logged in and waits for a line on
/// standard input before the download.
const RESUMING: &str = r#"
import ftplib, ssl, sys
host, port, ca, offer, expected = sys.argv[1:6]
pause = sys.argv[6:] == ["pause"]
ctx = ssl.create_default_context(cafile=ca)

def login():
    ftp = ftplib.FTP_TLS(context=ctx, timeout=20)
    ftp.connect(host, int(port))
    ftp.login()
    ftp.prot_p()
    return ftp

ftp, other = login(), login()
other.voidcmd("NOOP")  # its TLS session (and tickets) are settled
if pause:
    print("ready", flush=True)
    sys.stdin.readline()
session = {"own": ftp.sock.session, "none": None, "other": other.sock.session}[offer]
# The plain connection (FTP_TLS's own would make a TLS connection without a session).
conn = ftplib.FTP.ntransfercmd(ftp, "RETR pub/one.bin")[0]
conn = ctx.wrap_socket(conn, server_hostname=host, session=session)
data = b""
while chunk := conn.recv(65536):
    data += chunk
reused = conn.session_reused
conn.close()
ftp.voidresp()
assert data == open(expected, "rb").read(), len(data)
print("ok", reused, flush=True)
"#;

fn resuming(s: &Setup, offer: &str) -> Output {
    run(Command::new("python3").args([
        "-c",
        RESUMING,
        "127.0.0.1",
        &s.gate.addr.port().to_string(),
        &path_str(&s.pki.ca),
        offer,
        &path_str(&s.server.public().join("one.bin")),
    ]))
}

#[test]
fn a_protected_data_connection_may_resume_only_its_own_control_session() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    let refused = |s: &Setup| {
        metric_value(
            &s.gate.metrics(),
            r#"ftpgate_expectations_refused_total{reason="tls-session"}"#,
        )
    };
    // Without require-reuse: its own session or a full handshake, never another's.
    let s = setup("optional", "");
    let own = resuming(&s, "own");
    assert!(text(&own).contains("ok True"), "{}", text(&own));
    let none = resuming(&s, "none");
    assert!(text(&none).contains("ok False"), "{}", text(&none));
    assert_eq!(refused(&s), 0.0);
    let other = resuming(&s, "other");
    assert!(!other.status.success(), "{}", text(&other));
    assert_eq!(refused(&s), 1.0);
    // With require-reuse, only its own.
    let s = setup("optional require-reuse", "");
    let own = resuming(&s, "own");
    assert!(text(&own).contains("ok True"), "{}", text(&own));
    for offer in ["none", "other"] {
        let out = resuming(&s, offer);
        assert!(!out.status.success(), "{offer}: {}", text(&out));
    }
    assert_eq!(refused(&s), 2.0);
}

/// A client that starts a second TLS inside its protected data connection (so each
/// side takes the other's records for garbage), then a normal one.
const DOUBLE_WRAP: &str = r#"
import ftplib, ssl, sys
host, port, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
ftp = ftplib.FTP_TLS(context=ctx, timeout=10)
ftp.connect(host, int(port))
ftp.login()
ftp.prot_p()
conn = ftp.transfercmd("RETR pub/one.bin")
try:
    ctx.wrap_socket(conn, server_hostname=host)
    print("inner handshake succeeded?")
except (ssl.SSLError, OSError) as e:
    print("refused", e)
"#;

#[test]
fn garbage_inside_a_protected_data_connection_ends_that_transfer_only() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    let s = setup("optional", "");
    for _ in 0..3 {
        let out = run_ok(Command::new("python3").args([
            "-c",
            DOUBLE_WRAP,
            "127.0.0.1",
            &s.gate.addr.port().to_string(),
            &path_str(&s.pki.ca),
        ]));
        assert!(text(&out).contains("refused"), "{}", text(&out));
    }
    let own = resuming(&s, "own");
    assert!(text(&own).contains("ok True"), "{}", text(&own));
    assert!(!s.gate.log().contains("panicked"), "{}", s.gate.log());
    assert_eq!(
        metric_value(&s.gate.metrics(), "ftpgate_expectations_active"),
        0.0
    );
}

/// vsftpd behind a listener that speaks TLS from the first byte (`tls implicit`).
fn implicit_setup() -> Setup {
    setup_with("127.0.0.1", |server, pki| {
        let ip = "127.0.0.1".parse().expect("ip");
        let addr = std::net::SocketAddr::new(ip, free_port(ip));
        Gate::start(&format!(
            "listen reverse {addr} upstream {upstream} tls implicit\n\
             tls cert {cert} key {key}\n\
             pass from 127.0.0.0/8 tls client optional require-reuse\n",
            upstream = server.addr,
            cert = path_str(&pki.cert),
            key = path_str(&pki.key),
        ))
    })
}

#[test]
fn implicit_ftps_with_curl_and_lftp_and_a_clear_client_refused() {
    if !prerequisites(&["vsftpd", "curl", "lftp"]) {
        return;
    }
    let s = implicit_setup();
    let original = s.server.public().join("one.bin");
    let ca = path_str(&s.pki.ca);
    let url = |path: &str| format!("ftps://127.0.0.1:{}/{path}", s.gate.addr.port());
    let local = s.local.path().join("curl.bin");
    run_ok(
        Command::new("curl")
            .args(["-sS", "--cacert", &ca, "-o", &path_str(&local)])
            .arg(url("pub/one.bin")),
    );
    same_file(&original, &local);
    run_ok(
        Command::new("curl")
            .args(["-sS", "--cacert", &ca, "-T", &path_str(&local)])
            .arg(url("pub/curl-up.bin")),
    );
    same_file(&original, &s.server.public().join("curl-up.bin"));
    let down = s.local.path().join("lftp.bin");
    let script = format!(
        "set ftp:ssl-protect-data true; set ssl:ca-file {ca}; set net:max-retries 1; \
         set net:timeout 20; open -u anonymous,x ftps://127.0.0.1:{port}; \
         get pub/one.bin -o {down}; put {down} -o pub/lftp-up.bin; bye",
        port = s.gate.addr.port(),
        down = path_str(&down),
    );
    run_ok(Command::new("lftp").args(["-c", &script]));
    same_file(&original, &down);
    same_file(&original, &s.server.public().join("lftp-up.bin"));
    // A clear client: its first line is no TLS handshake.
    let mut clear = TcpStream::connect(s.gate.addr).expect("connect");
    clear
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    clear.write_all(b"USER anonymous\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = clear.read_to_end(&mut rest);
    assert!(!rest.starts_with(b"220"), "{rest:?}");
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "ok"), 3.0);
    assert_eq!(handshakes(&metrics, "client", "failed"), 1.0);
    assert!(
        handshakes(&metrics, "client-data", "ok") >= 4.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, r#"ftpgate_sessions_total{outcome="tls-failed"}"#),
        1.0
    );
    assert!(!s.server.log().contains("AUTH"), "{}", s.server.log());
}

#[test]
fn curl_clears_the_control_connection_with_ccc_where_the_rule_allows_it() {
    if !prerequisites(&["vsftpd", "curl"]) {
        return;
    }
    let s = setup("optional ccc", "");
    let original = s.server.public().join("one.bin");
    let ca = path_str(&s.pki.ca);
    let url = |path: &str| format!("ftp://127.0.0.1:{}/{path}", s.gate.addr.port());
    // Login through TLS, CCC, the rest in clear; the data stays protected (PROT P).
    for mode in ["passive", "active"] {
        let local = s.local.path().join(format!("{mode}.bin"));
        let out = run_ok(
            Command::new("curl")
                .args(["-sS", "-v", "--ssl-reqd", "--ftp-ssl-ccc", "--cacert", &ca])
                .args(["--ftp-ssl-ccc-mode", mode, "-o", &path_str(&local)])
                .arg(url("pub/one.bin")),
        );
        same_file(&original, &local);
        let said = text(&out);
        assert!(said.contains("200 CCC OK"), "{said}");
    }
    let metrics = s.gate.metrics();
    assert_eq!(handshakes(&metrics, "client", "failed"), 0.0);
    assert!(handshakes(&metrics, "client-data", "ok") >= 2.0);
    // Without `ccc` in the rule: 534, and curl gives up rather than go on in TLS.
    let s = setup("optional", "");
    let ca = path_str(&s.pki.ca);
    let out = run(Command::new("curl")
        .args(["-sS", "-v", "--ssl-reqd", "--ftp-ssl-ccc", "--cacert", &ca])
        .arg(format!(
            "ftp://127.0.0.1:{}/pub/one.bin",
            s.gate.addr.port()
        ))
        .args(["-o", "/dev/null"]));
    assert!(text(&out).contains("534 CCC"), "{}", text(&out));
}

#[test]
fn a_reload_leaves_the_sessions_in_progress_their_tls_for_data() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    // A reload makes a new ticket key; a session begun before must still resume its
    // own TLS session on its data connections (require-reuse would refuse them).
    let s = setup("optional require-reuse", "");
    let mut client = std::process::Command::new("python3")
        .args([
            "-c",
            RESUMING,
            "127.0.0.1",
            &s.gate.addr.port().to_string(),
            &path_str(&s.pki.ca),
            "own",
            &path_str(&s.server.public().join("one.bin")),
            "pause",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    s.gate.signal("HUP");
    eventually("the reload to be applied", || {
        s.gate.metric(r#"ftpgate_reloads_total{result="success"}"#) == 1.0
    });
    let mut stdin = client.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("go");
    line.clear();
    out.read_line(&mut line).expect("result");
    assert!(client.wait().expect("wait").success());
    assert_eq!(line.trim(), "ok True");
}

#[test]
fn a_client_that_renegotiates_is_refused_and_ends_only_its_own_session() {
    if !prerequisites(&["vsftpd", "openssl", "curl"]) {
        return;
    }
    let s = setup("optional", "");
    // OpenSSL's client renegotiates TLS 1.2 on a line "R"; rustls refuses it
    // (no_renegotiation), and OpenSSL gives up on the connection.
    // Its own messages go to stderr, interleaved here with what it received.
    let mut client = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec openssl s_client -tls1_2 -starttls ftp -connect {} 2>&1",
            s.gate.addr
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let mut until = |prefix: &str| {
        lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line"))
    };
    // The end of the session summary it prints once the handshake is done.
    until("Verify return code");
    stdin.write_all(b"USER anonymous\r\n").expect("USER");
    until("331");
    stdin.write_all(b"R\n").expect("R");
    until("RENEGOTIATING");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("no renegotiation")),
        "{rest:?}"
    );
    drop(stdin);
    let _ = client.wait();
    eventually("the session to end", || {
        s.gate
            .metric(r#"ftpgate_sessions_total{outcome="tls-failed"}"#)
            == 1.0
    });
    // Nothing else is touched: the next client logs in and transfers.
    let got = s.local.path().join("after.bin");
    let url = format!("ftp://127.0.0.1:{}/pub/one.bin", s.gate.addr.port());
    run_ok(
        Command::new("curl")
            .args(["-sS", "--ssl-reqd", "--cacert"])
            .arg(&s.pki.ca)
            .arg("-o")
            .arg(&got)
            .arg(url),
    );
    same_file(&s.server.public().join("one.bin"), &got);
}
