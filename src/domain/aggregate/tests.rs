//! The aggregate's decisions, given/when/then: given the events so far, when a command
//! arrives, then these events (or this refusal).

use std::collections::BTreeMap;

use chrono::Duration;
use cqrs_es::test::TestFramework;
use dns_handling_events::{IssuedCertificate, KeyDisposal, RevocationReason};

use super::*;
use crate::domain::alt_names::AltNames;
use crate::domain::domain_name::DomainName;
use crate::domain::tenant::TenantId;

type DomainTest = TestFramework<CustomDomain>;

mod edge_reads;
mod health;

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid timestamp")
}

fn registered() -> CustomDomainEvent {
    CustomDomainEvent::DomainRegistered {
        domain_name: "shop.example.com".into(),
        verification_token: "token-123".into(),
        verification_record_name: "_acme-challenge.shop.example.com.".into(),
        registered_at: t(0),
        alt_names: vec![],
        tenant: None,
    }
}

/// A registration with `www` and the wildcard besides the domain itself.
fn registered_with_alt_names() -> CustomDomainEvent {
    CustomDomainEvent::DomainRegistered {
        domain_name: "shop.example.com".into(),
        verification_token: "token-123".into(),
        verification_record_name: "_acme-challenge.shop.example.com.".into(),
        registered_at: t(0),
        alt_names: vec!["www.shop.example.com".into(), "*.shop.example.com".into()],
        tenant: None,
    }
}

fn challenge(identifier: &str, value: &str) -> dns_handling_events::OrderChallenge {
    dns_handling_events::OrderChallenge {
        identifier: identifier.into(),
        challenge_url: format!("https://ca.test/chall/{identifier}"),
        challenge_domain: dns_handling_events::OrderChallenge::record_name(identifier),
        expected_txt_value: value.into(),
        delegated_to: None,
    }
}

/// An order for the three names of [`registered_with_alt_names`].
fn three_name_order() -> OrderDetails {
    OrderDetails {
        names: vec![
            "shop.example.com".into(),
            "www.shop.example.com".into(),
            "*.shop.example.com".into(),
        ],
        challenges: vec![
            challenge("shop.example.com", "apex-digest"),
            challenge("www.shop.example.com", "www-digest"),
            challenge("*.shop.example.com", "wildcard-digest"),
        ],
        ..order()
    }
}

fn observed_at(records: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    records
        .iter()
        .map(|(name, values)| {
            (
                (*name).to_owned(),
                values.iter().map(|value| (*value).to_owned()).collect(),
            )
        })
        .collect()
}

fn verified() -> CustomDomainEvent {
    CustomDomainEvent::OwnershipVerified {
        observed_values: vec!["token-123".into()],
        proof: dns_handling_events::OwnershipProof::Txt,
        cname_target: None,
        verified_at: t(1),
    }
}

fn order() -> OrderDetails {
    OrderDetails {
        order_id: "order-1".into(),
        order_url: "https://ca.test/order/1".into(),
        names: vec!["shop.example.com".into()],
        challenges: vec![challenge("shop.example.com", "digest")],
        account_id: "https://ca.test/acct/1".into(),
        poll_interval_ms: 10_000,
        deadline: t(2) + Duration::minutes(5),
        key_type: dns_handling_events::CertificateKeyType::Rsa2048,
        validation: dns_handling_events::Validation::Manual,
        delegation_problem: None,
        ca_directory: String::new(),
    }
}

fn requested() -> CustomDomainEvent {
    CustomDomainEvent::CertificateRequested {
        order: order(),
        requested_at: t(2),
    }
}

fn observed() -> CustomDomainEvent {
    CustomDomainEvent::ChallengeRecordObserved {
        order_id: "order-1".into(),
        observed_values: vec!["digest".into()],
        resolver: "127.0.0.1:53".into(),
        observed_at: t(20),
    }
}

fn certificate() -> IssuedCertificate {
    IssuedCertificate {
        certificate_id: "cert-1".into(),
        order_id: "order-1".into(),
        serial: "01".into(),
        not_before: t(0),
        not_after: t(90 * 86_400),
        fingerprint_sha256: "ab".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----".into(),
        ca_directory: String::new(),
    }
}

fn timed_out() -> CustomDomainEvent {
    CustomDomainEvent::IssuanceTimedOut {
        order_id: "order-1".into(),
        deadline: order().deadline,
        unseen_names: vec!["shop.example.com".into()],
        timed_out_at: order().deadline,
    }
}

fn register_command() -> CustomDomainCommand {
    CustomDomainCommand::RegisterDomain {
        domain_name: DomainName::parse("shop.example.com").expect("valid name"),
        verification_token: "token-123".into(),
        verification_record_name: "_acme-challenge.shop.example.com.".into(),
        alt_names: AltNames::default(),
        tenant: None,
        at: t(0),
    }
}

fn txt_observed(at: DateTime<Utc>, values: &[&str]) -> CustomDomainCommand {
    CustomDomainCommand::TxtObserved {
        order_id: "order-1".into(),
        observed_values: observed_at(&[("_acme-challenge.shop.example.com.", values)]),
        resolver: "127.0.0.1:53".into(),
        at,
    }
}

fn wrong_status(required: DomainStatus, actual: DomainStatus) -> DomainError {
    DomainError::WrongStatus { required, actual }
}

#[test]
fn registering_a_new_domain_records_it() {
    DomainTest::with(RenewalPolicy::default())
        .given_no_previous_events()
        .when(register_command())
        .then_expect_events(vec![registered()]);
}

#[test]
fn registering_twice_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(register_command())
        .then_expect_error(DomainError::AlreadyRegistered);
}

#[test]
fn any_command_on_an_unregistered_domain_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given_no_previous_events()
        .when(CustomDomainCommand::VerifyOwnership {
            delegation: None,
            observed_values: vec![],
            at: t(1),
        })
        .then_expect_error(DomainError::NotRegistered);
}

#[test]
fn verifying_with_the_token_among_the_values_records_ownership() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::VerifyOwnership {
            delegation: None,
            observed_values: vec!["token-123".into()],
            at: t(1),
        })
        .then_expect_events(vec![verified()]);
}

#[test]
fn verifying_with_a_different_case_of_the_token_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::VerifyOwnership {
            delegation: None,
            observed_values: vec!["TOKEN-123".into(), "\"token-123\"".into()],
            at: t(1),
        })
        .then_expect_error(DomainError::TokenNotFound {
            record_name: "_acme-challenge.shop.example.com.".into(),
            found: vec!["TOKEN-123".into(), "\"token-123\"".into()],
            delegation_problem: None,
        });
}

#[test]
fn verifying_a_verified_domain_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(CustomDomainCommand::VerifyOwnership {
            delegation: None,
            observed_values: vec!["token-123".into()],
            at: t(2),
        })
        .then_expect_error(wrong_status(DomainStatus::Pending, DomainStatus::Verified));
}

#[test]
fn requesting_a_certificate_for_a_verified_domain_records_the_order() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(2),
        })
        .then_expect_events(vec![requested()]);
}

#[test]
fn requesting_a_certificate_for_a_pending_domain_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(2),
        })
        .then_expect_error(wrong_status(DomainStatus::Verified, DomainStatus::Pending));
}

#[test]
fn requesting_a_second_certificate_while_one_is_pending_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(3),
        })
        .then_expect_error(wrong_status(
            DomainStatus::Verified,
            DomainStatus::CertificatePending,
        ));
}

#[test]
fn requesting_a_certificate_for_an_active_domain_is_refused() {
    let issued = CustomDomainEvent::CertificateIssued {
        certificate: certificate(),
        issued_at: t(30),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued,
        ])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(40),
        })
        .then_expect_error(wrong_status(DomainStatus::Verified, DomainStatus::Active));
}

#[test]
fn requesting_a_certificate_for_a_failed_domain_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), timed_out()])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(400),
        })
        .then_expect_error(wrong_status(DomainStatus::Verified, DomainStatus::Failed));
}

#[test]
fn the_expected_value_among_others_is_observed() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(txt_observed(t(20), &["other", "digest"]))
        .then_expect_events(vec![CustomDomainEvent::ChallengeRecordObserved {
            order_id: "order-1".into(),
            observed_values: vec!["other".into(), "digest".into()],
            resolver: "127.0.0.1:53".into(),
            observed_at: t(20),
        }]);
}

#[test]
fn observing_the_record_again_records_nothing_new() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), observed()])
        .when(txt_observed(t(30), &["digest"]))
        .then_expect_events(vec![]);
}

#[test]
fn txt_observed_without_the_expected_value_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(txt_observed(t(20), &["DIGEST", "\"digest\""]))
        .then_expect_error(DomainError::ChallengeValueMissing {
            identifier: "shop.example.com".into(),
            challenge_domain: "_acme-challenge.shop.example.com.".into(),
        });
}

#[test]
fn txt_observed_after_timeout_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), timed_out()])
        .when(txt_observed(t(20), &["digest"]))
        .then_expect_error(wrong_status(
            DomainStatus::CertificatePending,
            DomainStatus::Failed,
        ));
}

#[test]
fn txt_observed_past_the_deadline_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(txt_observed(
            order().deadline + Duration::seconds(1),
            &["digest"],
        ))
        .then_expect_error(DomainError::DeadlinePassed {
            deadline: order().deadline,
        });
}

#[test]
fn txt_observed_for_another_order_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::TxtObserved {
            order_id: "order-0".into(),
            observed_values: observed_at(&[("_acme-challenge.shop.example.com.", &["digest"])]),
            resolver: "r".into(),
            at: t(20),
        })
        .then_expect_error(DomainError::UnknownOrder {
            order_id: "order-0".into(),
        });
}

#[test]
fn finalizing_after_the_record_was_observed_issues_the_certificate() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), observed()])
        .when(CustomDomainCommand::OrderFinalized {
            certificate: certificate(),
            at: t(30),
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateIssued {
            certificate: certificate(),
            issued_at: t(30),
        }]);
}

#[test]
fn finalizing_before_the_record_was_observed_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::OrderFinalized {
            certificate: certificate(),
            at: t(30),
        })
        .then_expect_error(DomainError::RecordNotObserved {
            order_id: "order-1".into(),
        });
}

#[test]
fn finalizing_an_active_domain_again_is_refused() {
    let issued = CustomDomainEvent::CertificateIssued {
        certificate: certificate(),
        issued_at: t(30),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued,
        ])
        .when(CustomDomainCommand::OrderFinalized {
            certificate: certificate(),
            at: t(31),
        })
        .then_expect_error(wrong_status(
            DomainStatus::CertificatePending,
            DomainStatus::Active,
        ));
}

#[test]
fn a_ca_refusal_fails_the_issuance() {
    let reason = FailureReason::new("challenge_invalid", "urn:ietf:params:acme:error:dns");
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), observed()])
        .when(CustomDomainCommand::OrderFailed {
            order_id: "order-1".into(),
            reason: reason.clone(),
            at: t(25),
        })
        .then_expect_events(vec![CustomDomainEvent::IssuanceFailed {
            order_id: "order-1".into(),
            reason,
            failed_at: t(25),
        }]);
}

#[test]
fn a_failure_without_an_open_order_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(CustomDomainCommand::OrderFailed {
            order_id: "order-1".into(),
            reason: FailureReason::new("acme_error", "x"),
            at: t(25),
        })
        .then_expect_error(wrong_status(
            DomainStatus::CertificatePending,
            DomainStatus::Verified,
        ));
}

#[test]
fn timing_out_at_the_deadline_fails_the_issuance() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::TimedOut {
            order_id: "order-1".into(),
            unseen_names: vec!["shop.example.com".into()],
            at: order().deadline,
        })
        .then_expect_events(vec![timed_out()]);
}

#[test]
fn timing_out_after_the_record_was_seen_fails_the_issuance_as_acme_unavailable_not_dns_timeout() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), observed()])
        .when(CustomDomainCommand::TimedOut {
            order_id: "order-1".into(),
            unseen_names: vec!["shop.example.com".into()],
            at: order().deadline,
        })
        .then_expect_events(vec![CustomDomainEvent::IssuanceFailed {
            order_id: "order-1".into(),
            reason: FailureReason::new(
                FailureReason::ACME_UNAVAILABLE,
                format!(
                    "the challenge record was seen, but the CA did not complete the order before {}",
                    order().deadline
                ),
            ),
            failed_at: order().deadline,
        }]);
}

#[test]
fn timing_out_before_the_deadline_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::TimedOut {
            order_id: "order-1".into(),
            unseen_names: vec![],
            at: t(60),
        })
        .then_expect_error(DomainError::DeadlineNotReached {
            deadline: order().deadline,
        });
}

fn issued() -> CustomDomainEvent {
    CustomDomainEvent::CertificateIssued {
        certificate: certificate(),
        issued_at: t(30),
    }
}

#[test]
fn retrying_a_failed_domain_makes_it_verified_again() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), timed_out()])
        .when(CustomDomainCommand::RetryIssuance { at: t(400) })
        .then_expect_events(vec![CustomDomainEvent::IssuanceRetried {
            previous_reason: FailureReason::new(
                FailureReason::DNS_TIMEOUT,
                format!(
                    "the challenge TXT record of shop.example.com was not seen before {}",
                    order().deadline
                ),
            ),
            retried_at: t(400),
        }]);
}

#[test]
fn a_retried_domain_can_request_a_certificate_again() {
    let retried = CustomDomainEvent::IssuanceRetried {
        previous_reason: FailureReason::new("dns_timeout", ""),
        retried_at: t(400),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            timed_out(),
            retried,
        ])
        .when(CustomDomainCommand::RequestCertificate {
            order: order(),
            at: t(401),
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateRequested {
            order: order(),
            requested_at: t(401),
        }]);
}

#[test]
fn retrying_a_domain_that_did_not_fail_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(CustomDomainCommand::RetryIssuance { at: t(5) })
        .then_expect_error(wrong_status(DomainStatus::Failed, DomainStatus::Verified));
}

#[test]
fn removing_a_domain_records_its_freed_name() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested()])
        .when(CustomDomainCommand::RemoveDomain { at: t(9) })
        .then_expect_events(vec![CustomDomainEvent::DomainRemoved {
            domain_name: "shop.example.com".into(),
            removed_at: t(9),
        }]);
}

#[test]
fn any_command_on_a_removed_domain_is_refused() {
    let removed = CustomDomainEvent::DomainRemoved {
        domain_name: "shop.example.com".into(),
        removed_at: t(9),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified(), requested(), removed.clone()])
        .when(txt_observed(t(20), &["digest"]))
        .then_expect_error(DomainError::Removed);
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), removed])
        .when(CustomDomainCommand::RemoveDomain { at: t(10) })
        .then_expect_error(DomainError::Removed);
}

#[test]
fn reading_the_current_certificates_key_is_recorded() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued(),
        ])
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "admin".into(),
            at: t(50),
        })
        .then_expect_events(vec![CustomDomainEvent::PrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "admin".into(),
            read_at: t(50),
        }]);
}

#[test]
fn reading_the_key_of_another_certificate_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued(),
        ])
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-0".into(),
            reader: "admin".into(),
            at: t(50),
        })
        .then_expect_error(DomainError::NotCurrentCertificate {
            certificate_id: "cert-0".into(),
        });
}

#[test]
fn reading_a_key_before_issuance_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "admin".into(),
            at: t(50),
        })
        .then_expect_error(wrong_status(DomainStatus::Active, DomainStatus::Verified));
}

#[test]
fn timing_out_after_issuance_is_refused() {
    let issued = CustomDomainEvent::CertificateIssued {
        certificate: certificate(),
        issued_at: t(30),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued,
        ])
        .when(CustomDomainCommand::TimedOut {
            order_id: "order-1".into(),
            unseen_names: vec!["shop.example.com".into()],
            at: order().deadline,
        })
        .then_expect_error(wrong_status(
            DomainStatus::CertificatePending,
            DomainStatus::Active,
        ));
}

#[test]
fn registering_with_alt_names_records_them() {
    let alt_names = AltNames::recorded(vec![
        "www.shop.example.com".into(),
        "*.shop.example.com".into(),
    ]);
    DomainTest::with(RenewalPolicy::default())
        .given_no_previous_events()
        .when(CustomDomainCommand::RegisterDomain {
            domain_name: DomainName::parse("shop.example.com").expect("valid name"),
            verification_token: "token-123".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            alt_names,
            tenant: None,
            at: t(0),
        })
        .then_expect_events(vec![registered_with_alt_names()]);
}

#[test]
fn registering_for_a_tenant_records_the_tenant() {
    DomainTest::with(RenewalPolicy::default())
        .given_no_previous_events()
        .when(CustomDomainCommand::RegisterDomain {
            domain_name: DomainName::parse("shop.example.com").expect("valid name"),
            verification_token: "token-123".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            alt_names: AltNames::default(),
            tenant: Some(TenantId::parse("acct_123").expect("valid tenant")),
            at: t(0),
        })
        .then_expect_events(vec![CustomDomainEvent::DomainRegistered {
            domain_name: "shop.example.com".into(),
            verification_token: "token-123".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            registered_at: t(0),
            alt_names: vec![],
            tenant: Some("acct_123".into()),
        }]);
}

#[test]
fn replacing_the_alt_names_records_the_new_set() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered_with_alt_names(), verified()])
        .when(CustomDomainCommand::ReplaceAltNames {
            alt_names: AltNames::recorded(vec!["api.shop.example.com".into()]),
            at: t(5),
        })
        .then_expect_events(vec![CustomDomainEvent::AltNamesReplaced {
            alt_names: vec!["api.shop.example.com".into()],
            replaced_at: t(5),
        }]);
}

#[test]
fn replacing_the_alt_names_with_the_same_set_records_nothing() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered_with_alt_names()])
        .when(CustomDomainCommand::ReplaceAltNames {
            alt_names: AltNames::recorded(vec![
                "www.shop.example.com".into(),
                "*.shop.example.com".into(),
            ]),
            at: t(5),
        })
        .then_expect_events(vec![]);
}

#[test]
fn replacing_the_alt_names_of_a_removed_domain_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            CustomDomainEvent::DomainRemoved {
                domain_name: "shop.example.com".into(),
                removed_at: t(3),
            },
        ])
        .when(CustomDomainCommand::ReplaceAltNames {
            alt_names: AltNames::default(),
            at: t(5),
        })
        .then_expect_error(DomainError::Removed);
}

#[test]
fn an_order_for_every_name_of_the_domain_is_recorded() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered_with_alt_names(), verified()])
        .when(CustomDomainCommand::RequestCertificate {
            order: three_name_order(),
            at: t(2),
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateRequested {
            order: three_name_order(),
            requested_at: t(2),
        }]);
}

#[test]
fn an_order_for_names_the_domain_no_longer_has_is_refused() {
    let replaced = CustomDomainEvent::AltNamesReplaced {
        alt_names: vec!["api.shop.example.com".into()],
        replaced_at: t(1),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered_with_alt_names(), verified(), replaced])
        .when(CustomDomainCommand::RequestCertificate {
            order: three_name_order(),
            at: t(2),
        })
        .then_expect_error(DomainError::OrderNamesMismatch {
            expected: vec!["shop.example.com".into(), "api.shop.example.com".into()],
            ordered: three_name_order().names,
        });
}

#[test]
fn a_domain_and_its_wildcard_are_observed_only_when_both_values_share_their_name() {
    let requested = CustomDomainEvent::CertificateRequested {
        order: three_name_order(),
        requested_at: t(2),
    };
    let only_one_at_the_shared_name = observed_at(&[
        ("_acme-challenge.shop.example.com.", &["apex-digest"]),
        ("_acme-challenge.www.shop.example.com.", &["www-digest"]),
    ]);
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered_with_alt_names(),
            verified(),
            requested.clone(),
        ])
        .when(CustomDomainCommand::TxtObserved {
            order_id: "order-1".into(),
            observed_values: only_one_at_the_shared_name,
            resolver: "r".into(),
            at: t(20),
        })
        .then_expect_error(DomainError::ChallengeValueMissing {
            identifier: "*.shop.example.com".into(),
            challenge_domain: "_acme-challenge.shop.example.com.".into(),
        });
    let all = observed_at(&[
        (
            "_acme-challenge.shop.example.com.",
            &["wildcard-digest", "apex-digest", "stale"],
        ),
        ("_acme-challenge.www.shop.example.com.", &["www-digest"]),
    ]);
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered_with_alt_names(), verified(), requested])
        .when(CustomDomainCommand::TxtObserved {
            order_id: "order-1".into(),
            observed_values: all,
            resolver: "r".into(),
            at: t(20),
        })
        .then_expect_events(vec![CustomDomainEvent::ChallengeRecordObserved {
            order_id: "order-1".into(),
            observed_values: vec![
                "wildcard-digest".into(),
                "apex-digest".into(),
                "stale".into(),
                "www-digest".into(),
            ],
            resolver: "r".into(),
            observed_at: t(20),
        }]);
}

#[test]
fn a_timeout_names_the_names_whose_value_went_unseen() {
    let mut domain = CustomDomain::default();
    for event in [registered(), verified(), requested()] {
        domain.apply(event);
    }
    domain.apply(CustomDomainEvent::IssuanceTimedOut {
        order_id: "order-1".into(),
        deadline: order().deadline,
        unseen_names: vec!["www.shop.example.com".into()],
        timed_out_at: order().deadline,
    });
    let reason = domain.last_failure.expect("a failure");
    assert_eq!(reason.code, FailureReason::DNS_TIMEOUT);
    assert!(reason.detail.contains("www.shop.example.com"), "{reason:?}");
}

// Renewal: the certificate in service stays until the next one is issued.

fn renewal_order() -> OrderDetails {
    OrderDetails {
        order_id: "order-2".into(),
        deadline: t(90 * 86_400),
        ..order()
    }
}

fn scheduled(due_at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::RenewalScheduled {
        certificate_id: "cert-1".into(),
        due_at,
        reason: RenewalReason::Lifetime,
        window: None,
        scheduled_at: t(31),
    }
}

fn active_with_renewal_due_at(due_at: DateTime<Utc>) -> Vec<CustomDomainEvent> {
    vec![
        registered(),
        verified(),
        requested(),
        observed(),
        issued(),
        scheduled(due_at),
    ]
}

fn renewal_requested(reason: RenewalReason, at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::RenewalRequested {
        order: renewal_order(),
        reason,
        renews_certificate_id: "cert-1".into(),
        replaces: None,
        requested_at: at,
    }
}

fn request_renewal(reason: RenewalReason, at: DateTime<Utc>) -> CustomDomainCommand {
    CustomDomainCommand::RequestRenewal {
        order: renewal_order(),
        reason,
        replaces: None,
        at,
    }
}

#[test]
fn a_renewal_schedule_is_recorded_once_for_the_current_certificate() {
    let schedule = CustomDomainCommand::ScheduleRenewal {
        certificate_id: "cert-1".into(),
        due_at: t(60 * 86_400),
        reason: RenewalReason::Lifetime,
        window: None,
        at: t(31),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued(),
        ])
        .when(schedule.clone())
        .then_expect_events(vec![scheduled(t(60 * 86_400))]);
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(60 * 86_400)))
        .when(schedule)
        .then_expect_events(vec![]);
}

#[test]
fn scheduling_the_renewal_of_a_certificate_that_is_not_current_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![
            registered(),
            verified(),
            requested(),
            observed(),
            issued(),
        ])
        .when(CustomDomainCommand::ScheduleRenewal {
            certificate_id: "cert-0".into(),
            due_at: t(100),
            reason: RenewalReason::Lifetime,
            window: None,
            at: t(31),
        })
        .then_expect_error(DomainError::NotCurrentCertificate {
            certificate_id: "cert-0".into(),
        });
}

#[test]
fn a_due_renewal_is_requested_while_the_domain_stays_active() {
    let mut domain = CustomDomain::default();
    for event in active_with_renewal_due_at(t(100)) {
        domain.apply(event);
    }
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(100)))
        .when(request_renewal(RenewalReason::Lifetime, t(100)))
        .then_expect_events(vec![renewal_requested(RenewalReason::Lifetime, t(100))]);
    domain.apply(renewal_requested(RenewalReason::Lifetime, t(100)));
    assert_eq!(domain.status(), DomainStatus::Active);
}

#[test]
fn a_scheduled_renewal_before_it_is_due_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(100)))
        .when(request_renewal(RenewalReason::Lifetime, t(99)))
        .then_expect_error(DomainError::RenewalNotDue { due_at: t(100) });
}

#[test]
fn a_manual_renewal_is_accepted_before_it_is_due() {
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(10_000)))
        .when(request_renewal(RenewalReason::Manual, t(50)))
        .then_expect_events(vec![renewal_requested(RenewalReason::Manual, t(50))]);
}

#[test]
fn a_renewal_while_one_is_in_progress_is_refused() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(request_renewal(RenewalReason::Manual, t(120)))
        .then_expect_error(DomainError::RenewalInProgress {
            order_id: "order-2".into(),
        });
}

#[test]
fn renewing_a_domain_without_a_certificate_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered(), verified()])
        .when(request_renewal(RenewalReason::Manual, t(50)))
        .then_expect_error(wrong_status(DomainStatus::Active, DomainStatus::Verified));
}

#[test]
fn a_failed_renewal_keeps_the_certificate_and_is_retried_after_a_minute() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    let reason = FailureReason::new("challenge_invalid", "www: refused");
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::OrderFailed {
            order_id: "order-2".into(),
            reason: reason.clone(),
            at: t(200),
        })
        .then_expect_events(vec![CustomDomainEvent::RenewalFailed {
            order_id: Some("order-2".into()),
            reason,
            attempt: 1,
            next_attempt_at: t(260),
            failed_at: t(200),
        }]);
}

#[test]
fn a_renewal_before_the_retry_time_of_a_failed_one_is_refused() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(CustomDomainEvent::RenewalFailed {
        order_id: None,
        reason: FailureReason::new("acme_unavailable", "down"),
        attempt: 2,
        next_attempt_at: t(800),
        failed_at: t(200),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(request_renewal(RenewalReason::Lifetime, t(700)))
        .then_expect_error(DomainError::RenewalNotDue { due_at: t(800) });
}

#[test]
fn a_renewal_attempt_that_placed_no_order_counts_as_the_next_failure() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(CustomDomainEvent::RenewalFailed {
        order_id: None,
        reason: FailureReason::new("acme_unavailable", "down"),
        attempt: 2,
        next_attempt_at: t(800),
        failed_at: t(200),
    });
    let reason = FailureReason::new("acme_unavailable", "still down");
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RenewalAttemptFailed {
            reason: reason.clone(),
            not_before: None,
            at: t(800),
        })
        .then_expect_events(vec![CustomDomainEvent::RenewalFailed {
            order_id: None,
            reason,
            attempt: 3,
            next_attempt_at: t(800 + 6_000),
            failed_at: t(800),
        }]);
}

#[test]
fn a_renewal_whose_records_never_appear_fails_naming_them() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::TimedOut {
            order_id: "order-2".into(),
            unseen_names: vec!["shop.example.com".into()],
            at: renewal_order().deadline,
        })
        .then_expect_events(vec![CustomDomainEvent::RenewalFailed {
            order_id: Some("order-2".into()),
            reason: FailureReason::timed_out(
                &renewal_order().deadline,
                &["shop.example.com".to_owned()],
            ),
            attempt: 1,
            next_attempt_at: renewal_order().deadline + Duration::minutes(1),
            failed_at: renewal_order().deadline,
        }]);
}

#[test]
fn a_renewed_certificate_replaces_the_current_one() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    given.push(CustomDomainEvent::ChallengeRecordObserved {
        order_id: "order-2".into(),
        observed_values: vec!["digest".into()],
        resolver: "r".into(),
        observed_at: t(110),
    });
    let renewed = IssuedCertificate {
        certificate_id: "cert-2".into(),
        order_id: "order-2".into(),
        ..certificate()
    };
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(CustomDomainCommand::OrderFinalized {
            certificate: renewed.clone(),
            at: t(120),
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateIssued {
            certificate: renewed.clone(),
            issued_at: t(120),
        }]);
    let mut domain = CustomDomain::default();
    for event in given {
        domain.apply(event);
    }
    domain.apply(CustomDomainEvent::CertificateIssued {
        certificate: renewed,
        issued_at: t(120),
    });
    assert_eq!(domain.status(), DomainStatus::Active);
    assert_eq!(
        domain.renewal_due, None,
        "the new certificate is scheduled afresh"
    );
    assert_eq!(
        domain.current_certificate.map(|c| c.certificate_id),
        Some("cert-2".to_owned())
    );
}

#[test]
fn a_certificate_past_its_end_makes_the_domain_expired_and_renewal_carries_on() {
    let not_after = certificate().not_after;
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(100)))
        .when(CustomDomainCommand::ExpireCertificate {
            certificate_id: "cert-1".into(),
            at: not_after,
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateExpired {
            certificate_id: "cert-1".into(),
            not_after,
            expired_at: not_after,
        }]);
    let mut given = active_with_renewal_due_at(t(100));
    given.push(CustomDomainEvent::CertificateExpired {
        certificate_id: "cert-1".into(),
        not_after,
        expired_at: not_after,
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(request_renewal(RenewalReason::Lifetime, not_after))
        .then_expect_events(vec![renewal_requested(RenewalReason::Lifetime, not_after)]);
}

#[test]
fn expiring_a_certificate_before_its_end_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(100)))
        .when(CustomDomainCommand::ExpireCertificate {
            certificate_id: "cert-1".into(),
            at: t(1000),
        })
        .then_expect_error(DomainError::NotExpiredYet {
            not_after: certificate().not_after,
        });
}

// Revocation and key custody.

#[test]
fn revoking_the_current_certificate_makes_its_replacement_due_at_once() {
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(10_000)))
        .when(CustomDomainCommand::RevokeCertificate {
            certificate_id: "cert-1".into(),
            reason: RevocationReason::KeyCompromise,
            at: t(50),
        })
        .then_expect_events(vec![CustomDomainEvent::CertificateRevoked {
            certificate_id: "cert-1".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: t(50),
        }]);
    let mut given = active_with_renewal_due_at(t(10_000));
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(request_renewal(RenewalReason::Revoked, t(51)))
        .then_expect_events(vec![renewal_requested(RenewalReason::Revoked, t(51))]);
}

#[test]
fn a_revocation_starts_a_fresh_series_of_renewal_attempts() {
    // Four failed renewals in a row: the next try would be a day later.
    let mut given = active_with_renewal_due_at(t(100));
    for attempt in 1..=4 {
        given.push(CustomDomainEvent::RenewalFailed {
            order_id: None,
            reason: FailureReason::new("acme_unavailable", "down"),
            attempt,
            next_attempt_at: t(200 + i64::from(attempt)),
            failed_at: t(200),
        });
    }
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(300),
    });
    given.push(renewal_requested(RenewalReason::Revoked, t(301)));
    let reason = FailureReason::new("challenge_invalid", "refused");
    // The replacement's first failure is the first of a new series: retried after a minute.
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::OrderFailed {
            order_id: "order-2".into(),
            reason: reason.clone(),
            at: t(400),
        })
        .then_expect_events(vec![CustomDomainEvent::RenewalFailed {
            order_id: Some("order-2".into()),
            reason,
            attempt: 1,
            next_attempt_at: t(460),
            failed_at: t(400),
        }]);
}

#[test]
fn a_certificate_renewed_before_its_revocation_was_recorded_is_recorded_revoked() {
    // The CA revoked cert-1; a renewal issued cert-2 before the revocation was recorded.
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    given.push(CustomDomainEvent::ChallengeRecordObserved {
        order_id: "order-2".into(),
        observed_values: vec!["digest".into()],
        resolver: "127.0.0.1:53".into(),
        observed_at: t(110),
    });
    given.push(CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: "cert-2".into(),
            order_id: "order-2".into(),
            ..certificate()
        },
        issued_at: t(120),
    });
    let revoked = CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(130),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(CustomDomainCommand::RevokeCertificate {
            certificate_id: "cert-1".into(),
            reason: RevocationReason::KeyCompromise,
            at: t(130),
        })
        .then_expect_events(vec![revoked.clone()]);
    given.push(revoked);
    // Its key is no longer handed out, though it has not reached its end.
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "edge".into(),
            at: t(140),
        })
        .then_expect_error(DomainError::KeyUnavailable {
            certificate_id: "cert-1".into(),
            reason: "it was revoked".into(),
        });
    // The certificate in service is untouched: its key is handed out, and it is not due.
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-2".into(),
            reader: "edge".into(),
            at: t(140),
        })
        .then_expect_events(vec![CustomDomainEvent::PrivateKeyRead {
            certificate_id: "cert-2".into(),
            reader: "edge".into(),
            read_at: t(140),
        }]);
    let mut replacement = renewal_order();
    replacement.order_id = "order-3".into();
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RequestRenewal {
            order: replacement,
            reason: RenewalReason::Lifetime,
            replaces: None,
            at: t(150),
        })
        .then_expect_error(DomainError::NoRenewalScheduled);
}

#[test]
fn revoking_a_certificate_twice_is_refused() {
    let mut given = active_with_renewal_due_at(t(10_000));
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::Superseded,
        revoked_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RevokeCertificate {
            certificate_id: "cert-1".into(),
            reason: RevocationReason::KeyCompromise,
            at: t(60),
        })
        .then_expect_error(DomainError::AlreadyRevoked {
            certificate_id: "cert-1".into(),
        });
}

#[test]
fn revoking_a_certificate_that_is_not_current_is_refused() {
    DomainTest::with(RenewalPolicy::default())
        .given(active_with_renewal_due_at(t(10_000)))
        .when(CustomDomainCommand::RevokeCertificate {
            certificate_id: "cert-0".into(),
            reason: RevocationReason::Unspecified,
            at: t(60),
        })
        .then_expect_error(DomainError::NotCurrentCertificate {
            certificate_id: "cert-0".into(),
        });
}

fn key_destroyed(why: KeyDisposal) -> CustomDomainEvent {
    CustomDomainEvent::CertificateKeyDestroyed {
        order_id: "order-1".into(),
        certificate_id: Some("cert-1".into()),
        why,
        destroyed_at: t(100),
    }
}

#[test]
fn a_key_destruction_is_recorded_once_even_for_a_removed_domain() {
    let mut given = active_with_renewal_due_at(t(10_000));
    given.push(CustomDomainEvent::DomainRemoved {
        domain_name: "shop.example.com".into(),
        removed_at: t(90),
    });
    let destroy = CustomDomainCommand::RecordKeyDestroyed {
        order_id: "order-1".into(),
        certificate_id: Some("cert-1".into()),
        why: KeyDisposal::DomainRemoved,
        at: t(100),
    };
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(destroy.clone())
        .then_expect_events(vec![key_destroyed(KeyDisposal::DomainRemoved)]);
    given.push(key_destroyed(KeyDisposal::DomainRemoved));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(destroy)
        .then_expect_error(DomainError::KeyAlreadyDestroyed {
            order_id: "order-1".into(),
        });
}

#[test]
fn the_key_of_a_replaced_certificate_is_readable_until_its_end() {
    let mut given = active_with_renewal_due_at(t(100));
    given.push(renewal_requested(RenewalReason::Lifetime, t(100)));
    given.push(CustomDomainEvent::ChallengeRecordObserved {
        order_id: "order-2".into(),
        observed_values: vec!["digest".into()],
        resolver: "r".into(),
        observed_at: t(110),
    });
    given.push(CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: "cert-2".into(),
            order_id: "order-2".into(),
            not_after: t(200 * 86_400),
            ..certificate()
        },
        issued_at: t(120),
    });
    let read = |at| CustomDomainCommand::RecordPrivateKeyRead {
        certificate_id: "cert-1".into(),
        reader: "admin".into(),
        at,
    };
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(read(t(130)))
        .then_expect_events(vec![CustomDomainEvent::PrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "admin".into(),
            read_at: t(130),
        }]);
    let end = certificate().not_after;
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(read(end))
        .then_expect_error(DomainError::KeyUnavailable {
            certificate_id: "cert-1".into(),
            reason: format!("it expired at {end}"),
        });
}

#[test]
fn a_schedule_decided_before_a_revocation_does_not_postpone_the_replacement() {
    let mut given = active_with_renewal_due_at(t(10_000));
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::ScheduleRenewal {
            certificate_id: "cert-1".into(),
            due_at: t(20_000),
            reason: RenewalReason::Lifetime,
            window: None,
            at: t(51),
        })
        .then_expect_events(vec![]);
}

#[test]
fn the_key_of_a_revoked_certificate_is_not_handed_out() {
    let mut given = active_with_renewal_due_at(t(10_000));
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RecordPrivateKeyRead {
            certificate_id: "cert-1".into(),
            reader: "admin".into(),
            at: t(60),
        })
        .then_expect_error(DomainError::KeyUnavailable {
            certificate_id: "cert-1".into(),
            reason: "it was revoked".into(),
        });
}

fn delegation_record() -> crate::domain::delegation::DelegationRecord {
    crate::domain::delegation::DelegationZone::parse("acme.platform.example")
        .expect("a zone")
        .record_for("token-123", "shop.example.com")
}

#[test]
fn a_cname_to_the_domains_delegation_record_proves_ownership_without_the_token() {
    let record = delegation_record();
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::VerifyOwnership {
            observed_values: vec![],
            delegation: Some((record.clone(), Some(record.target.clone()))),
            at: t(1),
        })
        .then_expect_events(vec![CustomDomainEvent::OwnershipVerified {
            observed_values: vec![],
            proof: dns_handling_events::OwnershipProof::Cname,
            cname_target: Some(record.target),
            verified_at: t(1),
        }]);
}

#[test]
fn a_cname_elsewhere_is_refused_and_the_refusal_says_where_it_points() {
    let record = delegation_record();
    let result = DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::VerifyOwnership {
            observed_values: vec![],
            delegation: Some((record, Some("other.acme.platform.example.".into()))),
            at: t(1),
        })
        .inspect_result();
    let refusal = result.expect_err("refused").to_string();
    assert!(
        refusal.contains("other.acme.platform.example."),
        "{refusal}"
    );
}

#[test]
fn the_token_is_the_proof_when_both_token_and_cname_are_there() {
    let record = delegation_record();
    DomainTest::with(RenewalPolicy::default())
        .given(vec![registered()])
        .when(CustomDomainCommand::VerifyOwnership {
            observed_values: vec!["token-123".into()],
            delegation: Some((record.clone(), Some(record.target))),
            at: t(1),
        })
        .then_expect_events(vec![verified()]);
}

#[test]
fn a_renewal_refused_for_now_is_not_tried_again_before_the_time_the_ca_gave() {
    let given = active_with_renewal_due_at(t(100));
    let reason = FailureReason::new("acme_unavailable", "rateLimited");
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RenewalAttemptFailed {
            reason: reason.clone(),
            not_before: Some(t(100 + 3_600)),
            at: t(100),
        })
        .then_expect_events(vec![CustomDomainEvent::RenewalFailed {
            order_id: None,
            reason,
            attempt: 1,
            next_attempt_at: t(100 + 3_600),
            failed_at: t(100),
        }]);
}

/// A snapshot is the aggregate as JSON (`SNAPSHOT_EVERY` in `app.rs`): read back, it must be the
/// aggregate the events made, or commands after a snapshot would decide otherwise.
#[test]
fn a_snapshot_of_the_aggregate_reads_back_as_the_same_aggregate() {
    let mut folded = CustomDomain::default();
    for event in [registered(), verified(), requested(), issued()] {
        cqrs_es::Aggregate::apply(&mut folded, event);
    }
    assert!(folded.current_certificate.is_some(), "{folded:?}");
    let snapshot = serde_json::to_value(&folded).expect("a snapshot");
    let read: CustomDomain = serde_json::from_value(snapshot).expect("read back");
    assert_eq!(read, folded);
}
