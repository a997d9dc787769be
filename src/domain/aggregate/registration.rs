//! Registration: the domain is registered, its further names replaced, its ownership proven,
//! and at last it is removed (its history stays).

use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, DomainStatus, OwnershipProof};

use super::{CustomDomain, DomainError};
use crate::domain::alt_names::AltNames;
use crate::domain::delegation::{DelegationRecord, DelegationZone};
use crate::domain::domain_name::DomainName;
use crate::domain::tenant::TenantId;

/// The commands.
impl CustomDomain {
    pub(super) fn register(
        &self,
        domain_name: DomainName,
        verification_token: String,
        verification_record_name: String,
        alt_names: AltNames,
        tenant: Option<TenantId>,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        if self.registered {
            return Err(DomainError::AlreadyRegistered);
        }
        Ok(CustomDomainEvent::DomainRegistered {
            domain_name: domain_name.into_string(),
            verification_token,
            verification_record_name,
            registered_at: at,
            alt_names: alt_names.into_vec(),
            tenant: tenant.map(TenantId::into_string),
        })
    }

    /// A set equal to the current one records nothing: replacing is idempotent.
    pub(super) fn replace_alt_names(
        &self,
        alt_names: AltNames,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        self.require_registered()?;
        if alt_names.as_slice() == self.alt_names.as_slice() {
            return Ok(None);
        }
        Ok(Some(CustomDomainEvent::AltNamesReplaced {
            alt_names: alt_names.into_vec(),
            replaced_at: at,
        }))
    }

    pub(super) fn verify(
        &self,
        observed_values: Vec<String>,
        delegation: Option<(DelegationRecord, Option<String>)>,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Pending)?;
        // Exact comparison: a token differing in case or quoting is a different token.
        if observed_values.contains(&self.verification_token) {
            return Ok(CustomDomainEvent::OwnershipVerified {
                observed_values,
                proof: OwnershipProof::Txt,
                cname_target: None,
                verified_at: at,
            });
        }
        // Pointing `_acme-challenge` of a name at the platform takes control of the name's zone,
        // as publishing the token does.
        let delegation_problem = match &delegation {
            Some((record, seen)) => match DelegationZone::problem_with(record, seen.as_deref()) {
                None => {
                    return Ok(CustomDomainEvent::OwnershipVerified {
                        observed_values,
                        proof: OwnershipProof::Cname,
                        cname_target: seen.clone(),
                        verified_at: at,
                    })
                }
                problem => problem,
            },
            None => None,
        };
        Err(DomainError::TokenNotFound {
            record_name: self.verification_record_name.clone(),
            found: observed_values,
            delegation_problem,
        })
    }

    pub(super) fn remove(&self, at: DateTime<Utc>) -> Result<CustomDomainEvent, DomainError> {
        self.require_registered()?;
        Ok(CustomDomainEvent::DomainRemoved {
            domain_name: self.domain_name.clone(),
            removed_at: at,
        })
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_registered(
        &mut self,
        domain_name: String,
        verification_token: String,
        verification_record_name: String,
        alt_names: Vec<String>,
    ) {
        self.registered = true;
        self.domain_name = domain_name;
        self.alt_names = alt_names;
        self.verification_token = verification_token;
        self.verification_record_name = verification_record_name;
        self.status = DomainStatus::Pending;
    }

    pub(super) fn fold_alt_names_replaced(&mut self, alt_names: Vec<String>) {
        self.alt_names = alt_names;
    }

    pub(super) fn fold_ownership_verified(&mut self) {
        self.status = DomainStatus::Verified;
    }

    pub(super) fn fold_removed(&mut self) {
        self.removed = true;
        self.open_order = None;
    }
}
