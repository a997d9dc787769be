use chrono::{Duration, TimeZone};
use dns_handling_events::{
    CertificateKeyType, FailureReason, IssuedCertificate, RenewalReason, RevocationReason,
    Validation,
};

use super::*;

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("a time")
        + Duration::minutes(minutes)
}

fn order(id: &str, validation: Validation) -> OrderDetails {
    OrderDetails {
        order_id: id.into(),
        order_url: format!("https://ca.test/order/{id}"),
        names: vec!["shop.example.com".into(), "*.shop.example.com".into()],
        challenges: vec![],
        account_id: "acct".into(),
        poll_interval_ms: 1000,
        deadline: at(600),
        key_type: CertificateKeyType::EcdsaP256,
        validation,
        delegation_problem: None,
        ca_directory: "https://ca.test/dir".into(),
    }
}

fn issued(certificate_id: &str, order_id: &str, minutes: i64) -> CustomDomainEvent {
    CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: certificate_id.into(),
            order_id: order_id.into(),
            serial: format!("{certificate_id}-serial"),
            not_before: at(minutes),
            not_after: at(minutes + 90 * 24 * 60),
            fingerprint_sha256: "ff".into(),
            chain_pem: String::new(),
            ca_directory: "https://ca.test/dir".into(),
        },
        issued_at: at(minutes),
    }
}

/// A registration, a timed-out first order, a retry that issues; a renewal by ARI that fails
/// once and then issues; a revocation of the renewed certificate.
fn history() -> Vec<CustomDomainEvent> {
    vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: "shop.example.com".into(),
            verification_token: "t".into(),
            verification_record_name: "_dns-handling.shop.example.com.".into(),
            registered_at: at(0),
            alt_names: vec!["*.shop.example.com".into()],
            tenant: None,
        },
        CustomDomainEvent::CertificateRequested {
            order: order("o1", Validation::Manual),
            requested_at: at(1),
        },
        CustomDomainEvent::IssuanceTimedOut {
            order_id: "o1".into(),
            deadline: at(11),
            unseen_names: vec![],
            timed_out_at: at(11),
        },
        CustomDomainEvent::IssuanceRetried {
            previous_reason: FailureReason::new("dns_timeout", "late"),
            retried_at: at(20),
        },
        CustomDomainEvent::CertificateRequested {
            order: order("o2", Validation::Delegated),
            requested_at: at(21),
        },
        issued("c1", "o2", 24),
        CustomDomainEvent::RenewalRequested {
            order: order("o3", Validation::Delegated),
            reason: RenewalReason::Ari,
            renews_certificate_id: "c1".into(),
            replaces: Some("ari-id".into()),
            requested_at: at(60 * 24 * 60),
        },
        CustomDomainEvent::RenewalFailed {
            order_id: Some("o3".into()),
            reason: FailureReason::new("challenge_invalid", "wrong value"),
            attempt: 1,
            next_attempt_at: at(60 * 24 * 60 + 60),
            failed_at: at(60 * 24 * 60 + 5),
        },
        CustomDomainEvent::RenewalRequested {
            order: order("o4", Validation::Delegated),
            reason: RenewalReason::Ari,
            renews_certificate_id: "c1".into(),
            replaces: Some("ari-id".into()),
            requested_at: at(60 * 24 * 60 + 60),
        },
        issued("c2", "o4", 60 * 24 * 60 + 62),
        CustomDomainEvent::CertificateRevoked {
            certificate_id: "c2".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: at(61 * 24 * 60),
        },
    ]
}

fn ledger_of(events: &[CustomDomainEvent]) -> CertificateLedger {
    let mut ledger = CertificateLedger::default();
    for event in events {
        ledger.apply("d1", event);
    }
    ledger
}

#[test]
fn a_retried_first_certificate_counts_its_attempts_and_its_time_to_issue_from_the_order_that_gave_it(
) {
    let ledger = ledger_of(&history());
    let first = &ledger.rows()[0];
    assert_eq!(first.status, "issued");
    assert_eq!(first.certificate_id.as_deref(), Some("c1"));
    assert_eq!(first.domain_name.as_deref(), Some("shop.example.com"));
    assert_eq!(first.attempts, 2);
    assert_eq!(first.failure_codes, ["dns_timeout"]);
    assert_eq!(first.first_requested_at, at(1));
    assert_eq!(first.requested_at, at(21));
    assert_eq!(first.validation, "delegated");
    assert_eq!(first.key_type, "ecdsa-p256");
    assert_eq!(first.names, "shop.example.com,*.shop.example.com");
    assert_eq!(first.renewal_reason, None);
    let cells = first.cells();
    assert_eq!(cells.len(), CERTIFICATE_COLUMNS.len());
    assert_eq!(cells[8], Some(Cell::Int(3 * 60)), "seconds_to_issue");
}

#[test]
fn a_renewal_names_its_reason_the_certificate_it_replaces_and_what_became_of_it() {
    let ledger = ledger_of(&history());
    assert_eq!(ledger.rows().len(), 2);
    let renewal = &ledger.rows()[1];
    assert_eq!(renewal.status, "issued");
    assert_eq!(renewal.certificate_id.as_deref(), Some("c2"));
    assert_eq!(renewal.renewal_reason, Some("ari"));
    assert_eq!(renewal.replaced_certificate_id.as_deref(), Some("c1"));
    assert_eq!(renewal.replaced_not_after, Some(at(24 + 90 * 24 * 60)));
    assert_eq!(renewal.attempts, 2);
    assert_eq!(renewal.failure_codes, ["challenge_invalid"]);
    assert_eq!(
        renewal.cells()[16],
        Some(Cell::Int((30 * 24 * 60 - 38) * 60)),
        "seconds_before_replaced_expiry"
    );
    assert_eq!(renewal.revoked_at, Some(at(61 * 24 * 60)));
    assert_eq!(renewal.revocation_reason.as_deref(), Some("keyCompromise"));
    assert_eq!(ledger.rows()[0].revoked_at, None);
}

#[test]
fn a_domain_whose_only_order_failed_has_a_failed_row_without_a_certificate() {
    let events = history();
    let ledger = ledger_of(&events[..3]);
    let row = &ledger.rows()[0];
    assert_eq!(row.status, "failed");
    assert_eq!(row.certificate_id, None);
    assert_eq!(row.issued_at, None);
    assert_eq!(row.cells()[8], None, "no time to issue");
}
