//! Relays one data connection: both directions at once, each direction shut down
//! (half-close) when its source ends, bytes counted as they move.
//!
//! On Linux the bytes move with `splice(2)` through a pipe per direction and never
//! enter user space; elsewhere, or when no pipe can be had, a user-space copy does the
//! same job. Any other data path (a kernel-backed one) must keep this contract: return
//! only once every byte read has been written and each write side shut down, call
//! `drained` when the first direction has, and fail after `idle` without progress.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::track::Transferred;

/// Per-direction buffer of the user-space copy: allocated once per leg.
const BUFFER: usize = 64 * 1024;

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
    if let (Ok(forward_pipe), Ok(backward_pipe)) = (splice::Pipe::new(), splice::Pipe::new()) {
        let forward = splice::pump(&accepted, &onward, forward_pipe, &totals.forward);
        let backward = splice::pump(&onward, &accepted, backward_pipe, &totals.backward);
        return drive(forward, backward, totals, idle, drained).await;
    }
    let (a_read, a_write) = accepted.into_split();
    let (b_read, b_write) = onward.into_split();
    let forward = copy(a_read, b_write, &totals.forward);
    let backward = copy(b_read, a_write, &totals.backward);
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

/// User-space copy until EOF, then shuts the write side down; `moved` counts as it
/// goes so a transfer cut short still reports what it delivered.
async fn copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    moved: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(buf.get(..n).unwrap_or_default()).await?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
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

    /// A non-blocking pipe, one per direction.
    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        capacity: usize,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
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
    pub async fn pump(
        from: &TcpStream,
        to: &TcpStream,
        pipe: Pipe,
        moved: &AtomicU64,
    ) -> io::Result<()> {
        loop {
            // Fill the (empty) pipe from the socket.
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
            if filled == 0 {
                return socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
            // Empty the pipe into the other socket.
            let mut left = filled;
            while left > 0 {
                to.writable().await?;
                let r = to.try_io(Interest::WRITABLE, || {
                    splice(&pipe.read, None, to.as_fd(), None, left, flags())
                        .map_err(io::Error::from)
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
        }
    }
}
