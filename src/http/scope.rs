//! Where a tenant token may go: the one place a tenant's request is held to its own domains.
//!
//! A tenant token (`role: tenant`) reaches `/whoami`, `/domains`, `/events` and the routes of
//! one domain (`/domains/{id}…`) but their private keys; every other route is `403`. On the
//! routes of one domain, a domain that is not its tenant's answers exactly as a domain that
//! does not exist (`404`, the same body), before its handler runs: so no handler can reveal
//! another tenant's domain, and none checks it again. The list, the feed and registration are
//! held to the tenant by the [`Scope`](crate::domain::tenant::Scope) their handlers take from
//! [`Role::scope`](super::auth::Role::scope).

use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::web;

use super::ApiError;
use crate::app_state::AppState;
use crate::domain::tenant::TenantId;
use crate::use_cases::DomainMissing;

/// The route patterns a tenant token may use besides those of one domain.
const TENANT_ROUTES: [&str; 3] = ["/whoami", "/domains", "/events"];

/// The prefix of the routes of one domain.
const ONE_DOMAIN: &str = "/domains/{id}";

/// Lets a request of `tenant`'s token go on, or answers why not: `403` off its routes or on a
/// private key, `404` (as for a domain that does not exist) on another's domain.
pub async fn confine(request: &ServiceRequest, tenant: &TenantId) -> Result<(), ApiError> {
    let pattern = request.request().match_pattern().unwrap_or_default();
    if TENANT_ROUTES.contains(&pattern.as_str()) {
        return Ok(());
    }
    if !pattern.starts_with(ONE_DOMAIN) {
        return Err(ApiError::Forbidden(format!(
            "a tenant token may use {} and {ONE_DOMAIN}… only",
            TENANT_ROUTES.join(", ")
        )));
    }
    if pattern.ends_with("/key") {
        return Err(ApiError::Forbidden(
            "a tenant token may not read private keys".into(),
        ));
    }
    let id = request
        .match_info()
        .get("id")
        .unwrap_or_default()
        .to_owned();
    let Some(state) = request.app_data::<web::Data<Arc<AppState>>>() else {
        return Err(ApiError::internal("service state missing"));
    };
    // The view is kept for a removed domain too, with its tenant; the reader keeps the tenant
    // once read, so this costs no query on the requests that follow.
    let owned = state
        .views
        .domain_tenant(&id)
        .await?
        .is_some_and(|owner| owner.as_deref() == Some(tenant.as_str()));
    match owned {
        true => Ok(()),
        // What `live_view` answers for an id no domain has: nothing tells the two apart.
        false => Err(DomainMissing::Unknown(id).into()),
    }
}
