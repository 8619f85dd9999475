//! The original destination of a connection nftables REDIRECTed, shared by the bench
//! floors (bench/line_proxy.rs, bench/kernel_floor.rs).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
}

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SO_ORIGINAL_DST: i32 = 80;

/// Where the client was going before REDIRECT (`sockaddr_in`/`sockaddr_in6`).
pub fn of(stream: &TcpStream) -> Option<SocketAddr> {
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
