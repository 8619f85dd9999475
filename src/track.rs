//! The connection tracker: the table of live control sessions and their expectations,
//! and the pool of data ports. It is the single source for the session table, the
//! gauges and the expectation matcher.
//!
//! It holds plain data behind one short-lived lock; it never does I/O itself (binding a
//! port is a closure the shell passes in) and never reads the clock (times come in).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::vocab::SessionLimit;
use std::time::Instant;

use rand::RngExt;
use serde::Serialize;

use crate::rules::PortRange;
use crate::session::{DataMode, ExpectationId, Transfer};

/// Identifies a control session for the life of the process.
pub type SessionId = u64;

/// Where a control session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// Resolving and connecting to the server.
    Connecting,
    /// Relaying, not logged in yet.
    Login,
    /// The server accepted a login.
    LoggedIn,
    /// `tls passthrough`: the control connection is relayed blind.
    Passthrough,
}

/// One live control session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub listener: SocketAddr,
    pub client: SocketAddr,
    pub server: Option<SocketAddr>,
    pub user: Option<String>,
    pub state: SessionState,
    pub started: Instant,
    /// Last byte seen on the control connection, either way.
    pub last_activity: Instant,
    /// Data bytes of the session's finished data connections, both directions.
    pub data_bytes: u64,
    /// The client's control connection through TLS: version and cipher suite.
    pub client_tls: Option<String>,
    /// The server's control connection through TLS (`tls server`): the same.
    pub server_tls: Option<String>,
    /// `tls passthrough`: the server's passive ports the client may reach.
    pub passthrough: Option<crate::vocab::PortRange>,
    /// A pool listener's session: the pool (its server is `server`).
    pub pool: Option<String>,
}

impl SessionEntry {
    pub fn new(listener: SocketAddr, client: SocketAddr, now: Instant) -> Self {
        SessionEntry {
            listener,
            client,
            server: None,
            user: None,
            state: SessionState::Connecting,
            started: now,
            last_activity: now,
            data_bytes: 0,
            client_tls: None,
            server_tls: None,
            passthrough: None,
            pool: None,
        }
    }
}

/// Bytes a data connection has moved so far, counted as they move.
#[derive(Debug, Default)]
pub struct Transferred {
    /// From the accepted leg to the onward leg.
    pub forward: AtomicU64,
    /// From the onward leg back to the accepted leg.
    pub backward: AtomicU64,
}

impl Transferred {
    /// (download, upload): toward the client and toward the server. The accepted leg
    /// is the client's in passive mode and the server's in active mode.
    pub fn by_direction(&self, mode: DataMode) -> (u64, u64) {
        let forward = self.forward.load(Ordering::Relaxed);
        let backward = self.backward.load(Ordering::Relaxed);
        match mode {
            DataMode::Passive => (backward, forward),
            DataMode::Active => (forward, backward),
        }
    }
}

/// Where an expectation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectationState {
    Waiting,
    Connected,
    /// `data-path kernel`: an nftables hole is open; the kernel forwards the
    /// connection and ftpgate sees none of its bytes.
    Kernel,
}

/// One announced data connection.
#[derive(Debug, Clone)]
pub struct ExpectationEntry {
    pub mode: DataMode,
    /// The data socket the proxy listens on.
    pub proxy: SocketAddr,
    /// Where the peer must have meant to connect (the address it was told).
    pub dst: SocketAddr,
    pub expected_peer: IpAddr,
    pub onward: SocketAddr,
    pub deadline: Instant,
    pub state: ExpectationState,
    /// The transfer command that uses it, once one has.
    pub transfer: Option<Transfer>,
    pub transferred: Arc<Transferred>,
    /// The second data port, where the server connects (client passive, server
    /// active).
    pub server_port: Option<u16>,
}

/// Why a data connection may not use an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// It came from another host than the expected peer.
    Peer,
    /// It was meant for another address than the one announced (an intercepted
    /// connection to some other host that happened to use the same port).
    Destination,
}

impl Mismatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Peer => "wrong-peer",
            Mismatch::Destination => "wrong-destination",
        }
    }
}

impl ExpectationEntry {
    /// Only the expected peer, connecting to the announced address, may use an
    /// expectation (invariant 2). `dst` is the connection's original destination,
    /// `None` when it cannot be known.
    pub fn admits(&self, peer: IpAddr, dst: Option<SocketAddr>) -> Result<(), Mismatch> {
        admits(self.expected_peer, self.dst, peer, dst)
    }
}

/// The matcher: a connection from `peer` to `dst` (its original destination, `None`
/// when unknown) may be the data connection only if `peer` is `expected_peer` and `dst`
/// is `announced`. Every data listener, the second one of a converted connection too,
/// admits through this.
pub fn admits(
    expected_peer: IpAddr,
    announced: SocketAddr,
    peer: IpAddr,
    dst: Option<SocketAddr>,
) -> Result<(), Mismatch> {
    if peer.to_canonical() != expected_peer {
        return Err(Mismatch::Peer);
    }
    match dst {
        Some(dst) if dst == announced => Ok(()),
        _ => Err(Mismatch::Destination),
    }
}

/// Picks data ports unpredictably from the configured range (invariant 3).
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    in_use: HashSet<u16>,
}

/// Random probes before falling back to a scan from a random start.
const RANDOM_PROBES: usize = 32;

impl PortPool {
    pub fn new(range: PortRange) -> Self {
        PortPool {
            range,
            in_use: HashSet::new(),
        }
    }

    /// Candidate ports not in use, random first, then every other free port once.
    fn candidates<'a>(&'a self, rng: &'a mut impl rand::Rng) -> impl Iterator<Item = u16> + 'a {
        let (lo, hi) = (self.range.lo, self.range.hi);
        let start = rng.random_range(lo..=hi);
        let scan = (start..=hi).chain(lo..start);
        // Drawn as they are tried: the first one almost always does, and drawing all
        // of them up front was most of what reserving a port cost.
        (0..RANDOM_PROBES)
            .map(move |_| rng.random_range(lo..=hi))
            .chain(scan)
            .filter(|p| !self.in_use.contains(p))
    }

    /// Reserves the first candidate for which `bind` succeeds.
    pub fn allocate<T>(
        &mut self,
        rng: &mut impl rand::Rng,
        mut bind: impl FnMut(u16) -> Option<T>,
    ) -> Option<(u16, T)> {
        let found = self
            .candidates(rng)
            .find_map(|port| bind(port).map(|bound| (port, bound)))?;
        self.in_use.insert(found.0);
        Some(found)
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

/// New sessions per client address, as token buckets: each address may open `rate`
/// sessions per second, in bursts of up to twice that.
#[derive(Debug, Default)]
pub struct AcceptRate {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Above this many tracked addresses, buckets that have refilled are forgotten.
const MAX_BUCKETS: usize = 65536;

impl AcceptRate {
    /// Whether `ip` may open a session at `now`; takes a token if so.
    pub fn admit(&mut self, ip: IpAddr, now: Instant, rate: u32) -> bool {
        let burst = f64::from(rate) * 2.0;
        let refill = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            (b.tokens + elapsed * f64::from(rate)).min(burst)
        };
        if self.buckets.len() >= MAX_BUCKETS {
            self.buckets.retain(|_, b| refill(b) < burst);
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        bucket.tokens = refill(bucket);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The limits a new session is checked against (from the settings).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub total: usize,
    pub per_client: usize,
    pub rate_per_client: u32,
}

#[derive(Debug)]
struct Table {
    next_session: SessionId,
    sessions: BTreeMap<SessionId, SessionEntry>,
    /// Open sessions per client address, kept so that admission never scans.
    per_client: HashMap<IpAddr, usize>,
    expectations: BTreeMap<(SessionId, ExpectationId), ExpectationEntry>,
    ports: PortPool,
    accepts: AcceptRate,
}

/// The shared tracker.
#[derive(Debug)]
pub struct Tracker {
    table: Mutex<Table>,
}

/// One session and its expectations, copied out of the table.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: SessionId,
    pub entry: SessionEntry,
    pub expectations: Vec<(ExpectationId, ExpectationEntry)>,
}

/// A copy of the table at one moment, for `/sessions`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sessions: Vec<SessionView>,
}

impl Tracker {
    pub fn new(data_ports: PortRange) -> Self {
        Tracker {
            table: Mutex::new(Table {
                next_session: 0,
                sessions: BTreeMap::new(),
                per_client: HashMap::new(),
                expectations: BTreeMap::new(),
                ports: PortPool::new(data_ports),
                accepts: AcceptRate::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves plain data that is still
        // consistent enough to serve; never turn it into a second panic.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new session unless a limit is reached: `limits.total` sessions in all,
    /// `limits.per_client` from the entry's client address, or more than
    /// `limits.rate_per_client` new ones a second from it.
    pub fn open_session(
        &self,
        entry: SessionEntry,
        limits: SessionLimits,
    ) -> Result<SessionId, SessionLimit> {
        let mut t = self.lock();
        let client = entry.client.ip();
        // The rate counts every attempt, admitted or not, so a flood stays refused.
        if !t
            .accepts
            .admit(client, entry.started, limits.rate_per_client)
        {
            return Err(SessionLimit::AcceptRate);
        }
        if t.sessions.len() >= limits.total {
            return Err(SessionLimit::Total);
        }
        let max_per_client = limits.per_client;
        let from_client = t.per_client.entry(client).or_insert(0);
        if *from_client >= max_per_client {
            return Err(SessionLimit::PerClient);
        }
        *from_client += 1;
        t.next_session += 1;
        let id = t.next_session;
        t.sessions.insert(id, entry);
        Ok(id)
    }

    pub fn update_session(&self, id: SessionId, update: impl FnOnce(&mut SessionEntry)) {
        if let Some(entry) = self.lock().sessions.get_mut(&id) {
            update(entry);
        }
    }

    /// Removes a session. Its expectations stay until their tasks close them (a data
    /// connection may outlive its session by a moment), so each entry lives exactly as
    /// long as the task that owns it.
    pub fn close_session(&self, id: SessionId) {
        let mut t = self.lock();
        let Some(entry) = t.sessions.remove(&id) else {
            return;
        };
        let client = entry.client.ip();
        if let Some(n) = t.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&client);
            }
        }
    }

    /// Reserves a data port with `bind` and records the expectation on it.
    pub fn open_expectation<T>(
        &self,
        key: (SessionId, ExpectationId),
        bind: impl FnMut(u16) -> Option<T>,
        entry: impl FnOnce(u16) -> ExpectationEntry,
    ) -> Option<T> {
        let mut t = self.lock();
        let (port, bound) = t.ports.allocate(&mut rand::rng(), bind)?;
        t.expectations.insert(key, entry(port));
        Some(bound)
    }

    pub fn update_expectation(
        &self,
        key: (SessionId, ExpectationId),
        update: impl FnOnce(&mut ExpectationEntry),
    ) {
        if let Some(entry) = self.lock().expectations.get_mut(&key) {
            update(entry);
        }
    }

    pub fn session(&self, id: SessionId) -> Option<SessionEntry> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Whether a connection from `peer` for `dst` may use the expectation `key`: the
    /// matcher, applied under the lock without copying the entry.
    pub fn admits(
        &self,
        key: (SessionId, ExpectationId),
        peer: IpAddr,
        dst: Option<SocketAddr>,
    ) -> Result<(), Mismatch> {
        match self.lock().expectations.get(&key) {
            Some(e) => e.admits(peer, dst),
            None => Err(Mismatch::Peer),
        }
    }

    pub fn expectation(&self, key: (SessionId, ExpectationId)) -> Option<ExpectationEntry> {
        self.lock().expectations.get(&key).cloned()
    }

    /// Applies a reloaded data-port range; ports in use stay reserved until released.
    pub fn set_data_ports(&self, range: PortRange) {
        self.lock().ports.range = range;
    }

    /// Records an expectation that listens on no port (the proxy dials both legs).
    pub fn insert_expectation(&self, key: (SessionId, ExpectationId), entry: ExpectationEntry) {
        self.lock().expectations.insert(key, entry);
    }

    /// Reserves a second data port for expectation `key` with `bind`; it is freed
    /// with the expectation.
    pub fn reserve_server_port<T>(
        &self,
        key: (SessionId, ExpectationId),
        bind: impl FnMut(u16) -> Option<T>,
    ) -> Option<(u16, T)> {
        let mut t = self.lock();
        let Table {
            ports,
            expectations,
            ..
        } = &mut *t;
        let entry = expectations.get_mut(&key)?;
        let (port, bound) = ports.allocate(&mut rand::rng(), bind)?;
        entry.server_port = Some(port);
        Some((port, bound))
    }

    /// Reserves a free data port for expectation `key` and records it, without
    /// binding anything: what uses the port (an nftables hole) is set up after the
    /// lock is released. [`Tracker::close_expectation`] undoes it.
    pub fn reserve_port(
        &self,
        key: (SessionId, ExpectationId),
        entry: impl FnOnce(u16) -> ExpectationEntry,
    ) -> Option<u16> {
        let mut t = self.lock();
        let (port, ()) = t.ports.allocate(&mut rand::rng(), |_| Some(()))?;
        t.expectations.insert(key, entry(port));
        Some(port)
    }

    /// Forgets an expectation and frees its ports.
    pub fn close_expectation(&self, key: (SessionId, ExpectationId)) {
        let mut t = self.lock();
        if let Some(e) = t.expectations.remove(&key) {
            if e.proxy.port() != 0 {
                t.ports.release(e.proxy.port());
            }
            if let Some(port) = e.server_port {
                t.ports.release(port);
            }
        }
    }

    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn expectations(&self) -> usize {
        self.lock().expectations.len()
    }

    /// Whether `port` is one of the data ports ftpgate has bound now.
    pub fn data_port_in_use(&self, port: u16) -> bool {
        self.lock().ports.in_use.contains(&port)
    }

    pub fn ports_in_use(&self) -> usize {
        self.lock().ports.in_use()
    }

    pub fn snapshot(&self) -> Snapshot {
        let t = self.lock();
        let sessions = t
            .sessions
            .iter()
            .map(|(id, s)| {
                let exps = t
                    .expectations
                    .range((*id, ExpectationId(0))..=(*id, ExpectationId(u64::MAX)))
                    .map(|((_, e), entry)| (*e, entry.clone()))
                    .collect();
                SessionView {
                    id: *id,
                    entry: s.clone(),
                    expectations: exps,
                }
            })
            .collect();
        Snapshot { sessions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn range(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    fn limits(total: usize, per_client: usize) -> SessionLimits {
        SessionLimits {
            total,
            per_client,
            rate_per_client: 1000,
        }
    }

    #[test]
    fn accept_rate_allows_bursts_then_the_rate_and_forgets_idle_addresses() {
        let mut r = AcceptRate::default();
        let start = Instant::now();
        let ip: IpAddr = "198.51.100.2".parse().unwrap();
        let admitted = (0..30).filter(|_| r.admit(ip, start, 10)).count();
        assert_eq!(admitted, 20, "a burst of twice the rate");
        assert!(
            r.admit("198.51.100.3".parse().unwrap(), start, 10),
            "others are not affected"
        );
        let later = start + std::time::Duration::from_millis(500);
        let admitted = (0..30).filter(|_| r.admit(ip, later, 10)).count();
        assert_eq!(admitted, 5, "half a second refills five");
        let mut r = AcceptRate::default();
        for i in 0..MAX_BUCKETS as u32 {
            r.admit(IpAddr::from(i.to_be_bytes()), start, 10);
        }
        let much_later = start + std::time::Duration::from_secs(10);
        r.admit(ip, much_later, 10);
        assert_eq!(r.tracked(), 1, "refilled buckets are forgotten");
    }

    #[test]
    fn ports_come_from_the_range_and_are_not_handed_out_twice() {
        let mut pool = PortPool::new(range(40000, 40009));
        let mut rng = StdRng::seed_from_u64(7);
        let mut got = HashSet::new();
        for _ in 0..10 {
            let (port, ()) = pool.allocate(&mut rng, |_| Some(())).unwrap();
            assert!((40000..=40009).contains(&port));
            assert!(got.insert(port), "port {port} handed out twice");
        }
        assert!(
            pool.allocate(&mut rng, |_| Some(())).is_none(),
            "range exhausted"
        );
        pool.release(40003);
        assert_eq!(pool.allocate(&mut rng, |_| Some(())).unwrap().0, 40003);
    }

    #[test]
    fn ports_that_fail_to_bind_are_skipped() {
        let mut pool = PortPool::new(range(40000, 40009));
        let mut rng = StdRng::seed_from_u64(1);
        let (port, ()) = pool
            .allocate(&mut rng, |p| (p == 40005).then_some(()))
            .unwrap();
        assert_eq!(port, 40005);
    }

    #[test]
    fn ports_are_not_sequential() {
        let mut pool = PortPool::new(range(40000, 49999));
        let mut rng = StdRng::seed_from_u64(3);
        let ports: Vec<u16> = (0..20)
            .map(|_| pool.allocate(&mut rng, |_| Some(())).unwrap().0)
            .collect();
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 3, "{ports:?}");
    }

    #[test]
    fn expectations_outlive_their_session_until_closed_and_free_their_ports() {
        let t = Tracker::new(range(40000, 40001));
        let now = Instant::now();
        let sid = t
            .open_session(
                SessionEntry::new(
                    "127.0.0.1:2121".parse().unwrap(),
                    "127.0.0.1:5000".parse().unwrap(),
                    now,
                ),
                limits(10, 10),
            )
            .unwrap();
        let entry = |port| ExpectationEntry {
            mode: DataMode::Passive,
            proxy: SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            dst: SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            expected_peer: "127.0.0.1".parse().unwrap(),
            onward: "127.0.0.1:2000".parse().unwrap(),
            deadline: now,
            state: ExpectationState::Waiting,
            transfer: None,
            transferred: Arc::default(),
            server_port: None,
        };
        assert!(
            t.open_expectation((sid, ExpectationId(1)), |_| Some(()), entry)
                .is_some()
        );
        assert!(
            t.open_expectation((sid, ExpectationId(2)), |_| Some(()), entry)
                .is_some()
        );
        assert_eq!(t.ports_in_use(), 2);
        t.close_session(sid);
        assert_eq!(
            (t.sessions(), t.expectations(), t.ports_in_use()),
            (0, 2, 2)
        );
        let kept = t.expectation((sid, ExpectationId(1))).unwrap();
        assert_eq!(kept.transferred.by_direction(DataMode::Passive), (0, 0));
        t.close_expectation((sid, ExpectationId(1)));
        t.close_expectation((sid, ExpectationId(2)));
        assert_eq!((t.expectations(), t.ports_in_use()), (0, 0));
    }

    #[test]
    fn session_limits_apply_in_all_and_per_client_and_free_up_on_close() {
        let t = Tracker::new(range(40000, 40001));
        let now = Instant::now();
        let from =
            |c: &str| SessionEntry::new("127.0.0.1:2121".parse().unwrap(), c.parse().unwrap(), now);
        let a1 = t
            .open_session(from("198.51.100.2:1"), limits(3, 2))
            .unwrap();
        t.open_session(from("198.51.100.2:2"), limits(3, 2))
            .unwrap();
        assert_eq!(
            t.open_session(from("198.51.100.2:3"), limits(3, 2)),
            Err(SessionLimit::PerClient)
        );
        t.open_session(from("198.51.100.3:1"), limits(3, 2))
            .unwrap();
        assert_eq!(
            t.open_session(from("198.51.100.4:1"), limits(3, 2)),
            Err(SessionLimit::Total)
        );
        t.close_session(a1);
        assert!(t.open_session(from("198.51.100.2:4"), limits(3, 2)).is_ok());
        t.close_session(a1);
        assert_eq!(t.sessions(), 3, "closing twice changes nothing");
    }

    #[test]
    fn directions_follow_the_mode() {
        let t = Transferred::default();
        t.forward.store(10, Ordering::Relaxed);
        t.backward.store(3, Ordering::Relaxed);
        assert_eq!(t.by_direction(DataMode::Passive), (3, 10));
        assert_eq!(t.by_direction(DataMode::Active), (10, 3));
    }

    #[test]
    fn only_the_expected_peer_is_admitted() {
        let e = ExpectationEntry {
            mode: DataMode::Active,
            proxy: "127.0.0.1:40000".parse().unwrap(),
            dst: "127.0.0.1:40000".parse().unwrap(),
            expected_peer: "203.0.113.2".parse().unwrap(),
            onward: "198.51.100.2:2000".parse().unwrap(),
            deadline: Instant::now(),
            state: ExpectationState::Waiting,
            transfer: None,
            transferred: Arc::default(),
            server_port: None,
        };
        let dst = Some("127.0.0.1:40000".parse().unwrap());
        assert_eq!(e.admits("203.0.113.2".parse().unwrap(), dst), Ok(()));
        assert_eq!(e.admits("::ffff:203.0.113.2".parse().unwrap(), dst), Ok(()));
        assert_eq!(
            e.admits("203.0.113.66".parse().unwrap(), dst),
            Err(Mismatch::Peer)
        );
        let elsewhere = Some("192.0.2.9:40000".parse().unwrap());
        assert_eq!(
            e.admits("203.0.113.2".parse().unwrap(), elsewhere),
            Err(Mismatch::Destination)
        );
        assert_eq!(
            e.admits("203.0.113.2".parse().unwrap(), None),
            Err(Mismatch::Destination)
        );
    }
}
