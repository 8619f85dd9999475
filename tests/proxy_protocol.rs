//! PROXY protocol toward servers (issue 18, `send-proxy v1|v2` on an upstream): a real
//! implementation reads ftpgate's header. HAProxy binds with `accept-proxy` in front of
//! vsftpd, as a server farm's balancer or a PROXY-aware server would, and logs the
//! client each connection's header names; curl connects to ftpgate from 127.0.0.2,
//! while ftpgate itself connects from 127.0.0.1.

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
    fn start(listen: SocketAddr, server: SocketAddr) -> Haproxy {
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
        let log = dir.path().join("haproxy.log");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
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

#[test]
fn haproxy_reads_the_client_from_ftpgates_header_in_both_versions() {
    require!("haproxy", "vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 1 << 20, 7);
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let local = tempfile::tempdir().expect("tempdir");
    for version in ["v1", "v2"] {
        let balancer = SocketAddr::new(ip, free_port(ip));
        let haproxy = Haproxy::start(balancer, server.addr);
        let listen = SocketAddr::new(ip, free_port(ip));
        let gate = Gate::start(&format!(
            "listen reverse {listen} upstream {balancer} send-proxy {version}\npass from 127.0.0.0/8\n"
        ));
        let got = local.path().join(format!("{version}.bin"));
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
