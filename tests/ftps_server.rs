//! FTPS toward the server (issue 17, `tls server`): ftpgate secures its own leg to real
//! servers that insist on TLS: a vsftpd with `force_anon_logins_ssl`,
//! `force_anon_data_ssl` and `require_ssl_reuse` (data connections must resume the
//! control connection's TLS session), also implicit and behind a forward listener,
//! pure-ftpd with `-Y 3` and ProFTPD's mod_tls (`TLSRequired on`); for FTPS clients
//! (`match`) and for clear ones (`require`). And the bad cases: a server whose
//! certificate does not check out, a server without TLS under `require` and `match`.

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

/// A strict vsftpd on `ip` with `one.bin` (1 MiB), and ftpgate in front of it whose
/// pass rule for loopback clients ends in `tls` (with `CA` replaced by the path of
/// the CA that signed vsftpd's certificate).
fn setup(ip: &str, tls: &str) -> Setup {
    Setup::new(
        ip,
        |pki| strict_vsftpd(ip, pki),
        |server, pki| {
            let tls = tls.replace("CA", &path_str(&pki.ca));
            Gate::reverse(
                server.addr,
                &format!(
                    "tls cert {} key {}\npass from {{ 127.0.0.0/8, ::1 }} {tls}",
                    path_str(&pki.cert),
                    path_str(&pki.key)
                ),
            )
        },
    )
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
        // vsftpd heard ftpgate's AUTH before the login, and the client's PROT P
        // mirrored (ftplib asks for it after its login).
        let log = s.server.log();
        let auth = log.find("AUTH TLS").expect("AUTH TLS in vsftpd's log");
        let user = log.find("USER anonymous").expect("USER in vsftpd's log");
        let prot = log.find("PROT P").expect("PROT P in vsftpd's log");
        assert!(auth < user && user < prot, "{log}");
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
fn the_server_certificate_is_checked_and_one_that_does_not_check_out_fails_the_session() {
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
    // The system's CA store (`ca system`, the default), here one whose file
    // SSL_CERT_FILE names, as on any host: it holds vsftpd's CA, and the session goes on.
    let listen = format!("127.0.0.1:{}", free_port(LOCALHOST.parse().expect("ip")));
    let gate = Gate::start_env(
        &format!(
            "listen reverse {listen} upstream {}\npass from 127.0.0.0/8 tls server require\n",
            s.server.addr
        ),
        &[("SSL_CERT_FILE", &path_str(&s.pki.ca))],
    );
    let stream = TcpStream::connect(gate.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("greeting");
    assert!(line.starts_with("220"), "{line}");
    assert_eq!(handshakes(&gate.metrics(), "server", "ok"), 1.0);
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
        dir,
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

/// pure-ftpd or ProFTPD as unpacked by `tests/support/ftp-servers.sh`, with TLS
/// required on control and data, serving `one.bin` (1 MiB) to user `alice` (pure-ftpd)
/// or anonymous (ProFTPD).
struct TlsServer {
    addr: std::net::SocketAddr,
    child: std::process::Child,
    /// Where `one.bin` is and uploads go.
    files: std::path::PathBuf,
    user: &'static str,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsServer {
    /// A home for the FTP user, owned by `ftp`, with `one.bin` in it.
    fn files(dir: &std::path::Path) -> std::path::PathBuf {
        let files = dir.join("files");
        std::fs::create_dir_all(&files).expect("mkdir");
        make_file(&files.join("one.bin"), 1 << 20, 7);
        let chown = Command::new("chown")
            .args(["-R", "ftp", &path_str(&files)])
            .status();
        assert!(chown.is_ok_and(|s| s.success()), "chown ftp");
        files
    }

    fn wait(mut self, what: &str) -> TlsServer {
        eventually(what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what}: the server exited with {status}");
            }
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
        });
        self
    }

    /// pure-ftpd with `-Y 3` (clear sessions and clear data refused), a virtual user
    /// in a PureDB.
    fn pure_ftpd(pki: &Pki) -> TlsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsServer::files(dir.path());
        let pdb = dir.path().join("users.pdb");
        let mut pw = Command::new(server_root().join("../bin/pure-pw"))
            .args(["useradd", "alice", "-u", "ftp", "-g", "nogroup", "-d"])
            .arg(&files)
            .arg("-f")
            .arg(dir.path().join("passwd"))
            .args(["-m", "-F"])
            .arg(&pdb)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("pure-pw");
        pw.stdin
            .take()
            .expect("stdin")
            .write_all(b"secret\nsecret\n")
            .expect("password");
        assert!(pw.wait().is_ok_and(|s| s.success()), "pure-pw useradd");
        let addr = std::net::SocketAddr::new(
            LOCALHOST.parse().expect("ip"),
            free_port(LOCALHOST.parse().expect("ip")),
        );
        let child = Command::new(server_root().join("pure-ftpd"))
            .arg(format!("-S{},{}", addr.ip(), addr.port()))
            .arg(format!("-lpuredb:{}", path_str(&pdb)))
            .args(["-H", "-E", "-Y", "3", "-2"])
            .arg(format!("{},{}", path_str(&pki.cert), path_str(&pki.key)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pure-ftpd");
        TlsServer {
            addr,
            child,
            files,
            user: "alice:secret",
            _dir: dir,
        }
        .wait("pure-ftpd to listen")
    }

    /// ProFTPD with mod_tls: `TLSRequired on`, and data connections must resume the
    /// control connection's TLS session (mod_tls's default).
    fn proftpd(pki: &Pki) -> TlsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsServer::files(dir.path());
        let ip: std::net::IpAddr = LOCALHOST.parse().expect("ip");
        let addr = std::net::SocketAddr::new(ip, free_port(ip));
        let d = dir.path().display();
        let conf = format!(
            "ServerType standalone\nDefaultServer on\nPort {port}\nDefaultAddress {ip}\n\
             SocketBindTight on\nUser nobody\nGroup nogroup\nUseIPv6 off\nWtmpLog off\n\
             UseReverseDNS off\nScoreboardFile {d}/scoreboard\nPidFile {d}/proftpd.pid\n\
             DelayTable none\nTransferLog none\nSystemLog {d}/system.log\n\
             ModulePath {modules}\nLoadModule mod_tls.c\nTLSEngine on\nTLSRequired on\n\
             TLSProtocol TLSv1.2 TLSv1.3\nTLSLog {d}/tls.log\n\
             TLSECCertificateFile {cert}\nTLSECCertificateKeyFile {key}\n\
             <Anonymous {files}>\nUser ftp\nGroup nogroup\nUserAlias anonymous ftp\n\
             RequireValidShell off\n<Limit WRITE>\nAllowAll\n</Limit>\n</Anonymous>\n",
            port = addr.port(),
            modules = path_str(&server_root().join("../lib/proftpd")),
            cert = path_str(&pki.cert),
            key = path_str(&pki.key),
            files = path_str(&files),
        );
        let conf_path = dir.path().join("proftpd.conf");
        std::fs::write(&conf_path, conf).expect("write proftpd.conf");
        let child = Command::new(server_root().join("proftpd"))
            .args(["-n", "-c"])
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start proftpd");
        TlsServer {
            addr,
            child,
            files,
            user: "anonymous:x",
            _dir: dir,
        }
        .wait("proftpd to listen")
    }
}

#[test]
fn pure_ftpd_and_proftpd_requiring_tls_take_ftpgates_leg_for_ftps_and_clear_clients() {
    if !prerequisites(&["curl"]) {
        return;
    }
    let root = server_root();
    let present =
        root.join("pure-ftpd").exists() && root.join("../lib/proftpd/mod_tls.so").exists();
    if !present {
        assert!(
            !ci(),
            "pure-ftpd and ProFTPD's mod_tls are not unpacked in {}: run tests/support/ftp-servers.sh",
            root.display()
        );
        eprintln!("SKIPPED: run tests/support/ftp-servers.sh to unpack pure-ftpd and proftpd");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_for(dir.path(), LOCALHOST);
    let local = tempfile::tempdir().expect("tempdir");
    for server in [TlsServer::pure_ftpd(&pki), TlsServer::proftpd(&pki)] {
        let original = server.files.join("one.bin");
        let ca = path_str(&pki.ca);
        // An FTPS client, passive (curl 7.88 never starts TLS on an active data
        // connection), and clear clients in both modes.
        let cases = [
            (
                "tls client optional tls server match",
                vec!["--ssl-reqd", "--cacert", &ca],
                "--ftp-pasv",
            ),
            ("tls server require", vec![], "--ftp-pasv"),
            ("tls server require", vec![], "-P127.0.0.1"),
        ];
        for (i, (tls, client, mode)) in cases.into_iter().enumerate() {
            let gate = Gate::reverse(
                server.addr,
                &format!(
                    "tls cert {} key {}\npass from 127.0.0.0/8 {tls} ca {ca}",
                    path_str(&pki.cert),
                    path_str(&pki.key)
                ),
            );
            let url = |path: &str| format!("ftp://127.0.0.1:{}/{path}", gate.addr.port());
            let got = local.path().join(format!("got-{i}.bin"));
            let curl = |args: &[&str], url: String| {
                run_ok(
                    Command::new("curl")
                        .args(["-sS", "--max-time", "30", "-u", server.user, mode])
                        .args(&client)
                        .args(args)
                        .arg(url),
                )
            };
            curl(&["-o", &path_str(&got)], url("one.bin"));
            same_file(&original, &got);
            curl(&["-T", &path_str(&got)], url(&format!("up-{i}.bin")));
            same_file(&original, &server.files.join(format!("up-{i}.bin")));
            let metrics = gate.metrics();
            assert_eq!(handshakes(&metrics, "server", "ok"), 2.0, "{tls} {mode}");
            assert_eq!(
                handshakes(&metrics, "server-data", "ok"),
                2.0,
                "{tls} {mode}"
            );
        }
    }
}

#[test]
fn an_implicit_tls_server_and_a_forward_listener_take_ftpgates_tls_too() {
    if !prerequisites(&["vsftpd", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_for(dir.path(), LOCALHOST);
    let ca = path_str(&pki.ca);
    // vsftpd speaking TLS from the first byte (port 990 style), strict as above.
    let implicit = Vsftpd::start_implicit(
        LOCALHOST,
        &format!(
            "ssl_enable=YES\nimplicit_ssl=YES\nrsa_cert_file={}\nrsa_private_key_file={}\n\
             allow_anon_ssl=YES\nforce_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\n\
             require_ssl_reuse=YES\n",
            path_str(&pki.cert),
            path_str(&pki.key)
        ),
    );
    make_file(&implicit.public().join("one.bin"), 1 << 20, 7);
    let local = tempfile::tempdir().expect("tempdir");
    let gate = Gate::reverse(
        implicit.addr,
        &format!("pass from 127.0.0.0/8 tls server require ca {ca} implicit"),
    );
    for mode in ["--ftp-pasv", "-P127.0.0.1"] {
        let got = local.path().join(format!("implicit{mode}.bin"));
        let url = format!("ftp://127.0.0.1:{}/pub/one.bin", gate.addr.port());
        run_ok(
            Command::new("curl")
                .args(["-sS", mode, "-o", &path_str(&got)])
                .arg(url),
        );
        same_file(&implicit.public().join("one.bin"), &got);
    }
    assert_eq!(handshakes(&gate.metrics(), "server", "ok"), 2.0);
    assert_eq!(handshakes(&gate.metrics(), "server-data", "ok"), 2.0);
    // A forward listener: the client names the server, and its certificate must be
    // valid for that name.
    let server = strict_vsftpd(LOCALHOST, &pki);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let ip: std::net::IpAddr = LOCALHOST.parse().expect("ip");
    let listen = std::net::SocketAddr::new(ip, free_port(ip));
    let gate = Gate::start(&format!(
        "listen forward {listen}\npass from 127.0.0.0/8 to 127.0.0.1 tls server require ca {ca}\n"
    ));
    let got = local.path().join("forward.bin");
    let url = format!(
        "ftp://anonymous%40127.0.0.1%3A{}:guest@{}/pub/one.bin",
        server.addr.port(),
        gate.addr
    );
    run_ok(
        Command::new("curl")
            .args(["-sS", "-o", &path_str(&got)])
            .arg(url),
    );
    same_file(&server.public().join("one.bin"), &got);
    assert_eq!(handshakes(&gate.metrics(), "server", "ok"), 1.0);
}

#[test]
fn a_pool_that_picks_at_user_checks_its_server_by_the_name_in_the_pool() {
    if !prerequisites(&["vsftpd", "python3"]) {
        return;
    }
    // A certificate for the name only: checked against 127.0.0.1 it would not do.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki_with(dir.path(), &["localhost"]);
    let server = strict_vsftpd(LOCALHOST, &pki);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let ip: std::net::IpAddr = LOCALHOST.parse().expect("ip");
    let listen = std::net::SocketAddr::new(ip, free_port(ip));
    let gate = Gate::start(&format!(
        "listen reverse {listen} pool staff\n\
         pool staff {{ localhost:{} }} users {{ anonymous }}\n\
         pass from 127.0.0.0/8 tls server require ca {}\n",
        server.addr.port(),
        path_str(&pki.ca)
    ));
    let s = Setup {
        server,
        gate,
        pki,
        dir,
        local: tempfile::tempdir().expect("tempdir"),
    };
    ftplib(&s, LOCALHOST, "none", "passive", "pooled.bin");
    assert_eq!(handshakes(&s.gate.metrics(), "server", "ok"), 1.0);
}
