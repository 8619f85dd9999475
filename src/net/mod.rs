//! The only place with socket options: control listeners, data listeners on a chosen
//! port, onward connections from a chosen local address, and the byte relay.

pub mod nft;
pub mod proxy_header;
mod relay;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub use relay::{relay, relay_streams};

/// How a listening socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Plain,
    /// `IP_TRANSPARENT`: accepts connections TPROXY hands over for addresses that are
    /// not local (needs `CAP_NET_ADMIN`).
    Transparent,
}

fn socket_for(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Data ports are reused quickly while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // An IPv4 and an IPv6 listener on the same port must coexist.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A listening socket on `addr` with the given accept backlog.
pub fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    listen_as(addr, backlog, Binding::Plain)
}

/// A listening socket on `addr`, bound as `binding` says.
pub fn listen_as(addr: SocketAddr, backlog: i32, binding: Binding) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_std(addr, backlog, binding)?)
}

/// Like [`listen_as`], before the async runtime exists (privileges are dropped after
/// binding, while the process still has one thread).
pub fn listen_std(
    addr: SocketAddr,
    backlog: i32,
    binding: Binding,
) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr)?;
    if binding == Binding::Transparent {
        if addr.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A data listener on `ip:port`; `None` when the port is taken. A transparent one
/// binds the wildcard address: TPROXY hands connections for any destination to the
/// listener on the port, and the expectation checks the destination.
pub fn listen_data(ip: IpAddr, port: u16, binding: Binding) -> Option<TcpListener> {
    let ip = match binding {
        Binding::Plain => ip,
        Binding::Transparent => unspecified(ip),
    };
    match listen_as(SocketAddr::new(ip, port), 8, binding) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(%ip, port, error = %e, "data port not available");
            None
        }
    }
}

/// The addresses of this host's interfaces, canonical (no IPv4-mapped IPv6). Empty
/// when they cannot be read; loopback and the session's own addresses are checked
/// anyway.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6()
                    .map(|v6| IpAddr::V6(v6.ip()).to_canonical())
            }
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The unspecified address of `like`'s family.
pub fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Connects to `target` from `local_ip` (any port), within `limit`. A transparent
/// connection may leave from an address that is not the host's own (`IP_TRANSPARENT`:
/// the client's towards the server, the server's towards the client).
pub async fn connect_from(
    local_ip: IpAddr,
    target: SocketAddr,
    limit: Duration,
    binding: Binding,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if binding == Binding::Transparent {
        if target.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
    }
    if local_ip.is_ipv4() == target.is_ipv4() && !local_ip.is_unspecified() {
        socket.bind(&SocketAddr::new(local_ip, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let stream = tokio::time::timeout(limit, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The first address `host:port` resolves to, within `limit`.
pub async fn resolve(host: &str, port: u16, limit: Duration) -> io::Result<SocketAddr> {
    let lookup = tokio::net::lookup_host((host, port));
    let mut addrs = tokio::time::timeout(limit, lookup)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"))??;
    addrs
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))
}

/// Connects to `target` within `limit`.
pub async fn connect(target: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    connect_from(unspecified(target.ip()), target, limit, Binding::Plain).await
}

/// Where the peer of an accepted connection meant to connect: the original
/// destination a REDIRECT (DNAT) rewrote, or the local address when nothing rewrote
/// it (a direct or TPROXY connection).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let socket = socket2::SockRef::from(stream);
    let original = if local.is_ipv4() {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    match original {
        Ok(addr) => addr
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an inet address")),
        // ENOENT: no conntrack entry, so nothing was rewritten.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(local),
        Err(e) => Err(e),
    }
}
