//! What the platform is told by webhook, decided from one event of a domain and the domain's
//! view just before and just after it: the notification's type and its data. Never a key.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use dns_handling_events::{CustomDomainEvent, Validation};
use dns_handling_projections::DomainView;
use serde_json::{json, Value};

/// How close to its end a certificate whose renewal failed is reported as expiring.
const EXPIRING_WITHIN_DAYS: i64 = 7;

/// The types of notification, as receivers see them in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// A domain's first certificate was issued.
    CertificateIssued,
    /// A certificate was issued in place of the domain's previous one.
    CertificateRenewed,
    /// The current certificate was revoked.
    CertificateRevoked,
    /// An issuance failed (the CA refused, or its records were not seen in time).
    IssuanceFailed,
    /// A renewal attempt failed; the current certificate stays, the next attempt is scheduled.
    RenewalFailed,
    /// A renewal waits for TXT records a person must publish (in `records`).
    RenewalRecordsRequired,
    /// A renewal failed and the current certificate ends within 7 days.
    CertificateExpiring,
    /// The current certificate expired with no renewal succeeded.
    CertificateExpired,
    /// The domain was removed.
    DomainRemoved,
    /// A health check of the domain's DNS came to other outcomes (in `health`).
    DomainHealthChanged,
    /// Every name of the domain has routed elsewhere for `MOVED_AFTER`: no renewal is ordered.
    DomainMoved,
}

impl NotificationType {
    /// Every type.
    pub const ALL: [NotificationType; 11] = [
        Self::CertificateIssued,
        Self::CertificateRenewed,
        Self::CertificateRevoked,
        Self::IssuanceFailed,
        Self::RenewalFailed,
        Self::RenewalRecordsRequired,
        Self::CertificateExpiring,
        Self::CertificateExpired,
        Self::DomainRemoved,
        Self::DomainHealthChanged,
        Self::DomainMoved,
    ];

    /// The type as receivers see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CertificateIssued => "certificate.issued",
            Self::CertificateRenewed => "certificate.renewed",
            Self::CertificateRevoked => "certificate.revoked",
            Self::IssuanceFailed => "issuance.failed",
            Self::RenewalFailed => "renewal.failed",
            Self::RenewalRecordsRequired => "renewal.records_required",
            Self::CertificateExpiring => "certificate.expiring",
            Self::CertificateExpired => "certificate.expired",
            Self::DomainRemoved => "domain.removed",
            Self::DomainHealthChanged => "domain.health_changed",
            Self::DomainMoved => "domain.moved",
        }
    }

    /// Parses a type's name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One event as the platform is told it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its type.
    pub kind: NotificationType,
    /// When the event happened.
    pub timestamp: DateTime<Utc>,
    /// The domain, its certificate, and what is particular to the type.
    pub data: Value,
}

impl Notification {
    /// The body of a Standard Webhooks message: `{type, timestamp, data}`.
    pub fn body(&self) -> Value {
        json!({
            "type": self.kind.as_str(),
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": self.data,
        })
    }
}

/// The notifications one event makes (none, one, or two when a failed renewal leaves the
/// certificate close to its end). `before` is the domain's view before the event, `after`
/// after it; `position` is the event's place in the feed.
pub fn notifications(
    event: &CustomDomainEvent,
    before: Option<&DomainView>,
    after: &DomainView,
    position: i64,
) -> Vec<Notification> {
    let with = |kind, timestamp: &DateTime<Utc>, extra: Value| Notification {
        kind,
        timestamp: *timestamp,
        data: data(after, position, event, extra),
    };
    match event {
        CustomDomainEvent::CertificateIssued { issued_at, .. } => {
            let renewed = before.is_some_and(|view| view.certificate.is_some());
            let kind = match renewed {
                true => NotificationType::CertificateRenewed,
                false => NotificationType::CertificateIssued,
            };
            vec![with(kind, issued_at, json!({}))]
        }
        // Which one: `certificate` is the current one, and a renewal may have replaced the
        // revoked one while its revocation was under way.
        CustomDomainEvent::CertificateRevoked {
            certificate_id,
            reason,
            revoked_at,
        } => vec![with(
            NotificationType::CertificateRevoked,
            revoked_at,
            json!({ "revocation_reason": reason, "revoked_certificate_id": certificate_id }),
        )],
        CustomDomainEvent::IssuanceFailed { failed_at: at, .. }
        | CustomDomainEvent::IssuanceTimedOut {
            timed_out_at: at, ..
        } => vec![with(
            NotificationType::IssuanceFailed,
            at,
            json!({ "reason": after.failure_reason }),
        )],
        CustomDomainEvent::RenewalFailed {
            reason,
            attempt,
            next_attempt_at,
            failed_at,
            ..
        } => {
            let extra = json!({
                "reason": reason, "attempt": attempt,
                "next_attempt_at": next_attempt_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
            let mut told = vec![with(
                NotificationType::RenewalFailed,
                failed_at,
                extra.clone(),
            )];
            let ends_soon = after.certificate.as_ref().is_some_and(|certificate| {
                certificate.not_after - *failed_at < Duration::days(EXPIRING_WITHIN_DAYS)
            });
            if ends_soon {
                told.push(with(
                    NotificationType::CertificateExpiring,
                    failed_at,
                    extra,
                ));
            }
            told
        }
        CustomDomainEvent::RenewalRequested {
            order,
            requested_at,
            ..
        } if order.validation == Validation::Manual && !order.challenges.is_empty() => {
            let records: Vec<Value> = order
                .challenges
                .iter()
                .map(|challenge| {
                    json!({
                        "identifier": challenge.identifier,
                        "name": challenge.challenge_domain,
                        "type": "TXT",
                        "value": challenge.expected_txt_value,
                    })
                })
                .collect();
            vec![with(
                NotificationType::RenewalRecordsRequired,
                requested_at,
                json!({
                    "records": records,
                    "deadline": order.deadline.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "delegation_problem": order.delegation_problem,
                }),
            )]
        }
        CustomDomainEvent::CertificateExpired { expired_at, .. } => vec![with(
            NotificationType::CertificateExpired,
            expired_at,
            json!({}),
        )],
        CustomDomainEvent::DomainRemoved { removed_at, .. } => {
            vec![with(NotificationType::DomainRemoved, removed_at, json!({}))]
        }
        CustomDomainEvent::HealthChanged { report, checked_at } => vec![with(
            NotificationType::DomainHealthChanged,
            checked_at,
            json!({ "health": report, "problems": report.problems() }),
        )],
        CustomDomainEvent::DomainMoved {
            routing_lost_at,
            moved_at,
        } => vec![with(
            NotificationType::DomainMoved,
            moved_at,
            json!({
                "routing_lost_at": routing_lost_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        )],
        _ => Vec::new(),
    }
}

/// What every notification says of its domain: its id, names, status and certificate (public
/// facts only), the feed position and type of the event it reports, and `extra`.
fn data(view: &DomainView, position: i64, event: &CustomDomainEvent, extra: Value) -> Value {
    let certificate = view.certificate.as_ref().map(|certificate| {
        json!({
            "id": certificate.id,
            "serial": certificate.serial,
            "not_before": certificate.not_before.to_rfc3339_opts(SecondsFormat::Secs, true),
            "not_after": certificate.not_after.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    });
    let mut data = json!({
        "domain_id": view.id,
        "domain_name": view.domain_name,
        "names": view.names(),
        "status": view.status,
        "certificate": certificate,
        "position": position,
        "event_type": event.type_name(),
    });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns_handling_events::{
        CertificateKeyType, FailureReason, IssuedCertificate, OrderChallenge, OrderDetails,
    };

    fn registered_view() -> DomainView {
        let registered = CustomDomainEvent::DomainRegistered {
            domain_name: "shop.example.com".into(),
            verification_token: "t".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            registered_at: Utc::now(),
            alt_names: vec!["www.shop.example.com".into()],
            tenant: None,
        };
        DomainView::from_registration("d1", 1, &registered).expect("a view")
    }

    fn issued(not_after: DateTime<Utc>) -> CustomDomainEvent {
        CustomDomainEvent::CertificateIssued {
            certificate: IssuedCertificate {
                certificate_id: "c1".into(),
                order_id: "o1".into(),
                serial: "0a".into(),
                not_before: Utc::now(),
                not_after,
                fingerprint_sha256: "ab".repeat(32),
                chain_pem: "-----BEGIN CERTIFICATE-----".into(),
                ca_directory: String::new(),
            },
            issued_at: Utc::now(),
        }
    }

    /// The view after `event`, folded by hand (the projection's own `apply`).
    fn after(mut view: DomainView, sequence: u64, event: &CustomDomainEvent) -> DomainView {
        view.apply(sequence, event);
        view
    }

    #[test]
    fn a_first_certificate_is_issued_and_the_next_one_renewed() {
        let before = registered_view();
        let event = issued(Utc::now() + Duration::days(90));
        let first_after = after(before.clone(), 2, &event);
        let told = notifications(&event, Some(&before), &first_after, 41);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].kind, NotificationType::CertificateIssued);
        let data = &told[0].data;
        assert_eq!(data["position"], 41);
        assert_eq!(
            data["names"],
            json!(["shop.example.com", "www.shop.example.com"])
        );
        assert_eq!(data["certificate"]["serial"], "0a");
        assert!(!data.to_string().contains("PRIVATE"), "never a key: {data}");
        let again = notifications(&event, Some(&first_after), &first_after, 42);
        assert_eq!(again[0].kind, NotificationType::CertificateRenewed);
    }

    #[test]
    fn a_revocation_names_the_certificate_revoked_even_once_replaced() {
        // c1 current, then replaced by a renewal (c9) before c1's revocation was recorded.
        let view = after(
            registered_view(),
            2,
            &issued(Utc::now() + Duration::days(60)),
        );
        let mut renewed = issued(Utc::now() + Duration::days(90));
        if let CustomDomainEvent::CertificateIssued { certificate, .. } = &mut renewed {
            certificate.certificate_id = "c9".into();
        }
        let view = after(view, 3, &renewed);
        let revoked = CustomDomainEvent::CertificateRevoked {
            certificate_id: "c1".into(),
            reason: dns_handling_events::RevocationReason::KeyCompromise,
            revoked_at: Utc::now(),
        };
        let told = notifications(&revoked, Some(&view), &after(view.clone(), 4, &revoked), 7);
        assert_eq!(told[0].kind, NotificationType::CertificateRevoked);
        assert_eq!(told[0].data["revoked_certificate_id"], "c1");
        assert_eq!(
            told[0].data["certificate"]["id"], "c9",
            "the one in service"
        );
    }

    #[test]
    fn a_failed_renewal_close_to_the_end_is_also_an_expiring_certificate() {
        let view = after(
            registered_view(),
            2,
            &issued(Utc::now() + Duration::days(3)),
        );
        let failed = CustomDomainEvent::RenewalFailed {
            order_id: None,
            reason: FailureReason::new("acme_error", "down"),
            attempt: 2,
            next_attempt_at: Utc::now(),
            failed_at: Utc::now(),
        };
        let kinds: Vec<NotificationType> = notifications(&failed, Some(&view), &view, 9)
            .iter()
            .map(|n| n.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                NotificationType::RenewalFailed,
                NotificationType::CertificateExpiring
            ]
        );
        let far = after(
            registered_view(),
            2,
            &issued(Utc::now() + Duration::days(60)),
        );
        assert_eq!(notifications(&failed, Some(&far), &far, 9).len(), 1);
    }

    #[test]
    fn a_manual_renewal_order_asks_for_its_records_and_a_delegated_one_does_not() {
        let view = after(
            registered_view(),
            2,
            &issued(Utc::now() + Duration::days(60)),
        );
        let mut order = OrderDetails {
            order_id: "o2".into(),
            order_url: "https://ca.test/order/2".into(),
            names: vec!["shop.example.com".into()],
            challenges: vec![OrderChallenge {
                identifier: "shop.example.com".into(),
                challenge_url: "https://ca.test/chall/2".into(),
                challenge_domain: "_acme-challenge.shop.example.com.".into(),
                expected_txt_value: "digest".into(),
                delegated_to: None,
            }],
            account_id: "https://ca.test/acct/1".into(),
            poll_interval_ms: 1000,
            deadline: Utc::now(),
            key_type: CertificateKeyType::EcdsaP256,
            validation: Validation::Manual,
            delegation_problem: None,
            ca_directory: String::new(),
        };
        let requested = |order: &OrderDetails| CustomDomainEvent::RenewalRequested {
            order: order.clone(),
            reason: dns_handling_events::RenewalReason::Lifetime,
            renews_certificate_id: "c1".into(),
            replaces: None,
            requested_at: Utc::now(),
        };
        let told = notifications(&requested(&order), Some(&view), &view, 5);
        assert_eq!(told[0].kind, NotificationType::RenewalRecordsRequired);
        assert_eq!(told[0].data["records"][0]["value"], "digest");
        order.validation = Validation::Delegated;
        assert!(notifications(&requested(&order), Some(&view), &view, 5).is_empty());
    }

    #[test]
    fn a_health_change_and_a_move_are_told_with_what_was_found() {
        use dns_handling_events::{CheckOutcome, HealthReport, NameCheck};
        let before = registered_view();
        let report = HealthReport {
            routing: vec![NameCheck {
                name: "shop.example.com".into(),
                outcome: CheckOutcome::Elsewhere,
                expected: "edge.platform.example".into(),
                found: "198.51.100.1".into(),
            }],
            ..HealthReport::default()
        };
        let changed = CustomDomainEvent::HealthChanged {
            report,
            checked_at: Utc::now(),
        };
        let view = after(before.clone(), 2, &changed);
        let told = notifications(&changed, Some(&before), &view, 7);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].kind.as_str(), "domain.health_changed");
        assert_eq!(told[0].data["health"]["routing"][0]["outcome"], "elsewhere");
        assert_eq!(told[0].data["problems"].as_array().map(Vec::len), Some(1));
        let moved = CustomDomainEvent::DomainMoved {
            routing_lost_at: Utc::now() - Duration::hours(72),
            moved_at: Utc::now(),
        };
        let moved_view = after(view.clone(), 3, &moved);
        let told = notifications(&moved, Some(&view), &moved_view, 8);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].kind.as_str(), "domain.moved");
        assert_eq!(told[0].data["status"], "moved");
        assert!(told[0].data["routing_lost_at"].is_string());
    }

    #[test]
    fn every_type_round_trips_through_its_name() {
        for kind in NotificationType::ALL {
            assert_eq!(NotificationType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NotificationType::parse("certificate.bogus"), None);
    }
}
