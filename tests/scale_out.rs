//! Scale-out behind Linux IPVS and a VRRP pair of directors (issue 19), with the files
//! of `deploy/scale-out/` as they are: `lab.sh` builds clients, two directors, three
//! ftpgate instances and two vsftpd servers in network namespaces; keepalived runs
//! `keepalived-persistence.conf` or `keepalived-slices.conf` on both directors, nftables
//! `director-*.nft`, and each instance `instance-N.rules`.
//!
//! IPVS needs the kernel's `ip_vs` modules. Where this machine's kernel has none (as on
//! the machines CI runs on), `scale_out_behind_ipvs` boots Debian's kernel in a virtual
//! machine (`tests/support/vm.sh`, the host's file system shared) and runs the
//! scenarios there; they are `#[ignore]`d in a plain `cargo test` because they need
//! that kernel, and the VM runs them with `--ignored`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::lab::LabServer;
use support::*;

const VIP: &str = "198.51.100.10";
const SCENARIOS: [&str; 3] = [
    "persistence_spreads_clients_drains_and_survives_a_dead_instance",
    "slices_spread_sessions_drain_and_survive_a_dead_instance",
    "a_director_failover",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ipvs_here() -> bool {
    Path::new("/proc/net/ip_vs").exists()
        || Command::new("modprobe")
            .arg("ip_vs")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Path::new("/proc/net/ip_vs").exists()
}

/// Runs the scenarios where IPVS is: here if this kernel has it, else in the VM.
#[test]
fn scale_out_behind_ipvs() {
    require!(
        "keepalived",
        "ipvsadm",
        "vsftpd",
        "curl",
        "nft",
        "ip",
        "python3"
    );
    let exe = std::env::current_exe().expect("test binary");
    let mut scenarios = if ipvs_here() {
        Command::new(&exe)
    } else {
        let mut vm = Command::new("bash");
        vm.arg(repo().join("tests/support/vm.sh")).arg(&exe);
        vm
    };
    scenarios
        .args(["--ignored", "--exact", "--test-threads", "1", "--nocapture"])
        .args(SCENARIOS)
        .current_dir(repo());
    let status = scenarios.status().expect("run the scenarios");
    assert!(status.success(), "scale-out scenarios failed: {status}");
}

/// A background process, killed when dropped.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &str, program: &str, args: &[&str], dir: &Path) -> Daemon {
        let name = format!(
            "{ns}-{}",
            Path::new(program).file_name().unwrap().to_string_lossy()
        );
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command_in(Some(ns), program)
            .args(args)
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Daemon { name, child, log }
    }

    fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args(["-s", sig, &self.child.id().to_string()]));
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "{} did not exit: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which balancing the directors do.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Persistence,
    Slices,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Persistence => "persistence",
            Variant::Slices => "slices",
        }
    }
}

/// The lab with every daemon running; torn down when dropped.
struct Farm {
    dir: tempfile::TempDir,
    instances: Vec<Option<Daemon>>,
    directors: Vec<Daemon>,
    servers: Vec<LabServer>,
}

impl Farm {
    fn start(variant: Variant) -> Farm {
        run_ok(
            Command::new("bash")
                .arg(repo().join("deploy/scale-out/lab.sh"))
                .arg("up"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let servers: Vec<LabServer> = ["so-s1", "so-s2"]
            .iter()
            .map(|ns| LabServer::start_in(ns, ""))
            .collect();
        // The same files on both servers: written once, linked into the other.
        for (name, size, seed) in [
            ("small.bin", 200_000, 3),
            // Larger than what socket buffers hold, so that it is still moving on
            // every hop while the slow reader takes it.
            ("big.bin", 24_000_000, 5),
        ] {
            make_file(&servers[0].path(name), size, seed);
            std::fs::hard_link(servers[0].path(name), servers[1].path(name)).expect("link");
        }
        let instances = (1..=3)
            .map(|n| Some(Farm::instance(n, dir.path())))
            .collect();
        let mut farm = Farm {
            dir,
            instances,
            directors: Vec::new(),
            servers,
        };
        for n in 1..=3 {
            farm.wait_ready(n);
        }
        for d in ["d1", "d2"] {
            let ns = format!("so-{d}");
            run_ok(
                command_in(Some(&ns), "nft")
                    .arg("-f")
                    .arg(repo().join(format!("deploy/scale-out/director-{}.nft", variant.name()))),
            );
            let conf = format!("deploy/scale-out/keepalived-{}.conf", variant.name());
            // Pid files of its own: keepalived will not start where one names a
            // running keepalived, and a scenario's must not meet the last one's.
            let run = farm.dir.path().join(format!("keepalived-{d}"));
            let run = run.to_str().expect("path");
            let args = [
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--log-detail",
                "--use-file",
                &conf,
                "--config-id",
                d,
                "--pid",
                &format!("{run}.pid"),
                "--vrrp_pid",
                &format!("{run}-vrrp.pid"),
                "--checkers_pid",
                &format!("{run}-checkers.pid"),
            ];
            let daemon = Daemon::start(&ns, "keepalived", &args, farm.dir.path());
            farm.directors.push(daemon);
        }
        // Ready when d1 holds both virtual addresses and balances to every instance.
        wait_for(
            "d1 to be master with three ready instances",
            Duration::from_secs(60),
            || {
                let addrs = output(command_in(Some("so-d1"), "ip").args(["-br", "addr"]));
                let table = ipvs_table("so-d1");
                addrs.contains("198.51.100.10/24")
                    && addrs.contains("203.0.113.1/24")
                    && ["11", "12", "13"]
                        .iter()
                        .all(|n| table.contains(&format!("203.0.113.{n}:")))
                    && !table.contains("Masq    0")
            },
        );
        farm
    }

    fn instance(n: usize, dir: &Path) -> Daemon {
        let rules = repo().join(format!("deploy/scale-out/instance-{n}.rules"));
        Daemon::start(
            &format!("so-g{n}"),
            env!("CARGO_BIN_EXE_ftpgate"),
            &["run", "-c", rules.to_str().expect("path")],
            dir,
        )
    }

    fn wait_ready(&self, n: usize) {
        wait_for(
            &format!("instance {n} ready"),
            Duration::from_secs(60),
            || http_status(n, "/readyz") == "200",
        );
    }

    /// Where the files served are (the first server's copy).
    fn root(&self) -> PathBuf {
        self.servers[0].public()
    }

    fn instance_mut(&mut self, n: usize) -> &mut Daemon {
        self.instances[n - 1].as_mut().expect("instance running")
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for d in self.instances.iter().flatten().chain(&self.directors) {
            all += &format!("--- {}\n{}\n", d.name, d.log());
        }
        all
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        // keepalived stops its VRRP and checker processes only when asked to stop.
        for d in &mut self.directors {
            d.signal("TERM");
            let end = Instant::now() + Duration::from_secs(10);
            while d.child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.directors.clear();
        self.instances.clear();
        let _ = Command::new("bash")
            .arg(repo().join("deploy/scale-out/lab.sh"))
            .arg("down")
            .status();
    }
}

fn output(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn ipvs_table(ns: &str) -> String {
    output(command_in(Some(ns), "ipvsadm").args(["-L", "-n"]))
}

/// An instance's HTTP status for `path`, asked from inside its namespace.
fn http_status(n: usize, path: &str) -> String {
    output(command_in(Some(&format!("so-g{n}")), "curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        &format!("http://127.0.0.1:9121{path}"),
    ]))
}

/// Instance `n`'s `/metrics`, asked from inside its namespace.
fn metrics(n: usize) -> String {
    output(command_in(Some(&format!("so-g{n}")), "curl").args([
        "-s",
        "--max-time",
        "5",
        "http://127.0.0.1:9121/metrics",
    ]))
}

fn metric(n: usize, sample: &str) -> f64 {
    metric_value(&metrics(n), sample)
}

/// Sessions the instance has served or serves: every ended outcome plus the open ones.
fn sessions(n: usize) -> f64 {
    let text = metrics(n);
    let ended: f64 = text
        .lines()
        .filter(|l| l.starts_with("ftpgate_sessions_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    ended + metric_value(&text, "ftpgate_sessions_active")
}

fn client(n: u8) -> String {
    format!("198.51.100.{}", 100 + n)
}

/// curl in the client namespace from client address `from`.
fn curl(from: &str, mode: Mode) -> Command {
    let mut c = curl_in(Some("so-client"), mode);
    c.args(["--interface", from, "--max-time", "30"]);
    c
}

/// Downloads `file` from `from`; whether it arrived whole.
fn download(farm: &Farm, from: &str, mode: Mode, file: &str) -> Result<(), String> {
    let out = farm.dir.path().join(format!("got-{from}-{file}"));
    let _ = std::fs::remove_file(&out);
    let result = run(curl(from, mode)
        .args(["--connect-timeout", "3", "-o"])
        .arg(&out)
        .arg(format!("ftp://{VIP}/pub/{file}")));
    if !result.status.success() {
        return Err(String::from_utf8_lossy(&result.stderr).into_owned());
    }
    let same = std::fs::read(&out).ok() == std::fs::read(farm.root().join(file)).ok();
    same.then_some(())
        .ok_or_else(|| format!("{file} arrived different"))
}

/// Downloads big.bin from the address given, reading at most 2.2 MB/s (about 11 s),
/// and says "transferring" once its data connection is open.
const SLOW: &str = r#"
import ftplib, sys, time
ftp = ftplib.FTP(timeout=30)
ftp.connect(sys.argv[1], 21, source_address=(sys.argv[2], 0))
ftp.login()
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR pub/big.bin")
print("transferring", flush=True)
with open(sys.argv[3], "wb") as out:
    while True:
        block = conn.recv(65536)
        if not block:
            break
        out.write(block)
        time.sleep(0.03)
conn.close()
ftp.voidresp()
try:
    ftp.quit()
except ftplib.all_errors:
    pass  # a draining instance ends the session after the transfer
"#;

/// A slow download of big.bin from `from` (curl's --limit-rate is not honoured for
/// FTP downloads by the curl of Debian 12), in the background, once transferring.
fn slow_download(farm: &Farm, from: &str) -> (Child, PathBuf) {
    use std::io::{BufRead, BufReader};
    let out = farm.dir.path().join(format!("slow-{from}"));
    let mut child = command_in(Some("so-client"), "python3")
        .args(["-c", SLOW, VIP, from])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().next().and_then(Result::ok);
    assert_eq!(
        first.as_deref(),
        Some("transferring"),
        "the slow download from {from} started\n{}",
        farm.logs()
    );
    (child, out)
}

fn finish_slow(farm: &Farm, mut child: Child, out: &Path, what: &str) {
    let status = child.wait().expect("python3");
    assert!(
        status.success(),
        "{what}: the slow download failed ({status})\n{}",
        farm.logs()
    );
    assert_same_file(out, &farm.root().join("big.bin"));
}

/// The instance a client address's persistence template names on director `ns`.
fn templates(ns: &str) -> Vec<(String, String)> {
    output(command_in(Some(ns), "ipvsadm").args(["-L", "-n", "-c"]))
        .lines()
        .filter(|l| l.starts_with("IP "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let source = f.get(3)?.rsplit_once(':')?.0.to_owned();
            let dest = f.get(5)?.rsplit_once(':')?.0.to_owned();
            Some((source, dest))
        })
        .collect()
}

/// The instance (1-3) serving the one session open at the moment.
fn busy_instance() -> usize {
    let busy: Vec<usize> = (1..=3)
        .filter(|&n| metric(n, "ftpgate_sessions_active") > 0.0)
        .collect();
    assert_eq!(
        busy.len(),
        1,
        "one instance should hold the one session: {busy:?}"
    );
    busy[0]
}

/// Seconds from `since` until a new session from `from` lists the root.
fn until_sessions_work(from: &str, since: Instant, limit: Duration) -> f64 {
    loop {
        let ok = run(curl(from, Mode::Epsv)
            .args(["--connect-timeout", "1", "--max-time", "3", "-l"])
            .arg(format!("ftp://{VIP}/")))
        .status
        .success();
        if ok {
            return since.elapsed().as_secs_f64();
        }
        assert!(
            since.elapsed() < limit,
            "no new session from {from} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds from `since` until a new session from each of the six client addresses
/// has worked. The checks take an instance out within about three seconds (a check a
/// second, one retry a second later); 15 s leaves room for the emulated VM, where
/// 4.6-7.5 s were measured.
fn until_every_client_served(since: Instant) -> f64 {
    (1..=6)
        .map(|n| until_sessions_work(&client(n), since, Duration::from_secs(15)))
        .fold(0.0, f64::max)
}

/// Spread, drain and a dead instance, for either variant.
fn spread_drain_and_kill(variant: Variant) {
    let mut farm = Farm::start(variant);
    let modes = [Mode::Epsv, Mode::Pasv, Mode::Port];
    // Two sessions from each of six client addresses, every transfer checked.
    for round in 0..2 {
        for n in 1..=6 {
            let mode = modes[(n as usize + round) % modes.len()];
            download(&farm, &client(n), mode, "small.bin").unwrap_or_else(|e| {
                panic!(
                    "{} from {}: {e}\n{}",
                    variant.name(),
                    client(n),
                    farm.logs()
                )
            });
        }
    }
    let spread: Vec<f64> = (1..=3).map(sessions).collect();
    eprintln!(
        "{}: sessions per instance after 12: {spread:?}",
        variant.name()
    );
    assert_eq!(
        spread.iter().sum::<f64>(),
        12.0,
        "every session reached an instance"
    );
    assert!(
        spread.iter().all(|&s| s > 0.0),
        "every instance served sessions: {spread:?}"
    );
    if variant == Variant::Persistence {
        // One template per client address, each naming one instance, and each
        // instance's sessions are exactly its addresses' (two each).
        let map = templates("so-d1");
        for n in 1..=6 {
            let named = map.iter().filter(|(s, _)| *s == client(n)).count();
            assert_eq!(named, 1, "one template for {}: {map:?}", client(n));
        }
        for (i, served) in spread.iter().enumerate() {
            let addrs = map
                .iter()
                .filter(|(_, d)| *d == format!("203.0.113.{}", 11 + i))
                .count();
            assert_eq!(
                *served,
                2.0 * addrs as f64,
                "instance {} and its addresses {map:?}",
                i + 1
            );
        }
    } else {
        // No persistence: round robin over the three, two sessions from each address
        // not bound to one instance.
        assert!(
            templates("so-d1").is_empty(),
            "the slices variant keeps no templates"
        );
        assert_eq!(
            spread,
            vec![4.0, 4.0, 4.0],
            "round robin over the instances"
        );
    }

    // Draining: an instance with a transfer in flight is told to stop. Its transfer
    // finishes, and new sessions from every client go to the others meanwhile.
    let (slow, slow_out) = slow_download(&farm, &client(1));
    let draining = busy_instance();
    let drain_start = Instant::now();
    farm.instance_mut(draining).signal("TERM");
    let worst = until_every_client_served(drain_start);
    eprintln!(
        "{}: draining instance {draining}: every client's new sessions worked {worst:.1} s after SIGTERM",
        variant.name()
    );
    finish_slow(&farm, slow, &slow_out, "draining");
    let status = farm
        .instance_mut(draining)
        .wait_exit(Duration::from_secs(30));
    assert!(status.success(), "a drained instance exits 0: {status}");
    // Back: restarted, it is balanced to again once ready.
    farm.instances[draining - 1] = Some(Farm::instance(draining, farm.dir.path()));
    farm.wait_ready(draining);
    wait_for(
        "the restarted instance back at weight 1",
        Duration::from_secs(30),
        || !ipvs_table("so-d1").contains("Masq    0"),
    );

    // A dead instance: SIGKILL, while another instance has a transfer in flight.
    let (slow, slow_out) = slow_download(&farm, &client(2));
    let carrying = busy_instance();
    let victim = if carrying == 1 { 2 } else { 1 };
    let killed = Instant::now();
    farm.instances[victim - 1] = None;
    let worst = until_every_client_served(killed);
    eprintln!(
        "{}: instance {victim} killed: every client's new sessions worked {worst:.1} s later",
        variant.name()
    );
    finish_slow(&farm, slow, &slow_out, "another instance's transfer");
    // Sessions go on working after that, every transfer whole.
    for n in 1..=6 {
        download(&farm, &client(n), Mode::Epsv, "small.bin")
            .unwrap_or_else(|e| panic!("after the kill, from {}: {e}\n{}", client(n), farm.logs()));
    }
}

#[test]
#[ignore = "needs IPVS: run by scale_out_behind_ipvs (in a VM where the kernel has none)"]
fn persistence_spreads_clients_drains_and_survives_a_dead_instance() {
    spread_drain_and_kill(Variant::Persistence);
}

#[test]
#[ignore = "needs IPVS: run by scale_out_behind_ipvs (in a VM where the kernel has none)"]
fn slices_spread_sessions_drain_and_survive_a_dead_instance() {
    spread_drain_and_kill(Variant::Slices);
}

/// Logs in from 198.51.100.103, says "ready", and downloads small.bin to the path given
/// when a line arrives on stdin: a session that is idle across the failover.
const HELD: &str = r#"
import ftplib, sys
ftp = ftplib.FTP(timeout=20)
ftp.connect(sys.argv[1], 21, source_address=(sys.argv[2], 0))
ftp.login()
print("ready", flush=True)
sys.stdin.readline()
with open(sys.argv[3], "wb") as out:
    ftp.retrbinary("RETR pub/small.bin", out.write)
ftp.quit()
print("done", flush=True)
"#;

#[test]
#[ignore = "needs IPVS: run by scale_out_behind_ipvs (in a VM where the kernel has none)"]
fn a_director_failover() {
    use std::io::{BufRead, BufReader, Write};
    let farm = Farm::start(Variant::Slices);
    let held_out = farm.dir.path().join("held.bin");
    let mut held = command_in(Some("so-client"), "python3")
        .args(["-c", HELD, VIP, &client(3)])
        .arg(&held_out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let (slow, slow_out) = slow_download(&farm, &client(2));
    // IPVS's sync daemon sends what it has gathered every couple of seconds: a
    // connection younger than that is not on d2 yet, and does not survive (seen: a
    // transfer 2.4 s old was reset). Both sessions' connections are there first.
    wait_for(
        "d2 to know both sessions' connections",
        Duration::from_secs(30),
        || {
            let table = output(command_in(Some("so-d2"), "ipvsadm").args(["-L", "-n", "-c"]));
            let established = |from: &str| {
                table
                    .lines()
                    .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!(" {from}:")))
                    .count()
            };
            // The held session's control connection; the slow one's control and data.
            established(&client(3)) >= 1 && established(&client(2)) >= 2
        },
    );
    // d1 is gone from both networks, as a machine that dies.
    let failed = Instant::now();
    for link in ["o", "i"] {
        run_ok(command_in(Some("so-d1"), "ip").args(["link", "set", link, "down"]));
    }
    // Three missed adverts at one a second and the backup's skew: about 4 s; 5.0-5.2 s
    // were measured in the emulated VM.
    let took = until_sessions_work(&client(4), failed, Duration::from_secs(20));
    eprintln!("failover: new sessions worked {took:.1} s after d1 went");
    let addrs = output(command_in(Some("so-d2"), "ip").args(["-br", "addr"]));
    assert!(
        addrs.contains("198.51.100.10/24") && addrs.contains("203.0.113.1/24"),
        "d2 took both addresses: {addrs}"
    );
    // What was in flight: IPVS's connection table, synchronised to d2 while d1 was
    // master, carries the connections on.
    finish_slow(&farm, slow, &slow_out, "a transfer across the failover");
    eprintln!("failover: a transfer in flight completed");
    let mut stdin = held.stdin.take().expect("stdin");
    writeln!(stdin).expect("tell the held session");
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("done"),
        "a session idle across the failover goes on\n{}",
        farm.logs()
    );
    assert_same_file(&held_out, &farm.root().join("small.bin"));
    eprintln!("failover: a session idle across it downloaded afterwards");
    assert!(held.wait().expect("python3").success());
}
