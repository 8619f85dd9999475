//! Server pools (issue 18): a reverse listener spreads its sessions over three real
//! vsftpd servers as the pool's balance says, checks them (a connect and a `220`), takes
//! out one that stops within `fall × interval` while the others go on serving, and
//! keeps each client on one server under `sticky-client`.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use support::*;

fn servers() -> Vec<Vsftpd> {
    (0..3)
        .map(|i| {
            let server = Vsftpd::start(LOCALHOST);
            make_file(&server.public().join("one.bin"), 64 << 10, 10 + i);
            server
        })
        .collect()
}

fn farm(servers: &[Vsftpd], balance: &str) -> Gate {
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let listen = SocketAddr::new(ip, free_port(ip));
    let list: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    Gate::start(&format!(
        "listen reverse {listen} pool farm\n\
         pool farm {{ {} }} balance {balance} check interval 200ms fall 2 rise 1\n\
         pass from 127.0.0.0/8\n",
        list.join(", ")
    ))
}

/// Sessions each server of the pool got.
fn spread(gate: &Gate, servers: &[Vsftpd]) -> Vec<f64> {
    let metrics = gate.metrics();
    servers
        .iter()
        .map(|s| {
            metric_value(
                &metrics,
                &format!(
                    r#"ftpgate_backend_sessions_total{{backend="{}",pool="farm"}}"#,
                    s.addr
                ),
            )
        })
        .collect()
}

fn fetch(gate: &Gate, source: &str) {
    run_ok(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "--interface",
        source,
        "-o",
        "/dev/null",
        &format!("ftp://{}/pub/one.bin", gate.addr),
    ]));
}

#[test]
fn round_robin_spreads_sessions_and_a_server_that_stops_is_taken_out() {
    require!("vsftpd", "curl");
    let mut servers = servers();
    let gate = farm(&servers, "round-robin");
    for _ in 0..6 {
        fetch(&gate, "127.0.0.1");
    }
    assert_eq!(spread(&gate, &servers), [2.0, 2.0, 2.0]);
    // The third server stops: its checks fail, and within fall × interval (0.4 s) it
    // is out; every session goes on, to the other two.
    let stopped = servers.pop().expect("third");
    let label = stopped.addr.to_string();
    drop(stopped);
    eventually("the stopped server to be taken out", || {
        gate.metric(&format!(
            r#"ftpgate_backend_up{{backend="{label}",pool="farm"}}"#
        )) == 0.0
    });
    for _ in 0..4 {
        fetch(&gate, "127.0.0.1");
    }
    assert_eq!(spread(&gate, &servers), [4.0, 4.0]);
    assert!(gate.log().contains("server down"), "{}", gate.log());
}

#[test]
fn sticky_client_keeps_each_client_on_one_server() {
    require!("vsftpd", "curl");
    let servers = servers();
    let gate = farm(&servers, "sticky-client");
    for source in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let before = spread(&gate, &servers);
        for _ in 0..3 {
            fetch(&gate, source);
        }
        let after = spread(&gate, &servers);
        let moved: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert!(
            moved.iter().filter(|n| **n == 3.0).count() == 1 && moved.iter().sum::<f64>() == 3.0,
            "{source}: {moved:?}"
        );
    }
}

/// Logs in as `user` (ftpgate greets first) and quits; prints the greeting and the
/// server's answer to `USER`.
const LOGIN: &str = r#"
import socket, sys
host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = socket.create_connection((host, port), timeout=20)
f = c.makefile("rb")
print(f.readline().decode().strip())
c.sendall(("USER " + user + "\r\n").encode())
print(f.readline().decode().strip())
c.sendall(b"QUIT\r\n")
f.readline()
"#;

#[test]
fn users_go_to_the_pool_that_takes_them_and_stay_on_one_server() {
    require!("vsftpd", "python3");
    let servers = servers();
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let listen = SocketAddr::new(ip, free_port(ip));
    let gate = Gate::start(&format!(
        "listen reverse {listen} pool farm\n\
         pool staff {{ {} }} users {{ alice, ops-* }}\n\
         pool files {{ {} }} hosts {{ files.example.org }}\n\
         pool farm {{ {}, {} }} balance sticky-user\n\
         pass from 127.0.0.0/8\n",
        servers[0].addr, servers[0].addr, servers[1].addr, servers[2].addr
    ));
    let login = |user: &str| {
        let out = run_ok(Command::new("python3").args([
            "-c",
            LOGIN,
            &listen.ip().to_string(),
            &listen.port().to_string(),
            user,
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let total = |pool: &str, server: &Vsftpd| {
        gate.metric(&format!(
            r#"ftpgate_backend_sessions_total{{backend="{}",pool="{pool}"}}"#,
            server.addr
        ))
    };
    for user in ["alice", "ops-backup", "alice"] {
        let said = login(user);
        // ftpgate greets; the USER answer is the server's (vsftpd is anonymous-only).
        assert!(said.starts_with("220 ftpgate ready."), "{said}");
        assert!(said.contains("530"), "{said}");
    }
    assert_eq!(total("staff", &servers[0]), 3.0);
    // Everyone else: the farm, each user always on the same one of its two servers.
    for _ in 0..3 {
        login("anonymous");
    }
    let farm = [total("farm", &servers[1]), total("farm", &servers[2])];
    assert!(farm == [3.0, 0.0] || farm == [0.0, 3.0], "{farm:?}");
    assert_eq!(total("staff", &servers[0]), 3.0);
    // A virtual host named with HOST (RFC 7151) picks its pool; the server hears the
    // HOST and answers it (vsftpd does not know it: 530 before a login).
    let out = run_ok(Command::new("python3").args([
        "-c",
        &LOGIN.replace(
            "c.sendall((\"USER \"",
            "c.sendall(b\"HOST files.example.org\\r\\n\"); print(f.readline().decode().strip())\nc.sendall((\"USER \"",
        ),
        &listen.ip().to_string(),
        &listen.port().to_string(),
        "anonymous",
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = said.lines().collect();
    assert!(
        replies.len() == 3 && replies[1].starts_with('5') && replies[2].starts_with("331"),
        "{said}"
    );
    assert_eq!(total("files", &servers[0]), 1.0);
}

#[test]
fn least_sessions_fills_the_emptiest_server_and_a_dead_one_is_ejected_by_its_sessions() {
    require!("vsftpd", "curl", "python3");
    let servers = servers();
    let gate = farm(&servers, "least-sessions");
    // Three sessions held open at once: one on each server.
    let hold = |_: usize| {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import socket, sys\n\
                 c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)\n\
                 print(c.makefile('rb').readline().decode().strip(), flush=True)\n\
                 sys.stdin.readline()",
                &gate.addr.ip().to_string(),
                &gate.addr.port().to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("greeting");
        assert!(line.starts_with("220"), "{line}");
        child
    };
    let held: Vec<_> = (0..3).map(hold).collect();
    let now: Vec<f64> = servers
        .iter()
        .map(|s| {
            gate.metric(&format!(
                r#"ftpgate_backend_sessions{{backend="{}",pool="farm"}}"#,
                s.addr
            ))
        })
        .collect();
    assert_eq!(now, [1.0, 1.0, 1.0]);
    for mut child in held {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    // A server nobody listens on, without checks: the first session sent there fails
    // (421) and takes it out; the others go to the live one.
    let ip: IpAddr = LOCALHOST.parse().expect("ip");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let gate = Gate::start(&format!(
        "listen reverse {listen} pool farm\npool farm {{ {dead}, {} }}\npass from 127.0.0.0/8\n",
        servers[0].addr
    ));
    let first = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null"])
        .arg(format!("ftp://{listen}/pub/one.bin"))
        .output()
        .expect("curl");
    assert!(!first.status.success());
    for _ in 0..3 {
        fetch(&gate, "127.0.0.1");
    }
    let metric = |name: &str, backend: SocketAddr| {
        gate.metric(&format!(r#"{name}{{backend="{backend}",pool="farm"}}"#))
    };
    assert_eq!(metric("ftpgate_backend_connect_failures_total", dead), 1.0);
    assert_eq!(metric("ftpgate_backend_up", dead), 0.0);
    assert_eq!(
        metric("ftpgate_backend_sessions_total", servers[0].addr),
        3.0
    );
}

#[test]
fn a_server_taken_out_by_a_reload_keeps_its_sessions_and_gets_no_new_one() {
    require!("vsftpd", "curl");
    let servers = servers();
    let gate = farm(&servers[..2], "round-robin");
    // Two sessions held: one on each server.
    let mut first = Control::login(gate.addr);
    let mut second = Control::login(gate.addr);
    assert_eq!(spread(&gate, &servers[..2]), [1.0, 1.0]);
    // The second server leaves the pool: drained.
    let rules = std::fs::read_to_string(&gate.rules).expect("rules");
    let without = rules.replace(&format!(", {}", servers[1].addr), "");
    assert_ne!(rules, without);
    std::fs::write(&gate.rules, without).expect("write");
    gate.signal("HUP");
    gate.wait_log("rules reloaded");
    for _ in 0..3 {
        fetch(&gate, "127.0.0.1");
    }
    assert_eq!(spread(&gate, &servers[..2]), [4.0, 1.0]);
    // Both sessions in progress go on, the drained server's too.
    assert!(first.cmd("PWD").starts_with("257"));
    assert!(second.cmd("PWD").starts_with("257"));
}
