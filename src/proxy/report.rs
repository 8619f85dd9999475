//! What the engine reports for the record: metrics, logs and the session table.

use crate::rules::Verdict;
use crate::session::{Action, Refusal};
use crate::track::{SessionId, SessionState};

use super::Shared;

/// Records one reporting action of session `id`; actions that do something else
/// are the driver's and ignored here.
pub(super) fn report(shared: &Shared, id: SessionId, action: Action) {
    match action {
        Action::Transfer {
            id: expectation,
            transfer,
        } => shared
            .tracker
            .update_expectation((id, expectation), |e| e.transfer = Some(transfer)),
        Action::Command(verb) => shared.metrics.command(&verb),
        Action::Rule { decision, what } => {
            let source = decision.source();
            shared
                .metrics
                .rule_decisions_total
                .with_label_values(&[decision.verdict.as_str(), &source])
                .inc();
            if decision.log || decision.verdict == Verdict::Block {
                tracing::info!(verdict = decision.verdict.as_str(), rule = %source, %what, "rule");
            }
        }
        Action::LoggedIn => shared
            .tracker
            .update_session(id, |s| s.state = SessionState::LoggedIn),
        Action::User(user) => shared.tracker.update_session(id, |s| s.user = Some(user)),
        Action::Refused { why, target } => {
            let reason = why.as_str();
            match (why, target) {
                (Refusal::Malformed(m), _) => {
                    tracing::warn!(reason, detail = m.as_str(), "refused")
                }
                (_, Some(target)) => tracing::warn!(reason, %target, "refused"),
                (_, None) => tracing::warn!(reason, "refused"),
            }
            shared.metrics.refusal(why);
        }
        Action::ActiveSubstituted { class } => {
            tracing::info!(
                class = class.as_str(),
                "active address replaced by the client's own"
            );
            shared
                .metrics
                .active_address_substituted_total
                .with_label_values(&[class.as_str()])
                .inc();
        }
        Action::MalformedReply => shared.metrics.parse_error("server", "reply"),
        Action::UnknownVerb { class, passed } => shared.metrics.unknown_command(class, passed),
        Action::UpstreamRetry(why) => {
            tracing::warn!(
                reason = why.as_str(),
                "the FTP server did not greet; connecting again"
            );
            shared.metrics.upstream_retry(why);
        }
        Action::ToClient(_)
        | Action::ToServer(_)
        | Action::Open(_)
        | Action::Cancel(_)
        | Action::Finished(_)
        | Action::Expire(_)
        | Action::SecureClient
        | Action::SecureServer { .. }
        | Action::PassThrough { .. }
        | Action::Pick { .. }
        | Action::ClearClient
        | Action::Resolve { .. }
        | Action::Connect { .. }
        | Action::Close(_) => {}
    }
}
