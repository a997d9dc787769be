//! Removing a domain: its name is free again, its history stays, a pending order's poller
//! stops; with `revoke`, its certificate is revoked at the CA first.

use chrono::Utc;
use dns_handling_events::{DomainStatus, RevocationReason};
use dns_handling_projections::DomainView;

use super::command::execute;
use super::revoke::{revoke_current, RevokeError};
use super::{live_view, Pollers};
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::CustomDomainCommand;
use crate::domain::health::moved_long_enough;

/// Removes the domain, revoking its current certificate first when `revoke` (reason
/// `cessationOfOperation`): if the CA cannot revoke, nothing is removed and the caller may
/// retry. Fails as a revocation does.
pub async fn remove(
    state: &AppState,
    pollers: &dyn Pollers,
    domain_id: &str,
    revoke: bool,
    origin: CommandOrigin,
) -> Result<(), RevokeError> {
    let lock = state.domain_locks.lock_for(domain_id);
    let _held = lock.lock().await;
    let view = live_view::<RevokeError>(state, domain_id).await?;
    if revoke {
        let reason = RevocationReason::CessationOfOperation;
        revoke_current(state, &view, reason, origin.clone()).await?;
    }
    let command = CustomDomainCommand::RemoveDomain { at: Utc::now() };
    execute(state, domain_id, command, origin).await?;
    // A pending order's poller stops now rather than at its next report, which the aggregate
    // would refuse (on another replica, its supervisor sees the order gone at its next tick).
    pollers.stop(domain_id);
    Ok(())
}

/// Removes a domain `moved` for `MOVED_REMOVE_AFTER` (`view` as a check left it; its
/// `updated_at` is when it moved, nothing else of its lifecycle happening while it is moved),
/// its certificate revoked first (`cessationOfOperation`), through the same use case as
/// `DELETE /domains/{id}?revoke=true`: if the CA cannot revoke, nothing is removed and the next
/// check tries again. Answers whether it removed the domain.
pub async fn remove_if_moved_long_enough(
    state: &AppState,
    pollers: &dyn Pollers,
    view: &DomainView,
    origin: CommandOrigin,
) -> Result<bool, RevokeError> {
    let remove_after = state
        .settings
        .moved_remove_after
        .map(|after| chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX));
    let moved = view.status == DomainStatus::Moved && !view.removed;
    if !moved || !moved_long_enough(view.updated_at, remove_after, Utc::now()) {
        return Ok(false);
    }
    remove(state, pollers, &view.id, true, origin).await?;
    tracing::info!(domain_id = %view.id, moved_at = %view.updated_at, "a domain moved for MOVED_REMOVE_AFTER was removed");
    Ok(true)
}
