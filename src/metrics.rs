//! Prometheus metrics: one registry, every family ftpgate exports, created once at
//! start-up. Label values come from closed sets (verbs, reasons, modes), never from
//! addresses, user names or file names, so cardinality stays bounded.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::session::Refusal;

/// Verbs counted by name; any other verb is counted as `other`.
const KNOWN_VERBS: &[&str] = &[
    "ABOR", "ACCT", "ALLO", "APPE", "AUTH", "CDUP", "CWD", "DELE", "EPRT", "EPSV", "FEAT", "HELP",
    "LIST", "LPRT", "LPSV", "MDTM", "MKD", "MLSD", "MLST", "MODE", "NLST", "NOOP", "OPTS", "PASS",
    "PASV", "PBSZ", "PORT", "PROT", "PWD", "QUIT", "REIN", "REST", "RETR", "RMD", "RNFR", "RNTO",
    "SITE", "SIZE", "SMNT", "STAT", "STOR", "STOU", "STRU", "SYST", "TYPE", "USER", "XCUP", "XCWD",
    "XMKD", "XPWD", "XRMD",
];

/// Every metric family.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGauge,
    pub sessions_total: IntCounterVec,
    pub commands_total: IntCounterVec,
    pub commands_refused_total: IntCounterVec,
    pub expectations_active: IntGauge,
    pub expectations_total: IntCounterVec,
    pub expectations_refused_total: IntCounterVec,
    pub data_connections_total: IntCounterVec,
    pub data_bytes_total: IntCounterVec,
    pub data_setup_seconds: Histogram,
    pub parse_errors_total: IntCounterVec,
    pub rule_decisions_total: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
    register(registry, Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(registry, Box::new(g.clone()));
    g
}

fn register(registry: &Registry, c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = registry.register(c) {
        unreachable!("metric names are unique: {e}");
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("ftpgate".into()), None)
            .unwrap_or_else(|e| unreachable!("prefix is valid: {e}"));
        let setup = Histogram::with_opts(
            HistogramOpts::new(
                "data_setup_seconds",
                "Time from accepting a data connection to the onward leg being connected.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("histogram is well-formed: {e}"));
        register(&r, Box::new(setup.clone()));
        Metrics {
            sessions_active: gauge(&r, "sessions_active", "Control sessions open now."),
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
            data_setup_seconds: setup,
            parse_errors_total: counter(
                &r,
                "parse_errors_total",
                "Control lines that did not parse, by side.",
                &["side"],
            ),
            rule_decisions_total: counter(
                &r,
                "rule_decisions_total",
                "Session rule decisions, by verdict and rule.",
                &["verdict", "rule"],
            ),
            registry: r,
        }
    }

    pub fn command(&self, verb: &str) {
        let label = KNOWN_VERBS
            .iter()
            .find(|v| **v == verb)
            .copied()
            .unwrap_or("other");
        self.commands_total.with_label_values(&[label]).inc();
    }

    pub fn refusal(&self, why: Refusal) {
        match why {
            Refusal::Bounce
            | Refusal::PrivilegedPort
            | Refusal::BadPassiveReply
            | Refusal::NoDataPort => {
                self.expectations_refused_total
                    .with_label_values(&[why.as_str()])
                    .inc();
            }
            Refusal::Syntax | Refusal::LineTooLong => {
                self.parse_errors_total.with_label_values(&["client"]).inc();
                self.commands_refused_total
                    .with_label_values(&[why.as_str()])
                    .inc();
            }
            Refusal::NotImplemented | Refusal::EpsvAll | Refusal::Family | Refusal::Auth => {
                self.commands_refused_total
                    .with_label_values(&[why.as_str()])
                    .inc();
            }
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
