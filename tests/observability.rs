//! What an operator sees: `/sessions` and `ftpgate sessions` during a transfer, JSON
//! log records parsed back, the xferlog with logrotate, and the shipped Prometheus
//! rules and Grafana dashboard checked against a real scrape.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;

use serde_json::Value;
use support::*;

fn sessions(gate: &Gate) -> Value {
    let url = format!("http://{}/sessions", gate.admin);
    let body = ureq::get(&url)
        .call()
        .expect("GET /sessions")
        .body_mut()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn sessions_lists_a_session_mid_transfer_with_its_expectation() {
    require!("vsftpd");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("big.bin"), 64 << 20, 11);
    let gate = Gate::reverse(server.addr, "");
    let mut c = Control::login(gate.addr);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let mut data = TcpStream::connect(data_addr(&c.cmd("EPSV"), gate.addr)).expect("data");
    c.send("RETR pub/big.bin");
    assert!(c.reply().starts_with("150"));
    let mut first = vec![0u8; 1 << 20];
    data.read_exact(&mut first).expect("first MiB");

    // The relay counts a splice when the call returns, which can be after the client
    // has read what it moved: the count catches up with what the client holds.
    let counted = |v: &Value| v["sessions"][0]["expectations"][0]["download_bytes"].as_u64();
    eventually("the session table to count the first MiB", || {
        counted(&sessions(&gate)).is_some_and(|n| n >= 1 << 20)
    });
    let v = sessions(&gate);
    let s = &v["sessions"][0];
    assert_eq!(s["user"], "anonymous");
    assert_eq!(s["state"], "logged-in");
    assert_eq!(s["server"], server.addr.to_string());
    let e = &s["expectations"][0];
    assert_eq!(e["mode"], "passive");
    assert_eq!(e["state"], "connected");
    assert_eq!(
        e["expires_in_seconds"],
        Value::Null,
        "no deadline once connected"
    );
    assert_eq!(e["expected_peer"], "127.0.0.1");
    assert_eq!(e["transfer"]["kind"], "download");
    assert_eq!(e["transfer"]["path"], "pub/big.bin");
    assert_eq!(e["transfer"]["binary"], true);
    assert!(
        e["download_bytes"].as_u64().expect("bytes") >= 1 << 20,
        "{e}"
    );

    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_ftpgate")).args([
        "sessions",
        "--admin",
        &gate.admin.to_string(),
    ]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID  CLIENT"), "{table}");
    assert!(
        table.contains("anonymous") && table.contains("logged-in"),
        "{table}"
    );
    assert!(
        table.contains("└ data 1 passive download pub/big.bin"),
        "{table}"
    );
    assert!(table.ends_with("1 sessions\n"), "{table}");
}

#[test]
fn ftpgate_sessions_says_clearly_when_nothing_listens() {
    let port = free_port(LOCALHOST.parse().expect("ip"));
    let out = run(Command::new(env!("CARGO_BIN_EXE_ftpgate")).args([
        "sessions",
        "--admin",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "ftpgate sessions: cannot fetch http://127.0.0.1:{port}/sessions"
        )),
        "{err}"
    );
}

#[test]
fn json_logs_carry_one_record_per_transfer_and_per_session() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 1 << 20, 12);
    let gate = Gate::reverse_args(server.addr, "", &["--log-format", "json"]);
    let local = tempfile::tempdir().expect("tempdir");
    curl_get(
        gate.addr,
        Mode::Epsv,
        "pub/one.bin",
        &local.path().join("one.bin"),
    );
    eventually("the session to end", || gate.log().contains("session end"));
    let records: Vec<Value> = gate
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let transfer = records
        .iter()
        .find(|r| r["fields"]["message"] == "transfer")
        .expect("a transfer record");
    assert_eq!(transfer["fields"]["kind"], "download");
    assert_eq!(transfer["fields"]["download"], 1 << 20);
    assert_eq!(transfer["fields"]["upload"], 0);
    assert_eq!(transfer["fields"]["outcome"], "completed");
    assert_eq!(transfer["span"]["mode"], "passive");
    let spans = transfer["spans"].as_array().expect("spans");
    assert_eq!(spans[0]["name"], "session");
    assert_eq!(spans[0]["server"], server.addr.to_string());
    let end = records
        .iter()
        .find(|r| r["fields"]["message"] == "session end")
        .expect("a session end record");
    // After QUIT both ends close; which end's close the proxy sees first is a race.
    let outcome = end["fields"]["outcome"].as_str().unwrap_or_default();
    assert!(
        ["server-closed", "client-closed"].contains(&outcome),
        "{end}"
    );
}

#[test]
fn xferlog_records_transfers_and_is_reopened_after_logrotate() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 100_000, 13);
    let logs = tempfile::tempdir().expect("tempdir");
    let xferlog = logs.path().join("xferlog");
    let gate = Gate::reverse(server.addr, &format!("set xferlog {}", xferlog.display()));
    let local = logs.path().join("one.bin");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    curl_get(gate.addr, Mode::Pasv, "pub/one.bin", &local);
    curl_put(gate.addr, Mode::Port, &local, "pub/back.bin");
    eventually("two xferlog lines", || lines(&xferlog).len() == 2);
    let log = lines(&xferlog);
    let fields: Vec<&str> = log[0].split_whitespace().collect();
    // ctime (5 fields), then: seconds host bytes path type flag direction mode user
    // service auth id status. curl changes into pub/ first, and the path is logged as
    // the client named it.
    assert_eq!(
        &fields[6..],
        [
            "127.0.0.1",
            "100000",
            "one.bin",
            "b",
            "_",
            "o",
            "a",
            "anonymous",
            "ftp",
            "0",
            "*",
            "c"
        ],
        "{}",
        log[0]
    );
    let fields: Vec<&str> = log[1].split_whitespace().collect();
    assert_eq!(
        &fields[7..12],
        ["100000", "back.bin", "b", "_", "i"],
        "{}",
        log[1]
    );

    let rotated = logs.path().join("xferlog.1");
    std::fs::rename(&xferlog, &rotated).expect("rotate");
    gate.signal("HUP");
    gate.wait_log("rules reloaded");
    curl_get(gate.addr, Mode::Epsv, "pub/one.bin", &local);
    eventually("a line in the new xferlog", || lines(&xferlog).len() == 1);
    assert_eq!(lines(&rotated).len(), 2);
    assert_eq!(
        gate.metric("ftpgate_reloads_total{result=\"success\"}"),
        1.0
    );
}

/// The shipped logrotate file, run by logrotate itself, rotates the transfer log and
/// has ftpgate reopen it (SIGUSR1 through `systemctl kill`, carried out here by
/// tests/support/systemctl.py) while the rule file on disk is broken; stray signals
/// are logged, not fatal.
#[test]
fn the_shipped_logrotate_file_reopens_the_xferlog_with_a_broken_rule_file() {
    require!("vsftpd", "curl", "logrotate", "python3");
    let root = env!("CARGO_MANIFEST_DIR");
    let server = Vsftpd::start(LOCALHOST);
    make_file(&server.public().join("one.bin"), 10_000, 3);
    let logs = tempfile::tempdir().expect("tempdir");
    let xferlog = logs.path().join("xferlog");
    let gate = Gate::reverse(server.addr, &format!("set xferlog {}", xferlog.display()));
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let local = logs.path().join("one.bin");
    curl_get(gate.addr, Mode::Epsv, "pub/one.bin", &local);
    eventually("one xferlog line", || count(&xferlog) == 1);
    for sig in ["USR2", "ALRM", "PWR"] {
        gate.signal(sig);
    }
    eventually("the stray signals logged", || {
        gate.log().matches("signal ignored").count() == 3
    });
    std::fs::write(&gate.rules, "this is not a rule\n").expect("break the rules");

    let shipped = std::fs::read_to_string(format!("{root}/deploy/logrotate/ftpgate"))
        .expect("shipped logrotate file");
    let conf = logs.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        shipped.replace("/var/log/ftpgate/xferlog", &xferlog.display().to_string()),
    )
    .expect("logrotate.conf");
    let systemd = logs.path().join("systemd");
    let bin = logs.path().join("bin");
    std::fs::create_dir_all(systemd.join("state")).expect("state");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(
        systemd.join("state/ftpgate.service.pid"),
        gate.pid().to_string(),
    )
    .expect("pid");
    std::os::unix::fs::symlink(
        format!("{root}/tests/support/systemctl.py"),
        bin.join("systemctl"),
    )
    .expect("systemctl stand-in");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(logs.path().join("logrotate.state"))
            .arg(&conf)
            .env("PATH", path)
            .env("SYSTEMCTL_STATE", systemd.join("state"))
            .env("SYSTEMCTL_UNIT_PATH", format!("{root}/deploy")),
    );
    gate.wait_log("transfer log reopened");
    curl_get(gate.addr, Mode::Epsv, "pub/one.bin", &local);
    eventually("a line in the new xferlog", || count(&xferlog) == 1);
    assert_eq!(count(&logs.path().join("xferlog.1")), 1);
    assert!(!gate.log().contains("rules reloaded"));
}

/// `metrics listen … sessions off | token-file | allow`: what each refuses, what stays
/// open, and `/healthz` naming a rejected reload.
#[test]
fn the_admin_endpoint_can_hide_or_guard_sessions() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    let admin = |extra: &str| {
        let port = free_port(LOCALHOST.parse().expect("ip"));
        format!("metrics listen {LOCALHOST}:{port} {extra}")
    };

    let gate = Gate::reverse(server.addr, &admin("sessions off"));
    assert_eq!(gate.http_status("/sessions", &[]), 404);
    assert_eq!(gate.http_status("/metrics", &[]), 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").expect("token");
    let gate = Gate::reverse(
        server.addr,
        &admin(&format!("token-file {}", token.display())),
    );
    assert_eq!(gate.http_status("/sessions", &[]), 401);
    let wrong = ["-H", "Authorization: Bearer s3cret-token-0123456780"];
    assert_eq!(gate.http_status("/sessions", &wrong), 401);
    let right = ["-H", "Authorization: Bearer s3cret-token-0123456789"];
    assert_eq!(gate.http_status("/sessions", &right), 200);
    assert_eq!(gate.http_status("/metrics", &[]), 200);
    assert_eq!(
        gate.metric("ftpgate_admin_refusals_total{reason=\"token\"}"),
        2.0
    );
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args([
                "sessions",
                "--json",
                "--admin",
                &gate.admin.to_string(),
                "--token-file",
            ])
            .arg(&token),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"sessions\""));

    let gate = Gate::reverse(server.addr, &admin("allow { 127.0.0.2, ::2 }"));
    for path in ["/metrics", "/sessions", "/healthz"] {
        assert_eq!(gate.http_status(path, &[]), 403, "{path}");
    }

    let gate = Gate::reverse(server.addr, "");
    assert_eq!(gate.http("/healthz", &[]), (200, "ok\n".to_string()));
    assert_eq!(gate.http_status("/readyz", &[]), 200);
    std::fs::write(&gate.rules, "listen nowhere\n").expect("break the rules");
    gate.signal("HUP");
    gate.wait_log("reload rejected");
    let (code, body) = gate.http("/healthz", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("the last reload was rejected"), "{body}");
}

/// A non-loopback admin endpoint with nothing guarding `/sessions` is a warning of
/// `ftpgate check`, at the statement's place; guarded, it is not.
#[test]
fn check_warns_about_an_unguarded_admin_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("x.rules");
    let base = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\npass from any\n";
    for (admin, warned) in [
        ("metrics listen 0.0.0.0:9121", true),
        ("metrics listen [::]:9121 allow { 198.51.100.0/24 }", false),
        ("metrics listen 0.0.0.0:9121 sessions off", false),
        ("metrics listen 127.0.0.1:9121", false),
    ] {
        std::fs::write(&rules, format!("{base}{admin}\n")).expect("rules");
        let out = run_ok(
            Command::new(env!("CARGO_BIN_EXE_ftpgate"))
                .arg("check")
                .arg(&rules),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains(&format!(
                "{}:3: warning: the admin endpoint",
                rules.display()
            )),
            warned,
            "{admin}: {stderr}"
        );
    }
}

#[test]
fn shipped_prometheus_config_and_alerts_pass_promtool() {
    require!("promtool");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "ftpgate-alerts.yml"],
        vec!["test", "rules", "ftpgate-alerts.test.yml"],
    ] {
        run_ok(Command::new("promtool").args(&args).current_dir(dir));
    }
    let scale_out = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/scale-out");
    run_ok(
        Command::new("promtool")
            .args(["check", "config", "prometheus.yml"])
            .current_dir(scale_out),
    );
}

/// Metric names a PromQL text refers to.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["ftpgate_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn dashboard_and_alerts_use_only_metrics_ftpgate_exports() {
    require!("vsftpd", "curl");
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "");
    curl_list(gate.addr, Mode::Pasv, "");
    let exported: BTreeSet<String> = gate
        .metrics()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap_or_default().to_string();
            match parts.next() {
                Some("histogram") => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                    name,
                ],
                _ => vec![name],
            }
        })
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/ftpgate-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 10);
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus/ftpgate-alerts.yml"))
        .expect("alerts");
    let used = referenced_metrics(&(exprs.join("\n") + &alerts));
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\nexported: {exported:?}"
    );
    assert!(used.len() >= 12, "{used:?}");
}

/// `--version` names the commit; the first log line after binding names the version,
/// the rule file and what it holds.
#[test]
fn version_and_start_up_line_say_what_runs() {
    require!("vsftpd", "git");
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("--version"));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = run_ok(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(
        version,
        format!("ftpgate {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
    let server = Vsftpd::start(LOCALHOST);
    let gate = Gate::reverse(server.addr, "table <t> { 192.0.2.0/24 }");
    gate.wait_log("ftpgate started");
    let log = gate.log();
    let line = log
        .lines()
        .find(|l| l.contains("ftpgate started"))
        .expect("start-up line");
    for needle in [
        format!("version=\"{}", env!("CARGO_PKG_VERSION")),
        format!("file={}", gate.rules.display()),
        "listeners=1".to_string(),
        "tables=1".to_string(),
    ] {
        assert!(line.contains(&needle), "{needle} in {line}");
    }
}
