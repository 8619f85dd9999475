//! The floor for a user-space FTP control channel, for `bench/run.sh` only (config
//! `lineproxy`): it accepts connections nftables REDIRECTs to it, connects to their
//! original destination, and copies bytes both ways with one blocking thread per
//! direction, which the kernel wakes directly when data arrives. No parsing, no
//! rewriting, no rules, no data connections: those go through the router's forward
//! path as they are. What ftpgate adds on top of this is what ftpgate costs; what
//! this costs against the kernel FTP helper is what any user-space control channel
//! costs.
//!
//! Standard library only, so that `rustc -O bench/line_proxy.rs` builds it.
//! usage: line_proxy ADDR...     e.g. [::]:8021 (dual-stack: IPv4 and IPv6)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
}

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SO_ORIGINAL_DST: i32 = 80;

/// Where the client was going before REDIRECT (`sockaddr_in`/`sockaddr_in6`).
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    // A dual-stack listener sees IPv4 clients as v4-mapped; their original
    // destination is IPv4's.
    let v6 = match stream.local_addr().ok()?.ip() {
        std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped().is_none(),
        std::net::IpAddr::V4(_) => false,
    };
    let mut buf = [0u8; 28];
    let mut len = buf.len() as u32;
    let level = if v6 { SOL_IPV6 } else { SOL_IP };
    // SAFETY: buf is large enough for either sockaddr and len says how large it is.
    let rc = unsafe {
        getsockopt(stream.as_raw_fd(), level, SO_ORIGINAL_DST, buf.as_mut_ptr(), &mut len)
    };
    if rc != 0 {
        return None;
    }
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    if v6 {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&buf[8..24]);
        Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
    } else {
        Some(SocketAddr::new(Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]).into(), port))
    }
}

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
            let Some(dst) = original_dst(&client) else { return };
            let Ok(server) = TcpStream::connect(dst) else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
            thread::spawn(move || copy(c2, s2));
            copy(server, client);
        });
    }
}

fn main() {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    let listeners: Vec<TcpListener> = addrs
        .iter()
        .map(|a| TcpListener::bind(a.as_str()).unwrap_or_else(|e| panic!("bind {a}: {e}")))
        .collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| thread::spawn(move || serve(l)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
