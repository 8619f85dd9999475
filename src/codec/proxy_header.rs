//! HAProxy's PROXY protocol (v1 text, v2 binary): the header ftpgate sends ahead of a
//! control connection to a server (`send-proxy`), so that the server sees the real
//! client. Built with the `ppp` crate; pure.

use std::net::SocketAddr;

use crate::vocab::ProxyVersion;

/// The header for a connection from `client` to `dialed` (the address the client
/// connected to). Addresses of different families (which one socket never has) give
/// v1's `UNKNOWN` and v2's `LOCAL`: the server then sees the proxy as the client.
pub fn header(version: ProxyVersion, client: SocketAddr, dialed: SocketAddr) -> Vec<u8> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, dialed) = (canonical(client), canonical(dialed));
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((client, dialed))
            .to_string()
            .into_bytes(),
        ProxyVersion::V2 => {
            let addresses = ppp::v2::Addresses::from((client, dialed));
            let command = match addresses {
                ppp::v2::Addresses::Unspecified => ppp::v2::Command::Local,
                _ => ppp::v2::Command::Proxy,
            };
            ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | command,
                ppp::v2::Protocol::Stream,
                addresses,
            )
            .build()
            // Only an over-long header fails to build; two addresses never are.
            .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_names_the_client_and_the_address_it_dialed() {
        let h = header(
            ProxyVersion::V1,
            sa("198.51.100.2:50000"),
            sa("203.0.113.1:21"),
        );
        assert_eq!(h, b"PROXY TCP4 198.51.100.2 203.0.113.1 50000 21\r\n");
        let h = header(
            ProxyVersion::V1,
            sa("[2001:db8::2]:50000"),
            sa("[2001:db8::1]:21"),
        );
        assert_eq!(h, b"PROXY TCP6 2001:db8::2 2001:db8::1 50000 21\r\n");
        // An IPv4 client on an IPv6 socket is an IPv4 client.
        let h = header(
            ProxyVersion::V1,
            sa("[::ffff:198.51.100.2]:1"),
            sa("[::ffff:203.0.113.1]:21"),
        );
        assert_eq!(h, b"PROXY TCP4 198.51.100.2 203.0.113.1 1 21\r\n");
    }

    #[test]
    fn v2_parses_back_to_the_same_addresses() {
        let (client, dialed) = (sa("198.51.100.2:50000"), sa("203.0.113.1:21"));
        let h = header(ProxyVersion::V2, client, dialed);
        let parsed = ppp::v2::Header::try_from(&h[..]).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        assert_eq!(parsed.addresses, ppp::v2::Addresses::from((client, dialed)));
        let mixed = header(ProxyVersion::V2, client, sa("[2001:db8::1]:21"));
        let parsed = ppp::v2::Header::try_from(&mixed[..]).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Local);
    }
}
