//! The budgets kept for the CA, before it has to refuse: new orders per account, failed
//! validations per name. Shared by every replica (the store keeps what was spent).

use crate::adapters::acme::AcmeError;
use crate::adapters::store::{SpentUnits, StoreError};
use crate::app_state::AppState;
use crate::metrics::{BudgetLabel, METRICS};

/// The budget of new orders, by ACME directory.
pub const NEW_ORDERS: &str = "new_orders";

/// The budget of failed validations, by name.
pub const FAILED_VALIDATIONS: &str = "failed_validations";

/// A store failure met while keeping a budget: to the order's placing, a CA that cannot take
/// the order now (the next CA is tried).
fn store_failed(error: StoreError) -> AcmeError {
    AcmeError::Vault(crate::adapters::vault::VaultError::Store(error))
}

/// Keeps the CA's limit on failed validations before it has to refuse: no order for a name
/// whose validations failed too often in the window, whichever CA. One query for all the names.
pub async fn check_name_budgets(state: &AppState, names: &[String]) -> Result<(), AcmeError> {
    let failures = state.settings.acme_failed_validation_budget;
    let left = state
        .store
        .budget_left(
            FAILED_VALIDATIONS,
            names,
            failures.limit,
            failures.chrono_window(),
        )
        .await
        .map_err(store_failed)?;
    let Err((name, retry_after)) = left else {
        return Ok(());
    };
    METRICS
        .ca_refusals
        .get_or_create(&BudgetLabel {
            budget: FAILED_VALIDATIONS,
        })
        .inc();
    Err(AcmeError::BudgetSpent {
        detail: format!(
            "{name} failed validation {} times within {} (ACME_FAILED_VALIDATION_BUDGET)",
            failures.limit,
            humantime::format_duration(failures.window)
        ),
        retry_after,
    })
}

/// Keeps a CA's limit on new orders before it has to refuse: no new order past its account's
/// budget (an ARI renewal, which Let's Encrypt exempts, spends none). Answers the unit spent,
/// to be given back if the CA never gets the order.
pub async fn spend_order_budget(
    state: &AppState,
    directory: &str,
    ari_renewal: bool,
) -> Result<SpentUnits, AcmeError> {
    if ari_renewal {
        return Ok(SpentUnits::default());
    }
    let orders = state.settings.acme_new_order_budget;
    let spent = state
        .store
        .spend_budget(
            NEW_ORDERS,
            &[directory],
            orders.limit,
            orders.chrono_window(),
        )
        .await
        .map_err(store_failed)?;
    if spent.is_err() {
        METRICS
            .ca_refusals
            .get_or_create(&BudgetLabel { budget: NEW_ORDERS })
            .inc();
    }
    spent.map_err(|retry_after| AcmeError::BudgetSpent {
        detail: format!(
            "the account's new-order budget of {} per {} is spent (ACME_NEW_ORDER_BUDGET)",
            orders.limit,
            humantime::format_duration(orders.window)
        ),
        retry_after,
    })
}

/// Gives back the new-order unit of an order the CA never got. A store failure here only
/// leaves the unit spent until it leaves the window: logged, not the caller's failure.
pub async fn refund_order_budget(state: &AppState, spent: &SpentUnits) {
    if let Err(error) = state.store.refund_budget(spent).await {
        tracing::warn!(%error, "could not give back a new-order unit the CA never used");
    }
}
