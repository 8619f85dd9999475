//! Prometheus metrics: one registry, every family ftpgate exports, created once at
//! start-up. Label values come from closed sets (verbs, reasons, modes), never from
//! addresses, user names or file names, so cardinality stays bounded.

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::codec::Malformed;
use crate::session::{DataMode, DataOutcome, Refusal};
use crate::track::Mismatch;
use crate::vocab::UpstreamFailure;

/// Every `limit` label value.
pub const LIMITS: [&str; 8] = [
    "max-line",
    "accept-rate",
    "data-connections",
    "held-output",
    "server-reply",
    "data-ports",
    "sessions",
    "sessions-per-client",
];

/// The `reason`s of `parse_errors_total{side="client"}` besides [`Malformed`]'s.
const CLIENT_PARSE_ERRORS: [&str; 2] = ["syntax", "line-too-long"];

/// Every `reason` of `parse_errors_total{side="server"}`.
const SERVER_PARSE_ERRORS: [&str; 1] = ["reply"];

/// Every metric family.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGauge,
    pub sessions_limit: IntGauge,
    pub sessions_total: IntCounterVec,
    pub commands_total: IntCounterVec,
    pub commands_refused_total: IntCounterVec,
    pub expectations_active: IntGauge,
    pub expectations_total: IntCounterVec,
    pub expectations_refused_total: IntCounterVec,
    pub data_connections_total: IntCounterVec,
    pub data_bytes_total: IntCounterVec,
    pub data_setup_seconds: Histogram,
    pub kernel_data_connections_total: IntCounterVec,
    pub kernel_hole_errors_total: IntCounterVec,
    pub admin_refusals_total: IntCounterVec,
    pub parse_errors_total: IntCounterVec,
    pub unknown_commands_total: IntCounterVec,
    pub rule_decisions_total: IntCounterVec,
    pub limits_hit_total: IntCounterVec,
    pub upstream_failures_total: IntCounterVec,
    pub upstream_retries_total: IntCounterVec,
    pub reloads_total: IntCounterVec,
    pub tls_handshakes_total: IntCounterVec,
    pub tls_passthrough_total: IntCounterVec,
    pub active_address_substituted_total: IntCounterVec,
    pub proxy_headers_total: IntCounterVec,
    pub backend_up: IntGaugeVec,
    pub backend_sessions: IntGaugeVec,
    pub backend_sessions_total: IntCounterVec,
    pub backend_connect_failures_total: IntCounterVec,
    pub reload_last_success: IntGauge,
    pub reload_last_success_timestamp_seconds: Gauge,
}

/// Registers `c`; the names below are fixed and unique, so failure is a bug here.
fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    if let Err(e) = registry.register(Box::new(c.clone())) {
        unreachable!("metric registration: {e}");
    }
    c
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("ftpgate")
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(opts(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, c)
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(opts(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, g)
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(opts(name, help))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, g)
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let setup = Histogram::with_opts(
            HistogramOpts::new(
                "data_setup_seconds",
                "Time from accepting a data connection to the onward leg being connected.",
            )
            .namespace("ftpgate")
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("histogram: {e}"));
        let build = IntGaugeVec::new(
            opts("build_info", "The running ftpgate version."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("build_info: {e}"));
        register(&r, build.clone())
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let timestamp = Gauge::with_opts(opts(
            "reload_last_success_timestamp_seconds",
            "When the rule file was last loaded successfully (start or reload), Unix time.",
        ))
        .unwrap_or_else(|e| unreachable!("timestamp: {e}"));
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            unreachable!("process metrics: {e}");
        }
        Metrics {
            sessions_active: gauge(&r, "sessions_active", "Control sessions open now."),
            sessions_limit: gauge(&r, "sessions_limit", "The max-sessions setting in force."),
            sessions_total: counter(
                &r,
                "sessions_total",
                "Control sessions ended, by outcome.",
                &["outcome"],
            ),
            commands_total: counter(
                &r,
                "commands_total",
                "Client commands seen, by verb.",
                &["verb"],
            ),
            commands_refused_total: counter(
                &r,
                "commands_refused_total",
                "Client commands answered locally with an error, by reason.",
                &["reason"],
            ),
            expectations_active: gauge(
                &r,
                "expectations_active",
                "Announced data connections waiting or relaying now.",
            ),
            expectations_total: counter(
                &r,
                "expectations_total",
                "Expectations ended, by outcome.",
                &["outcome"],
            ),
            expectations_refused_total: counter(
                &r,
                "expectations_refused_total",
                "Data connections refused, by reason.",
                &["reason"],
            ),
            data_connections_total: counter(
                &r,
                "data_connections_total",
                "Data connections relayed, by mode and outcome.",
                &["mode", "outcome"],
            ),
            data_bytes_total: counter(
                &r,
                "data_bytes_total",
                "Data bytes relayed, by mode and direction.",
                &["mode", "direction"],
            ),
            data_setup_seconds: register(&r, setup),
            kernel_data_connections_total: counter(
                &r,
                "kernel_data_connections_total",
                "Data connections the kernel forwarded through an nftables hole \
                 (data-path kernel), by mode; their bytes are not in data_bytes_total.",
                &["mode"],
            ),
            kernel_hole_errors_total: counter(
                &r,
                "kernel_hole_errors_total",
                "nftables elements that could not be written or deleted, by operation \
                 (install/remove: kernel-path holes; announce/withdraw: relayed data \
                 connections of transparent listeners; passthrough: the passive ports of \
                 a session whose TLS is passed through).",
                &["op"],
            ),
            admin_refusals_total: counter(
                &r,
                "admin_refusals_total",
                "Admin endpoint requests refused, by reason (not-allowed: outside the \
                 `allow` list; token: /sessions without the bearer token).",
                &["reason"],
            ),
            parse_errors_total: counter(
                &r,
                "parse_errors_total",
                "Control lines that did not parse or that servers would read \
                 differently, by side and reason.",
                &["side", "reason"],
            ),
            unknown_commands_total: counter(
                &r,
                "unknown_commands_total",
                "Commands with a verb ftpgate does not know, by verb class (letters, \
                 symbols) and action (set unknown-commands).",
                &["class", "action"],
            ),
            rule_decisions_total: counter(
                &r,
                "rule_decisions_total",
                "Session rule decisions, by verdict and rule.",
                &["verdict", "rule"],
            ),
            limits_hit_total: counter(
                &r,
                "limits_hit_total",
                "Times a limit was reached, by limit.",
                &["limit"],
            ),
            upstream_failures_total: counter(
                &r,
                "upstream_failures_total",
                "Sessions the server leg failed, by reason (resolve, connect, \
                 greeting-timeout, reply-timeout).",
                &["reason"],
            ),
            upstream_retries_total: counter(
                &r,
                "upstream_retries_total",
                "Fresh server connections made for a session, by the reason the last \
                 one failed.",
                &["reason"],
            ),
            reloads_total: counter(
                &r,
                "reloads_total",
                "Rule file reloads, by result.",
                &["result"],
            ),
            tls_handshakes_total: counter(
                &r,
                "tls_handshakes_total",
                "TLS handshakes ftpgate made, by leg (client: the FTPS client's control \
                 connection; client-data: its protected data connections; server and \
                 server-data: the same toward the FTP server, under tls server) and \
                 outcome (ok, failed).",
                &["leg", "outcome"],
            ),
            backend_up: gauges(
                &r,
                "backend_up",
                "1 while a pool's server is up (its health checks and connects pass), 0 \
                 while it is out.",
                &["pool", "backend"],
            ),
            backend_sessions: gauges(
                &r,
                "backend_sessions",
                "Sessions on a pool's server now.",
                &["pool", "backend"],
            ),
            backend_sessions_total: counter(
                &r,
                "backend_sessions_total",
                "Sessions a pool sent to each of its servers.",
                &["pool", "backend"],
            ),
            backend_connect_failures_total: counter(
                &r,
                "backend_connect_failures_total",
                "Sessions that could not connect to the pool's server they were sent to \
                 (each counts toward taking the server out, as a failed check does).",
                &["pool", "backend"],
            ),
            proxy_headers_total: counter(
                &r,
                "proxy_headers_total",
                "PROXY protocol headers read on listeners with accept-proxy, by leg \
                 (control, data) and outcome: ok, local (the balancer's own check), \
                 untrusted (a source outside the list; closed), missing or malformed \
                 (closed). A data connection whose header names another client than the \
                 session's counts as ok here and in expectations_refused_total.",
                &["leg", "outcome"],
            ),
            active_address_substituted_total: counter(
                &r,
                "active_address_substituted_total",
                "PORT/EPRT commands whose address was not the client's, replaced by the \
                 client's own under set active-address substitute, by the class of the \
                 address replaced (private: RFC 1918, CGNAT, link-local, ULA; other).",
                &["class"],
            ),
            tls_passthrough_total: counter(
                &r,
                "tls_passthrough_total",
                "Sessions whose TLS ftpgate passed through (tls passthrough), by outcome: \
                 opened (the control connection relayed blind, the server's passive ports \
                 open to that client), failed (the ports could not be opened; the \
                 session ended).",
                &["outcome"],
            ),
            reload_last_success: gauge(
                &r,
                "reload_last_success",
                "1 if the last reload succeeded, 0 if it was rejected.",
            ),
            reload_last_success_timestamp_seconds: register(&r, timestamp),
            registry: r,
        }
        .with_zeroes()
    }

    /// Creates every series of a closed label set at zero, so that each family is
    /// exported from the start and `rate()` and alerts see a series before the first
    /// event.
    fn with_zeroes(self) -> Self {
        let malformed = Malformed::ALL.map(Refusal::Malformed);
        for why in Refusal::ALL.iter().chain(&malformed) {
            self.refusals_of(*why).with_label_values(&[why.as_str()]);
        }
        for outcome in ["opened", "failed"] {
            self.tls_passthrough_total.with_label_values(&[outcome]);
        }
        for leg in ["control", "data"] {
            for outcome in ["ok", "local", "untrusted", "missing", "malformed"] {
                self.proxy_headers_total.with_label_values(&[leg, outcome]);
            }
        }
        for class in crate::vocab::AddressClass::ALL {
            self.active_address_substituted_total
                .with_label_values(&[class.as_str()]);
        }
        for leg in ["client", "client-data", "server", "server-data"] {
            for outcome in ["ok", "failed"] {
                self.tls_handshakes_total.with_label_values(&[leg, outcome]);
            }
        }
        for mismatch in [Mismatch::Peer, Mismatch::Destination] {
            self.expectations_refused_total
                .with_label_values(&[mismatch.as_str()]);
        }
        self.expectations_refused_total
            .with_label_values(&["tls-session"]);
        for outcome in DataOutcome::ALL {
            self.expectations_total
                .with_label_values(&[outcome.as_str()]);
        }
        for reason in ["not-allowed", "token"] {
            self.admin_refusals_total.with_label_values(&[reason]);
        }
        for op in ["install", "remove", "announce", "withdraw", "passthrough"] {
            self.kernel_hole_errors_total.with_label_values(&[op]);
        }
        for mode in DataMode::ALL {
            self.kernel_data_connections_total
                .with_label_values(&[mode.as_str()]);
            for direction in ["download", "upload"] {
                self.data_bytes_total
                    .with_label_values(&[mode.as_str(), direction]);
            }
            for outcome in DataOutcome::ALL {
                if outcome != DataOutcome::Expired {
                    self.data_connections_total
                        .with_label_values(&[mode.as_str(), outcome.as_str()]);
                }
            }
        }
        let malformed = Malformed::ALL.map(Malformed::as_str);
        for reason in CLIENT_PARSE_ERRORS.iter().chain(&malformed) {
            self.parse_errors_total
                .with_label_values(&["client", reason]);
        }
        for reason in SERVER_PARSE_ERRORS {
            self.parse_errors_total
                .with_label_values(&["server", reason]);
        }
        for class in ["letters", "symbols"] {
            for action in ["pass", "block"] {
                self.unknown_commands_total
                    .with_label_values(&[class, action]);
            }
        }
        for limit in LIMITS {
            self.limits_hit_total.with_label_values(&[limit]);
        }
        for why in UpstreamFailure::ALL {
            self.upstream_failures_total
                .with_label_values(&[why.as_str()]);
        }
        self.upstream_retries_total
            .with_label_values(&[UpstreamFailure::GreetingTimeout.as_str()]);
        for result in ["success", "failure"] {
            self.reloads_total.with_label_values(&[result]);
        }
        self
    }

    /// Creates the `sessions_total` series for each outcome at zero.
    pub fn session_outcomes(&self, outcomes: &[&str]) {
        for outcome in outcomes {
            self.sessions_total.with_label_values(&[outcome]);
        }
    }

    /// A netlink failure of the kernel data path (`op`: install or remove).
    pub fn admin_refusal(&self, reason: &'static str) {
        self.admin_refusals_total.with_label_values(&[reason]).inc();
    }

    /// A TLS handshake on `leg` (`client`, `client-data`, `server`, `server-data`)
    /// ended: `ok` or `failed`.
    pub fn tls_handshake(&self, leg: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.tls_handshakes_total
            .with_label_values(&[leg, outcome])
            .inc();
    }

    /// A session passed through: its ports `opened`, or not.
    pub fn tls_passthrough(&self, opened: bool) {
        let outcome = if opened { "opened" } else { "failed" };
        self.tls_passthrough_total
            .with_label_values(&[outcome])
            .inc();
    }

    /// A PROXY header on `leg` was read (`ok`, `local`) or not.
    pub fn proxy_header(&self, leg: &'static str, outcome: &'static str) {
        self.proxy_headers_total
            .with_label_values(&[leg, outcome])
            .inc();
    }

    pub fn kernel_hole_error(&self, op: &'static str) {
        self.kernel_hole_errors_total.with_label_values(&[op]).inc();
    }

    pub fn command(&self, verb: &str) {
        let label = if crate::codec::is_known_verb(verb) {
            verb
        } else {
            "other"
        };
        self.commands_total.with_label_values(&[label]).inc();
    }

    /// The family a refusal is counted in: a data connection refused, or a command
    /// answered locally. One match, so the zero series and the counted one agree.
    fn refusals_of(&self, why: Refusal) -> &IntCounterVec {
        match why {
            Refusal::Bounce
            | Refusal::PrivilegedPort
            | Refusal::BadPassiveReply
            | Refusal::NoDataPort
            | Refusal::DataLimit
            | Refusal::SpoofedReply
            | Refusal::OwnSocket => &self.expectations_refused_total,
            Refusal::Syntax
            | Refusal::LineTooLong
            | Refusal::Malformed(_)
            | Refusal::UnknownCommand
            | Refusal::NotImplemented
            | Refusal::EpsvAll
            | Refusal::Family
            | Refusal::Auth
            | Refusal::Tls
            | Refusal::Policy => &self.commands_refused_total,
        }
    }

    pub fn refusal(&self, why: Refusal) {
        self.refusals_of(why)
            .with_label_values(&[why.as_str()])
            .inc();
        match why {
            Refusal::NoDataPort => self.limit("data-ports"),
            Refusal::DataLimit => self.limit("data-connections"),
            Refusal::Syntax => self.parse_error("client", "syntax"),
            Refusal::LineTooLong => {
                self.parse_error("client", "line-too-long");
                self.limit("max-line");
            }
            Refusal::Malformed(m) => self.parse_error("client", m.as_str()),
            _ => {}
        }
    }

    /// A line that did not parse (`side`: client or server).
    pub fn parse_error(&self, side: &str, reason: &str) {
        self.parse_errors_total
            .with_label_values(&[side, reason])
            .inc();
    }

    /// A command whose verb ftpgate does not know, passed or blocked.
    pub fn unknown_command(&self, class: &str, passed: bool) {
        let action = if passed { "pass" } else { "block" };
        self.unknown_commands_total
            .with_label_values(&[class, action])
            .inc();
    }

    pub fn limit(&self, which: &'static str) {
        self.limits_hit_total.with_label_values(&[which]).inc();
    }

    pub fn upstream_failure(&self, why: UpstreamFailure) {
        self.upstream_failures_total
            .with_label_values(&[why.as_str()])
            .inc();
    }

    pub fn upstream_retry(&self, why: UpstreamFailure) {
        self.upstream_retries_total
            .with_label_values(&[why.as_str()])
            .inc();
    }

    /// The rule file is in force: at start and after each successful reload.
    pub fn rules_loaded(&self) {
        self.reload_last_success.set(1);
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        self.reload_last_success_timestamp_seconds.set(now);
    }

    /// Records a reload (SIGHUP) and whether its rule file was accepted.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads_total.with_label_values(&[result]).inc();
        if ok {
            self.rules_loaded();
        } else {
            self.reload_last_success.set(0);
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn every_refusal_is_counted_in_the_series_created_for_it_at_zero() {
        let malformed = Malformed::ALL.map(Refusal::Malformed);
        for why in Refusal::ALL.iter().chain(&malformed) {
            let m = Metrics::new();
            let family = m.refusals_of(*why).desc()[0].fq_name.clone();
            let series = format!("{family}{{reason=\"{}\"}} ", why.as_str());
            assert_eq!(sample(&m.render(), &series), Some(0.0), "{why:?} at start");
            m.refusal(*why);
            assert_eq!(sample(&m.render(), &series), Some(1.0), "{why:?}");
        }
    }
}
