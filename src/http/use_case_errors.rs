//! What each use case's error answers a client: every `From` into [`ApiError`] of the errors of
//! `use_cases/`, in one place. The causes they wrap (the CA's, the store's, the aggregate's)
//! answer as `ApiError` maps them.

use cqrs_es::AggregateError;

use super::bodies::{CaaAllowsOther, CaaRefusalBody};
use super::ApiError;
use crate::adapters::acme::AcmeError;
use crate::read::edge_material::MaterialError;
use crate::use_cases::access_tokens::AccessTokensError;
use crate::use_cases::caa::CaaForbids;
use crate::use_cases::edge_certificate::EdgeCertificateError;
use crate::use_cases::health::HealthError;
use crate::use_cases::issue::IssueError;
use crate::use_cases::keys::KeyError;
use crate::use_cases::register::NamesError;
use crate::use_cases::renew::RenewError;
use crate::use_cases::revoke::RevokeError;
use crate::use_cases::verify::VerifyError;
use crate::use_cases::DomainMissing;

impl From<DomainMissing> for ApiError {
    fn from(missing: DomainMissing) -> Self {
        Self::NotFound(missing.to_string())
    }
}

impl From<AccessTokensError> for ApiError {
    fn from(error: AccessTokensError) -> Self {
        match error {
            AccessTokensError::Command(error) => error.into(),
            AccessTokensError::Store(error) => error.into(),
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        match error {
            IssueError::Missing(missing) => missing.into(),
            IssueError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            IssueError::Ca(error) => error.into(),
            IssueError::Caa(forbids) => forbids.into(),
            IssueError::Command(error) => error.into(),
            IssueError::Store(error) => error.into(),
        }
    }
}

impl From<RenewError> for ApiError {
    fn from(error: RenewError) -> Self {
        match error {
            RenewError::Missing(missing) => missing.into(),
            RenewError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            RenewError::Ca(error) => error.into(),
            RenewError::Caa(forbids) => forbids.into(),
            RenewError::Command(error) => error.into(),
            RenewError::Busy(why) => Self::Conflict(format!(
                "{why}; nothing was asked of the CA, try again shortly"
            )),
            RenewError::Store(error) => error.into(),
        }
    }
}

impl From<CaaForbids> for ApiError {
    /// `409 caa_forbids`, naming every refusal: the records that forbid, the one that would
    /// allow, the one that allows another CA.
    fn from(forbids: CaaForbids) -> Self {
        let caa: Vec<CaaRefusalBody> = forbids
            .refusals
            .iter()
            .map(|refusal| CaaRefusalBody {
                ca: refusal.directory.clone(),
                name: refusal.name.clone(),
                found_at: refusal.found_at.clone(),
                forbidding: refusal.forbidding.clone(),
                would_allow: refusal.would_allow.clone(),
                allows_other: refusal
                    .allows_other
                    .as_ref()
                    .map(|(ca, record)| CaaAllowsOther {
                        ca: ca.clone(),
                        record: record.clone(),
                    }),
            })
            .collect();
        Self::CaaForbids {
            message: forbids.to_string(),
            // Plain strings and lists: serializing them cannot fail.
            caa: serde_json::to_value(caa).unwrap_or_default(),
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::Missing(missing) => missing.into(),
            error @ RevokeError::NoCertificate { .. } => Self::NotFound(error.to_string()),
            error @ (RevokeError::AlreadyRevoked(_) | RevokeError::Expired { .. }) => {
                Self::BadRequest(error.to_string())
            }
            // The CA's final word on this certificate: the client's to act on.
            RevokeError::Ca(AcmeError::Refused(reason)) => Self::BadRequest(format!(
                "the CA refused to revoke the certificate ({}): {}; nothing was recorded",
                reason.code, reason.detail
            )),
            RevokeError::Ca(error) => error.into(),
            RevokeError::RetiredCa {
                domain_id,
                certificate_id,
                directory,
                source,
            } => retired_ca_failed(&domain_id, &certificate_id, &directory, source),
            RevokeError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            RevokeError::Command(error) => error.into(),
            RevokeError::Store(error) => error.into(),
        }
    }
}

/// What a revocation answers when the CA that issued the certificate is no longer configured
/// and could not revoke it: `409` when no account for it is stored (retrying cannot help), `502`
/// when it could not be asked; a refusal of the CA and an unreachable store answer as usual.
/// The message names the CA and says that removing the domain without `revoke=true` works.
fn retired_ca_failed(
    domain_id: &str,
    certificate_id: &str,
    directory: &str,
    error: AcmeError,
) -> ApiError {
    let anyway = format!(
        "nothing was revoked or recorded; DELETE /domains/{domain_id} without revoke=true \
         removes the domain anyway (the certificate then stays valid at that CA until its end)"
    );
    match error {
        AcmeError::NoStoredAccount { .. } => ApiError::Conflict(format!(
            "certificate {certificate_id} was issued by {directory}, which is no longer \
             configured (ACME_DIRECTORY, ACME_FALLBACK_ISSUERS), and no ACME account for it is \
             stored to revoke it with: {anyway}"
        )),
        error @ (AcmeError::Refused(_) | AcmeError::Vault(_)) => error.into(),
        error => {
            let message = format!(
                "certificate {certificate_id} was issued by {directory}, which is no longer \
                 configured, and that CA could not be asked to revoke it: retry later, or \
                 {anyway}"
            );
            ApiError::bad_gateway(message, error)
        }
    }
}

impl From<NamesError> for ApiError {
    fn from(error: NamesError) -> Self {
        match error {
            error @ NamesError::TenantFull { .. } => Self::Forbidden(error.to_string()),
            error @ (NamesError::DomainName(_)
            | NamesError::AltNames(_)
            | NamesError::Tenant(_)) => Self::BadRequest(error.to_string()),
            error @ NamesError::Taken { .. } => Self::Conflict(error.to_string()),
            NamesError::Missing(missing) => missing.into(),
            error @ NamesError::StoredNameUnreadable(_) => {
                Self::internal_from("stored domain name is unreadable", error)
            }
            NamesError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            NamesError::Command(error) => error.into(),
            NamesError::Store(error) => error.into(),
        }
    }
}

impl From<HealthError> for ApiError {
    fn from(error: HealthError) -> Self {
        match error {
            HealthError::Missing(missing) => missing.into(),
            HealthError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            HealthError::Command(error) => error.into(),
            HealthError::Store(error) => error.into(),
        }
    }
}

impl From<VerifyError> for ApiError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Missing(missing) => missing.into(),
            VerifyError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            VerifyError::Lookup(error) => Self::FailedDependency(error.to_string()),
            VerifyError::Command(error) => error.into(),
            VerifyError::Store(error) => error.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Missing(missing) => missing.into(),
            error @ (KeyError::NoCertificate { .. } | KeyError::Destroyed { .. }) => {
                Self::NotFound(error.to_string())
            }
            KeyError::Refused(refusal) => AggregateError::UserError(refusal).into(),
            KeyError::Command(error) => error.into(),
            KeyError::Vault(error) => error.into(),
            KeyError::Store(error) => error.into(),
        }
    }
}

impl From<EdgeCertificateError> for ApiError {
    fn from(error: EdgeCertificateError) -> Self {
        match error {
            EdgeCertificateError::BadName(why) => Self::BadRequest(why),
            EdgeCertificateError::Material(MaterialError::Store(error)) => error.into(),
            EdgeCertificateError::Material(MaterialError::Vault(error)) => error.into(),
            EdgeCertificateError::Command(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError as _;
    use dns_handling_events::FailureReason;

    use super::*;

    #[test]
    fn a_revocation_the_ca_refuses_answers_400_and_says_the_revocation_was_refused() {
        let refused = AcmeError::Refused(FailureReason::new(
            "revocation_refused",
            "urn:ietf:params:acme:error:unauthorized: not the key holder",
        ));
        let answer = ApiError::from(RevokeError::Ca(refused));
        assert_eq!(answer.status_code(), 400);
        let text = answer.to_string();
        assert!(
            text.starts_with("the CA refused to revoke the certificate (revocation_refused)")
                && text.contains("not the key holder")
                && !text.contains("order"),
            "{text}"
        );
    }
}
