//! `GET /ca`: the CA the service asks, and how the budgets it keeps for it stand.

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::bodies::{rfc3339, rfc3339_opt, CallerErrors};
use super::{ApiError, SharedState};
use crate::metrics::METRICS;
use crate::settings::Budget;
use crate::use_cases::budgets::{FAILED_VALIDATIONS, NEW_ORDERS};

/// How one budget stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetBody {
    /// Units per window.
    pub limit: u32,
    /// The sliding window, e.g. `3h`.
    pub window: String,
    /// Units spent in the window (for `new_orders`: by every replica together).
    pub spent: u32,
    /// Units left.
    pub left: u32,
    /// When one more unit fits: the oldest spent unit leaves the window (with more spent than
    /// the limit, the unit that must leave for one to fit); absent when none is spent.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub frees_at: Option<DateTime<Utc>>,
}

/// A name whose validations failed in the window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NameBudgetBody {
    /// The name.
    pub name: String,
    /// Failed validations in the window.
    pub spent: u32,
    /// Whether its orders wait (its budget is spent).
    pub waiting: bool,
    /// When the oldest failure leaves the window (with more failures than the limit, the one
    /// that must leave for an order to be placed again).
    #[serde(serialize_with = "rfc3339")]
    pub frees_at: DateTime<Utc>,
}

/// `200` body of `GET /ca`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaBody {
    /// The ACME directory asked.
    pub directory: String,
    /// Whether new accounts are bound to an external account (EAB).
    pub external_account_binding: bool,
    /// The account's new orders in the window (`ACME_NEW_ORDER_BUDGET`).
    pub new_orders: BudgetBody,
    /// The failed-validation budget per name (`ACME_FAILED_VALIDATION_BUDGET`): its limit and
    /// window, and the names that spent some of it (up to 100, most spent first).
    pub failed_validations: FailedValidationsBody,
    /// Every CA in the order orders try them (the first is the one above), each with its own
    /// account and new-order budget.
    pub issuers: Vec<IssuerBody>,
}

/// One CA orders may go to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuerBody {
    /// Its ACME directory.
    pub directory: String,
    /// Whether its account is bound to an external account (EAB).
    pub external_account_binding: bool,
    /// Its account's new orders in the window.
    pub new_orders: BudgetBody,
}

/// The failed-validation budget and the names that spent some of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedValidationsBody {
    /// Failures per name per window.
    pub limit: u32,
    /// The sliding window, e.g. `1h`.
    pub window: String,
    /// Names with failures in the window.
    pub names: Vec<NameBudgetBody>,
}

fn window_of(budget: &Budget) -> String {
    humantime::format_duration(budget.window).to_string()
}

/// `GET /ca`: the CA asked, and the budgets kept so that it need not say no.
#[utoipa::path(
    get, path = "/ca", operation_id = "caBudgets", tag = "operations",
    responses((status = 200, description = "The CA and the budgets kept for it", body = CaBody), CallerErrors),
    security(("bearer" = []))
)]
pub async fn get(state: SharedState) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let orders = settings.acme_new_order_budget;
    let spent_orders = state
        .store
        .budget_use(NEW_ORDERS, orders.limit, orders.chrono_window())
        .await?;
    let budget_of = |directory: &str| {
        let used = spent_orders.iter().find(|used| used.subject == directory);
        let spent = used.map_or(0, |used| used.spent);
        BudgetBody {
            limit: orders.limit,
            window: window_of(&orders),
            spent,
            left: orders.limit.saturating_sub(spent),
            frees_at: used.map(|used| used.frees_at),
        }
    };
    let mut issuers = vec![IssuerBody {
        directory: settings.acme_directory.clone(),
        external_account_binding: settings.external_account_binding().is_some(),
        new_orders: budget_of(&settings.acme_directory),
    }];
    for issuer in &settings.acme_fallback_issuers {
        issuers.push(IssuerBody {
            directory: issuer.directory.clone(),
            external_account_binding: issuer.external_account_binding().is_some(),
            new_orders: budget_of(&issuer.directory),
        });
    }
    let first = budget_of(&settings.acme_directory);
    METRICS.ca_new_orders_left.set(i64::from(first.left));
    let failures = settings.acme_failed_validation_budget;
    let names = state
        .store
        .budget_use(FAILED_VALIDATIONS, failures.limit, failures.chrono_window())
        .await?
        .into_iter()
        .map(|used| NameBudgetBody {
            waiting: used.spent >= failures.limit,
            name: used.subject,
            spent: used.spent,
            frees_at: used.frees_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(CaBody {
        directory: settings.acme_directory.clone(),
        external_account_binding: settings.external_account_binding().is_some(),
        new_orders: first,
        failed_validations: FailedValidationsBody {
            limit: failures.limit,
            window: window_of(&failures),
            names,
        },
        issuers,
    }))
}
