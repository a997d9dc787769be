//! Handlers of `/domains…`: registering, listing, reading, verifying and removing domains (their
//! certificates are `certificates.rs`).

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use dns_handling_events::DomainStatus;
use dns_handling_projections::DomainView;
use serde::Deserialize;

use super::auth::Role;
use super::bodies::{
    CallerErrors, ChangeErrors, DelegationRecordBody, DomainBody, DomainList, ErrorBody,
    NotFoundError, RegisteredDomain, VerificationRecord,
};
use super::origin::origin;
use super::{ApiError, SharedState};
use crate::actors::Supervisor;
use crate::adapters::store::DomainFilter;
use crate::domain::tenant::{Listed, TenantId};
use crate::use_cases::{live_view, register, remove, verify};

/// Body of `POST /domains`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The host name to register, e.g. `shop.example.com` (IDN allowed).
    #[schema(min_length = 1, max_length = 253, example = "shop.example.com")]
    domain_name: String,
    /// Further names its certificates cover: subdomains of it (`www.shop.example.com`) or
    /// wildcards under it (`*.shop.example.com`), normalised like `domain_name`; at most 99.
    #[serde(default)]
    #[schema(max_items = 99, example = json!(["www.shop.example.com", "*.shop.example.com"]))]
    alt_names: Vec<String>,
    /// The platform's account the domain belongs to: 1 to 64 ASCII letters, digits, `_` or
    /// `-`, kept as given (case matters). Counted against `TENANT_DOMAIN_LIMIT`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "acct_123"
    )]
    tenant: Option<String>,
}

/// Body of `PUT /domains/{id}/alt_names`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AltNamesRequest {
    /// The new set of further names (may be empty), each as `POST /domains` takes them.
    #[schema(max_items = 99, example = json!(["www.shop.example.com", "*.shop.example.com"]))]
    alt_names: Vec<String>,
}

/// Query of `GET /domains`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only domains in this status.
    #[param(value_type = Option<DomainStatus>)]
    status: Option<String>,
    /// Only domains whose name contains this text (letters, digits, `.`, `-` and `*`; case
    /// does not matter), e.g. `shop` or `.example.com`.
    #[param(max_length = 253)]
    name: Option<String>,
    /// Only the domains of this tenant (as `POST /domains` takes it).
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    tenant: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The `name` of `GET /domains`, lower-cased, or why it is refused: only what a host name may
/// hold, so that it can never be read as a pattern.
fn name_filter(name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let lowered = name.to_ascii_lowercase();
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '*');
    if lowered.len() > 253 || !lowered.chars().all(allowed) {
        return Err(ApiError::BadRequest(format!(
            "name {name:?} is not part of a host name: use letters, digits, '.', '-' or '*', at most 253"
        )));
    }
    Ok(Some(lowered))
}

/// `POST /domains`: register a domain and hand out its verification token.
#[utoipa::path(
    post, path = "/domains", operation_id = "registerDomain", tag = "domains",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered; publish the verification record", body = RegisteredDomain,
            links(
                ("getDomain" = (operation_id = "getDomain", parameters(("id" = "$response.body#/id")))),
                ("verifyDomain" = (operation_id = "verifyDomain", parameters(("id" = "$response.body#/id")))),
                ("issueCertificate" = (operation_id = "issueCertificate", parameters(("id" = "$response.body#/id")))),
                ("getCertificate" = (operation_id = "getCertificate", parameters(("id" = "$response.body#/id")))),
                ("retryIssuance" = (operation_id = "retryIssuance", parameters(("id" = "$response.body#/id")))),
                ("domainHistory" = (operation_id = "domainHistory", parameters(("id" = "$response.body#/id")))),
                ("removeDomain" = (operation_id = "removeDomain", parameters(("id" = "$response.body#/id"))))
            )),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        CallerErrors, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn register(
    state: SharedState,
    request: HttpRequest,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let scope = Role::of(&request).scope();
    let tenant = scope.tenant_to_register(body.tenant.as_deref())?;
    let view = register::register_for(
        &state,
        &body.domain_name,
        &body.alt_names,
        tenant,
        origin(&request),
    )
    .await?;
    let record = VerificationRecord::of(&view);
    let delegation_records = match state.settings.delegation() {
        Some(zone) => DelegationRecordBody::all(&zone, &view),
        None => Vec::new(),
    };
    let instructions = match delegation_records.first() {
        None => format!(
            "Create a TXT record at {} with the value {} , then call POST /domains/{}/verify.",
            record.name, record.value, view.id
        ),
        Some(own) => format!(
            "Either create a CNAME record at {} pointing to {} (once: it proves ownership and lets \
             the service publish every challenge, for every renewal too; each of the \
             delegation_records likewise for the other names), or a TXT record at {} with the \
             value {} ; then call POST /domains/{}/verify.",
            own.name, own.value, record.name, record.value, view.id
        ),
    };
    Ok(HttpResponse::Created().json(RegisteredDomain {
        id: view.id,
        domain_name: view.domain_name,
        alt_names: view.alt_names,
        tenant: view.tenant,
        status: view.status,
        verification_token: view.verification_token,
        verification_record: record,
        delegation_record: delegation_records.first().cloned(),
        delegation_records,
        instructions,
        created_at: view.created_at,
    }))
}

/// `PUT /domains/{id}/alt_names`: replace the further names; the next order (issuance, retry
/// or renewal) covers the new set, a pending order keeps the names it was placed with.
#[utoipa::path(
    put, path = "/domains/{id}/alt_names", operation_id = "replaceAltNames", tag = "domains",
    params(("id" = String, Path, description = "The domain's id")),
    request_body = AltNamesRequest,
    responses(
        (status = 200, description = "The new set is recorded (or was the set already)", body = DomainBody,
            links(
                ("issueCertificate" = (operation_id = "issueCertificate", parameters(("id" = "$response.body#/id"))))
            )),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn replace_alt_names(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<AltNamesRequest>,
) -> Result<HttpResponse, ApiError> {
    let view = register::replace_alt_names(&state, &id, &body.alt_names, origin(&request)).await?;
    Ok(HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref())))
}

/// `GET /domains`: one page of domains, optionally of one status, matching a name, or of one
/// tenant.
#[utoipa::path(
    get, path = "/domains", operation_id = "listDomains", tag = "domains",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of domains", body = DomainList),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: SharedState,
    request: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(DomainStatus::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {text:?}; use pending, verified, certificate_pending, active, failed or expired"
            ))
        })?),
    };
    let name = name_filter(query.name.as_deref())?;
    let tenant = match query.tenant.as_deref() {
        None => None,
        Some(text) => {
            Some(TenantId::parse(text).map_err(|error| ApiError::BadRequest(error.to_string()))?)
        }
    };
    let limit = super::page_limit(query.limit, 50, 500)?;
    let scope = Role::of(&request).scope();
    let tenant = match scope.tenant_to_list(tenant.as_ref().map(TenantId::as_str)) {
        Listed::Every => None,
        Listed::Of(tenant) => Some(tenant),
        // Another tenant's: as empty as a tenant without domains.
        Listed::Nothing => {
            return Ok(HttpResponse::Ok().json(DomainList {
                items: Vec::new(),
                next_cursor: None,
            }))
        }
    };
    let filter = DomainFilter {
        status,
        name_contains: name.as_deref(),
        tenant,
    };
    let page = state
        .store
        .list_domains(filter, limit, query.cursor.as_deref())
        .await?;
    let zone = state.settings.delegation();
    Ok(HttpResponse::Ok().json(DomainList {
        items: page
            .items
            .into_iter()
            .map(|view| DomainBody::of(view, zone.as_ref()))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Query of `GET /domains/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// An RFC 3339 time: answer with the state the domain had then, replayed from its events.
    #[param(format = DateTime)]
    as_of: Option<String>,
}

/// `GET /domains/{id}`: the domain's current state from the read projection, or with
/// `as_of=<RFC 3339>` the state it had then, replayed from its events up to that moment.
#[utoipa::path(
    get, path = "/domains/{id}", operation_id = "getDomain", tag = "domains",
    params(("id" = String, Path, description = "The domain's id"), GetQuery),
    responses(
        (status = 200, description = "The domain, from the read projection (or as it was at `as_of`)", body = DomainBody),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: SharedState,
    id: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(as_of) = &query.as_of else {
        let view = live_view::<ApiError>(&state, &id).await?;
        return Ok(
            HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref()))
        );
    };
    let as_of = chrono::DateTime::parse_from_rfc3339(as_of)
        .map_err(|e| ApiError::BadRequest(format!("as_of must be an RFC 3339 time: {e}")))?
        .with_timezone(&Utc);
    let mut view: Option<DomainView> = None;
    for event in state.store.domain_history(&id).await? {
        let recorded_at = chrono::DateTime::parse_from_rfc3339(&event.recorded_at)
            .map_err(|e| ApiError::internal_from("stored event time is unreadable", e))?;
        if recorded_at > as_of {
            break;
        }
        let sequence = u64::try_from(event.sequence).unwrap_or(0);
        let payload = event
            .decode()
            .map_err(|e| ApiError::internal_from("stored event is unreadable", e))?;
        match view.as_mut() {
            Some(view) => {
                view.apply(sequence, &payload);
            }
            None => view = DomainView::from_registration(&id, sequence, &payload),
        }
    }
    match view {
        Some(view) if !view.removed => {
            Ok(HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref())))
        }
        Some(_) => Err(ApiError::NotFound(format!(
            "domain {id} was removed by {as_of}"
        ))),
        None => Err(ApiError::NotFound(format!(
            "domain {id} did not exist at {as_of}"
        ))),
    }
}

/// `POST /domains/{id}/verify`: look the token up in DNS (or, with delegated validation on, the
/// domain's delegation CNAME) and, if it is there, record ownership.
#[utoipa::path(
    post, path = "/domains/{id}/verify", operation_id = "verifyDomain", tag = "domains",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Ownership proven", body = DomainBody,
            links(
                ("issueCertificate" = (operation_id = "issueCertificate", parameters(("id" = "$response.body#/id"))))
            )),
        (status = 424, description = "The DNS lookup itself failed", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn verify(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = verify::verify(&state, &id, origin(&request)).await?;
    Ok(HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref())))
}

/// Query of `DELETE /domains/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Revoke the current certificate at the CA first (reason `cessationOfOperation`); if the
    /// CA cannot revoke it, nothing is removed.
    revoke: Option<bool>,
}

/// `DELETE /domains/{id}`: remove the domain from the listings and free its name; its event
/// history stays. A pending order's poller stops at once.
#[utoipa::path(
    delete, path = "/domains/{id}", operation_id = "removeDomain", tag = "domains",
    params(("id" = String, Path, description = "The domain's id"), RemoveQuery),
    responses(
        (status = 204, description = "Removed; the name is free again, the history stays"),
        (status = 500, description = "With revoke=true: the CA could not be reached to revoke the certificate; nothing was removed (a refusal by the CA is a 400)", body = ErrorBody),
        (status = 502, description = "With revoke=true: the CA that issued the certificate is no longer configured and could not be asked (the message names it); nothing was removed. A 409 when no account for it is stored", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    state: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    request: HttpRequest,
    id: web::Path<String>,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let revoke = query.revoke.unwrap_or(false);
    remove::remove(&state, supervisor.get_ref(), &id, revoke, origin(&request)).await?;
    Ok(HttpResponse::NoContent().finish())
}
