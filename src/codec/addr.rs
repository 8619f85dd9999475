//! The address forms FTP carries inside commands and replies, one nom combinator per
//! production: `host_port` (RFC 959 `h1,h2,h3,h4,p1,p2`), `extended_addr` (RFC 2428
//! `<d>af<d>addr<d>port<d>`), `long_host_port` (RFC 1639 `LPRT`/`228` form) and
//! `epsv_port` (RFC 2428 `(<d><d><d>port<d>)`).
//!
//! Numbers are range-checked, never truncated: `256` is not an octet and `65536` is not
//! a port. These parsers decide what the bytes say, never whether it is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use nom::bytes::complete::take_while1;
use nom::character::complete::{char, digit1};
use nom::combinator::{map_opt, verify};
use nom::{IResult, Parser};

/// A decimal number with no sign, checked against `max` without overflowing.
fn bounded_decimal(max: u32) -> impl Fn(&[u8]) -> IResult<&[u8], u32> {
    move |input| {
        map_opt(digit1, |digits: &[u8]| {
            digits.iter().try_fold(0u32, |acc, d| {
                let v = acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
                (v <= max).then_some(v)
            })
        })
        .parse(input)
    }
}

fn octet(input: &[u8]) -> IResult<&[u8], u8> {
    let (rest, v) = bounded_decimal(255)(input)?;
    Ok((rest, v as u8))
}

/// A TCP port number, 0–65535.
pub fn port(input: &[u8]) -> IResult<&[u8], u16> {
    let (rest, v) = bounded_decimal(65535)(input)?;
    Ok((rest, v as u16))
}

fn comma_octet(input: &[u8]) -> IResult<&[u8], u8> {
    let (rest, (_, v)) = (char(','), octet).parse(input)?;
    Ok((rest, v))
}

/// `h1,h2,h3,h4,p1,p2`: an IPv4 address and a port given as two octets.
pub fn host_port(input: &[u8]) -> IResult<&[u8], SocketAddrV4> {
    let (rest, (h1, h2, h3, h4, p1, p2)) = (
        octet,
        comma_octet,
        comma_octet,
        comma_octet,
        comma_octet,
        comma_octet,
    )
        .parse(input)?;
    let ip = Ipv4Addr::new(h1, h2, h3, h4);
    Ok((rest, SocketAddrV4::new(ip, u16::from_be_bytes([p1, p2]))))
}

/// Formats `addr` as `h1,h2,h3,h4,p1,p2`.
pub fn format_host_port(addr: SocketAddrV4) -> String {
    let [h1, h2, h3, h4] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

/// RFC 2428: the delimiter is any ASCII character from 33 to 126; `|` is recommended.
fn is_delimiter(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// `<d>af<d>addr<d>port<d>` as used by `EPRT`.
pub fn extended_addr(input: &[u8]) -> IResult<&[u8], SocketAddr> {
    let (rest, d) = verify(nom::number::complete::u8, |b| is_delimiter(*b)).parse(input)?;
    let delim = d as char;
    let (rest, (af, _, addr, _, port, _)) = (
        bounded_decimal(255),
        char(delim),
        take_while1(|b: u8| b != d),
        char(delim),
        port,
        char(delim),
    )
        .parse(rest)?;
    let ip = match af {
        1 => std::str::from_utf8(addr)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .map(IpAddr::V4),
        2 => std::str::from_utf8(addr)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6),
        _ => None,
    };
    match ip {
        Some(ip) => Ok((rest, SocketAddr::new(ip, port))),
        None => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::Verify,
        ))),
    }
}

/// Formats `addr` as `|af|addr|port|`.
pub fn format_extended_addr(addr: SocketAddr) -> String {
    let af = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{af}|{}|{}|", addr.ip(), addr.port())
}

/// The address-family number `EPRT`/`EPSV` use for `ip`.
pub fn family_number(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 1 } else { 2 }
}

/// `(<d><d><d>port<d>)` as in a `229` reply; the network fields must be empty.
pub fn epsv_port(input: &[u8]) -> IResult<&[u8], u16> {
    let (rest, _) = char('(').parse(input)?;
    let (rest, d) = verify(nom::number::complete::u8, |b| is_delimiter(*b)).parse(rest)?;
    let delim = d as char;
    let (rest, (_, _, port, _, _)) =
        (char(delim), char(delim), port, char(delim), char(')')).parse(rest)?;
    Ok((rest, port))
}

/// RFC 1639 long form: `af,hal,h1,…,hn,pal,p1,p2` for IPv4 (4,4) and IPv6 (6,16).
pub fn long_host_port(input: &[u8]) -> IResult<&[u8], SocketAddr> {
    let fail = || nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Verify));
    let (mut rest, af) = octet(input)?;
    let (r, hal) = comma_octet(rest)?;
    rest = r;
    let mut host = Vec::with_capacity(16);
    for _ in 0..hal {
        let (r, b) = comma_octet(rest)?;
        host.push(b);
        rest = r;
    }
    let (r, pal) = comma_octet(rest)?;
    rest = r;
    if pal != 2 {
        return Err(fail());
    }
    let (rest, (p1, p2)) = (comma_octet, comma_octet).parse(rest)?;
    let port = u16::from_be_bytes([p1, p2]);
    let ip = match (
        af,
        <[u8; 4]>::try_from(&host[..]),
        <[u8; 16]>::try_from(&host[..]),
    ) {
        (4, Ok(v4), _) => IpAddr::from(v4),
        (6, _, Ok(v6)) => IpAddr::from(v6),
        _ => return Err(fail()),
    };
    Ok((rest, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_port_reads_address_and_port() {
        let (rest, a) = host_port(b"127,0,0,1,4,1)").unwrap();
        assert_eq!(a, "127.0.0.1:1025".parse().unwrap());
        assert_eq!(rest, b")");
    }

    #[test]
    fn octet_above_255_is_an_error_not_truncated() {
        assert!(host_port(b"127,0,0,1,256,22").is_err());
        assert!(host_port(b"127,0,0,300,0,22").is_err());
        assert!(host_port(b"127,0,0,1,99999999999999999999,22").is_err());
    }

    #[test]
    fn host_port_needs_six_numbers() {
        assert!(host_port(b"127,0,0,1,4").is_err());
        assert!(host_port(b"127,0,0,,4,1").is_err());
    }

    #[test]
    fn extended_addr_reads_both_families_and_any_delimiter() {
        let (_, a) = extended_addr(b"|1|132.235.1.2|6275|").unwrap();
        assert_eq!(a, "132.235.1.2:6275".parse().unwrap());
        let (_, a) = extended_addr(b"!2!2001:db8::1!5282!").unwrap();
        assert_eq!(a, "[2001:db8::1]:5282".parse().unwrap());
    }

    #[test]
    fn extended_addr_rejects_family_mismatch_and_big_ports() {
        assert!(extended_addr(b"|1|2001:db8::1|21|").is_err());
        assert!(extended_addr(b"|2|127.0.0.1|21|").is_err());
        assert!(extended_addr(b"|3|127.0.0.1|21|").is_err());
        assert!(extended_addr(b"|1|127.0.0.1|65536|").is_err());
        assert!(extended_addr(b"|1|127.0.0.1|21").is_err());
    }

    #[test]
    fn epsv_port_reads_the_port_and_rejects_addresses() {
        assert_eq!(epsv_port(b"(|||6446|)").unwrap().1, 6446);
        assert!(epsv_port(b"(|1|127.0.0.1|6446|)").is_err());
        assert!(epsv_port(b"(|||70000|)").is_err());
    }

    #[test]
    fn long_host_port_reads_v4_and_v6() {
        let (_, a) = long_host_port(b"4,4,127,0,0,1,2,4,1").unwrap();
        assert_eq!(a, "127.0.0.1:1025".parse().unwrap());
        let v6 = b"6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,0,21";
        assert_eq!(
            long_host_port(v6).unwrap().1,
            "[2001:db8::1]:21".parse().unwrap()
        );
        assert!(long_host_port(b"4,16,127,0,0,1,2,4,1").is_err());
    }

    proptest! {
        #[test]
        fn host_port_round_trips(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let addr = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            let text = format_host_port(addr);
            prop_assert_eq!(host_port(text.as_bytes()).unwrap(), (&b""[..], addr));
        }

        #[test]
        fn extended_addr_round_trips(ip in any::<IpAddr>(), port in any::<u16>()) {
            let addr = SocketAddr::new(ip, port);
            let text = format_extended_addr(addr);
            prop_assert_eq!(extended_addr(text.as_bytes()).unwrap(), (&b""[..], addr));
        }

        #[test]
        fn address_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = host_port(&data);
            let _ = extended_addr(&data);
            let _ = epsv_port(&data);
            let _ = long_host_port(&data);
        }
    }
}
