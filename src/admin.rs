//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/sessions` (the live
//! tracking table as JSON) and `/healthz`. Read-only: nothing here changes state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::proxy::Shared;

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The session table as JSON; also what `ftpgate sessions` prints.
pub fn sessions_json(shared: &Shared) -> Value {
    let now = Instant::now();
    let sessions: Vec<Value> = shared
        .tracker
        .snapshot()
        .sessions
        .into_iter()
        .map(|view| {
            let (id, s, exps) = (view.id, view.entry, view.expectations);
            let expectations: Vec<Value> = exps
                .into_iter()
                .map(|(eid, e)| {
                    json!({
                        "id": eid.0,
                        "mode": e.mode.as_str(),
                        "proxy": e.proxy.to_string(),
                        "expected_peer": e.expected_peer.to_string(),
                        "onward": e.onward.to_string(),
                        "state": e.state,
                        "kind": e.kind.map(|k| k.as_str()),
                        "expires_in_seconds": e.deadline.saturating_duration_since(now).as_secs_f64(),
                    })
                })
                .collect();
            json!({
                "id": id,
                "listener": s.listener.to_string(),
                "client": s.client.to_string(),
                "server": s.server.map(|a| a.to_string()),
                "user": s.user,
                "age_seconds": now.saturating_duration_since(s.started).as_secs_f64(),
                "expectations": expectations,
            })
        })
        .collect();
    json!({ "sessions": sessions })
}

async fn sessions(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(sessions_json(&shared))
}

/// Serves the admin endpoint on `addr` until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let stop = shared.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/sessions", get(sessions))
        .route("/healthz", get(healthz))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds the admin endpoint.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    crate::net::listen(addr, 128)
}
