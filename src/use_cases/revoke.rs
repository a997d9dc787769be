//! Revoking a domain's certificate at the CA that issued it (configured or not any more),
//! recording it, and ordering its replacement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::{DomainStatus, RenewalReason, RevocationReason};
use dns_handling_projections::DomainView;

use super::command::execute;
use super::renew::{start_renewal, RenewError};
use super::{live_view, DomainMissing, Pollers};
use crate::adapters::acme::AcmeError;
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};

/// Why a certificate was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The domain has no certificate.
    #[error("domain {domain_id} has no certificate to revoke (status: {status})")]
    NoCertificate {
        /// The domain.
        domain_id: String,
        /// Its status.
        status: DomainStatus,
    },
    /// The certificate is revoked already.
    #[error("certificate {0} is revoked already")]
    AlreadyRevoked(String),
    /// The certificate is past its end: nothing to revoke.
    #[error("certificate {certificate_id} expired at {not_after}; there is nothing to revoke")]
    Expired {
        /// The certificate.
        certificate_id: String,
        /// Its end of validity.
        not_after: DateTime<Utc>,
    },
    /// The CA that issued it, configured, could not revoke it: nothing was recorded.
    #[error(transparent)]
    Ca(#[from] AcmeError),
    /// The CA that issued it is no longer configured and could not revoke it: nothing was
    /// revoked or recorded.
    #[error("the CA {directory}, no longer configured, could not revoke certificate {certificate_id}: {source}")]
    RetiredCa {
        /// The domain.
        domain_id: String,
        /// The certificate.
        certificate_id: String,
        /// The retired CA's directory.
        directory: String,
        /// What it answered.
        #[source]
        source: AcmeError,
    },
    /// The aggregate refused to record the revocation.
    #[error(transparent)]
    Refused(DomainError),
    /// The revocation could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The domain or its certificate could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(RevokeError);

/// Revokes the domain's current certificate at the CA and records it, then orders its
/// replacement at once unless a renewal is open or the certificate in service is no longer the
/// revoked one (the scheduler orders it at its next tick if the CA cannot be asked now).
/// Answers the domain as it stands after.
pub async fn revoke(
    state: &AppState,
    pollers: &dyn Pollers,
    domain_id: &str,
    reason: RevocationReason,
    origin: CommandOrigin,
) -> Result<DomainView, RevokeError> {
    let lock = state.domain_locks.lock_for(domain_id);
    let _held = lock.lock().await;
    let view = live_view::<RevokeError>(state, domain_id).await?;
    let Some(certificate) = &view.certificate else {
        return Err(RevokeError::NoCertificate {
            domain_id: domain_id.to_owned(),
            status: view.status,
        });
    };
    if certificate.revoked_at.is_some() {
        return Err(RevokeError::AlreadyRevoked(certificate.id.clone()));
    }
    if certificate.not_after <= Utc::now() {
        return Err(RevokeError::Expired {
            certificate_id: certificate.id.clone(),
            not_after: certificate.not_after,
        });
    }
    revoke_current(state, &view, reason, origin.clone()).await?;
    let view = live_view::<RevokeError>(state, domain_id).await?;
    let renewing = view.renewal.as_ref().is_some_and(|r| r.in_progress);
    // A renewal issued between the CA's revocation and its record replaced the revoked
    // certificate already: the one in service now is not revoked and needs no replacement.
    let replaced = view
        .certificate
        .as_ref()
        .is_some_and(|current| current.revoked_at.is_none());
    if !renewing && !replaced {
        let started = start_renewal(state, pollers, &view, RenewalReason::Revoked, origin).await;
        match started {
            Ok(_) => {}
            // The scheduler saw the revoked certificate due and is starting its replacement
            // this very moment: the answer waits for it to show, as it would for this request's.
            Err(RenewError::Busy(_)) => return replacement_shown(state, domain_id).await,
            Err(error) => {
                tracing::warn!(%domain_id, %error, "replacement not ordered yet; the renewal scheduler will");
            }
        }
    }
    live_view(state, domain_id).await
}

/// How long a revocation's answer waits for a replacement another starter is ordering.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(5);

/// The domain once its replacement shows in progress (or is issued), or as it stands after
/// [`REPLACEMENT_WAIT`] if the other starter could not order it (its scheduler retries).
async fn replacement_shown(state: &AppState, domain_id: &str) -> Result<DomainView, RevokeError> {
    let deadline = tokio::time::Instant::now() + REPLACEMENT_WAIT;
    loop {
        let view = live_view::<RevokeError>(state, domain_id).await?;
        let under_way = view.renewal.as_ref().is_some_and(|r| r.in_progress)
            || view
                .certificate
                .as_ref()
                .is_some_and(|c| c.revoked_at.is_none());
        if under_way || tokio::time::Instant::now() >= deadline {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Revokes the domain's current certificate at the CA and records it; answers false when there
/// is nothing to revoke (no certificate, or one revoked or expired already).
pub async fn revoke_current(
    state: &AppState,
    view: &DomainView,
    reason: RevocationReason,
    origin: CommandOrigin,
) -> Result<bool, RevokeError> {
    let revocable = view
        .certificate
        .as_ref()
        .is_some_and(|c| c.revoked_at.is_none() && c.not_after > Utc::now());
    if !revocable {
        return Ok(false);
    }
    let Some(certificate) = state.store.certificate_view(&view.id).await? else {
        return Ok(false);
    };
    // Only the CA that issued it can revoke it, configured or not any more.
    let retired = state
        .issuers
        .configured_at(&certificate.ca_directory)
        .is_none();
    let ca = state.issuers.at(&certificate.ca_directory);
    match ca.revoke(&certificate.chain_pem, reason).await {
        Ok(()) => {}
        // Revoked at the CA by an earlier call whose record did not go through: record it now.
        Err(AcmeError::Refused(refusal)) if refusal.detail.contains("alreadyRevoked") => {}
        Err(source) if retired => {
            return Err(RevokeError::RetiredCa {
                domain_id: view.id.clone(),
                certificate_id: certificate.id,
                directory: certificate.ca_directory,
                source,
            })
        }
        Err(error) => return Err(error.into()),
    }
    let command = CustomDomainCommand::RevokeCertificate {
        certificate_id: certificate.id,
        reason,
        at: Utc::now(),
    };
    execute(state, &view.id, command, origin).await?;
    Ok(true)
}
