//! The .deb that `deploy/deb/build.sh` makes (tests/run.sh builds it before the tests),
//! installed with dpkg on this machine, in a network namespace and a mount namespace
//! whose `/etc`, `/usr` and `/var` are overlays: every file lands where the package
//! says, the unit passes `systemd-analyze verify`, `systemctl start` (Type=notify,
//! carried out by tests/support/systemctl.py) returns once ftpgate is bound, a real
//! transfer crosses the installed ftpgate with its shipped rule file, reload and stop
//! work, and `dpkg -r` takes it all away.

mod support;

use std::path::PathBuf;

use support::*;

/// The newest .deb under target/debian.
fn deb() -> Option<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

#[test]
fn the_deb_installs_starts_serves_and_removes_cleanly() {
    require!(
        "dpkg",
        "vsftpd",
        "curl",
        "systemd-analyze",
        "logrotate",
        "unshare",
        "ip"
    );
    let Some(deb) = deb() else {
        assert!(
            !ci(),
            "no target/debian/*.deb under CI=true: tests/run.sh builds it with deploy/deb/build.sh"
        );
        eprintln!("SKIPPED: no .deb; run bash deploy/deb/build.sh");
        return;
    };
    let ns = format!("fgpkg{}", std::process::id());
    run_ok(std::process::Command::new("ip").args(["netns", "add", &ns]));
    let _gone = NetnsGuard(ns.clone());
    run_ok(command_in(Some(&ns), "ip").args(["link", "set", "lo", "up"]));
    let scratch = tempfile::tempdir().expect("tempdir");
    let ftp = scratch.path().join("ftp");
    std::fs::create_dir_all(ftp.join("pub")).expect("ftp root");
    make_file(&ftp.join("pub/one.bin"), 300_000, 5);
    for p in [scratch.path(), ftp.as_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let script = format!(
        r#"
export DEBIAN_FRONTEND=noninteractive
dpkg -i {deb}
# What the package holds, where Debian looks for it.
test -x /usr/bin/ftpgate
ftpgate --version | grep '(commit ' >/dev/null
zcat /usr/share/man/man1/ftpgate.1.gz | grep '^\.TH ftpgate' >/dev/null
bash -c '. /usr/share/bash-completion/completions/ftpgate && complete -p ftpgate'
test -s /usr/share/zsh/vendor-completions/_ftpgate
test -s /usr/share/fish/vendor_completions.d/ftpgate.fish
grep -q 'MIT OR Apache-2.0' /usr/share/doc/ftpgate/copyright
test -s /usr/share/doc/ftpgate/LICENSE-APACHE
test -s /usr/share/ftpgate/nftables/ftpgate-redirect.nft
test -s /usr/share/ftpgate/systemd/ftpgate-edge.conf
test -x /usr/lib/ftpgate/tproxy-routing.sh
logrotate -d /etc/logrotate.d/ftpgate 2>&1 | grep 'rotating pattern: /var/log/ftpgate/xferlog' >/dev/null
ftpgate check /etc/ftpgate/ftpgate.rules
verify=$(systemd-analyze verify /usr/lib/systemd/system/ftpgate.service /usr/lib/systemd/system/ftpgate-tproxy-routing.service 2>&1)
test -z "$verify" || {{ echo "$verify"; exit 1; }}
# The shipped rule file proxies 127.0.0.1:2121 to a server on 127.0.0.1:21.
mkdir -p /var/run/vsftpd/empty
cat > {dir}/vsftpd.conf <<CONF
listen=YES
listen_address=127.0.0.1
background=NO
anonymous_enable=YES
local_enable=NO
anon_root={ftp}
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
pasv_min_port=30000
pasv_max_port=30999
CONF
vsftpd {dir}/vsftpd.conf &
vsftpd_pid=$!
trap 'kill $vsftpd_pid 2>/dev/null; systemctl stop ftpgate 2>/dev/null || true' EXIT
systemctl daemon-reload
systemctl start ftpgate
curl -fsS http://127.0.0.1:9121/readyz
curl -fsS --max-time 20 ftp://127.0.0.1:2121/pub/one.bin -o {dir}/got.bin
cmp {ftp}/pub/one.bin {dir}/got.bin
systemctl reload ftpgate
systemctl stop ftpgate
dpkg -r ftpgate
test ! -e /usr/bin/ftpgate
test ! -e /usr/lib/systemd/system/ftpgate.service
"#,
        deb = deb.display(),
        dir = scratch.path().display(),
        ftp = ftp.display(),
    );
    let log = overlaid_root(&ns, &["etc", "usr", "var"], scratch.path(), &script);
    // Started by the unit, it said what ran, and told the service manager when it
    // was ready, reloading and stopping.
    assert!(log.contains("ftpgate started"), "{log}");
    assert!(log.contains("rules reloaded"), "{log}");
    assert!(!log.contains("cannot notify"), "{log}");
    let notified = std::fs::read_to_string(scratch.path().join("state/ftpgate.service.notify.log"))
        .unwrap_or_default();
    let states: Vec<&str> = notified
        .lines()
        .filter(|l| !l.starts_with("MONOTONIC_USEC="))
        .collect();
    assert_eq!(
        states,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "{notified}"
    );
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}
