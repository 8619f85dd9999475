//! One small type per address role, so that a client's address cannot be passed
//! where the server's is meant. Each is canonical (no IPv4-mapped IPv6) from the
//! moment it is made, which is the only place canonicalisation happens.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

macro_rules! role {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(SocketAddr);

        impl $name {
            pub fn new(addr: SocketAddr) -> Self {
                $name(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
            }

            pub fn get(self) -> SocketAddr {
                self.0
            }

            pub fn ip(self) -> IpAddr {
                self.0.ip()
            }

            pub fn port(self) -> u16 {
                self.0.port()
            }

            pub fn is_ipv6(self) -> bool {
                self.0.is_ipv6()
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::net::AddrParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name::new)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

role!(
    /// The client's end of its control connection.
    ClientAddr
);
role!(
    /// The FTP server's control address.
    ServerAddr
);
role!(
    /// Where an intercepted connection was going: the server the client dialled.
    OrigDstAddr
);
role!(
    /// The proxy's own end of a connection.
    LocalAddr
);

impl From<OrigDstAddr> for ServerAddr {
    fn from(dst: OrigDstAddr) -> Self {
        ServerAddr(dst.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_made_canonical() {
        let mapped: SocketAddr = "[::ffff:198.51.100.2]:21".parse().unwrap();
        let plain: SocketAddr = "198.51.100.2:21".parse().unwrap();
        assert_eq!(ClientAddr::new(mapped).get(), plain);
        assert_eq!(ServerAddr::from(OrigDstAddr::new(mapped)).get(), plain);
        let v6: SocketAddr = "[2001:db8::1]:21".parse().unwrap();
        assert_eq!(LocalAddr::new(v6).get(), v6);
    }
}
