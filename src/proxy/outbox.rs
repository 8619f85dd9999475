//! Bytes waiting for one control socket, written whenever the socket takes them, so
//! that a peer that stops reading holds up nothing but its own output. A Telnet Synch
//! (`IAC DM` before `ABOR`) goes as RFC 959 describes it, with the DM byte as TCP
//! urgent data.

use std::collections::VecDeque;
use std::io;

use tokio::net::TcpStream;

/// Telnet IAC and Data Mark.
const IAC: u8 = 255;
const DM: u8 = 242;
/// Written bytes are dropped from the front of the buffer once this many piled up.
const COMPACT_AT: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(super) struct Outbox {
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    sent: usize,
    /// Offsets in `buf` of bytes to send as urgent data.
    urgent: VecDeque<usize>,
}

impl Outbox {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Queues a line for the server, marking the DM of a Telnet Synch in it.
    pub fn push_line(&mut self, bytes: &[u8]) {
        if let Some(dm) = data_mark(bytes) {
            self.urgent.push_back(self.buf.len() + dm);
        }
        self.push(bytes);
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what the socket takes now, without waiting.
    pub fn write_to(&mut self, stream: &TcpStream) -> io::Result<()> {
        let result = self.write_some(stream);
        if self.is_empty() {
            // An idle session keeps no output buffer at all.
            *self = Outbox::default();
        } else if self.sent >= COMPACT_AT {
            self.buf.drain(..self.sent);
            self.urgent.iter_mut().for_each(|u| *u -= self.sent);
            self.sent = 0;
        }
        result
    }

    fn write_some(&mut self, stream: &TcpStream) -> io::Result<()> {
        while !self.is_empty() {
            let end = match self.urgent.front().copied() {
                Some(u) if u == self.sent => {
                    let byte = self.buf.get(u..=u).unwrap_or_default();
                    match socket2::SockRef::from(stream).send_out_of_band(byte) {
                        Ok(1) => self.sent += 1,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Servers accept the DM inline as well.
                        _ => {}
                    }
                    self.urgent.pop_front();
                    continue;
                }
                Some(u) => u,
                None => self.buf.len(),
            };
            match stream.try_write(self.buf.get(self.sent..end).unwrap_or_default()) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Where the DM byte of the first `IAC DM` in `bytes` is, skipping doubled IACs.
fn data_mark(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == IAC {
            if bytes.get(i + 1) == Some(&DM) {
                return Some(i + 1);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_mark_is_found_past_doubled_iacs_only() {
        assert_eq!(data_mark(&[IAC, 244, IAC, DM, b'A']), Some(3));
        assert_eq!(
            data_mark(&[IAC, IAC, DM, b'A']),
            None,
            "a literal 0xff, then 0xf2"
        );
        assert_eq!(data_mark(b"ABOR\r\n"), None);
        assert_eq!(data_mark(&[b'x', IAC]), None);
    }

    #[tokio::test]
    async fn queued_bytes_arrive_in_order_with_the_synch_inline_for_the_reader() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = TcpStream::connect(addr).await.unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&reader)
            .set_out_of_band_inline(true)
            .unwrap();
        let mut out = Outbox::default();
        out.push_line(b"NOOP\r\n");
        out.push_line(&[IAC, 244, IAC, DM, b'A', b'B', b'O', b'R', b'\r', b'\n']);
        while !out.is_empty() {
            writer.writable().await.unwrap();
            out.write_to(&writer).unwrap();
        }
        let mut got = [0u8; 16];
        let mut n = 0;
        while n < 16 {
            n += reader.read(&mut got[n..]).await.unwrap();
        }
        assert_eq!(&got[..6], b"NOOP\r\n");
        assert_eq!(
            &got[6..],
            &[IAC, 244, IAC, DM, b'A', b'B', b'O', b'R', b'\r', b'\n']
        );
    }
}
