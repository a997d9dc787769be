//! Handing out a certificate's private key, for the platform's TLS edge: every read is
//! recorded before the key leaves, and a key whose record cannot be written is not handed out.

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::DomainStatus;
use dns_handling_projections::CertificateView;

use super::command::execute;
use super::{live_view, DomainMissing};
use crate::adapters::store::StoreError;
use crate::adapters::vault::VaultError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};

/// Why no key was handed out.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The domain has no certificate yet.
    #[error("domain {domain_id} has no certificate yet (status: {status})")]
    NoCertificate {
        /// The domain.
        domain_id: String,
        /// Its status.
        status: DomainStatus,
    },
    /// The key was destroyed (its certificate expired, or was replaced and then expired).
    #[error("{}", match .expired_at { Some(at) => format!("the private key of certificate {certificate_id} was destroyed (it expired at {at})"), None => format!("the key of certificate {certificate_id} was destroyed") })]
    Destroyed {
        /// The certificate.
        certificate_id: String,
        /// When it expired, for the current certificate.
        expired_at: Option<DateTime<Utc>>,
    },
    /// The aggregate refused to record the read (the key is no longer to be handed out).
    #[error(transparent)]
    Refused(DomainError),
    /// The read could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The key could not be read from the vault.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The domain could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(KeyError);

/// A private key handed out, its read recorded.
#[derive(Debug, Clone)]
pub struct HandedKey {
    /// The domain.
    pub domain_id: String,
    /// The certificate whose key it is.
    pub certificate_id: String,
    /// The key, PEM.
    pub private_key_pem: String,
}

/// The domain's current certificate, unless it has none yet.
pub async fn current_certificate(
    state: &AppState,
    domain_id: &str,
) -> Result<CertificateView, KeyError> {
    let view = live_view::<KeyError>(state, domain_id).await?;
    state
        .store
        .certificate_view(&view.id)
        .await?
        .ok_or(KeyError::NoCertificate {
            domain_id: view.id,
            status: view.status,
        })
}

/// The current certificate's private key, handed to `reader`.
pub async fn current_key(
    state: &AppState,
    domain_id: &str,
    reader: String,
    origin: CommandOrigin,
) -> Result<HandedKey, KeyError> {
    let certificate = current_certificate(state, domain_id).await?;
    let key = state
        .vault
        .certificate_key(&certificate.order_id)
        .await?
        .ok_or_else(|| KeyError::Destroyed {
            certificate_id: certificate.id.clone(),
            expired_at: Some(certificate.not_after),
        })?;
    hand_out(state, domain_id, certificate.id, key, reader, origin).await
}

/// The private key of the domain's certificate `certificate_id` (issued for `order_id`),
/// current or one it replaced, handed to `reader`.
pub async fn past_key(
    state: &AppState,
    domain_id: &str,
    certificate_id: String,
    order_id: &str,
    reader: String,
    origin: CommandOrigin,
) -> Result<HandedKey, KeyError> {
    let Some(key) = state.vault.certificate_key(order_id).await? else {
        return Err(KeyError::Destroyed {
            certificate_id,
            expired_at: None,
        });
    };
    hand_out(state, domain_id, certificate_id, key, reader, origin).await
}

/// Records who reads a certificate's private key, then answers it.
async fn hand_out(
    state: &AppState,
    domain_id: &str,
    certificate_id: String,
    key: String,
    reader: String,
    origin: CommandOrigin,
) -> Result<HandedKey, KeyError> {
    let command = CustomDomainCommand::RecordPrivateKeyRead {
        certificate_id: certificate_id.clone(),
        reader,
        at: Utc::now(),
    };
    execute(state, domain_id, command, origin).await?;
    Ok(HandedKey {
        domain_id: domain_id.to_owned(),
        certificate_id,
        private_key_pem: key,
    })
}
