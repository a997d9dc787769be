//! The certificate of a domain: issuing it (one ACME order at a time per domain), reading it and
//! its private key, and retrying a failed issuance. Each handler calls its use case.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use dns_handling_events::DomainStatus;

use super::answers::{issuance_started, key_handed_out};
use super::auth::Role;
use super::bodies::{
    CallerErrors, CertificateBody, ChangeErrors, DomainBody, ErrorBody, IssuanceStarted,
    NotFoundError, OrderConflictBody, PrivateKeyBody,
};
use super::origin::{key_reader, origin};
use super::{ApiError, SharedState};
use crate::actors::Supervisor;
use crate::use_cases::{issue, keys};

/// `POST /domains/{id}/issue-certificate`: create one ACME order for the domain and its alt
/// names, record it, hand it to a poller.
#[utoipa::path(
    post, path = "/domains/{id}/issue-certificate", operation_id = "issueCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 202, description = "One ACME order created for every name of the domain; publish each challenge's TXT record", body = IssuanceStarted),
        (status = 500, description = "The CA could not be reached, or the store failed: the answer names the request id, the log says which step (a refusal by the CA is a 400)", body = ErrorBody),
        (status = 429, description = "A budget kept for the CA is spent, or the CA said not now: retry after `Retry-After` seconds; nothing was recorded", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors,
        // After ChangeErrors: this 409 is the one described.
        (status = 409, description = "Another request changed the domain at the same time (`error` alone), or CAA records forbid every configured CA to issue for its names (`code` is `caa_forbids`; `caa` names each CA, name, the records that forbid it and a record that would allow it); nothing was asked of any CA and nothing was recorded", body = OrderConflictBody)
    ),
    security(("bearer" = []))
)]
pub async fn issue_certificate(
    state: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pollers = supervisor.get_ref();
    let issued = issue::issue(&state, pollers, &id, origin(&request)).await?;
    let settings = &state.settings;
    let started = issuance_started(
        issued.order,
        &issued.view.domain_name,
        DomainStatus::CertificatePending,
        settings,
        settings.poll_timeout,
    );
    Ok(HttpResponse::Accepted().json(started))
}

/// `GET /domains/{id}/certificate`: the current certificate's public parts.
#[utoipa::path(
    get, path = "/domains/{id}/certificate", operation_id = "getCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "The current certificate's public parts", body = CertificateBody),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn certificate(
    state: SharedState,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let certificate = keys::current_certificate(&state, &id).await?;
    Ok(HttpResponse::Ok().json(CertificateBody {
        names: crate::adapters::acme::certificate_names(&certificate.chain_pem),
        id: certificate.id,
        domain_id: certificate.domain_id,
        serial: certificate.serial,
        not_before: certificate.not_before,
        not_after: certificate.not_after,
        issued_at: certificate.issued_at,
        fingerprint_sha256: certificate.fingerprint_sha256,
        ca_directory: certificate.ca_directory,
        chain_pem: certificate.chain_pem,
    }))
}

/// `POST /domains/{id}/retry`: put a failed domain back to `verified`.
#[utoipa::path(
    post, path = "/domains/{id}/retry", operation_id = "retryIssuance", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Back to verified", body = DomainBody,
            links(
                ("issueCertificate" = (operation_id = "issueCertificate", parameters(("id" = "$response.body#/id"))))
            )),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    issue::retry(&state, &id, origin(&request)).await?;
    let view = crate::use_cases::live_view::<ApiError>(&state, &id).await?;
    Ok(HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref())))
}

/// `GET /domains/{id}/certificate/key`: the current certificate's private key, for the
/// platform's TLS edge. Admins only; every read is recorded before the key leaves.
#[utoipa::path(
    get, path = "/domains/{id}/certificate/key", operation_id = "getCertificateKey", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "The private key (the read is recorded first)", body = PrivateKeyBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn certificate_key(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Role::require_admin(&request, "read private keys")?;
    let key = keys::current_key(&state, &id, key_reader(&request), origin(&request)).await?;
    Ok(key_handed_out(key))
}
