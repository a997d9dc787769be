//! Why a command was refused: the aggregate's one error, business meaning only.

use chrono::{DateTime, Utc};
use dns_handling_events::DomainStatus;

/// Why a command was refused. Business meaning only; the HTTP layer maps it to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The aggregate already holds a registration.
    #[error("domain is already registered")]
    AlreadyRegistered,
    /// Any command but a registration on an aggregate without one.
    #[error("domain not found")]
    NotRegistered,
    /// Any command on a removed domain.
    #[error("domain was removed")]
    Removed,
    /// A key read for a certificate that is not the domain's current one.
    #[error("certificate {certificate_id} is not the domain's current certificate")]
    NotCurrentCertificate {
        /// The certificate named.
        certificate_id: String,
    },
    /// The command is not allowed in the domain's current status.
    #[error("domain status is {actual}; this requires status {required}")]
    WrongStatus {
        /// The status the command needs.
        required: DomainStatus,
        /// The status the domain has.
        actual: DomainStatus,
    },
    /// Verification found no TXT value equal to the token.
    #[error("verification token not found in TXT records at {record_name}; found {}{}", describe_values(.found), .delegation_problem.as_ref().map(|problem| format!("; and {problem}")).unwrap_or_default())]
    TokenNotFound {
        /// Where it was looked for.
        record_name: String,
        /// What was there.
        found: Vec<String>,
        /// Why the delegation CNAME did not prove ownership either, when delegation is on.
        delegation_problem: Option<String>,
    },
    /// A renewal asked for while one is in progress.
    #[error("a renewal is in progress already (order {order_id})")]
    RenewalInProgress {
        /// The open renewal order.
        order_id: String,
    },
    /// A scheduled renewal asked for before it is due (or before a failed attempt's retry time).
    #[error("the renewal is not due before {due_at}")]
    RenewalNotDue {
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// A scheduled renewal asked for with no schedule recorded.
    #[error("no renewal is scheduled for the current certificate")]
    NoRenewalScheduled,
    /// An expiry recorded before the certificate's end of validity.
    #[error("the certificate is valid until {not_after}")]
    NotExpiredYet {
        /// Its end of validity.
        not_after: DateTime<Utc>,
    },
    /// A revocation of a certificate revoked already.
    #[error("certificate {certificate_id} is revoked already")]
    AlreadyRevoked {
        /// The certificate.
        certificate_id: String,
    },
    /// A key asked for that is no longer available.
    #[error("the key of certificate {certificate_id} is no longer available: {reason}")]
    KeyUnavailable {
        /// The certificate.
        certificate_id: String,
        /// Why.
        reason: String,
    },
    /// A second destruction of one key.
    #[error("the key of order {order_id} was destroyed already")]
    KeyAlreadyDestroyed {
        /// The order.
        order_id: String,
    },
    /// A report about an order that is not the domain's open order.
    #[error("order {order_id} is not the domain's open order")]
    UnknownOrder {
        /// The order named in the command.
        order_id: String,
    },
    /// The poller reported values that do not contain a challenge's expected one.
    #[error("the challenge value of {identifier} is not among the values observed at {challenge_domain}")]
    ChallengeValueMissing {
        /// The name whose value is missing.
        identifier: String,
        /// Where it was looked for.
        challenge_domain: String,
    },
    /// An order that does not cover exactly the domain's names (they changed after the order
    /// was placed).
    #[error("the order covers {}, but the domain's names are now {}; ask for the certificate again", .ordered.join(", "), .expected.join(", "))]
    OrderNamesMismatch {
        /// The domain's names now.
        expected: Vec<String>,
        /// The names the order covers.
        ordered: Vec<String>,
    },
    /// The record was reported after the order's deadline had passed.
    #[error("the order's deadline {deadline} has passed")]
    DeadlinePassed {
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
    /// A timeout was reported before the order's deadline.
    #[error("the order's deadline {deadline} has not passed yet")]
    DeadlineNotReached {
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
    /// A certificate was reported before its challenge record was observed.
    #[error("the challenge record of order {order_id} has not been observed yet")]
    RecordNotObserved {
        /// The open order.
        order_id: String,
    },
}

fn describe_values(values: &[String]) -> String {
    if values.is_empty() {
        "no TXT records".to_owned()
    } else {
        format!("{values:?}")
    }
}
