//! The three-host lab of `deploy/lab.sh` for the transparent-mode tests: namespaces
//! built by the shipped script, the shipped nftables ruleset on the edge, vsftpd on the
//! server. Torn down on drop, also when a test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{command_in, run, run_ok, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
static NEXT: AtomicU32 = AtomicU32::new(0);

/// How the edge hands FTP to ftpgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Redirect,
    Tproxy,
    /// TPROXY with `preserve-source` on its listeners.
    TproxyPreserveSource,
    /// `data-path kernel` on the listeners of the flavour inside.
    Kernel(KernelOf),
}

/// The flavours the kernel data path is tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOf {
    Redirect,
    Tproxy,
    TproxyPreserveSource,
}

impl Flavour {
    /// The shipped nftables ruleset and ftpgate rule file for this flavour.
    pub fn files(self) -> (&'static str, &'static str) {
        match self.relay() {
            Flavour::Redirect => ("ftpgate-redirect.nft", "edge-redirect.rules"),
            _ => ("ftpgate-tproxy.nft", "edge-tproxy.rules"),
        }
    }

    /// The flavour without `data-path kernel`.
    pub fn relay(self) -> Flavour {
        match self {
            Flavour::Kernel(KernelOf::Redirect) => Flavour::Redirect,
            Flavour::Kernel(KernelOf::Tproxy) => Flavour::Tproxy,
            Flavour::Kernel(KernelOf::TproxyPreserveSource) => Flavour::TproxyPreserveSource,
            other => other,
        }
    }

    /// The shipped rule file's text, adapted to the flavour.
    pub fn rules(self) -> String {
        let (_, rules) = self.files();
        let text = fs::read_to_string(format!("{ROOT}/rules/{rules}")).expect("shipped edge rules");
        let text = match self.relay() {
            Flavour::TproxyPreserveSource => text.replace(" tproxy", " tproxy preserve-source"),
            _ => text,
        };
        if !matches!(self, Flavour::Kernel(_)) {
            return text;
        }
        // `data-path kernel` at the end of each listen statement, before its comment.
        text.lines()
            .map(|line| match line.split_once('#') {
                Some((code, comment)) if code.starts_with("listen ") => {
                    format!("{} data-path kernel # {comment}", code.trim_end())
                }
                _ if line.starts_with("listen ") => format!("{line} data-path kernel"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub struct Lab {
    pub prefix: String,
}

impl Lab {
    /// Builds the lab with `deploy/lab.sh` and sets the edge up as `flavour` says,
    /// with the shipped files.
    pub fn up(flavour: Flavour) -> Lab {
        Lab::up_with(flavour, |ruleset| ruleset)
    }

    /// Like [`Lab::up`], with the ruleset's text changed by `edit` first (its block of
    /// variables, as an operator edits it).
    pub fn up_with(flavour: Flavour, edit: impl FnOnce(String) -> String) -> Lab {
        let lab = Lab::bare();
        let (ruleset, _) = flavour.files();
        let shipped = format!("{ROOT}/deploy/nftables/{ruleset}");
        let text = fs::read_to_string(&shipped).expect("shipped ruleset");
        let edited = std::env::temp_dir().join(format!("{}-{ruleset}", lab.prefix));
        fs::write(&edited, edit(text)).expect("write ruleset");
        run_ok(lab.on("edge", "nft").arg("-f").arg(&edited));
        let _ = fs::remove_file(&edited);
        if flavour.relay() != Flavour::Redirect {
            let routing = format!("{ROOT}/deploy/tproxy-routing.sh");
            let ruleset = format!("{ROOT}/deploy/nftables/{ruleset}");
            run_ok(
                lab.on("edge", "bash")
                    .args([routing.as_str(), "add", &ruleset]),
            );
        }
        lab
    }

    /// The three hosts, routing, and nothing on the edge but forwarding.
    pub fn bare() -> Lab {
        let prefix = format!(
            "fg{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab { prefix };
        run_ok(Command::new("bash").args([&format!("{ROOT}/deploy/lab.sh"), "up", &lab.prefix]));
        lab
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `program` run on `host` (client, edge or server).
    pub fn on(&self, host: &str, program: &str) -> Command {
        command_in(Some(&self.ns(host)), program)
    }

    /// Runs `tests/support/edge_client.py` on `host`; returns its output.
    pub fn script(&self, host: &str, args: &[&str]) -> String {
        let out = run_ok(
            self.on(host, "python3")
                .arg(format!("{ROOT}/tests/support/edge_client.py"))
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The client's connections to each (server-side address, port) arrive from the
    /// client's own address: neither redirected, nor translated, nor dropped.
    pub fn assert_untouched(&self, targets: &[(&str, u16)]) {
        for &(addr, port) in targets {
            let source = if addr.contains(':') {
                "2001:db8:1::2"
            } else {
                "198.51.100.2"
            };
            let probe = self.probe("server", addr, port);
            assert_eq!(
                self.script("client", &["connect", addr, &port.to_string(), "5"])
                    .trim(),
                "connected",
                "{addr} port {port}"
            );
            assert_eq!(
                probe.report(),
                format!("connected {source}"),
                "{addr} port {port}"
            );
        }
    }

    /// `PORT`/`EPRT` toward a third host get `504`, and nothing reaches it.
    pub fn assert_bounce_refused(&self) {
        let probe = self.probe("server", "203.0.113.66", 7000);
        let out = self.script("client", &["bounce", "203.0.113.2", "203.0.113.66", "7000"]);
        assert!(
            out.contains("PORT: 504") && out.contains("EPRT: 504"),
            "{out}"
        );
        assert_eq!(probe.report(), "nothing");
    }

    /// Starts a listener on `host` that reports on demand whether anyone connected.
    pub fn probe(&self, host: &str, addr: &str, port: u16) -> Probe {
        let mut child = self
            .on(host, "python3")
            .arg(format!("{ROOT}/tests/support/edge_client.py"))
            .args(["probe", addr, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start probe");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("probe ready");
        assert_eq!(line.trim(), "ready", "probe on {addr}:{port}");
        Probe {
            child,
            stdin,
            stdout,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(Command::new("bash").args([
            &format!("{ROOT}/deploy/lab.sh"),
            "down",
            &self.prefix,
        ]));
    }
}

/// A listener that answers whether it was connected to.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
}

impl Probe {
    /// "nothing" or "connected <peer>".
    pub fn report(mut self) -> String {
        std::io::Write::write_all(&mut self.stdin, b"report\n").expect("ask probe");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).expect("probe report");
        let _ = self.child.wait();
        line.trim().to_string()
    }
}

/// vsftpd on the lab's server host: anonymous read/write on port 21 over IPv4 and
/// IPv6, passive ports 30000-30999 (outside ftpgate's data ports, so a transfer that
/// crossed the edge directly could not pass for one through ftpgate).
pub struct LabServer {
    dir: tempfile::TempDir,
    child: Child,
}

impl LabServer {
    pub fn start(lab: &Lab) -> LabServer {
        LabServer::start_with(lab, "")
    }

    /// Like [`LabServer::start`], with extra lines for vsftpd.conf.
    pub fn start_with(lab: &Lab, extra: &str) -> LabServer {
        LabServer::start_in(&lab.ns("server"), extra)
    }

    /// The same vsftpd in network namespace `ns` (another lab's server host).
    pub fn start_in(ns: &str, extra: &str) -> LabServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let public = root.join("pub");
        fs::create_dir_all(&public).expect("mkdir");
        for p in [dir.path(), root.as_path()] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        run_ok(Command::new("chown").args(["ftp", &public.display().to_string()]));
        fs::create_dir_all("/var/run/vsftpd/empty").expect("secure_chroot_dir");
        let conf = format!(
            "listen=NO\nlisten_ipv6=YES\nlisten_port=21\nbackground=NO\nanonymous_enable=YES\n\
             local_enable=NO\nanon_root={}\nwrite_enable=YES\nanon_upload_enable=YES\n\
             anon_umask=022\nconnect_from_port_20=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
             seccomp_sandbox=NO\npasv_min_port=30000\npasv_max_port=30999\n\
             xferlog_enable=YES\nvsftpd_log_file={}\nlog_ftp_protocol=YES\nmax_clients=200\nmax_per_ip=200\n{extra}\n",
            root.display(),
            dir.path().join("vsftpd.log").display()
        );
        let conf_path = dir.path().join("vsftpd.conf");
        fs::write(&conf_path, conf).expect("vsftpd.conf");
        let child = command_in(Some(ns), "vsftpd")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vsftpd");
        wait_for(
            "vsftpd to listen in the lab",
            Duration::from_secs(10),
            || {
                let out = run(command_in(Some(ns), "ss").args(["-Hltn", "sport = :21"]));
                !out.stdout.is_empty()
            },
        );
        LabServer { dir, child }
    }

    pub fn public(&self) -> PathBuf {
        self.dir.path().join("root/pub")
    }

    /// vsftpd's protocol log. Asserting that something is absent from it only means
    /// something once it has recorded a session, so this insists on one.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default();
        assert!(
            log.contains("CONNECT: Client"),
            "vsftpd logged no session: {log:?}"
        );
        log
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.public().join(name)
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of a command as text.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A local path as a string.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
