//! What the bench floors (bench/line_proxy.rs, bench/kernel_floor.rs) share: the
//! original destination of a connection nftables REDIRECTed, and FTP's
//! `h1,h2,h3,h4,p1,p2` address text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
}

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SO_ORIGINAL_DST: i32 = 80;

/// Where the client was going before REDIRECT (`sockaddr_in`/`sockaddr_in6`).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
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
        getsockopt(
            stream.as_raw_fd(),
            level,
            SO_ORIGINAL_DST,
            buf.as_mut_ptr(),
            &mut len,
        )
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
        Some(SocketAddr::new(
            Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]).into(),
            port,
        ))
    }
}

/// The numbers in `text`, in order.
pub fn numbers(text: &str) -> Vec<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `h1,h2,h3,h4,p1,p2` as an address.
pub fn host_port(n: &[u16]) -> Option<SocketAddr> {
    let [a, b, c, d, p1, p2] = *n else {
        return None;
    };
    let ip = Ipv4Addr::new(a as u8, b as u8, c as u8, d as u8);
    Some(SocketAddr::new(ip.into(), p1 * 256 + p2))
}

/// An IPv4 address as `h1,h2,h3,h4,p1,p2`.
pub fn host_port_text(addr: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [a, b, c, d] = ip.octets();
    Some(format!(
        "{a},{b},{c},{d},{},{}",
        addr.port() / 256,
        addr.port() % 256
    ))
}
