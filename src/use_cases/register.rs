//! Registering a domain, and replacing its alt names: the names are claimed in the store
//! before the aggregate records them, so no two live domains hold one name.

use chrono::Utc;
use cqrs_es::AggregateError;
use dns_handling_projections::DomainView;
use rand::RngCore;

use super::command::execute;
use super::{live_view, DomainMissing};
use crate::adapters::store::{NameClaim, StoreError, TenantClaim};
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::domain::alt_names::{AltNameError, AltNames};
use crate::domain::domain_name::{DomainName, DomainNameError};
use crate::domain::tenant::{TenantId, TenantIdError};

/// Why a domain's names were not recorded.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    /// The domain name is not a host name.
    #[error(transparent)]
    DomainName(#[from] DomainNameError),
    /// An alt name is not one of the domain's.
    #[error(transparent)]
    AltNames(#[from] AltNameError),
    /// The tenant id breaks the rule of tenant ids.
    #[error(transparent)]
    Tenant(#[from] TenantIdError),
    /// The tenant already holds `TENANT_DOMAIN_LIMIT` domains.
    #[error("tenant {tenant} already holds {limit} domains, the most TENANT_DOMAIN_LIMIT allows")]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// `TENANT_DOMAIN_LIMIT`.
        limit: u32,
    },
    /// Another live domain holds a name: its own name, or one of its alt names.
    #[error("{}", if *.own { format!("domain_name {name} is already registered") } else { format!("alt name {name} is already a name of another domain") })]
    Taken {
        /// The name.
        name: String,
        /// It is the domain's own name (not an alt name).
        own: bool,
    },
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The domain's stored name no longer parses.
    #[error("stored domain name is unreadable: {0}")]
    StoredNameUnreadable(#[source] DomainNameError),
    /// The aggregate refused.
    #[error(transparent)]
    Refused(DomainError),
    /// The names could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The claims on names, or the domain, could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(NamesError);

fn random_token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    crate::adapters::acme::hex(&bytes)
}

/// Registers `domain_name` with `alt_names` under a new id, with a fresh verification token,
/// and answers its view.
pub async fn register(
    state: &AppState,
    domain_name: &str,
    alt_names: &[String],
    origin: CommandOrigin,
) -> Result<DomainView, NamesError> {
    register_for(state, domain_name, alt_names, None, origin).await
}

/// Registers `domain_name` as [`register`] does, as a domain of `tenant` when given: refused,
/// with nothing stored, when the tenant id breaks the rule or the tenant already holds
/// `TENANT_DOMAIN_LIMIT` domains.
pub async fn register_for(
    state: &AppState,
    domain_name: &str,
    alt_names: &[String],
    tenant: Option<&str>,
    origin: CommandOrigin,
) -> Result<DomainView, NamesError> {
    let domain_name = DomainName::parse(domain_name)?;
    let alt_names = AltNames::parse(&domain_name, alt_names)?;
    let tenant = tenant.map(TenantId::parse).transpose()?;
    let id = uuid::Uuid::now_v7().to_string();
    let names: Vec<String> = std::iter::once(domain_name.to_string())
        .chain(alt_names.as_slice().iter().cloned())
        .collect();
    let limit = state.settings.tenant_domain_limit;
    let claim = tenant.as_ref().map(|tenant| TenantClaim {
        tenant: tenant.as_str(),
        limit,
    });
    match state.store.claim_names(&names, &id, claim).await? {
        NameClaim::Claimed => {}
        NameClaim::Taken(taken) => return Err(name_taken(taken, &domain_name)),
        NameClaim::TenantFull => {
            return Err(NamesError::TenantFull {
                tenant: tenant.map(TenantId::into_string).unwrap_or_default(),
                limit: limit.unwrap_or_default(),
            })
        }
    }
    let verification_record_name = format!(
        "{}.{}.",
        state.settings.verification_record_prefix, domain_name
    );
    let command = CustomDomainCommand::RegisterDomain {
        domain_name,
        verification_token: random_token(),
        verification_record_name,
        alt_names,
        tenant,
        at: Utc::now(),
    };
    if let Err(error) = execute(state, &id, command, origin).await {
        // Nothing was recorded: give the names back so the client can simply try again.
        state.store.release_names(&names, &id).await?;
        return Err(error.into());
    }
    live_view(state, &id).await
}

/// Replaces the domain's further names; the next order (issuance, retry or renewal) covers the
/// new set, a pending order keeps the names it was placed with. Under the domain's lock, so the
/// set does not change between an issuance's reading the names and recording its order.
pub async fn replace_alt_names(
    state: &AppState,
    domain_id: &str,
    alt_names: &[String],
    origin: CommandOrigin,
) -> Result<DomainView, NamesError> {
    let lock = state.domain_locks.lock_for(domain_id);
    let _held = lock.lock().await;
    let view = live_view::<NamesError>(state, domain_id).await?;
    let domain_name =
        DomainName::parse(&view.domain_name).map_err(NamesError::StoredNameUnreadable)?;
    let alt_names = AltNames::parse(&domain_name, alt_names)?;
    // New names are claimed before the set is recorded; the names the new set drops are given
    // back by the projection write that records it (so a crash in between loses nothing).
    let added: Vec<String> = alt_names
        .as_slice()
        .iter()
        .filter(|name| !view.alt_names.contains(name))
        .cloned()
        .collect();
    if let Some(taken) = state.store.reserve_names(&added, domain_id).await? {
        return Err(name_taken(taken, &domain_name));
    }
    let command = CustomDomainCommand::ReplaceAltNames {
        alt_names,
        at: Utc::now(),
    };
    if let Err(error) = execute(state, domain_id, command, origin).await {
        state.store.release_names(&added, domain_id).await?;
        return Err(error.into());
    }
    live_view(state, domain_id).await
}

/// The refusal of a name another live domain holds.
fn name_taken(name: String, domain_name: &DomainName) -> NamesError {
    let own = name == domain_name.as_str();
    NamesError::Taken { name, own }
}
