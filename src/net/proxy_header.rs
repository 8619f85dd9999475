//! Reading HAProxy's PROXY protocol header (v1 or v2) that a load balancer puts ahead
//! of a connection (`accept-proxy from ADDRS`). The header is read byte-exact, never
//! past its end: on a data connection the transfer's first bytes follow at once.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The v2 signature (12 bytes); the fixed part of a v2 header is 16.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (addresses and a few TLVs).
const V2_MAX_BLOCK: usize = 1024;

/// What a header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is a client's, from `source`, made to `destination` (an address
    /// of the balancer's).
    Client {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own (v2 `LOCAL`, v1 `UNKNOWN`): a health check, no client.
    Local,
}

/// Why there is no header.
#[derive(Debug)]
pub enum HeaderError {
    /// The connection closed, or said nothing within the time allowed.
    Missing,
    /// Bytes that are no PROXY header.
    Malformed,
    Io(io::Error),
}

impl HeaderError {
    /// The `outcome` label of `ftpgate_proxy_headers_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::Malformed | HeaderError::Io(_) => "malformed",
        }
    }
}

/// Reads the header at the start of `stream`, within `limit`.
pub async fn read_header(stream: &TcpStream, limit: Duration) -> Result<Header, HeaderError> {
    tokio::time::timeout(limit, read(stream))
        .await
        .unwrap_or(Err(HeaderError::Missing))
}

async fn read(stream: &TcpStream) -> Result<Header, HeaderError> {
    let mut buf = Vec::with_capacity(64);
    fill(stream, &mut buf, 5).await?;
    if buf == b"PROXY" {
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(HeaderError::Malformed);
            }
            let next = buf.len() + 1;
            fill(stream, &mut buf, next).await?;
        }
    } else if V2_SIGNATURE.starts_with(&buf) {
        fill(stream, &mut buf, 16).await?;
        let block = match buf.get(14..16) {
            Some(&[high, low]) => usize::from(u16::from_be_bytes([high, low])),
            _ => return Err(HeaderError::Malformed),
        };
        if !buf.starts_with(V2_SIGNATURE) || block > V2_MAX_BLOCK {
            return Err(HeaderError::Malformed);
        }
        fill(stream, &mut buf, 16 + block).await?;
    } else {
        return Err(HeaderError::Malformed);
    }
    parse(&buf).ok_or(HeaderError::Malformed)
}

/// A whole header, as `ppp` reads it.
fn parse(bytes: &[u8]) -> Option<Header> {
    let client = |source, destination| Header::Client {
        source,
        destination,
    };
    match ppp::HeaderResult::parse(bytes) {
        ppp::HeaderResult::V1(Ok(header)) => Some(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => client(
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            ),
            ppp::v1::Addresses::Tcp6(a) => client(
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            ),
            ppp::v1::Addresses::Unknown => Header::Local,
        }),
        ppp::HeaderResult::V2(Ok(header)) => match (header.command, header.addresses) {
            (ppp::v2::Command::Local, _) => Some(Header::Local),
            (_, ppp::v2::Addresses::IPv4(a)) => Some(client(
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(client(
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            // A PROXY command must name a TCP client.
            _ => None,
        },
        _ => None,
    }
}

/// Reads into `buf` until it holds `upto` bytes, never more.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>, upto: usize) -> Result<(), HeaderError> {
    let mut chunk = [0u8; 256];
    while buf.len() < upto {
        let want = (upto - buf.len()).min(chunk.len());
        let into = chunk.get_mut(..want).unwrap_or_default();
        stream.readable().await.map_err(HeaderError::Io)?;
        match stream.try_read(into) {
            Ok(0) => return Err(HeaderError::Missing),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(HeaderError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::proxy_header::header;
    use crate::vocab::ProxyVersion;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Writes `bytes` (a header, then what follows it) to a connection and reads the
    /// header off the other end; returns it and what was left to read.
    async fn through(bytes: &[u8]) -> (Result<Header, HeaderError>, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        writer.write_all(bytes).await.unwrap();
        writer.shutdown().await.unwrap();
        let header = read_header(&reader, Duration::from_secs(5)).await;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        (header, rest)
    }

    #[tokio::test]
    async fn both_versions_name_the_client_and_leave_what_follows() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let (source, destination) = (sa("198.51.100.2:50000"), sa("203.0.113.1:21"));
            let mut bytes = header(version, source, destination);
            bytes.extend_from_slice(b"first upload bytes");
            let (read, rest) = through(&bytes).await;
            let client = Header::Client {
                source,
                destination,
            };
            assert_eq!(read.unwrap(), client, "{version:?}");
            assert_eq!(rest, b"first upload bytes", "{version:?}");
        }
        let (read, _) = through(b"PROXY UNKNOWN\r\nUSER x\r\n").await;
        assert_eq!(read.unwrap(), Header::Local);
    }

    #[tokio::test]
    async fn what_is_no_header_is_refused() {
        let (read, _) = through(b"USER anonymous\r\n").await;
        assert!(matches!(read, Err(HeaderError::Malformed)));
        let (read, _) = through(b"PROXY TCP4 not-an-address\r\n").await;
        assert!(matches!(read, Err(HeaderError::Malformed)));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let (read, _) = through(long.as_bytes()).await;
        assert!(matches!(read, Err(HeaderError::Malformed)));
        let (read, _) = through(b"PROX").await;
        assert!(matches!(read, Err(HeaderError::Missing)));
    }
}
