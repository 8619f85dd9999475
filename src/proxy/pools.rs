//! Server pools (`pool NAME { … }`, `listen reverse ADDR pool NAME`): which servers are
//! up, by active health checks (a connect and a `220` greeting, every `interval`, with
//! `fall` and `rise`) and by the connects of sessions (passive ejection), and which one
//! a new session goes to, by the pool's balance. A server taken out of the pool by a
//! reload gets no new session and keeps the ones it has (drain).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::Shared;
use crate::net;
use crate::rules::{Balance, Check, Pool, Upstream};

/// One server of one pool, as its checks and sessions have found it.
#[derive(Debug)]
struct Backend {
    up: bool,
    /// Failures (or passes) in a row, toward `fall` (or `rise`).
    failures: u32,
    passes: u32,
    sessions: usize,
    checked: Option<Instant>,
    checking: bool,
}

impl Default for Backend {
    // A server is up until its checks or connects say otherwise.
    fn default() -> Self {
        Backend {
            up: true,
            failures: 0,
            passes: 0,
            sessions: 0,
            checked: None,
            checking: false,
        }
    }
}

/// The state of every pool's servers, by pool name and server (`HOST:PORT`).
#[derive(Debug, Default)]
pub struct Pools {
    backends: Mutex<HashMap<(String, String), Backend>>,
    /// The next turn of each round-robin pool.
    turns: Mutex<HashMap<String, usize>>,
}

/// A session's server: which pool and which of its servers, released when the
/// session ends.
#[derive(Debug, Clone)]
pub struct Picked {
    pub pool: String,
    pub backend: Upstream,
}

impl Picked {
    pub fn label(&self) -> String {
        self.backend.to_string()
    }
}

impl Pools {
    /// A server of `pool` for a session of `client` (logging in as `user`, when the
    /// pool routes by user), counted as one of its sessions; `None` when none is up.
    pub fn pick(
        &self,
        shared: &Shared,
        pool: &Pool,
        client: IpAddr,
        user: Option<&str>,
    ) -> Option<Picked> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let up: Vec<(usize, &Upstream)> = pool
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                backends
                    .get(&(pool.name.clone(), b.to_string()))
                    .is_none_or(|s| s.up)
            })
            .collect();
        let chosen = match pool.balance {
            Balance::RoundRobin => {
                let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
                let turn = turns.entry(pool.name.clone()).or_insert(0);
                let chosen = up.get(*turn % up.len().max(1)).copied();
                *turn = turn.wrapping_add(1);
                chosen
            }
            Balance::LeastSessions => up.iter().copied().min_by_key(|(_, b)| {
                backends
                    .get(&(pool.name.clone(), b.to_string()))
                    .map_or(0, |s| s.sessions)
            }),
            Balance::StickyClient => up
                .iter()
                .copied()
                .max_by_key(|(_, b)| rendezvous(&client, &b.to_string())),
            Balance::StickyUser => up.iter().copied().max_by_key(|(_, b)| match user {
                Some(user) => rendezvous(&user, &b.to_string()),
                None => rendezvous(&client, &b.to_string()),
            }),
        };
        let (_, backend) = chosen?;
        let label = backend.to_string();
        let state = backends
            .entry((pool.name.clone(), label.clone()))
            .or_default();
        state.sessions += 1;
        let m = &shared.metrics;
        m.backend_sessions
            .with_label_values(&[&pool.name, &label])
            .set(state.sessions as i64);
        m.backend_sessions_total
            .with_label_values(&[&pool.name, &label])
            .inc();
        Some(Picked {
            pool: pool.name.clone(),
            backend: backend.clone(),
        })
    }

    /// The session on `picked` ended.
    pub fn release(&self, shared: &Shared, picked: &Picked) {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let label = picked.label();
        if let Some(state) = backends.get_mut(&(picked.pool.clone(), label.clone())) {
            state.sessions = state.sessions.saturating_sub(1);
            shared
                .metrics
                .backend_sessions
                .with_label_values(&[&picked.pool, &label])
                .set(state.sessions as i64);
        }
    }

    /// A session could not connect to `picked`: counted, and a failure toward `fall`
    /// as a failed check is (passive ejection).
    pub fn connect_failed(&self, shared: &Shared, picked: &Picked) {
        shared
            .metrics
            .backend_connect_failures_total
            .with_label_values(&[&picked.pool, &picked.label()])
            .inc();
        let config = shared.config.load();
        let fall = config
            .pool(&picked.pool)
            .and_then(|p| p.check)
            .map_or(1, |c| c.fall);
        self.record(shared, &picked.pool, &picked.label(), false, fall, u32::MAX);
    }

    /// One check's (or connect's) result, and the state it moves the server to.
    fn record(&self, shared: &Shared, pool: &str, backend: &str, ok: bool, fall: u32, rise: u32) {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let state = backends
            .entry((pool.to_string(), backend.to_string()))
            .or_default();
        if ok {
            state.failures = 0;
            state.passes = state.passes.saturating_add(1);
        } else {
            state.passes = 0;
            state.failures = state.failures.saturating_add(1);
        }
        let was = state.up;
        if state.up && state.failures >= fall {
            state.up = false;
        } else if !state.up && state.passes >= rise {
            state.up = true;
        }
        if was != state.up {
            if state.up {
                tracing::info!(pool, backend, "server up");
            } else {
                tracing::warn!(pool, backend, "server down: no new sessions go to it");
            }
        }
        shared
            .metrics
            .backend_up
            .with_label_values(&[pool, backend])
            .set(i64::from(state.up));
    }

    /// The checks due now, marked as running.
    fn due(&self, pools: &[Pool], now: Instant) -> Vec<(String, Upstream, Check)> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        for pool in pools {
            let Some(check) = pool.check else { continue };
            for backend in &pool.backends {
                let state = backends
                    .entry((pool.name.clone(), backend.to_string()))
                    .or_default();
                let ready = state
                    .checked
                    .is_none_or(|at| now.duration_since(at) >= check.interval);
                if ready && !state.checking {
                    state.checking = true;
                    state.checked = Some(now);
                    due.push((pool.name.clone(), backend.clone(), check));
                }
            }
        }
        due
    }

    fn checked(&self, pool: &str, backend: &str) {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = backends.get_mut(&(pool.to_string(), backend.to_string())) {
            state.checking = false;
        }
    }
}

/// The weight of `backend` for `client` (rendezvous hashing): the highest wins, and a
/// server's leaving moves only the clients it had.
fn rendezvous(key: &impl std::hash::Hash, backend: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    backend.hash(&mut h);
    h.finish()
}

/// Runs every pool's health checks until shutdown, with the pools of the rule set in
/// force (a reload's new pools and servers are checked from the next round on).
pub async fn check_pools(shared: Arc<Shared>) {
    loop {
        // Fine enough for the shortest interval a rule file is likely to set; a rule
        // set without checks is looked at again only every second.
        let checks = shared.config.load().pools.iter().any(|p| p.check.is_some());
        let tick = Duration::from_millis(if checks { 100 } else { 1000 });
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let config = shared.config.load_full();
        for (pool, backend, check) in shared.pools.due(&config.pools, Instant::now()) {
            let shared = shared.clone();
            let limit = check.interval.min(config.settings.connect_timeout);
            tokio::spawn(async move {
                let ok = greets(&backend, limit).await;
                let label = backend.to_string();
                shared.pools.checked(&pool, &label);
                shared
                    .pools
                    .record(&shared, &pool, &label, ok, check.fall, check.rise);
            });
        }
    }
}

/// Whether `backend` accepts a connection and greets with `220` within `limit`.
async fn greets(backend: &Upstream, limit: Duration) -> bool {
    let attempt = async {
        let addr = net::resolve(&backend.host, backend.port, limit)
            .await
            .ok()?;
        let mut stream = net::connect(addr, limit).await.ok()?;
        let mut greeting = [0u8; 4];
        stream.read_exact(&mut greeting).await.ok()?;
        Some(greeting.starts_with(b"220"))
    };
    tokio::time::timeout(limit, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
