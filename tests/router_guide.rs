//! `deploy/ROUTER.md` followed as written on a router that already has a firewall:
//! the edge namespace of `deploy/lab.sh` starts with `tests/support/router-nftables.conf`
//! as its `/etc/nftables.conf` (input and forward drop by default), and every command
//! block of the guide for the flavour runs there, in order, as root, with `/etc`,
//! `/usr/lib` and `/usr/local` overlaid so that the installs stay in the test, and
//! `systemctl` carried out by `tests/support/systemctl.py`. Then clients use FTP in
//! every mode and other traffic through the edge, and ftpgate stops as systemd would
//! stop it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::lab::{Lab, LabServer};
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The guide's shell blocks for `flavour` (`redirect` or `tproxy`), with the `kernel`
/// ones when `kernel`, in the guide's order.
fn guide(flavour: &str, kernel: bool) -> String {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/ROUTER.md")).expect("guide");
    let mut script = String::new();
    let mut taking = None;
    for line in text.lines() {
        match (&taking, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let lang = words.next();
                let tag = words.next();
                let wanted = match tag {
                    None => true,
                    Some("kernel") => kernel,
                    Some(tag) => tag == flavour,
                };
                taking = Some(lang == Some("sh") && wanted);
            }
            (Some(_), Some("")) => taking = None,
            (Some(true), None) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        taking.is_none(),
        "a block of deploy/ROUTER.md is not closed"
    );
    script
}

struct Router {
    lab: Lab,
    state: tempfile::TempDir,
}

impl Router {
    /// The edge with its firewall, and the guide carried out on it.
    fn follow(flavour: &str, kernel: bool) -> Router {
        let lab = Lab::bare();
        let state = tempfile::tempdir().expect("tempdir");
        let script = format!(
            "install -D -m 755 {exe} /usr/local/bin/ftpgate\n\
             cp tests/support/router-nftables.conf /etc/nftables.conf\n\
             nft -f /etc/nftables.conf\n\
             {guide}",
            exe = env!("CARGO_BIN_EXE_ftpgate"),
            guide = guide(flavour, kernel),
        );
        overlaid_root(
            &lab.ns("edge"),
            &["etc", "usr/lib", "usr/local"],
            state.path(),
            &script,
        );
        Router { lab, state }
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.state.path().join("state/ftpgate.service.pid"))
            .expect("ftpgate's pid")
            .trim()
            .parse()
            .expect("pid")
    }

    fn metric(&self, name: &str) -> f64 {
        let out = run_ok(
            self.lab
                .on("edge", "curl")
                .args(["-fsS", "http://127.0.0.1:9121/metrics"]),
        );
        metric_value(&String::from_utf8_lossy(&out.stdout), name)
    }

    fn state(&self) -> &Path {
        self.state.path()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.state().join("state/ftpgate.service.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn followed(flavour: &str, kernel: bool) {
    require!("vsftpd", "curl", "nft", "ip", "python3", "unshare");
    let router = Router::follow(flavour, kernel);
    let lab = &router.lab;
    let server = LabServer::start(lab);
    make_file(&server.path("one.bin"), 1 << 20, 11);
    let local = tempfile::tempdir().expect("tempdir");
    let ns = lab.ns("client");
    // FTP in every mode and family, through the firewall's drops.
    let cases = [
        ("203.0.113.2:21", Mode::Pasv),
        ("203.0.113.2:21", Mode::Epsv),
        ("203.0.113.2:21", Mode::Port),
        ("203.0.113.2:21", Mode::Eprt),
        ("[2001:db8:2::2]:21", Mode::Epsv),
        ("[2001:db8:2::2]:21", Mode::Eprt),
    ];
    for (i, (addr, mode)) in cases.iter().enumerate() {
        let addr = addr.parse().expect("addr");
        let down: PathBuf = local.path().join(format!("{i}.bin"));
        run_ok(
            curl_in(Some(&ns), *mode)
                .arg(url(addr, "pub/one.bin"))
                .arg("-o")
                .arg(&down),
        );
        assert_same_file(&down, &server.path("one.bin"));
        run_ok(
            curl_in(Some(&ns), *mode)
                .arg("-T")
                .arg(&down)
                .arg(url(addr, &format!("pub/up{i}.bin"))),
        );
        assert_same_file(&server.path(&format!("up{i}.bin")), &down);
    }
    let used = if kernel {
        "ftpgate_kernel_data_connections_total{mode=\"active\"}"
    } else {
        "ftpgate_data_connections_total{mode=\"active\",outcome=\"completed\"}"
    };
    eventually("active-mode data counted", || router.metric(used) >= 6.0);
    // The router's other traffic: the firewall decides, ftpgate touches nothing.
    lab.assert_untouched(&[
        ("203.0.113.2", 80),
        ("203.0.113.2", 40500),
        ("2001:db8:2::2", 40999),
    ]);
    // and the outside still reaches nothing inside.
    let probe = lab.probe("client", "198.51.100.2", 40500);
    assert_eq!(
        lab.script("server", &["connect", "198.51.100.2", "40500", "2"])
            .trim(),
        "timeout"
    );
    assert_eq!(probe.report(), "nothing");
    lab.assert_bounce_refused();
    if flavour == "tproxy" {
        // The routing script may run again (a unit restart, an operator by hand).
        let script = format!("{ROOT}/deploy/tproxy-routing.sh");
        let ruleset = format!("{ROOT}/deploy/nftables/ftpgate-tproxy.nft");
        for _ in 0..2 {
            run_ok(
                lab.on("edge", "bash")
                    .args([script.as_str(), "add", &ruleset]),
            );
        }
        let rules = run_ok(
            lab.on("edge", "ip")
                .args(["rule", "show", "fwmark", "0x1f7"]),
        );
        assert_eq!(String::from_utf8_lossy(&rules.stdout).lines().count(), 1);
    }
    // Stopped, ftpgate drains and exits, and FTP fails closed.
    let pid = router.pid();
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]));
    eventually("ftpgate to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let out = run(curl_in(Some(&ns), Mode::Epsv)
        .args(["--connect-timeout", "3"])
        .arg("ftp://203.0.113.2/"));
    assert!(
        !out.status.success(),
        "FTP crossed without ftpgate: {out:?}"
    );
}

#[test]
fn the_router_guide_works_as_written_with_redirect() {
    followed("redirect", false);
}

#[test]
fn the_router_guide_works_as_written_with_tproxy() {
    followed("tproxy", false);
}

#[test]
fn the_router_guide_works_as_written_with_tproxy_and_the_kernel_path() {
    followed("tproxy", true);
}
