//! `POST /domains/{id}/health`: check a domain's DNS now (routing, delegation, CAA) and answer
//! what was found; a change of outcome is recorded as the periodic checker records it.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use dns_handling_events::NameCheck;
use serde::Serialize;

use super::bodies::{rfc3339, rfc3339_opt, CallerErrors, ChangeErrors, NotFoundError};
use super::origin::origin;
use super::{ApiError, SharedState};
use crate::use_cases::health;

/// The answer of `POST /domains/{id}/health`: what the check just made found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthCheckBody {
    /// Whether each name (wildcards aside) resolves to the platform (`ROUTING_TARGETS`):
    /// `ok`, `elsewhere`, `missing` or `unknown`; empty without `ROUTING_TARGETS`.
    pub routing: Vec<NameCheck>,
    /// Whether each name's `_acme-challenge` CNAME still leads to its record in the delegation
    /// zone; empty unless the domain's last order was delegated.
    pub delegation: Vec<NameCheck>,
    /// Whether a configured CA may issue for each name under its CAA records; empty with
    /// `CAA_CHECK=off`.
    pub caa: Vec<NameCheck>,
    /// Every outcome but `ok`, one sentence each.
    pub problems: Vec<String>,
    /// When the check was made.
    #[serde(serialize_with = "rfc3339")]
    pub checked_at: DateTime<Utc>,
    /// When the outcomes the domain now shows (its `health`) were found: this check's time when
    /// it changed them, an earlier one's when it did not (a failed lookup, `unknown` here,
    /// keeps the outcome recorded before).
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub changed_at: Option<DateTime<Utc>>,
}

/// `POST /domains/{id}/health`: check the domain's DNS now and record what changed.
#[utoipa::path(
    post, path = "/domains/{id}/health", operation_id = "checkDomainHealth", tag = "domains",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "What the check found; a change of outcome was recorded (`HealthChanged`), a check that changed nothing recorded nothing", body = HealthCheckBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn check(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (check, view) = health::check_domain(&state, &id, origin(&request)).await?;
    Ok(HttpResponse::Ok().json(HealthCheckBody {
        problems: check.report.problems(),
        routing: check.report.routing,
        delegation: check.report.delegation,
        caa: check.report.caa,
        checked_at: check.checked_at,
        changed_at: view.health.map(|health| health.changed_at),
    }))
}
