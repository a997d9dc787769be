//! Removing a domain: its name is free again, its history stays, a pending order's poller
//! stops; with `revoke`, its certificate is revoked at the CA first.

use chrono::Utc;
use dns_handling_events::RevocationReason;

use super::command::execute;
use super::revoke::{revoke_current, RevokeError};
use super::{live_view, Pollers};
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::CustomDomainCommand;

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
