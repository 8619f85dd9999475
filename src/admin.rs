//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/sessions` (the live
//! tracking table as JSON: client and server addresses, user names, file names),
//! `/healthz` and `/readyz`. Read-only: nothing here changes state. `metrics listen`
//! may restrict it: `allow ADDRS` for the whole endpoint, `sessions off`, or a
//! `token-file` for `/sessions`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::proxy::Shared;
use crate::track::ExpectationState;

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// Liveness: `503 draining` once SIGTERM came; `200 ok`, or `200` naming the last
/// rejected reload (the process serves, with the rules in force before it: failing
/// the check would have a supervisor restart it into the broken file).
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let rejected = shared
        .reload_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match rejected {
        Some(why) => format!("ok, but the last reload was rejected: {why}\n").into_response(),
        None => "ok\n".into_response(),
    }
}

/// Readiness, for load balancers and keepalived: `503` while draining.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    "ready\n".into_response()
}

/// `allow`: peers outside the list get `403` on every path.
async fn allow_list(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !shared.config.load().admin.allows(peer.ip()) {
        shared.metrics.admin_refusal("not-allowed");
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    next.run(request).await
}

/// The session table as JSON; also what `ftpgate sessions` prints.
pub fn sessions_json(shared: &Shared) -> Value {
    let now = Instant::now();
    let secs = |d: std::time::Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    let sessions: Vec<Value> = shared
        .tracker
        .snapshot()
        .sessions
        .into_iter()
        .map(|view| {
            let s = view.entry;
            let mut live = 0;
            let expectations: Vec<Value> = view
                .expectations
                .into_iter()
                .map(|(id, e)| {
                    let (download, upload) = e.transferred.by_direction(e.mode);
                    live += download + upload;
                    json!({
                        "id": id.0,
                        "mode": e.mode.as_str(),
                        "proxy": e.proxy.to_string(),
                        "expected_peer": e.expected_peer.to_string(),
                        "onward": e.onward.to_string(),
                        "state": e.state,
                        "transfer": e.transfer.as_ref().map(|t| json!({
                            "kind": t.kind.as_str(),
                            "path": t.path,
                            "binary": t.transfer_type == crate::vocab::TransferType::Image,
                        })),
                        "download_bytes": download,
                        "upload_bytes": upload,
                        // The deadline applies while waiting for the peer, and to a
                        // kernel hole (closed then if the transfer has not ended it).
                        "expires_in_seconds": (e.state != ExpectationState::Connected)
                            .then(|| secs(e.deadline.saturating_duration_since(now))),
                    })
                })
                .collect();
            json!({
                "id": view.id,
                "listener": s.listener.to_string(),
                "client": s.client.to_string(),
                "server": s.server.map(|a| a.to_string()),
                "user": s.user,
                "state": s.state,
                "age_seconds": secs(now.saturating_duration_since(s.started)),
                "idle_seconds": secs(now.saturating_duration_since(s.last_activity)),
                "data_bytes": s.data_bytes + live,
                "client_tls": s.client_tls,
                "server_tls": s.server_tls,
                "tls_passthrough_ports": s.passthrough.map(|p| p.to_string()),
                "pool": s.pool,
                "expectations": expectations,
            })
        })
        .collect();
    json!({ "sessions": sessions })
}

/// `sessions off` answers `404`; a `token-file` wants `Authorization: Bearer TOKEN`.
async fn sessions(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let config = shared.config.load();
    if !config.admin.sessions {
        return (
            StatusCode::NOT_FOUND,
            "/sessions is off (metrics listen … sessions off)\n",
        )
            .into_response();
    }
    if let Some(token) = &config.admin.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            shared.metrics.admin_refusal("token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    axum::Json(sessions_json(&shared)).into_response()
}

/// Compares without stopping at the first difference, so the time taken tells
/// nothing about how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the admin endpoint on `addr` until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: std::net::TcpListener) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stop = shared.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/sessions", get(sessions))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_layer(middleware::from_fn_with_state(shared.clone(), allow_list))
        .with_state(shared);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

/// Binds the admin endpoint.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    crate::net::listen_std(addr, 128, crate::net::Binding::Plain)
}

/// Renders `/sessions` JSON as the aligned table `ftpgate sessions` prints: one line
/// per session, one indented line per expectation.
pub fn render_table(v: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let seconds = |v: &Value| format!("{}s", v.as_f64().map_or(0, |s| s as u64));
    let header = [
        "ID",
        "CLIENT",
        "SERVER",
        "USER",
        "STATE",
        "AGE",
        "IDLE",
        "BYTES",
        "TLS",
        "SERVER TLS",
    ];
    let empty = Vec::new();
    let sessions = v["sessions"].as_array().unwrap_or(&empty);
    let rows: Vec<[String; 10]> = sessions
        .iter()
        .map(|s| {
            [
                text(&s["id"]),
                text(&s["client"]),
                text(&s["server"]),
                text(&s["user"]),
                text(&s["state"]),
                seconds(&s["age_seconds"]),
                seconds(&s["idle_seconds"]),
                text(&s["data_bytes"]),
                text(&s["client_tls"]),
                text(&s["server_tls"]),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(&header.map(String::from));
    out.push('\n');
    for (row, s) in rows.iter().zip(sessions) {
        out.push_str(&line(row));
        out.push('\n');
        for e in s["expectations"].as_array().unwrap_or(&empty) {
            let transfer = match &e["transfer"] {
                Value::Object(t) => format!(
                    " {} {}",
                    text(t.get("kind").unwrap_or(&Value::Null)),
                    text(t.get("path").unwrap_or(&Value::Null))
                ),
                _ => String::new(),
            };
            let expires = match &e["expires_in_seconds"] {
                Value::Null => String::new(),
                v => format!(" expires {}", seconds(v)),
            };
            out.push_str(&format!(
                "  └ data {} {}{} proxy {} peer {} onward {} {} down {} up {}{}\n",
                text(&e["id"]),
                text(&e["mode"]),
                transfer,
                text(&e["proxy"]),
                text(&e["expected_peer"]),
                text(&e["onward"]),
                text(&e["state"]),
                text(&e["download_bytes"]),
                text(&e["upload_bytes"]),
                expires,
            ));
        }
    }
    out.push_str(&format!("{} sessions\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_sessions_and_lists_their_expectations() {
        let v = json!({"sessions": [
            {"id": 1, "client": "198.51.100.2:50000", "server": "203.0.113.2:21", "user": "anonymous",
             "state": "logged-in", "age_seconds": 12.4, "idle_seconds": 0.2, "data_bytes": 1048576,
             "client_tls": "TLSv1.3 TLS13_AES_256_GCM_SHA384",
             "server_tls": "TLSv1.3 TLS13_AES_128_GCM_SHA256",
             "expectations": [{"id": 2, "mode": "passive", "proxy": "198.51.100.1:40001",
                "expected_peer": "198.51.100.2", "onward": "203.0.113.2:30001", "state": "connected",
                "transfer": {"kind": "download", "path": "pub/one.bin", "binary": true},
                "download_bytes": 524288, "upload_bytes": 0, "expires_in_seconds": null},
               {"id": 3, "mode": "active", "proxy": "203.0.113.1:40002",
                "expected_peer": "203.0.113.2", "onward": "198.51.100.2:50001", "state": "waiting",
                "transfer": null, "download_bytes": 0, "upload_bytes": 0, "expires_in_seconds": 27.4}]},
            {"id": 12, "client": "[2001:db8:1::2]:50001", "server": null, "user": null,
             "state": "connecting", "age_seconds": 0.0, "idle_seconds": 0.0, "data_bytes": 0,
             "expectations": []}
        ]});
        let expected = "\
ID  CLIENT                 SERVER          USER       STATE       AGE  IDLE  BYTES    TLS                               SERVER TLS
1   198.51.100.2:50000     203.0.113.2:21  anonymous  logged-in   12s  0s    1048576  TLSv1.3 TLS13_AES_256_GCM_SHA384  TLSv1.3 TLS13_AES_128_GCM_SHA256
  └ data 2 passive download pub/one.bin proxy 198.51.100.1:40001 peer 198.51.100.2 onward 203.0.113.2:30001 connected down 524288 up 0
  └ data 3 active proxy 203.0.113.1:40002 peer 203.0.113.2 onward 198.51.100.2:50001 waiting down 0 up 0 expires 27s
12  [2001:db8:1::2]:50001  -               -          connecting  0s   0s    0        -                                 -
2 sessions
";
        assert_eq!(render_table(&v), expected);
    }
}
