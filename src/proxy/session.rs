//! One task per control session: admit it against the session limits, read what the
//! operating system knows about it (the original destination, the proxy's own end),
//! hand both to the session engine and drive it to the end, then count the outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::Instrument;

use super::Shared;
use super::driver::Driver;
use super::pools::Picked;
use crate::addrs::{ClientAddr, LocalAddr, OrigDstAddr};
use crate::net;
use crate::rules::{Interception, ListenMode, Listener, Source};
use crate::session::{Action, Origin, Rejection, Session, Start};
use crate::track::{SessionEntry, SessionLimits};
use crate::vocab::SessionOutcome;

pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let (peer, dialed) = match &listener.accept_proxy {
        None => (peer, None),
        Some(balancers) => match proxied(&shared, balancers, &client, peer, "control").await {
            Some((client, dialed)) => (client, Some(dialed)),
            // Not a session: the balancer's health check, or a connection refused.
            None => return,
        },
    };
    let peer = ClientAddr::new(peer);
    let started = Instant::now();
    let limits = {
        let settings = &shared.config.load().settings;
        SessionLimits {
            total: settings.max_sessions,
            per_client: settings.max_sessions_per_client,
            rate_per_client: settings.max_accept_rate_per_client,
        }
    };
    let entry = SessionEntry::new(listener.addr, peer.get(), started);
    let start = |origin| Start {
        listener: listener.addr,
        client: peer,
        own: shared.own_sockets.load_full(),
        origin,
        tls_implicit: listener.tls_implicit,
        dialed,
    };
    let id = match shared.tracker.open_session(entry, limits) {
        Ok(id) => id,
        Err(limit) => {
            tracing::warn!(client = %peer, limit = limit.as_str(), "session refused: limit reached");
            let start = start(Origin::Rejected(Rejection::Limit(limit)));
            let outcome = refuse(&shared, client, start);
            count(&shared, outcome);
            return;
        }
    };
    shared.metrics.sessions_active.inc();
    let span = tracing::info_span!("session", id, client = %peer, server = tracing::field::Empty);
    // A pool that routes by user picks at `USER` (the driver); the others now.
    let by_user = match &listener.mode {
        ListenMode::Pool { pool } => shared.config.load().routes_by_user(pool),
        _ => false,
    };
    let picked = if by_user {
        None
    } else {
        pick(&shared, &listener, peer)
    };
    if let Some(p) = &picked {
        let pool = p.pool.clone();
        shared.tracker.update_session(id, |s| s.pool = Some(pool));
    }
    let origin = origin(&listener, &client, picked.as_ref(), by_user);
    let session = Session::new(start(origin), shared.config.load_full(), started);
    let driver = Driver::new(&shared, id, &listener, session, client, peer, picked);
    let outcome = driver.run().instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            outcome = outcome.as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            "session end"
        );
    });
    count(&shared, outcome);
    shared.metrics.sessions_active.dec();
    shared.tracker.close_session(id);
}

/// Behind a load balancer (`accept-proxy`): the client the PROXY header of a
/// connection from `peer` names, and the address the client dialed (the balancer's),
/// when `peer` is a trusted balancer and the header one; counted either way. `None`
/// leaves the connection to be closed.
pub(super) async fn proxied(
    shared: &Shared,
    balancers: &crate::rules::AddrMatch,
    stream: &TcpStream,
    peer: SocketAddr,
    leg: &'static str,
) -> Option<(SocketAddr, SocketAddr)> {
    use crate::net::proxy_header::{Header, read_header};
    if !balancers.matches(peer.ip().to_canonical()) {
        tracing::warn!(%peer, leg, "PROXY header refused: not from a trusted balancer");
        shared.metrics.proxy_header(leg, "untrusted");
        return None;
    }
    let limit = shared.config.load().settings.connect_timeout;
    match read_header(stream, limit).await {
        Ok(Header::Client {
            source,
            destination,
        }) => {
            shared.metrics.proxy_header(leg, "ok");
            let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            Some((canonical(source), canonical(destination)))
        }
        Ok(Header::Local) => {
            shared.metrics.proxy_header(leg, "local");
            None
        }
        Err(e) => {
            tracing::warn!(%peer, leg, reason = e.as_str(), "PROXY header refused");
            shared.metrics.proxy_header(leg, e.as_str());
            None
        }
    }
}

fn count(shared: &Shared, outcome: SessionOutcome) {
    shared
        .metrics
        .sessions_total
        .with_label_values(&[outcome.as_str()])
        .inc();
}

/// A session refused before it is tracked: the engine's reply goes out in one
/// non-blocking write (a new socket's send buffer is empty) and the socket closes.
fn refuse(shared: &Shared, client: TcpStream, start: Start) -> SessionOutcome {
    let mut session = Session::new(start, shared.config.load_full(), Instant::now());
    let mut outcome = SessionOutcome::Refused;
    for action in session.poll_actions() {
        match action {
            Action::ToClient(bytes) => {
                // Straight to the socket: the runtime may not have polled a stream it
                // registered just now, so `try_write` could say WouldBlock to an empty
                // send buffer, and the one reply fits in any.
                let _ = socket2::SockRef::from(&client).send(&bytes);
            }
            Action::Close(reason) => {
                if let Some(limit) = reason.limit() {
                    shared.metrics.limit(limit);
                }
                outcome = reason.outcome();
            }
            _ => {}
        }
    }
    outcome
}

/// Where the session's server comes from, as far as the sockets tell (and, on a pool
/// listener, the server `picked` for it).
fn origin(
    listener: &Listener,
    client: &TcpStream,
    picked: Option<&Picked>,
    by_user: bool,
) -> Origin {
    let Ok(local) = client.local_addr().map(LocalAddr::new) else {
        return Origin::Rejected(Rejection::Unreachable);
    };
    match &listener.mode {
        ListenMode::Forward => Origin::Forward { local },
        ListenMode::Reverse { upstream } => Origin::Upstream {
            host: upstream.host.clone(),
            port: upstream.port,
            local,
        },
        ListenMode::Pool { .. } if by_user => Origin::Pooled { local },
        ListenMode::Pool { .. } => match picked {
            Some(picked) => Origin::Upstream {
                host: picked.backend.host.clone(),
                port: picked.backend.port,
                local,
            },
            None => Origin::Rejected(Rejection::NoServerUp),
        },
        ListenMode::Transparent(how) => intercepted(listener, client, local, *how),
    }
}

/// On a pool listener, the pool's server for a session of `client`.
fn pick(shared: &Shared, listener: &Listener, client: ClientAddr) -> Option<Picked> {
    let ListenMode::Pool { pool } = &listener.mode else {
        return None;
    };
    let config = shared.config.load();
    let pool = config.pool(pool)?;
    shared.pools.pick(shared, pool, client.ip(), None)
}

fn intercepted(
    listener: &Listener,
    client: &TcpStream,
    local: LocalAddr,
    how: Interception,
) -> Origin {
    let dst = match net::original_dst(client).map(OrigDstAddr::new) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::warn!(error = %e, "no original destination");
            return Origin::Rejected(Rejection::NoOriginalDst);
        }
    };
    // Not intercepted (REDIRECT leaves no rewrite, or TPROXY hands over a local
    // address): connecting there would loop back into the proxy.
    let looped = match how {
        Interception::Tproxy { .. } => dst.port() == listener.addr.port(),
        Interception::Redirect => dst.get() == local.get(),
    };
    if looped {
        tracing::warn!(%dst, "connection was not intercepted; refusing to loop");
        return Origin::Rejected(Rejection::NotIntercepted);
    }
    // With TPROXY the local address is the server's, not the proxy's: data listeners
    // bind the wildcard address, and onward legs to the client leave from wherever
    // the routing table says, or from the server's address when the source is
    // preserved.
    let client_local = match how {
        Interception::Tproxy {
            source: Source::Peer,
        } => dst.ip(),
        Interception::Tproxy {
            source: Source::Proxy,
        } => net::unspecified(dst.ip()),
        Interception::Redirect => local.ip(),
    };
    Origin::Intercepted {
        server: dst,
        client_local,
    }
}
