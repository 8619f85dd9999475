//! Relays one data connection: both directions at once, each direction shut down
//! (half-close) when its source ends, bytes counted as they move.
//!
//! On Linux the bytes move with `splice(2)` through a pipe per direction and never
//! enter user space, past the first few KiB (a small file needs no pipe); elsewhere,
//! or when no pipe can be had, a user-space copy does the same job. Any other data
//! path (a kernel-backed one) must keep this contract: return only once every byte
//! read has been written and each write side shut down, call `drained` when the
//! first direction has, and fail after `idle` without progress.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::track::Transferred;

/// Relays until both directions have ended; an error in either ends both, and so
/// does `idle` passing with no byte moved either way.
///
/// An FTP data connection carries bytes one way: the first direction to reach EOF is
/// the transfer, and `drained` is called once its bytes are all written and its write
/// side shut down, so the completion reply can go out while the other direction waits
/// for its own end.
pub async fn relay(
    accepted: TcpStream,
    onward: TcpStream,
    totals: &Transferred,
    idle: Duration,
    drained: impl FnOnce(),
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let (forward, backward) = (
        splice::pump(&accepted, &onward, &totals.forward),
        splice::pump(&onward, &accepted, &totals.backward),
    );
    #[cfg(not(target_os = "linux"))]
    let (forward, backward) = {
        let (a_read, a_write) = accepted.into_split();
        let (b_read, b_write) = onward.into_split();
        (
            copy::copy(a_read, b_write, &totals.forward),
            copy::copy(b_read, a_write, &totals.backward),
        )
    };
    drive(forward, backward, totals, idle, drained).await
}

/// [`relay`] between any two streams, for legs that are not plain sockets (FTPS data
/// through TLS, `PROT P`): the bytes must pass through user space to be decrypted and
/// encrypted, so this copies them; the contract is the same.
pub async fn relay_streams<A, B>(
    accepted: A,
    onward: B,
    totals: &Transferred,
    idle: Duration,
    drained: impl FnOnce(),
) -> io::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (a_read, a_write) = tokio::io::split(accepted);
    let (b_read, b_write) = tokio::io::split(onward);
    let forward = copy::copy(a_read, b_write, &totals.forward);
    let backward = copy::copy(b_read, a_write, &totals.backward);
    drive(forward, backward, totals, idle, drained).await
}

/// Runs both directions to their end, calls `drained` when the first one is done, and
/// fails when neither moves a byte for `idle`.
async fn drive(
    forward: impl Future<Output = io::Result<()>>,
    backward: impl Future<Output = io::Result<()>>,
    totals: &Transferred,
    idle: Duration,
    drained: impl FnOnce(),
) -> io::Result<()> {
    tokio::pin!(forward, backward);
    let mut drained = Some(drained);
    let (mut forward_done, mut backward_done) = (false, false);
    let moved = || totals.forward.load(Ordering::Relaxed) + totals.backward.load(Ordering::Relaxed);
    let mut seen = moved();
    let mut deadline = Instant::now() + idle;
    while !(forward_done && backward_done) {
        tokio::select! {
            r = &mut forward, if !forward_done => { r?; forward_done = true; }
            r = &mut backward, if !backward_done => { r?; backward_done = true; }
            _ = tokio::time::sleep_until(deadline) => {
                let now = moved();
                if now == seen {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "data connection idle"));
                }
                seen = now;
                deadline = Instant::now() + idle;
                continue;
            }
        }
        if let Some(first_end) = drained.take() {
            first_end();
        }
    }
    Ok(())
}

mod copy {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Per-direction buffer of the user-space copy: allocated once per leg.
    const BUFFER: usize = 64 * 1024;

    /// User-space copy until EOF, then shuts the write side down; `moved` counts as it
    /// goes so a transfer cut short still reports what it delivered. A TLS peer that
    /// closes its connection without TLS's own close (`close_notify`) ends the
    /// direction as an EOF does, as vsftpd takes it by default
    /// (`strict_ssl_read_eof=NO`): FTP clients commonly do.
    pub async fn copy(
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
        moved: &AtomicU64,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = match from.read(&mut buf).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                r => r?,
            };
            if n == 0 {
                return to.shutdown().await;
            }
            to.write_all(buf.get(..n).unwrap_or_default()).await?;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(target_os = "linux")]
mod splice {
    //! Zero-copy relay: socket → pipe → socket with `splice(2)`, driven by tokio's
    //! readiness so that no thread ever blocks.

    use std::io;
    use std::net::Shutdown;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::{AtomicU64, Ordering};

    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// What one splice moves at most; the pipe is sized to hold it.
    const CHUNK: usize = 1 << 20;
    /// What moves through user space before a pipe is made: more than a small file.
    const FIRST: usize = 16 * 1024;

    /// A non-blocking pipe, one per direction.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        capacity: usize,
    }

    impl Pipe {
        fn new() -> io::Result<Pipe> {
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            // A larger pipe means fewer syscalls per megabyte; the default (64 KiB) is
            // kept when the system allows no more (fs.pipe-max-size).
            let size = i32::try_from(CHUNK).unwrap_or(i32::MAX);
            let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(64 * 1024);
            Ok(Pipe {
                read,
                write,
                capacity,
            })
        }
    }

    fn flags() -> SpliceFFlags {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
    }

    /// Moves bytes from `from` to `to` until EOF, then shuts `to`'s write side down.
    /// The first bytes go through user space: a small transfer, and the reverse
    /// direction that carries nothing, never need a pipe (two descriptors and four
    /// syscalls to make and size it, two to close it). Once a read fills the buffer,
    /// more is coming, and the rest moves through a pipe.
    pub async fn pump(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> io::Result<()> {
        // Allocated when the first bytes (or the EOF) are there and freed once a pipe
        // takes over: a long transfer, or a direction that waits, holds no buffer.
        let mut buf = Vec::new();
        let mut pipe = None;
        loop {
            let n = match &pipe {
                Some(pipe) => splice_through(from, to, pipe, moved).await?,
                None => {
                    let n = copy_once(from, to, &mut buf, moved).await?;
                    if n == FIRST {
                        // Without a pipe (descriptors exhausted), user space goes on.
                        pipe = Pipe::new().ok();
                        if pipe.is_some() {
                            buf = Vec::new();
                        }
                    }
                    n
                }
            };
            if n == 0 {
                return socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
        }
    }

    /// One read into `buf` (sized [`FIRST`] on first use) and the write of all of it;
    /// what was read (0 at EOF).
    async fn copy_once(
        from: &TcpStream,
        to: &TcpStream,
        buf: &mut Vec<u8>,
        moved: &AtomicU64,
    ) -> io::Result<usize> {
        let n = loop {
            from.readable().await?;
            if buf.is_empty() {
                buf.resize(FIRST, 0);
            }
            match from.try_read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        let mut left = buf.get(..n).unwrap_or_default();
        while !left.is_empty() {
            to.writable().await?;
            match to.try_write(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    left = left.get(written..).unwrap_or_default();
                    moved.fetch_add(written as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Fills the (empty) pipe from `from` and empties it into `to`; what moved (0 at
    /// EOF).
    async fn splice_through(
        from: &TcpStream,
        to: &TcpStream,
        pipe: &Pipe,
        moved: &AtomicU64,
    ) -> io::Result<usize> {
        let filled = loop {
            from.readable().await?;
            let r = from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    &pipe.write,
                    None,
                    pipe.capacity,
                    flags(),
                )
                .map_err(io::Error::from)
            });
            match r {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            let r = to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to.as_fd(), None, left, flags()).map_err(io::Error::from)
            });
            match r {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "splice wrote nothing",
                    ));
                }
                Ok(n) => {
                    left -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair on loopback: (the end the relay holds, the far end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(listener.accept(), far);
        (near.unwrap().0, far.unwrap())
    }

    /// Sends `size` bytes from the client end through the relay (or back from the
    /// server end) and checks that the same bytes arrive, counted, with the EOF.
    async fn through(size: usize, forward: bool) {
        let (accepted, mut client) = pair().await;
        let (onward, mut server) = pair().await;
        let totals = Transferred::default();
        let sent: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let drained = std::sync::atomic::AtomicBool::new(false);
        let relay = relay(accepted, onward, &totals, Duration::from_secs(10), || {
            drained.store(true, Ordering::Relaxed)
        });
        let (source, sink) = if forward {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        let peers = async {
            source.write_all(&sent).await.unwrap();
            source.shutdown().await.unwrap();
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            // The direction that carried nothing ends when its source does.
            sink.shutdown().await.unwrap();
            got
        };
        let (relayed, got) = tokio::join!(relay, peers);
        relayed.unwrap();
        assert!(
            got == sent,
            "{size} bytes, forward {forward}: {} arrived",
            got.len()
        );
        let (there, back) = if forward {
            (&totals.forward, &totals.backward)
        } else {
            (&totals.backward, &totals.forward)
        };
        assert_eq!(there.load(Ordering::Relaxed), size as u64);
        assert_eq!(back.load(Ordering::Relaxed), 0);
        assert!(drained.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn every_byte_arrives_below_at_and_past_the_switch_to_a_pipe() {
        for size in [0, 1, 1024, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 3 << 20] {
            through(size, true).await;
            through(size, false).await;
        }
    }
}
