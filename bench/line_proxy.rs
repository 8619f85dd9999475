//! The floor for a user-space FTP control channel, for `bench/run.sh` only (config
//! `lineproxy`): it accepts connections nftables REDIRECTs to it, connects to their
//! original destination, and copies bytes both ways with one blocking thread per
//! direction, which the kernel wakes directly when data arrives. No parsing, no
//! rewriting, no rules, no data connections: those go through the router's forward
//! path as they are. What ftpgate adds on top of this is what ftpgate costs; what
//! this costs against the kernel FTP helper is what any user-space control channel
//! costs.
//!
//! With `--relay` (config `relayfloor`) it is instead the floor for a proxy that also
//! relays the data connections in user space, as ftpgate's relay does: it reads the
//! control connection line by line, rewrites `227`, `229` and `PORT` to a port of its
//! own (nothing else: no `EPRT`, no rules, no peer checks, IPv4 only), and for each
//! announced connection accepts one peer, connects onward and copies both ways, a
//! blocking thread per direction. `227` and `229` announce a port in 50000-50999 that
//! bench/relay-floor.nft REDIRECTs to it.
//!
//! Standard library only, so that `rustc -O bench/line_proxy.rs` builds it.
//! usage: line_proxy [--relay] ADDR...     e.g. [::]:8021 (dual-stack: IPv4 and IPv6)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;

#[path = "floor.rs"]
mod floor;
use floor::{host_port, host_port_text, numbers};

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve(listener: TcpListener) {
    for client in listener.incoming().flatten() {
        thread::spawn(move || {
            let Some(dst) = floor::original_dst(&client) else { return };
            let Ok(server) = TcpStream::connect(dst) else { return };
            pair(client, server);
        });
    }
}

/// Copies both ways between two connected streams, one thread per direction.
fn pair(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    thread::spawn(move || copy(a2, b2));
    copy(b, a);
}

/// Accepts one connection on `listener`, connects to `onward` and relays, off thread.
fn relay_one(listener: TcpListener, onward: SocketAddr) {
    thread::spawn(move || {
        let Ok((peer, _)) = listener.accept() else { return };
        drop(listener);
        let Ok(onward) = TcpStream::connect(onward) else { return };
        pair(peer, onward);
    });
}

/// The next port of 50000-50999 that binds, for a `227` or `229`.
fn passive_listener() -> Option<TcpListener> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (0..1000).find_map(|_| {
        let port = 50000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
        TcpListener::bind(("0.0.0.0", port)).ok()
    })
}




/// The line to send on for `line`: announcements rewritten to a relayed port.
/// `near` is this proxy's address on the side the line goes to, `far_ip` the address
/// of the side it came from.
fn rewrite(line: &str, to_server: bool, near: IpAddr, far_ip: IpAddr) -> Option<String> {
    let upper = line.get(..5).map(str::to_ascii_uppercase).unwrap_or_default();
    if to_server && upper == "PORT " {
        let client = host_port(&numbers(&line[5..]))?;
        let listener = TcpListener::bind((near, 0)).ok()?;
        let ours = host_port_text(listener.local_addr().ok()?)?;
        relay_one(listener, client);
        return Some(format!("PORT {ours}\r\n"));
    }
    // Passive: the client is told the server's own address (as a transparent proxy
    // must: ftplib connects to the control peer's address whatever a 227 says), and
    // the ruleset redirects the port to here.
    if !to_server && line.starts_with("227 ") {
        let (_, rest) = line.split_once('(')?;
        let server = host_port(&numbers(rest))?;
        let listener = passive_listener()?;
        let ours = SocketAddr::new(far_ip, listener.local_addr().ok()?.port());
        relay_one(listener, server);
        return Some(format!(
            "227 Entering Passive Mode ({}).\r\n",
            host_port_text(ours)?
        ));
    }
    if !to_server && line.starts_with("229 ") {
        let (_, rest) = line.split_once("(|||")?;
        let port = *numbers(rest).first()?;
        let listener = passive_listener()?;
        let ours = listener.local_addr().ok()?.port();
        relay_one(listener, SocketAddr::new(far_ip, port));
        return Some(format!("229 Entering Extended Passive Mode (|||{ours}|)\r\n"));
    }
    None
}

/// Copies `from` to `to` line by line, rewriting announcements.
fn lines(from: TcpStream, mut to: TcpStream, to_server: bool, near: IpAddr, far_ip: IpAddr) {
    let mut reader = BufReader::new(from);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let out = rewrite(&line, to_server, near, far_ip);
        if to.write_all(out.as_deref().unwrap_or(&line).as_bytes()).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve_relay(listener: TcpListener) {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    for client in listener.incoming().flatten() {
        thread::spawn(move || {
            let Some(dst) = floor::original_dst(&client) else { return };
            let Ok(server) = TcpStream::connect(dst) else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(client_near), Ok(server_near)) = (client.local_addr(), server.local_addr())
            else {
                return;
            };
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
            let (client_ip, server_ip) = (v4(client_near.ip()), v4(server_near.ip()));
            let dst_ip = dst.ip();
            thread::spawn(move || lines(c2, s2, true, server_ip, client_ip));
            lines(server, client, false, client_ip, dst_ip);
        });
    }
}

fn main() {
    let relay = std::env::args().nth(1).as_deref() == Some("--relay");
    let addrs: Vec<String> = std::env::args().skip(if relay { 2 } else { 1 }).collect();
    let listeners: Vec<TcpListener> = addrs
        .iter()
        .map(|a| TcpListener::bind(a.as_str()).unwrap_or_else(|e| panic!("bind {a}: {e}")))
        .collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| thread::spawn(move || if relay { serve_relay(l) } else { serve(l) }))
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
