//! The floor for ftpgate's kernel data path, for `bench/run.sh` only (config
//! `kernelfloor`): bench/line_proxy.rs's line relay, plus the one thing the kernel path
//! must add to it, the nftables hole per data connection, written by ftpgate's own
//! `net::nft` into deploy/nftables/ftpgate-redirect.nft's maps. It rewrites `227`,
//! `229` and `PORT` (nothing else: no `EPRT`, no rules, no peer checks, IPv4 only) to a
//! port of 40000-40999, installs the hole before it sends the rewritten line on, as
//! ftpgate does, and removes the session's holes after it has passed a `226` or `250`
//! on. The holes are the ones ftpgate would write for the same session (same peer,
//! destination, onward address and source), so the kernel does the same work per
//! packet and per transaction; what ftpgate costs beyond this is its own.
//!
//! A blocking thread per direction, standard library and ftpgate's library only. With
//! `--tokio` (config `kernelfloor-tokio`) the same on ftpgate's design instead: one
//! single-threaded tokio runtime, as one of ftpgate's session workers, a task per
//! direction; what separates ftpgate from this is its own work, what separates this
//! from the blocking floor is the event loop's.
//!
//! With `--tproxy` (configs `kernelfloor-tproxy`, `kernelfloor-tokio-tproxy`) it takes
//! its connections as deploy/nftables/ftpgate-tproxy.nft hands them over (transparent
//! listeners, the destination is the accepted socket's own address) and writes the
//! holes ftpgate writes for a `tproxy` listener (no SNAT toward the client), so the
//! TPROXY kernel path is measured against a floor under the same ruleset.
//! usage: kernel_floor [--tokio] [--tproxy] ADDR...     e.g. [::]:8021

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ftpgate::net;
use ftpgate::net::nft::{Hole, Nft};

#[path = "floor.rs"]
mod floor;
use floor::{host_port, host_port_text, numbers};

/// ftpgate's `data-timeout` in the shipped edge rules, plus its grace.
const TIMEOUT: Duration = Duration::from_secs(35);

/// One control session: the addresses its holes are made of, and the holes open now.
struct Session {
    nft: Arc<Nft>,
    client: IpAddr,
    server: IpAddr,
    /// The edge's address toward the client, and toward the server.
    client_local: IpAddr,
    server_local: IpAddr,
    open: Mutex<Vec<Hole>>,
}

impl Session {
    fn open(&self, hole: Option<Hole>) -> Option<u16> {
        let hole = hole?;
        let port = hole.dst.port();
        self.nft.install(&hole, TIMEOUT).ok()?;
        self.open.lock().ok()?.push(hole);
        Some(port)
    }

    /// The holes open now, to close once the line that ends them has gone on: taken
    /// before it goes, since the client may announce the next one as soon as it has
    /// it.
    fn take(&self) -> Vec<Hole> {
        std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn close(&self, holes: Vec<Hole>) {
        for hole in holes {
            let _ = self.nft.remove(&hole, true);
        }
    }

    /// Whether `line` from the server ends the transfer: what ftpgate takes for
    /// `Action::Finished`.
    fn ends(line: &str, to_server: bool) -> bool {
        !to_server && (line.starts_with("226 ") || line.starts_with("250 "))
    }
}

/// Whether connections come by TPROXY (`--tproxy`) rather than REDIRECT.
static TPROXY: AtomicBool = AtomicBool::new(false);

fn tproxy() -> bool {
    TPROXY.load(Ordering::Relaxed)
}

/// Where the client was going: after REDIRECT the original destination, after TPROXY,
/// which hands the connection over unchanged, the accepted socket's own address.
fn destination(client: &TcpStream) -> Option<SocketAddr> {
    if !tproxy() {
        return floor::original_dst(client);
    }
    let local = client.local_addr().ok()?;
    Some(SocketAddr::new(local.ip().to_canonical(), local.port()))
}

/// The source of the edge's legs toward the client, as ftpgate's holes have it: its
/// own address after REDIRECT; after TPROXY the routing's choice (the accepted
/// socket's address is the server's), which needs no SNAT element.
fn client_local(near: IpAddr) -> IpAddr {
    let near = near.to_canonical();
    if tproxy() {
        net::unspecified(near)
    } else {
        near
    }
}

/// A listener on `addr`; under TPROXY a transparent one, bound by ftpgate's own code
/// for its `tproxy` listeners.
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    if !tproxy() {
        return TcpListener::bind(addr);
    }
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let listener = net::listen_std(addr, 1024, net::Binding::Transparent)?;
    // ftpgate's listeners are non-blocking; the blocking floor accepts in a loop.
    listener.set_nonblocking(false)?;
    Ok(listener)
}

fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    40000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000
}

/// The line to send on for `line`, with its hole installed.
fn rewrite(s: &Session, line: &str, to_server: bool) -> Option<String> {
    let upper = line
        .get(..5)
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    if to_server && upper == "PORT " {
        // The server connects to the edge, which forwards to the client from its
        // own address on the client's side.
        let client = host_port(&numbers(&line[5..]))?;
        let ours = SocketAddr::new(s.server_local, next_port());
        s.open(Hole::new(s.server, ours, client, s.client_local))?;
        return Some(format!("PORT {}\r\n", host_port_text(ours)?));
    }
    // Passive: the client connects to the server's address and a port of ours, which
    // the edge forwards to the server's port from its own address on the server's side.
    let passive = |port: u16| {
        let ours = SocketAddr::new(s.server, next_port());
        let onward = SocketAddr::new(s.server, port);
        s.open(Hole::new(s.client, ours, onward, s.server_local))
    };
    if !to_server && line.starts_with("227 ") {
        let (_, rest) = line.split_once('(')?;
        let port = passive(host_port(&numbers(rest))?.port())?;
        let text = host_port_text(SocketAddr::new(s.server, port))?;
        return Some(format!("227 Entering Passive Mode ({text}).\r\n"));
    }
    if !to_server && line.starts_with("229 ") {
        let (_, rest) = line.split_once("(|||")?;
        let port = passive(*numbers(rest).first()?)?;
        return Some(format!(
            "229 Entering Extended Passive Mode (|||{port}|)\r\n"
        ));
    }
    None
}

/// Copies `from` to `to` line by line, rewriting announcements; holes close after the
/// transfer's completion reply has gone on.
fn lines(s: &Session, from: TcpStream, mut to: TcpStream, to_server: bool) {
    let mut reader = BufReader::new(from);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let out = rewrite(s, &line, to_server);
        let done = if Session::ends(&line, to_server) {
            s.take()
        } else {
            Vec::new()
        };
        if to
            .write_all(out.as_deref().unwrap_or(&line).as_bytes())
            .is_err()
        {
            break;
        }
        s.close(done);
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve(listener: TcpListener, nft: Arc<Nft>) {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    for client in listener.incoming().flatten() {
        let nft = nft.clone();
        thread::spawn(move || {
            let Some(dst) = destination(&client) else {
                return;
            };
            let Ok(server) = TcpStream::connect(dst) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(peer), Ok(client_near), Ok(server_near)) =
                (client.peer_addr(), client.local_addr(), server.local_addr())
            else {
                return;
            };
            let session = Arc::new(Session {
                nft,
                client: v4(peer.ip()),
                server: dst.ip(),
                client_local: client_local(client_near.ip()),
                server_local: v4(server_near.ip()),
                open: Mutex::new(Vec::new()),
            });
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = session.clone();
            let upward = thread::spawn(move || lines(&up, c2, s2, true));
            lines(&session, server, client, false);
            let _ = upward.join();
            session.close(session.take());
        });
    }
}

/// `serve` on a single-threaded tokio runtime.
mod event_loop {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    async fn lines(s: Arc<Session>, from: OwnedReadHalf, mut to: OwnedWriteHalf, up: bool) {
        let mut reader = BufReader::new(from);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let out = rewrite(&s, &line, up);
            let done = if Session::ends(&line, up) {
                s.take()
            } else {
                Vec::new()
            };
            if to
                .write_all(out.as_deref().unwrap_or(&line).as_bytes())
                .await
                .is_err()
            {
                break;
            }
            s.close(done);
        }
        let _ = to.shutdown().await;
    }

    async fn session(client: tokio::net::TcpStream, nft: Arc<Nft>) -> Option<()> {
        let std_client = client.into_std().ok()?;
        let dst = destination(&std_client)?;
        let client = tokio::net::TcpStream::from_std(std_client).ok()?;
        let server = tokio::net::TcpStream::connect(dst).await.ok()?;
        client.set_nodelay(true).ok()?;
        server.set_nodelay(true).ok()?;
        let v4 = |ip: IpAddr| ip.to_canonical();
        let session = Arc::new(Session {
            nft,
            client: v4(client.peer_addr().ok()?.ip()),
            server: dst.ip(),
            client_local: client_local(client.local_addr().ok()?.ip()),
            server_local: v4(server.local_addr().ok()?.ip()),
            open: Mutex::new(Vec::new()),
        });
        let (client_in, client_out) = client.into_split();
        let (server_in, server_out) = server.into_split();
        let upward = tokio::spawn(lines(session.clone(), client_in, server_out, true));
        lines(session.clone(), server_in, client_out, false).await;
        let _ = upward.await;
        session.close(session.take());
        Some(())
    }

    pub fn serve(listeners: Vec<TcpListener>, nft: Arc<Nft>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(async move {
            let mut accepting = Vec::new();
            for listener in listeners {
                let _ = listener.set_nonblocking(true);
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                let nft = nft.clone();
                accepting.push(tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        tokio::spawn(session(client, nft.clone()));
                    }
                }));
            }
            for task in accepting {
                let _ = task.await;
            }
        });
    }
}

fn main() {
    let nft = Arc::new(Nft::open().unwrap_or_else(|e| panic!("nftables: {e}")));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let event_loop = flag("--tokio");
    TPROXY.store(flag("--tproxy"), Ordering::Relaxed);
    let listeners: Vec<TcpListener> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| listen(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
        .collect();
    if event_loop {
        return event_loop::serve(listeners, nft);
    }
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let nft = nft.clone();
            thread::spawn(move || serve(l, nft))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
