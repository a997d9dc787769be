//! A certificate's renewal and history: `POST /domains/{id}/renew` starts a renewal now, and
//! `GET /domains/{id}/certificates` lists every certificate the domain ever had.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, DomainStatus, RenewalReason};
use serde::Serialize;

use super::bodies::{
    rfc3339, CallerErrors, ChangeErrors, ErrorBody, IssuanceStarted, NotFoundError,
};
use super::certificates::{issuance_started, DomainLocks};
use super::domains::{find, origin};
use super::{ApiError, SharedState};
use crate::actors::{start_renewal, RenewalStartError, Supervisor};
use crate::adapters::acme::{certificate_issuer, certificate_names};

/// `POST /domains/{id}/renew`: renew the domain's certificate now, whatever its schedule says.
/// The certificate in service stays until the new one is issued.
#[utoipa::path(
    post, path = "/domains/{id}/renew", operation_id = "renewCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 202, description = "A renewal order was created for every name of the domain; publish each challenge's TXT record (the domain stays active meanwhile)", body = IssuanceStarted),
        (status = 500, description = "The CA could not be reached or refused (nothing was recorded)", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn renew(
    services: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    locks: web::Data<DomainLocks>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let lock = locks.lock_for(&id);
    let _held = lock.lock().await;
    let view = find(&services, &id).await?;
    if !matches!(view.status, DomainStatus::Active | DomainStatus::Expired) {
        return Err(ApiError::BadRequest(format!(
            "domain status is {}; renewing requires a certificate (status active or expired)",
            view.status
        )));
    }
    if let Some(order_id) = view.renewal.as_ref().and_then(|r| r.order_id.clone()) {
        return Err(ApiError::BadRequest(format!(
            "a renewal is in progress already (order {order_id}); its records are in the domain's renewal.challenges"
        )));
    }
    let order = start_renewal(
        &services,
        &supervisor,
        &view,
        RenewalReason::Manual,
        origin(&request),
    )
    .await
    .map_err(|error| match error {
        RenewalStartError::Acme(error) => ApiError::from(error),
        RenewalStartError::Command(error) => ApiError::from(error),
    })?;
    let settings = &services.settings;
    let started = issuance_started(
        order,
        &view.domain_name,
        view.status,
        settings,
        settings.renewal_txt_timeout,
    );
    Ok(HttpResponse::Accepted().json(started))
}

/// One certificate in `GET /domains/{id}/certificates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateHistoryItem {
    /// The certificate's id.
    pub id: String,
    /// The order it was issued for.
    pub order_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The names it covers, read from the certificate.
    pub names: Vec<String>,
    /// The issuer's distinguished name, read from the certificate.
    pub issuer: Option<String>,
    /// Start of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_before: DateTime<Utc>,
    /// End of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_after: DateTime<Utc>,
    /// When it was stored.
    #[serde(serialize_with = "rfc3339")]
    pub issued_at: DateTime<Utc>,
    /// The certificate it replaced, for a renewal.
    pub replaced: Option<String>,
    /// Why it was renewed (`ari`, `lifetime`, `manual`), for a renewal.
    pub renewal_reason: Option<RenewalReason>,
    /// The domain's certificate in service now.
    pub current: bool,
}

/// `200` body of `GET /domains/{id}/certificates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateHistory {
    /// Every certificate, newest first.
    pub items: Vec<CertificateHistoryItem>,
}

/// `GET /domains/{id}/certificates`: every certificate the domain ever had, newest first, read
/// from its event history.
#[utoipa::path(
    get, path = "/domains/{id}/certificates", operation_id = "listCertificates", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Every certificate, newest first", body = CertificateHistory),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn history(
    services: SharedState,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    find(&services, &id).await?;
    let mut items: Vec<CertificateHistoryItem> = Vec::new();
    let mut renewal: Option<(RenewalReason, String)> = None;
    for stored in services.store.domain_history(&id).await? {
        let event = stored
            .decode()
            .map_err(|e| ApiError::Internal(format!("stored event is unreadable: {e}")))?;
        match event {
            CustomDomainEvent::RenewalRequested {
                reason,
                renews_certificate_id,
                ..
            } => renewal = Some((reason, renews_certificate_id)),
            CustomDomainEvent::RenewalFailed { .. } => renewal = None,
            CustomDomainEvent::CertificateIssued {
                certificate,
                issued_at,
            } => {
                let renewed = renewal.take();
                items.push(CertificateHistoryItem {
                    names: certificate_names(&certificate.chain_pem),
                    issuer: certificate_issuer(&certificate.chain_pem),
                    id: certificate.certificate_id,
                    order_id: certificate.order_id,
                    serial: certificate.serial,
                    not_before: certificate.not_before,
                    not_after: certificate.not_after,
                    issued_at,
                    renewal_reason: renewed.as_ref().map(|(reason, _)| *reason),
                    replaced: renewed.map(|(_, replaced)| replaced),
                    current: false,
                });
            }
            _ => {}
        }
    }
    if let Some(last) = items.last_mut() {
        last.current = true;
    }
    items.reverse();
    Ok(HttpResponse::Ok().json(CertificateHistory { items }))
}
