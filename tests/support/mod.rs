//! Shared helpers for the integration tests: a real vsftpd on loopback, the real
//! ftpgate binary, the real clients (curl, lftp, Python ftplib), and files to move.
//!
//! Prerequisites that are missing make a test skip with a message, except under
//! `CI=true`, where they make it fail: `tests/run.sh` installs them.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LOCALHOST: &str = "127.0.0.1";
pub const LOCALHOST6: &str = "::1";

pub mod lab;
pub mod tls;

/// Where `tests/support/ftp-servers.sh` unpacked pure-ftpd and ProFTPD.
pub fn server_root() -> PathBuf {
    std::env::var_os("FTPGATE_FTP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ftp-servers"))
        .join("root/usr/sbin")
}

/// `program` run inside network namespace `ns`, or directly when there is none.
pub fn command_in(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// True when a missing prerequisite must fail the test rather than skip it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Whether the named tools (and root, which vsftpd's chroot needs) are present.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !have(t))
        .map(|t| t.to_string())
        .collect();
    if !is_root() {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !ci(),
        "missing prerequisites under CI=true: {missing:?} (tests/run.sh installs them)"
    );
    eprintln!("SKIPPED: missing prerequisites {missing:?}; run tests/run.sh to install them");
    false
}

/// Returns from the test (skips) when prerequisites are missing outside CI.
#[macro_export]
macro_rules! require {
    ($($tool:expr),* $(,)?) => {
        if !support::prerequisites(&[$($tool),*]) {
            return Default::default();
        }
    };
}

/// Runs `script` as root with bash in network namespace `netns`, in a mount namespace
/// of its own where each of `dirs` (such as `etc`, `usr`) is an overlay whose changes
/// stay on a tmpfs under `scratch`, so installs into the system leave the host as it
/// was. `systemctl` is tests/support/systemctl.py, with its state (pid files, service
/// logs) in `scratch/state`, visible from the host. Processes the script starts in the
/// background keep the mount namespace alive. A script that fails fails the test, with
/// its trace and ftpgate's service log. Returns that log.
pub fn overlaid_root(netns: &str, dirs: &[&str], scratch: &Path, script: &str) -> String {
    let dir = scratch.display();
    let bin = scratch.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    let shim = bin.join("systemctl");
    if !shim.exists() {
        std::os::unix::fs::symlink(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/systemctl.py"),
            &shim,
        )
        .expect("systemctl stand-in");
    }
    let script_path = scratch.join("script.sh");
    fs::write(&script_path, script).expect("script");
    let prelude = format!(
        r#"set -euo pipefail
mkdir -p {dir}/ovl && mount -t tmpfs ftpgate-test {dir}/ovl
for d in {dirs}; do
    up={dir}/ovl/$(echo $d | tr / -)
    mkdir -p $up/upper $up/work
    mount -t overlay overlay -o lowerdir=/$d,upperdir=$up/upper,workdir=$up/work /$d
done
export PATH={dir}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMCTL_STATE={dir}/state
cd {root}
set -x
. {script}
"#,
        dirs = dirs.join(" "),
        root = env!("CARGO_MANIFEST_DIR"),
        script = script_path.display(),
    );
    let out = run(command_in(Some(netns), "unshare").args([
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        &prelude,
    ]));
    let log = fs::read_to_string(scratch.join("state/ftpgate.service.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the script failed: {}\n{}\nftpgate: {log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    log
}

/// A port nobody listens on right now.
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on {ip}: {e}"))
}

/// Polls `ready` until it holds; fails the test with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A vsftpd serving anonymous FTP (read and write) from a fresh directory.
pub struct Vsftpd {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Vsftpd {
    pub fn start(ip: &str) -> Vsftpd {
        Self::start_with(ip, "")
    }

    /// Starts vsftpd on `ip` with extra configuration lines.
    pub fn start_with(ip: &str, extra: &str) -> Vsftpd {
        let server = Vsftpd::spawn(ip, extra);
        wait_for("vsftpd to greet", Duration::from_secs(10), || {
            greets(server.addr)
        });
        server
    }

    /// Starts vsftpd with `implicit_ssl=YES` in `extra`: it listens, and greets only
    /// through TLS.
    pub fn start_implicit(ip: &str, extra: &str) -> Vsftpd {
        let server = Vsftpd::spawn(ip, extra);
        wait_for("vsftpd to listen", Duration::from_secs(10), || {
            TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok()
        });
        server
    }

    fn spawn(ip: &str, extra: &str) -> Vsftpd {
        let ip: IpAddr = ip.parse().expect("ip");
        let dir = tempdir();
        let root = dir.path().join("root");
        let public = root.join("pub");
        fs::create_dir_all(&public).expect("mkdir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        // Anonymous uploads need a directory the `ftp` user owns.
        let chown = Command::new("chown")
            .args(["ftp", public.to_str().unwrap_or("")])
            .status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "chown ftp {}",
            public.display()
        );
        fs::create_dir_all("/var/run/vsftpd/empty").expect("secure_chroot_dir");
        let port = free_port(ip);
        let listen = if ip.is_ipv4() {
            format!("listen=YES\nlisten_ipv6=NO\nlisten_address={ip}\n")
        } else {
            format!("listen=NO\nlisten_ipv6=YES\nlisten_address6={ip}\n")
        };
        let conf = format!(
            "{listen}listen_port={port}\nbackground=NO\nanonymous_enable=YES\nlocal_enable=NO\n\
             anon_root={root}\nwrite_enable=YES\nanon_upload_enable=YES\nanon_mkdir_write_enable=YES\n\
             anon_other_write_enable=YES\nanon_umask=022\n\
             connect_from_port_20=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nseccomp_sandbox=NO\n\
             xferlog_enable=YES\nvsftpd_log_file={log}\nlog_ftp_protocol=YES\n\
             max_clients=200\nmax_per_ip=200\n{extra}\n",
            root = root.display(),
            log = dir.path().join("vsftpd.log").display(),
        );
        let conf_path = dir.path().join("vsftpd.conf");
        fs::write(&conf_path, conf).expect("write vsftpd.conf");
        let child = Command::new("vsftpd")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vsftpd");
        let addr = SocketAddr::new(ip, port);
        Vsftpd { addr, dir, child }
    }

    /// The world-writable directory inside the FTP root, `/pub`.
    pub fn public(&self) -> PathBuf {
        self.dir.path().join("root/pub")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// vsftpd's log (`log_ftp_protocol=YES`: every command it reads).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("vsftpd.log")
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220")
}

/// A running ftpgate.
pub struct Gate {
    /// The first listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub rules: PathBuf,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    dir: tempfile::TempDir,
    child: Child,
}

impl Gate {
    /// A reverse proxy on loopback (same family as `upstream`) in front of
    /// `upstream`, passing everything from loopback, plus `extra` rule lines.
    pub fn reverse(upstream: SocketAddr, extra: &str) -> Gate {
        Gate::reverse_args(upstream, extra, &[])
    }

    /// Starts ftpgate with a rule file; the admin endpoint is added on loopback.
    pub fn start(rules: &str) -> Gate {
        Gate::start_args(rules, &[])
    }

    /// Like [`Gate::reverse`], with extra arguments to `ftpgate run`.
    pub fn reverse_args(upstream: SocketAddr, extra: &str, args: &[&str]) -> Gate {
        let ip = upstream.ip();
        let addr = SocketAddr::new(ip, free_port(ip));
        let rules = format!(
            "listen reverse {addr} upstream {upstream}\n{extra}\npass from 127.0.0.0/8\npass from ::1\n"
        );
        Gate::start_args(&rules, args)
    }

    /// Starts ftpgate with a rule file and extra arguments to `ftpgate run`.
    pub fn start_args(rules: &str, args: &[&str]) -> Gate {
        Gate::start_in(None, rules, args)
    }

    /// Starts ftpgate inside network namespace `netns` (or here); the rules' own
    /// `metrics listen` is the admin endpoint, else one is added on loopback.
    pub fn start_in(netns: Option<&str>, rules: &str, args: &[&str]) -> Gate {
        Gate::start_with(netns, rules, args, None)
    }

    /// Like [`Gate::start_in`], optionally with a file-descriptor limit (`ulimit -n`).
    pub fn start_with(
        netns: Option<&str>,
        rules: &str,
        args: &[&str],
        fd_limit: Option<u32>,
    ) -> Gate {
        Gate::launch(netns, rules, args, fd_limit, &[])
    }

    /// Like [`Gate::start`], with variables in ftpgate's environment.
    pub fn start_env(rules: &str, env: &[(&str, &str)]) -> Gate {
        Gate::launch(None, rules, &[], None, env)
    }

    fn launch(
        netns: Option<&str>,
        rules: &str,
        args: &[&str],
        fd_limit: Option<u32>,
        env: &[(&str, &str)],
    ) -> Gate {
        let dir = tempdir();
        let stated = rules
            .lines()
            .find_map(|l| l.trim().strip_prefix("metrics listen "))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let (admin, rules) = match stated {
            Some(admin) => (admin, rules.to_string()),
            None => {
                let ip: IpAddr = LOCALHOST.parse().expect("ip");
                let admin = SocketAddr::new(ip, free_port(ip));
                (admin, format!("metrics listen {admin}\n{rules}"))
            }
        };
        let path = dir.path().join("test.rules");
        fs::write(&path, &rules).expect("write rules");
        let log = fs::File::create(dir.path().join("ftpgate.log")).expect("log file");
        let mut command = match fd_limit {
            // prlimit(1) execs the program, so the child is ftpgate itself.
            Some(n) => {
                let mut c = command_in(netns, "prlimit");
                c.arg(format!("--nofile={n}"))
                    .arg(env!("CARGO_BIN_EXE_ftpgate"));
                c
            }
            None => command_in(netns, env!("CARGO_BIN_EXE_ftpgate")),
        };
        let child = command
            .args(["run", "-c"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ftpgate");
        let addr = rules
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|a| a.parse().ok())
            .expect("rules have a listen line");
        let gate = Gate {
            addr,
            admin,
            rules: path,
            netns: netns.map(String::from),
            dir,
            child,
        };
        let listeners = rules
            .lines()
            .filter(|l| l.trim().starts_with("listen "))
            .count();
        wait_for("ftpgate to listen", Duration::from_secs(10), || {
            gate.log().matches("listening").count() >= listeners
        });
        gate
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("ftpgate.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (an event the proxy reports).
    pub fn wait_log(&self, needle: &str) {
        wait_for(
            &format!("ftpgate to log {needle:?}"),
            Duration::from_secs(20),
            || self.log().contains(needle),
        );
    }

    /// The `/metrics` page, fetched with curl.
    pub fn metrics(&self) -> String {
        let out = run(command_in(self.netns.as_deref(), "curl").args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://{}/metrics", self.admin),
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The HTTP status of a GET of `path` on the admin endpoint, with extra curl
    /// arguments (headers).
    pub fn http_status(&self, path: &str, args: &[&str]) -> u16 {
        self.http(path, args).0
    }

    /// Status and body of a GET of `path` on the admin endpoint.
    pub fn http(&self, path: &str, args: &[&str]) -> (u16, String) {
        let out = run(command_in(self.netns.as_deref(), "curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("http://{}{path}", self.admin)));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The value of one sample, e.g. `ftpgate_sessions_active` or
    /// `ftpgate_expectations_refused_total{reason="bounce"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics(), sample)
    }

    /// File descriptors the process holds now.
    /// `/proc/PID/status` of the ftpgate process (uid, capabilities, no_new_privs).
    pub fn proc_status(&self) -> String {
        fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status")
    }

    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("cannot read ftpgate's fds: {e}"))
    }

    /// Waits until no session or expectation is left and the descriptors are back to
    /// `baseline`: nothing leaked.
    pub fn assert_nothing_left(&self, baseline: usize) {
        eventually(
            "sessions, expectations and descriptors to be released",
            || {
                self.metric("ftpgate_sessions_active") == 0.0
                    && self.metric("ftpgate_expectations_active") == 0.0
                    && self.open_fds() <= baseline
            },
        );
    }

    /// Waits for the process to exit on its own, within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "ftpgate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig}");
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- ftpgate log ----\n{}", self.log());
        }
    }
}

/// Finds a sample in a Prometheus text exposition; labels may be given in any order
/// as long as they are written as exported (sorted by name).
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Runs a command to completion, with its output captured.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and asserts it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The four ways to set up a data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pasv,
    Epsv,
    Port,
    Eprt,
}

pub const MODES: [Mode; 4] = [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt];

impl Mode {
    pub fn verb(self) -> &'static str {
        match self {
            Mode::Pasv => "PASV",
            Mode::Epsv => "EPSV",
            Mode::Port => "PORT",
            Mode::Eprt => "EPRT",
        }
    }

    pub fn is_passive(self) -> bool {
        matches!(self, Mode::Pasv | Mode::Epsv)
    }

    /// curl's switches that force this mode.
    pub fn curl_args(self) -> &'static [&'static str] {
        match self {
            Mode::Pasv => &["--ftp-pasv", "--disable-epsv"],
            Mode::Epsv => &["--ftp-pasv"],
            Mode::Port => &["-P", "-", "--disable-eprt"],
            Mode::Eprt => &["-P", "-"],
        }
    }

    fn python(self) -> &'static str {
        match self {
            Mode::Pasv => "pasv",
            Mode::Epsv => "epsv",
            Mode::Port => "port",
            Mode::Eprt => "eprt",
        }
    }
}

/// `ftp://host:port` with IPv6 brackets.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("ftp://{addr}/{path}")
}

pub fn curl(mode: Mode) -> Command {
    curl_in(None, mode)
}

/// curl in network namespace `ns`, forced into `mode`.
pub fn curl_in(ns: Option<&str>, mode: Mode) -> Command {
    let mut c = command_in(ns, "curl");
    c.args(["-sS", "--max-time", "120"]).args(mode.curl_args());
    c
}

pub fn curl_get(addr: SocketAddr, mode: Mode, remote: &str, local: &Path) {
    run_ok(curl(mode).arg(url(addr, remote)).arg("-o").arg(local));
}

pub fn curl_put(addr: SocketAddr, mode: Mode, local: &Path, remote: &str) {
    run_ok(curl(mode).arg("-T").arg(local).arg(url(addr, remote)));
}

pub fn curl_list(addr: SocketAddr, mode: Mode, dir: &str) -> String {
    let out = run_ok(curl(mode).arg(url(addr, dir)));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// lftp with `commands` against `addr`; EPRT is what lftp uses for active mode over
/// IPv6, EPSV/PASV and PORT are forced by its settings.
pub fn lftp(addr: SocketAddr, mode: Mode, commands: &str) -> Output {
    lftp_in(None, addr, mode, commands)
}

/// lftp in network namespace `ns`.
pub fn lftp_in(ns: Option<&str>, addr: SocketAddr, mode: Mode, commands: &str) -> Output {
    let passive = if mode.is_passive() { "on" } else { "off" };
    let epsv = if mode == Mode::Epsv { "yes" } else { "no" };
    let script = format!(
        "set net:max-retries 1; set net:timeout 30; set ftp:ssl-allow no; \
         set ftp:passive-mode {passive}; set ftp:prefer-epsv {epsv}; {commands}; bye"
    );
    let host = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    run_ok(command_in(ns, "lftp").args([
        "-u",
        "anonymous,",
        "-p",
        &addr.port().to_string(),
        "-e",
        &script,
        &host,
    ]))
}

/// Python's ftplib: `action` is get, put or list.
pub fn ftplib(
    addr: SocketAddr,
    mode: Mode,
    action: &str,
    remote: &str,
    local: Option<&Path>,
) -> Output {
    ftplib_in(None, addr, mode, action, remote, local)
}

/// Python's ftplib in network namespace `ns`.
pub fn ftplib_in(
    ns: Option<&str>,
    addr: SocketAddr,
    mode: Mode,
    action: &str,
    remote: &str,
    local: Option<&Path>,
) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ftp_client.py");
    let mut cmd = command_in(ns, "python3");
    cmd.args([
        script,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        mode.python(),
        action,
        remote,
    ]);
    if let Some(local) = local {
        cmd.arg(local);
    }
    run_ok(&mut cmd)
}

/// Writes `size` bytes of reproducible pseudo-random content.
pub fn make_file(path: &Path, size: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create"));
    let mut x = seed | 1;
    let mut left = size;
    let mut block = [0u8; 8192];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len());
        f.write_all(&block[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
    // vsftpd serves as the `ftp` user: the file must be readable by others.
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// Asserts that two files have the same length and content.
pub fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (
        fs::File::open(a).expect("open a"),
        fs::File::open(b).expect("open b"),
    );
    let (la, lb) = (
        fa.metadata().expect("meta").len(),
        fb.metadata().expect("meta").len(),
    );
    assert_eq!(
        la,
        lb,
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).expect("read a");
        fb.read_exact(&mut bb[..n]).expect("read b");
        assert!(
            ba[..n] == bb[..n],
            "{} and {} differ in content",
            a.display(),
            b.display()
        );
        if n == 0 {
            return;
        }
    }
}

/// A minimal control-channel client for tests that need to see or shape exact lines.
pub struct Control {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Control {
    pub fn connect(addr: SocketAddr) -> Control {
        let stream = TcpStream::connect(addr).expect("connect to proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Control { reader, stream }
    }

    /// Reads one complete reply (all lines of a multi-line one).
    pub fn reply(&mut self) -> String {
        let mut text = String::new();
        let mut code: Option<String> = None;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; reply so far: {text:?}");
            text.push_str(&line);
            match &code {
                None if line.len() >= 4 && &line[3..4] == "-" => code = Some(line[..3].to_string()),
                None => return text,
                Some(c) if line.starts_with(&format!("{c} ")) => return text,
                Some(_) => {}
            }
        }
    }

    /// Sends one command line (CRLF added).
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    /// Reads the greeting and logs in anonymously.
    pub fn login(addr: SocketAddr) -> Control {
        let mut c = Control::connect(addr);
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("USER anonymous").starts_with("331"));
        assert!(c.cmd("PASS guest@").starts_with("230"));
        c
    }

    /// True when the server closed the control connection.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}

/// The data address in a 227 or 229 reply (229 takes the control peer's address).
pub fn data_addr(reply: &str, control_peer: SocketAddr) -> SocketAddr {
    if reply.starts_with("229") {
        let port = reply
            .split("|||")
            .nth(1)
            .and_then(|r| r.split('|').next())
            .and_then(|p| p.parse().ok())
            .expect("229 port");
        return SocketAddr::new(control_peer.ip(), port);
    }
    let start = reply.find('(').expect("227 (") + 1;
    let end = reply.find(')').expect("227 )");
    let n: Vec<u16> = reply[start..end]
        .split(',')
        .map(|x| x.trim().parse().expect("number"))
        .collect();
    let ip = IpAddr::from([n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8]);
    SocketAddr::new(ip, n[4] * 256 + n[5])
}

/// The server side of a scripted peer, for hostile behaviour no real server shows.
pub struct Peer {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Peer {
    pub fn say(&mut self, text: &str) {
        self.stream
            .write_all(format!("{text}\r\n").as_bytes())
            .expect("peer write");
    }

    /// The next command line, without its terminator.
    pub fn heard(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("peer read");
        line.trim_end().to_string()
    }

    /// The next command line as bytes, terminator included.
    pub fn heard_raw(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("peer read");
        line
    }

    /// Expects `PASV` and answers with a 227 naming loopback and `port`.
    pub fn pasv(&mut self, port: u16) {
        assert_eq!(self.heard(), "PASV");
        self.say(&format!(
            "227 Entering Passive Mode (127,0,0,1,{},{})",
            port >> 8,
            port & 0xff
        ));
    }

    /// Greets and accepts any login.
    pub fn login(&mut self) {
        self.say("220 scripted server");
        assert!(self.heard().starts_with("USER"));
        self.say("331 password please");
        assert!(self.heard().starts_with("PASS"));
        self.say("230 logged in");
    }
}

/// Runs `script` on the first control connection to a scripted server on loopback.
pub fn fake_server(
    script: impl FnOnce(Peer) + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind fake server");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("fake server accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        script(Peer { reader, stream });
    });
    (addr, handle)
}

/// Asserts nobody has connected to `listener` (it is checked without waiting).
pub fn assert_no_connection(listener: &TcpListener, what: &str) {
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("{what}: unexpected connection from {peer}"),
        Err(e) => panic!("{what}: accept failed: {e}"),
    }
}

/// Polls `ready` until it holds, for state another process reports only by being
/// asked (a metric); bounded.
pub fn eventually(what: &str, ready: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(20), ready);
}

/// The `h1,h2,h3,h4,p1,p2` form of an address.
pub fn host_port(addr: SocketAddr) -> String {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("host_port needs IPv4: {addr}")
    };
    let o = ip.octets();
    format!(
        "{},{},{},{},{},{}",
        o[0],
        o[1],
        o[2],
        o[3],
        addr.port() >> 8,
        addr.port() & 0xff
    )
}
