//! Relays one data connection: both directions at once, each direction shut down
//! (half-close) when its source ends, bytes counted.
//!
//! This is the user-space relay; a zero-copy or kernel-backed data path must keep the
//! same contract: return only once every byte read has been written and each write
//! side has been shut down.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::track::Transferred;

/// Per-direction buffer: large enough for bulk transfers, allocated once per leg.
const BUFFER: usize = 64 * 1024;

/// Copies until EOF, then shuts the write side down; `moved` counts as it goes so a
/// failed transfer still reports what it delivered.
async fn pump(
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
        to.write_all(&buf[..n]).await?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

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
    let (a_read, a_write) = accepted.into_split();
    let (b_read, b_write) = onward.into_split();
    let forward = pump(a_read, b_write, &totals.forward);
    let backward = pump(b_read, a_write, &totals.backward);
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
