//! PROXY protocol both ways (issue 18), with HAProxy as the real implementation.
//! Toward servers (`send-proxy v1|v2` on an upstream): HAProxy binds with
//! `accept-proxy` in front of vsftpd and logs the client each header names; curl
//! connects to ftpgate from 127.0.0.2, while ftpgate itself connects from 127.0.0.1.
//! From a balancer (`accept-proxy from ADDRS` on a listener): HAProxy runs
//! `deploy/haproxy/ftpgate-front.cfg` in front of ftpgate, control port and data ports,
//! with `send-proxy-v2`; clients from 127.0.0.3 transfer in every passive mode, a thief
//! from 127.0.0.4 racing for a data port through the balancer gets nothing, and a
//! connection from elsewhere or without a header is closed, each counted.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};

use support::*;

/// HAProxy in TCP mode on `listen`, taking PROXY headers (`accept-proxy`) and passing
/// connections on to `server`; its log (one line per connection, at its end) goes to
/// `log`.
struct Haproxy {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy with `accept-proxy` in front of `server`.
    fn accepting(listen: SocketAddr, server: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    log stdout format raw local0\n\
                 defaults\n    mode tcp\n    log global\n    option tcplog\n\
                 \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
                 frontend ftp\n    bind {listen} accept-proxy\n    default_backend ftp\n\
                 backend ftp\n    server vsftpd {server}\n"
            ),
        )
        .expect("write haproxy.cfg");
        Haproxy::run(&config, &[], listen, dir)
    }

    /// HAProxy running a configuration file as it is, with `env` in its environment,
    /// once it listens on `listen`; its log goes to `dir`.
    fn run(
        config: &std::path::Path,
        env: &[(&str, String)],
        listen: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Haproxy {
        let log = dir.path().join("haproxy.log");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        eventually("haproxy to listen", || {
            std::net::TcpStream::connect(listen).is_ok()
        });
        Haproxy {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in through the balancer from 127.0.0.3 and asks for a passive port; a thief
/// from 127.0.0.4 connects to it first (through the balancer too) and reports what it
/// got; then the client downloads on it. Prints "thief: <bytes>" and the download's
/// size.
const RACE: &str = r#"
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = socket.create_connection((host, port), timeout=20, source_address=("127.0.0.3", 0))
f = c.makefile("rb")
def reply():
    line = f.readline().decode()
    while line[3:4] == "-":
        line = f.readline().decode()
    return line
def cmd(line):
    c.sendall(line.encode() + b"\r\n")
    return reply()
reply()
cmd("USER anonymous"); cmd("PASS x"); cmd("TYPE I")
r = cmd("EPSV")
data_port = int(r.split("|||")[1].split("|")[0])
thief = socket.create_connection((host, data_port), timeout=20, source_address=("127.0.0.4", 0))
thief.settimeout(5)
try:
    stolen = thief.recv(65536)
except socket.timeout:
    stolen = b"(timeout)"
print("thief:", len(stolen), flush=True)
d = socket.create_connection((host, data_port), timeout=20, source_address=("127.0.0.3", 0))
c.sendall(("RETR " + path + "\r\n").encode())
reply()
got = 0
while True:
    b = d.recv(65536)
    if not b:
        break
    got += len(b)
print(reply().strip())
print("got", got)
"#;

#[test]
fn behind_haproxy_the_header_names_the_client_on_control_and_data_connections() {
    require!("haproxy", "vsftpd", "curl", "lftp", "python3");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let port = free_port(ip);
    // The balancer on an address of its own: its 20 data ports are free there even
    // while other tests' sockets come and go on 127.0.0.1.
    let (public, inside) = (
        SocketAddr::from(([127, 0, 0, 7], port)),
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    let gate = Gate::start(&format!(
        "set data-ports 43100-43119\n\
         listen reverse {inside} upstream {} accept-proxy from 127.0.0.1\npass from 127.0.0.0/8\n",
        server.addr
    ));
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/ftpgate-front.cfg");
    let _haproxy = Haproxy::run(
        &config,
        &[
            ("FTP_PUBLIC", public.to_string()),
            ("DATA_PUBLIC", "127.0.0.7:43100-43119".to_string()),
            ("FTPGATE_CONTROL", inside.to_string()),
            ("FTPGATE", "127.0.0.2".to_string()),
        ],
        // Ready once it listens; a port of the data range, whose connection reaches
        // no listener of ftpgate's (the control port's would be a session).
        SocketAddr::from(([127, 0, 0, 7], 43119)),
        tempfile::tempdir().expect("tempdir"),
    );
    let local = tempfile::tempdir().expect("tempdir");
    // EPSV, PASV (its 227 names the balancer), and an upload.
    for (i, extra) in [[""; 0].as_slice(), &["--disable-epsv"]].iter().enumerate() {
        let got = local.path().join(format!("{i}.bin"));
        run_ok(
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--interface", "127.0.0.3"])
                .args(*extra)
                .arg("-o")
                .arg(&got)
                .arg(format!("ftp://{public}/pub/one.bin")),
        );
        assert_same_file(&got, &server.public().join("one.bin"));
        run_ok(
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--interface", "127.0.0.3"])
                .args(*extra)
                .arg("-T")
                .arg(&got)
                .arg(format!("ftp://{public}/pub/up-{i}.bin")),
        );
        assert_same_file(&got, &server.public().join(format!("up-{i}.bin")));
    }
    // lftp and Python's ftplib (passive) from the same client address.
    let got = local.path().join("lftp.bin");
    let script = format!(
        "set net:socket-bind-ipv4 127.0.0.3; set net:max-retries 1; set net:timeout 20; \
         open -u anonymous,x ftp://{public}; get pub/one.bin -o {}; bye",
        got.display()
    );
    run_ok(Command::new("lftp").args(["-c", &script]));
    assert_same_file(&got, &server.public().join("one.bin"));
    let got = local.path().join("ftplib.bin");
    run_ok(Command::new("python3").args([
        "-c",
        "import ftplib, sys\n\
         ftp = ftplib.FTP(timeout=20, source_address=('127.0.0.3', 0))\n\
         ftp.connect(sys.argv[1], int(sys.argv[2])); ftp.login()\n\
         f = open(sys.argv[3], 'wb'); ftp.retrbinary('RETR pub/one.bin', f.write); f.close(); ftp.quit()",
        &public.ip().to_string(),
        &public.port().to_string(),
        &got.display().to_string(),
    ]));
    assert_same_file(&got, &server.public().join("one.bin"));
    assert!(gate.log().contains("client=127.0.0.3:"), "{}", gate.log());
    // Six sessions (curl's four, lftp's, ftplib's), a data connection each.
    assert_eq!(
        gate.metric(r#"ftpgate_proxy_headers_total{leg="control",outcome="ok"}"#),
        6.0
    );
    assert_eq!(
        gate.metric(r#"ftpgate_proxy_headers_total{leg="data",outcome="ok"}"#),
        6.0
    );
    // A thief racing for the port through the balancer: refused, and the client's
    // download goes on.
    let out = run_ok(Command::new("python3").args([
        "-c",
        RACE,
        "127.0.0.7",
        &port.to_string(),
        "pub/one.bin",
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("thief: 0") && said.contains("got 1048576"),
        "{said}"
    );
    assert_eq!(
        gate.metric(r#"ftpgate_expectations_refused_total{reason="wrong-peer"}"#),
        1.0
    );
    // Not through the balancer: a client straight from 127.0.0.5, and the balancer's
    // address without a header. Both closed before any greeting.
    for (source, send) in [
        ("127.0.0.5", &b""[..]),
        ("127.0.0.1", b"USER anonymous\r\n"),
    ] {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(source.parse().expect("ip"), 0).into())
            .expect("bind");
        socket.connect(&inside.into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        std::io::Write::write_all(&mut stream, send).expect("write");
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut got);
        assert!(
            got.is_empty(),
            "{source}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        gate.metric(r#"ftpgate_proxy_headers_total{leg="control",outcome="untrusted"}"#),
        1.0
    );
    assert_eq!(
        gate.metric(r#"ftpgate_proxy_headers_total{leg="control",outcome="malformed"}"#),
        1.0
    );
    // HAProxy's own health checks (`check` in the example) carry a LOCAL header:
    // counted, closed, and no session.
    eventually("a health check of HAProxy's", || {
        gate.metric(r#"ftpgate_proxy_headers_total{leg="control",outcome="local"}"#) >= 1.0
    });
}

#[test]
fn haproxy_reads_the_client_from_ftpgates_header_in_both_versions_and_from_a_pool() {
    require!("haproxy", "vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let local = tempfile::tempdir().expect("tempdir");
    // A reverse listener's upstream, and a pool's servers.
    for (version, pool) in [("v1", false), ("v2", false), ("v2", true)] {
        let balancer = SocketAddr::new(ip, free_port(ip));
        let haproxy = Haproxy::accepting(balancer, server.addr);
        let listen = SocketAddr::new(ip, free_port(ip));
        let target = if pool {
            format!("pool farm\npool farm {{ {balancer} }} send-proxy {version}")
        } else {
            format!("upstream {balancer} send-proxy {version}")
        };
        let gate = Gate::start(&format!(
            "listen reverse {listen} {target}\npass from 127.0.0.0/8\n"
        ));
        let got = local.path().join(format!("{version}-{pool}.bin"));
        run_ok(
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--interface", "127.0.0.2", "-o"])
                .arg(&got)
                .arg(format!("ftp://{listen}/pub/one.bin")),
        );
        assert_same_file(&got, &server.public().join("one.bin"));
        // HAProxy logs a connection when it ends: the session's, from the client
        // ftpgate named, not from ftpgate's own 127.0.0.1.
        eventually("haproxy to log the session", || {
            haproxy.log().contains("ftp/vsftpd")
        });
        let log = haproxy.log();
        let line = log
            .lines()
            .find(|l| l.contains("ftp/vsftpd"))
            .unwrap_or_default();
        assert!(line.starts_with("127.0.0.2:"), "{version}: {log}");
        assert!(!log.contains("PR--"), "HAProxy refused a header: {log}");
        drop(gate);
    }
}
