//! The certificate of a domain: issuing it (one ACME order at a time per domain), reading it and
//! its private key, and retrying a failed issuance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use dns_handling_events::{DomainStatus, OrderChallenge, OrderDetails, Validation};
use dns_handling_projections::{CertificateView, ChallengeView, DomainView};

use super::auth::Role;
use super::bodies::{
    CallerErrors, CertificateBody, ChangeErrors, DomainBody, ErrorBody, IssuanceStarted,
    NotFoundError, PrivateKeyBody,
};
use super::domains::{find, origin};
use super::ApiError;
use crate::actors::{PendingOrder, StartPolling, Supervisor};
use crate::app_state::AppState;
use crate::domain::aggregate::CustomDomainCommand;

use super::SharedState;

/// Serialises, per domain within this process, the calls that decide what its next order
/// covers: concurrent `issue-certificate` calls create one ACME order, not one per call, and a
/// new set of alt names does not slip in between reading the names and recording the order.
#[derive(Default)]
pub struct DomainLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl DomainLocks {
    pub(super) fn lock_for(&self, domain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Drop locks nobody holds, so the map stays as small as the set of calls in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(domain_id.to_owned()).or_default().clone()
    }
}

/// `POST /domains/{id}/issue-certificate`: create one ACME order for the domain and its alt
/// names, record it, hand it to a poller.
#[utoipa::path(
    post, path = "/domains/{id}/issue-certificate", operation_id = "issueCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 202, description = "One ACME order created for every name of the domain; publish each challenge's TXT record", body = IssuanceStarted),
        (status = 500, description = "The CA could not be reached or refused (the message says which step)", body = ErrorBody),
        (status = 429, description = "A budget kept for the CA is spent, or the CA said not now: retry after `Retry-After` seconds; nothing was recorded", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn issue_certificate(
    services: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    locks: web::Data<DomainLocks>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let lock = locks.lock_for(&id);
    let _held = lock.lock().await;
    let view = find(&services, &id).await?;
    if view.status != DomainStatus::Verified {
        return Err(ApiError::BadRequest(format!(
            "domain status is {}; issuing a certificate requires status verified",
            view.status
        )));
    }
    let settings = &services.settings;
    let order = services
        .place_order(&view, None, settings.poll_timeout)
        .await?;
    let now = Utc::now();
    // The order URL is persisted before any poller exists: from here on a crash resumes this
    // order instead of creating a second one.
    let command = CustomDomainCommand::RequestCertificate {
        order: order.clone(),
        at: now,
    };
    services.execute(&id, command, origin(&request)).await?;
    supervisor.do_send(StartPolling(PendingOrder {
        domain_id: view.id.clone(),
        domain_name: view.domain_name.clone(),
        order: order.clone(),
        renewal: false,
        requested_at: Utc::now(),
    }));
    let started = issuance_started(
        order,
        &view.domain_name,
        DomainStatus::CertificatePending,
        settings,
        settings.poll_timeout,
    );
    Ok(HttpResponse::Accepted().json(started))
}

/// The `202` of an order placed (a first issuance or a renewal): the domain's own record in
/// the seed's fields, every record in `challenges`, and both in words.
pub(super) fn issuance_started(
    order: OrderDetails,
    domain_name: &str,
    status: DomainStatus,
    settings: &crate::settings::Settings,
    wait: std::time::Duration,
) -> IssuanceStarted {
    let (own, challenges) = ChallengeView::of_order(&order, domain_name);
    let instructions = match (order.validation, &order.delegation_problem) {
        (Validation::Delegated, _) => "Nothing to publish: every _acme-challenge name is a CNAME \
             into the service's delegation zone, where the service publishes the values itself \
             and asks the CA to validate as soon as they are visible."
            .to_owned(),
        (Validation::Manual, problem) => format!(
            "{}{} The service checks DNS every {}s for up to {}s.",
            problem
                .as_ref()
                .map(|problem| format!("Delegated validation is not possible: {problem}. "))
                .unwrap_or_default(),
            publishing_instructions(&challenges),
            settings.poll_interval.as_secs_f64(),
            wait.as_secs_f64()
        ),
    };
    // The seed's single-record fields show the domain's own challenge; with none to publish
    // (the CA holds every authorization already) they name where it would be, with no value.
    let (challenge_domain, expected_txt_value) = match own {
        Some(own) => (own.challenge_domain, own.expected_txt_value),
        None => (OrderChallenge::record_name(domain_name), String::new()),
    };
    IssuanceStarted {
        order_id: order.order_id,
        status,
        challenge_domain,
        expected_txt_value,
        instructions,
        challenges,
        validation: order.validation,
        delegation_problem: order.delegation_problem,
    }
}

/// What to publish, in words: one record per challenge, several values at one name said
/// outright (two TXT records side by side, both at once), since the CA needs all of them.
fn publishing_instructions(challenges: &[ChallengeView]) -> String {
    let mut by_name: Vec<(&str, Vec<&ChallengeView>)> = Vec::new();
    for challenge in challenges {
        match by_name
            .iter_mut()
            .find(|(name, _)| *name == challenge.challenge_domain)
        {
            Some((_, shared)) => shared.push(challenge),
            None => by_name.push((&challenge.challenge_domain, vec![challenge])),
        }
    }
    match by_name.as_slice() {
        [] => "Nothing to publish: the CA already holds a valid authorization for every name."
            .to_owned(),
        [(name, only)] if only.len() == 1 => format!(
            "Set a TXT record at {name} with value {} .",
            only[0].expected_txt_value
        ),
        _ => {
            let records: Vec<String> = by_name
                .iter()
                .map(|(name, shared)| match shared.as_slice() {
                    [one] => format!(
                        "at {name} the value {} (for {})",
                        one.expected_txt_value, one.identifier
                    ),
                    several => format!(
                        "at {name} {} TXT records side by side, published at the same time: {}",
                        several.len(),
                        several
                            .iter()
                            .map(|c| format!("{} (for {})", c.expected_txt_value, c.identifier))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                })
                .collect();
            format!(
                "Publish every one of these TXT records; the CA is asked to validate only once all are visible: {}.",
                records.join("; ")
            )
        }
    }
}

/// The domain's current certificate, or a `404` that says why there is none.
async fn current_certificate(
    services: &AppState,
    view: &DomainView,
) -> Result<CertificateView, ApiError> {
    services
        .store
        .certificate_view(&view.id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "domain {} has no certificate yet (status: {})",
                view.id, view.status
            ))
        })
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
    services: SharedState,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = find(&services, &id).await?;
    let certificate = current_certificate(&services, &view).await?;
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
    services: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = find(&services, &id).await?;
    if view.status != DomainStatus::Failed {
        return Err(ApiError::BadRequest(format!(
            "domain status is {}; retry requires status failed",
            view.status
        )));
    }
    let command = CustomDomainCommand::RetryIssuance { at: Utc::now() };
    services.execute(&id, command, origin(&request)).await?;
    Ok(HttpResponse::Ok().json(DomainBody::of(
        find(&services, &id).await?,
        services.settings.delegation().as_ref(),
    )))
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
    services: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Role::require_admin(&request, "read private keys")?;
    let view = find(&services, &id).await?;
    let certificate = current_certificate(&services, &view).await?;
    let key = services
        .vault
        .certificate_key(&certificate.order_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "the private key of certificate {} was destroyed (it expired at {})",
                certificate.id, certificate.not_after
            ))
        })?;
    hand_out_key(&services, &request, &id, certificate.id, key).await
}

/// Records who reads a certificate's private key, then answers it: if the audit record cannot
/// be written, the key is not handed out.
pub(super) async fn hand_out_key(
    services: &AppState,
    request: &HttpRequest,
    domain_id: &str,
    certificate_id: String,
    key: String,
) -> Result<HttpResponse, ApiError> {
    let reader = match request.peer_addr() {
        Some(peer) => format!("{} from {}", Role::of(request).label(), peer.ip()),
        None => Role::of(request).label().to_owned(),
    };
    let command = CustomDomainCommand::RecordPrivateKeyRead {
        certificate_id: certificate_id.clone(),
        reader,
        at: Utc::now(),
    };
    services
        .execute(domain_id, command, origin(request))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(PrivateKeyBody {
            domain_id: domain_id.to_owned(),
            certificate_id,
            private_key_pem: key,
        }))
}
