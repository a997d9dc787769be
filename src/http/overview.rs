//! `GET /overview`: the figures people look at first (domains by status, certificates by time
//! to expiry, issuances and failures per day, renewals due, open orders), and `GET /whoami`:
//! the caller's role. The console draws its overview page and decides which actions to offer
//! from these two.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::bodies::{rfc3339, CallerErrors};
use super::{ApiError, SharedState};

/// Days of activity `GET /overview` shows by default, and at most.
const ACTIVITY_DAYS: (u32, u32) = (14, 90);

/// Query of `GET /overview`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Days of activity to show, today included: 1 to 90 (default 14).
    #[param(minimum = 1, maximum = 90)]
    days: Option<u32>,
}

/// Certificates in service by time to expiry; each count excludes the ones before it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExpiryBuckets {
    /// Already past their end of validity.
    pub expired: i64,
    /// Expiring within a day.
    pub within_1d: i64,
    /// Within 1 to 7 days.
    pub within_7d: i64,
    /// Within 7 to 30 days.
    pub within_30d: i64,
    /// In more than 30 days.
    pub later: i64,
}

/// Issuances and failures of one day (UTC).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayBody {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Certificates issued, renewals included.
    pub issued: i64,
    /// Orders failed or timed out, and renewal attempts failed.
    pub failed: i64,
}

/// `200` body of `GET /overview`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverviewBody {
    /// When these figures were read.
    #[serde(serialize_with = "rfc3339")]
    pub generated_at: DateTime<Utc>,
    /// The feed's last position when they were read: follow `GET /events?after=` from here.
    pub feed_position: i64,
    /// Domains by status (removed ones left out); every status is present.
    pub domains_by_status: BTreeMap<String, i64>,
    /// Certificates in service by time to expiry.
    pub certificates_by_expiry: ExpiryBuckets,
    /// Certificates whose renewal (or a retry of it) is due within 7 days, overdue included;
    /// a certificate whose renewal is not planned yet counts when it is due by its lifetime.
    pub renewals_due_within_7d: i64,
    /// Domains with an order open at the CA (first issuances and renewals).
    pub open_orders: i64,
    /// One entry per day of the window, oldest first, days without activity included.
    pub activity: Vec<DayBody>,
}

/// `GET /overview`: the figures of the console's overview page.
#[utoipa::path(
    get, path = "/overview", operation_id = "overview", tag = "operations",
    params(OverviewQuery),
    responses(
        (status = 200, description = "The figures, read now from the projections", body = OverviewBody),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn overview(
    state: SharedState,
    query: web::Query<OverviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let (default_days, max_days) = ACTIVITY_DAYS;
    let days = query.days.unwrap_or(default_days);
    if !(1..=max_days).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "days must be between 1 and {max_days}, got {days}"
        )));
    }
    let now = Utc::now();
    // Read first, so that an event committed while the figures are read is in them or after
    // this position, never skipped by a console following from it.
    let feed_position = state.store.feed_head().await?;
    let first_day = (now - Duration::days(i64::from(days) - 1)).date_naive();
    let since = first_day.to_string();
    let (by_status, expiry, due, open, activity) = futures::try_join!(
        state.store.domain_counts_by_status(),
        state.store.expiry_counts(now),
        state
            .store
            .renewals_due_by(now + Duration::days(7), state.settings.renew_before),
        state.store.open_order_count(),
        state.store.activity_since(&since),
    )?;
    let mut domains_by_status: BTreeMap<String, i64> = dns_handling_events::DomainStatus::ALL
        .iter()
        .map(|status| (status.as_str().to_owned(), 0))
        .collect();
    for (status, count) in by_status {
        if status != "removed" {
            domains_by_status.insert(status, count);
        }
    }
    let activity = first_day
        .iter_days()
        .take(days as usize)
        .map(|day| {
            let day = day.to_string();
            let found = activity.iter().find(|recorded| recorded.day == day);
            DayBody {
                issued: found.map_or(0, |recorded| recorded.issued),
                failed: found.map_or(0, |recorded| recorded.failed),
                day,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(OverviewBody {
        generated_at: now,
        feed_position,
        domains_by_status,
        certificates_by_expiry: ExpiryBuckets {
            expired: expiry.expired,
            within_1d: expiry.within_1d - expiry.expired,
            within_7d: expiry.within_7d - expiry.within_1d,
            within_30d: expiry.within_30d - expiry.within_7d,
            later: expiry.all - expiry.within_30d,
        },
        renewals_due_within_7d: due,
        open_orders: open,
        activity,
    }))
}

/// `200` body of `GET /whoami`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoamiBody {
    /// `admin` (may change things), `auditor` (reads only), `edge` or `tenant` (its tenant's
    /// domains only).
    #[schema(example = "auditor")]
    pub role: &'static str,
    /// The tenant of a `tenant` token, whose domains are the only ones it sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "acct_123")]
    pub tenant: Option<String>,
    /// The feed's last position now: a client that wants only what happens from now on
    /// follows `GET /events?after=` from here.
    pub feed_position: i64,
    /// The Ed25519 public key this service signs its audit checkpoints with (standard base64),
    /// from its own key, never from the database: the console checks checkpoints against it
    /// (or against the key an auditor pastes), not against the key a checkpoint row names.
    #[schema(example = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")]
    pub audit_public_key: String,
}

/// `GET /whoami`: the role the presented token gives (every caller is `admin` when the
/// service has no token configured), where the feed stands, and the service's own audit
/// public key.
#[utoipa::path(
    get, path = "/whoami", operation_id = "whoami", tag = "operations",
    responses(
        (status = 200, description = "The caller's role", body = WhoamiBody),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn whoami(state: SharedState, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let role = Role::of(&request);
    Ok(HttpResponse::Ok().json(WhoamiBody {
        role: role.label(),
        tenant: match role {
            Role::Tenant(tenant) => Some(tenant.into_string()),
            _ => None,
        },
        feed_position: state.store.feed_head().await?,
        audit_public_key: state.signer.public_key().to_owned(),
    }))
}
