//! Upcasters: how a stored payload of an older version is read as the current version.
//!
//! Stored events are never rewritten. A reader (the service, a projection, an auditor's tool)
//! passes every payload through [`upcast`] before decoding it.

use serde_json::Value;

/// One step from an older version to the next.
struct Upcaster {
    event_type: &'static str,
    from_version: &'static str,
    to_version: &'static str,
    upcast: fn(Value) -> Value,
}

/// Every upcaster, oldest first: a chain of them (1.0 → 2.0 → 3.0) runs in this order.
const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: "CertificateRequested",
        from_version: "1.0",
        to_version: "2.0",
        upcast: certificate_requested_1_to_2,
    },
    Upcaster {
        event_type: "CertificateRequested",
        from_version: "2.0",
        to_version: "3.0",
        upcast: certificate_requested_2_to_3,
    },
    Upcaster {
        event_type: "CertificateRequested",
        from_version: "3.0",
        to_version: "4.0",
        upcast: certificate_requested_3_to_4,
    },
    Upcaster {
        event_type: "RenewalRequested",
        from_version: "1.0",
        to_version: "2.0",
        upcast: renewal_requested_1_to_2,
    },
    Upcaster {
        event_type: "CertificateIssued",
        from_version: "1.0",
        to_version: "2.0",
        upcast: certificate_issued_1_to_2,
    },
    Upcaster {
        event_type: "OwnershipVerified",
        from_version: "1.0",
        to_version: "2.0",
        upcast: ownership_verified_1_to_2,
    },
    Upcaster {
        event_type: "DomainRegistered",
        from_version: "1.0",
        to_version: "2.0",
        upcast: domain_registered_1_to_2,
    },
    Upcaster {
        event_type: "DomainRegistered",
        from_version: "2.0",
        to_version: "3.0",
        upcast: domain_registered_2_to_3,
    },
    Upcaster {
        event_type: "IssuanceTimedOut",
        from_version: "1.0",
        to_version: "2.0",
        upcast: issuance_timed_out_1_to_2,
    },
];

/// The object inside a stored payload (`{"<EventType>": {...}}`), for an upcaster to edit.
fn body_of<'a>(
    payload: &'a mut Value,
    event_type: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    payload.get_mut(event_type).and_then(Value::as_object_mut)
}

/// `DomainRegistered` 1.0 had no `alt_names`: every 1.0 domain was its one name.
fn domain_registered_1_to_2(mut payload: Value) -> Value {
    if let Some(body) = body_of(&mut payload, "DomainRegistered") {
        body.entry("alt_names")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    payload
}

/// `DomainRegistered` 2.0 had no `tenant`: every 2.0 domain belonged to no tenant, which 3.0
/// writes by leaving the field out. Nothing to add.
fn domain_registered_2_to_3(payload: Value) -> Value {
    payload
}

/// Before delegated validation and several CAs every order was published by hand and went to
/// the one CA configured then: `validation` is `manual` with no problem to report, no challenge
/// was published by the service, and `ca_directory` is empty.
fn order_published_by_hand(order: &mut serde_json::Map<String, Value>) {
    order
        .entry("validation")
        .or_insert_with(|| Value::from("manual"));
    order.entry("delegation_problem").or_insert(Value::Null);
    order
        .entry("ca_directory")
        .or_insert_with(|| Value::from(""));
    if let Some(challenges) = order.get_mut("challenges").and_then(Value::as_array_mut) {
        for challenge in challenges.iter_mut().filter_map(Value::as_object_mut) {
            challenge.entry("delegated_to").or_insert(Value::Null);
        }
    }
}

/// The order object of a `CertificateRequested` or `RenewalRequested` payload.
fn order_of_request<'a>(
    payload: &'a mut Value,
    event_type: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    body_of(payload, event_type)
        .and_then(|body| body.get_mut("order"))
        .and_then(Value::as_object_mut)
}

/// `CertificateRequested` 3.0 orders were all published by hand.
fn certificate_requested_3_to_4(mut payload: Value) -> Value {
    if let Some(order) = order_of_request(&mut payload, "CertificateRequested") {
        order_published_by_hand(order);
    }
    payload
}

/// `RenewalRequested` 1.0 orders were all published by hand.
fn renewal_requested_1_to_2(mut payload: Value) -> Value {
    if let Some(order) = order_of_request(&mut payload, "RenewalRequested") {
        order_published_by_hand(order);
    }
    payload
}

/// `CertificateIssued` 1.0 came from the one CA configured then: `ca_directory` is empty.
fn certificate_issued_1_to_2(mut payload: Value) -> Value {
    if let Some(certificate) = body_of(&mut payload, "CertificateIssued")
        .and_then(|body| body.get_mut("certificate"))
        .and_then(Value::as_object_mut)
    {
        certificate
            .entry("ca_directory")
            .or_insert_with(|| Value::from(""));
    }
    payload
}

/// `OwnershipVerified` 1.0 was always the verification token, found in TXT.
fn ownership_verified_1_to_2(mut payload: Value) -> Value {
    if let Some(body) = body_of(&mut payload, "OwnershipVerified") {
        body.entry("proof").or_insert_with(|| Value::from("txt"));
        body.entry("cname_target").or_insert(Value::Null);
    }
    payload
}

/// `IssuanceTimedOut` 1.0 did not list the names whose value went unseen; its order had one
/// name, and the event says no more than it said then.
fn issuance_timed_out_1_to_2(mut payload: Value) -> Value {
    if let Some(body) = body_of(&mut payload, "IssuanceTimedOut") {
        body.entry("unseen_names")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    payload
}

/// `CertificateRequested` 2.0 was an order for one name with one challenge, kept in
/// `challenge_url`, `challenge_domain` and `expected_txt_value`; 3.0 lists the names and a
/// challenge per authorization. The name is the challenge domain without `_acme-challenge.`
/// and the trailing dot, as every 2.0 order was placed.
fn certificate_requested_2_to_3(mut payload: Value) -> Value {
    let Some(order) = body_of(&mut payload, "CertificateRequested")
        .and_then(|body| body.get_mut("order"))
        .and_then(Value::as_object_mut)
    else {
        return payload;
    };
    let challenge_domain = order.remove("challenge_domain").unwrap_or(Value::Null);
    let challenge_url = order.remove("challenge_url").unwrap_or(Value::Null);
    let expected_txt_value = order.remove("expected_txt_value").unwrap_or(Value::Null);
    let identifier = challenge_domain
        .as_str()
        .map(|record| {
            let name = record.strip_prefix("_acme-challenge.").unwrap_or(record);
            Value::from(name.strip_suffix('.').unwrap_or(name))
        })
        .unwrap_or(Value::Null);
    order.insert("names".into(), Value::Array(vec![identifier.clone()]));
    order.insert(
        "challenges".into(),
        serde_json::json!([{
            "identifier": identifier,
            "challenge_url": challenge_url,
            "challenge_domain": challenge_domain,
            "expected_txt_value": expected_txt_value,
        }]),
    );
    payload
}

/// `CertificateRequested` 1.0 had no `key_type`: every 1.0 order was for an RSA-2048 key.
fn certificate_requested_1_to_2(mut payload: Value) -> Value {
    if let Some(order) = payload
        .get_mut("CertificateRequested")
        .and_then(|body| body.get_mut("order"))
        .and_then(Value::as_object_mut)
    {
        order
            .entry("key_type")
            .or_insert_with(|| Value::from("rsa2048"));
    }
    payload
}

/// Whether a stored `(event_type, version)` needs upcasting.
pub fn needs_upcast(event_type: &str, version: &str) -> bool {
    UPCASTERS
        .iter()
        .any(|u| u.event_type == event_type && u.from_version == version)
}

/// Brings a stored payload to the current version; returns the payload and its new version.
pub fn upcast(event_type: &str, version: &str, mut payload: Value) -> (Value, String) {
    let mut version = version.to_owned();
    for upcaster in UPCASTERS {
        if upcaster.event_type == event_type && upcaster.from_version == version {
            payload = (upcaster.upcast)(payload);
            version = upcaster.to_version.to_owned();
        }
    }
    (payload, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateKeyType, CustomDomainEvent};

    /// A `CertificateRequested` row exactly as version 1.0 stored it.
    const STORED_V1: &str = r#"{"CertificateRequested":{"order":{
        "order_id":"o-1","order_url":"https://ca.test/order/1","challenge_url":"https://ca.test/chall/1",
        "challenge_domain":"_acme-challenge.shop.example.com.","expected_txt_value":"digest",
        "account_id":"https://ca.test/acct/1","poll_interval_ms":10000,
        "deadline":"2026-11-26T12:05:00Z"},"requested_at":"2026-11-26T12:00:00Z"}}"#;

    /// A `CertificateRequested` row exactly as version 2.0 stored it.
    const STORED_V2: &str = r#"{"CertificateRequested":{"order":{
        "order_id":"o-2","order_url":"https://ca.test/order/2","challenge_url":"https://ca.test/chall/2",
        "challenge_domain":"_acme-challenge.shop.example.com.","expected_txt_value":"digest",
        "account_id":"https://ca.test/acct/1","poll_interval_ms":10000,
        "deadline":"2026-11-26T12:05:00Z","key_type":"ecdsa-p256"},"requested_at":"2026-11-26T12:00:00Z"}}"#;

    fn order_of(event: CustomDomainEvent) -> crate::OrderDetails {
        let CustomDomainEvent::CertificateRequested { order, .. } = event else {
            panic!("wrong variant");
        };
        order
    }

    #[test]
    fn a_version_1_certificate_request_reads_as_an_rsa_2048_order_for_its_one_name() {
        let stored: Value = serde_json::from_str(STORED_V1).expect("JSON");
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        assert!(needs_upcast("CertificateRequested", "1.0"));
        let (payload, version) = upcast("CertificateRequested", "1.0", stored);
        assert_eq!(version, "4.0");
        let order = order_of(serde_json::from_value(payload).expect("reads as 4.0"));
        assert_eq!(order.key_type, CertificateKeyType::Rsa2048);
        assert_eq!(order.validation, crate::Validation::Manual);
        assert_eq!(order.order_id, "o-1");
        assert_eq!(order.names, ["shop.example.com"]);
    }

    #[test]
    fn a_version_2_certificate_request_reads_as_an_order_with_one_challenge() {
        let stored: Value = serde_json::from_str(STORED_V2).expect("JSON");
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        let (payload, version) = upcast("CertificateRequested", "2.0", stored);
        assert_eq!(version, "4.0");
        let order = order_of(serde_json::from_value(payload).expect("reads as 4.0"));
        assert_eq!(order.key_type, CertificateKeyType::EcdsaP256);
        assert_eq!(order.names, ["shop.example.com"]);
        assert_eq!(
            order.challenges,
            [crate::OrderChallenge {
                identifier: "shop.example.com".into(),
                challenge_url: "https://ca.test/chall/2".into(),
                challenge_domain: "_acme-challenge.shop.example.com.".into(),
                expected_txt_value: "digest".into(),
                delegated_to: None,
            }]
        );
    }

    #[test]
    fn a_version_1_renewal_request_reads_as_an_order_published_by_hand() {
        let stored = serde_json::json!({"RenewalRequested": {"order": {
            "order_id": "o", "order_url": "https://ca.test/order/3", "names": ["shop.example.com"],
            "challenges": [{"identifier": "shop.example.com", "challenge_url": "https://ca.test/chall/3",
                "challenge_domain": "_acme-challenge.shop.example.com.", "expected_txt_value": "d"}],
            "account_id": "https://ca.test/acct/1", "poll_interval_ms": 10000,
            "deadline": "2026-11-26T12:05:00Z", "key_type": "ecdsa-p256"},
            "reason": "lifetime", "renews_certificate_id": "c", "replaces": null,
            "requested_at": "2026-11-26T12:00:00Z"}});
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        let (payload, version) = upcast("RenewalRequested", "1.0", stored);
        assert_eq!(version, "2.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 2.0");
        let CustomDomainEvent::RenewalRequested { order, .. } = event else {
            panic!("wrong variant");
        };
        assert_eq!(order.validation, crate::Validation::Manual);
        assert_eq!(order.delegation_problem, None);
        assert_eq!(order.challenges[0].delegated_to, None);
    }

    #[test]
    fn a_version_1_verification_reads_as_a_txt_proof() {
        let stored = serde_json::json!({"OwnershipVerified": {"observed_values": ["t"],
            "verified_at": "2026-11-26T12:00:00Z"}});
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        let (payload, version) = upcast("OwnershipVerified", "1.0", stored);
        assert_eq!(version, "2.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 2.0");
        assert!(matches!(
            event,
            CustomDomainEvent::OwnershipVerified {
                proof: crate::OwnershipProof::Txt,
                cname_target: None,
                ..
            }
        ));
    }

    #[test]
    fn a_version_1_registration_reads_as_a_domain_without_alt_names() {
        let stored = serde_json::json!({"DomainRegistered": {
            "domain_name": "shop.example.com", "verification_token": "t",
            "verification_record_name": "_dns-handling.shop.example.com.",
            "registered_at": "2026-11-26T12:00:00Z"}});
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        let (payload, version) = upcast("DomainRegistered", "1.0", stored);
        assert_eq!(version, "3.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 3.0");
        let CustomDomainEvent::DomainRegistered { alt_names, .. } = event else {
            panic!("wrong variant");
        };
        assert!(alt_names.is_empty());
    }

    #[test]
    fn a_version_2_registration_reads_as_a_domain_of_no_tenant() {
        let stored = serde_json::json!({"DomainRegistered": {
            "domain_name": "shop.example.com", "verification_token": "t",
            "verification_record_name": "_dns-handling.shop.example.com.",
            "registered_at": "2026-11-26T12:00:00Z", "alt_names": ["www.shop.example.com"]}});
        let (payload, version) = upcast("DomainRegistered", "2.0", stored);
        assert_eq!(version, "3.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 3.0");
        let CustomDomainEvent::DomainRegistered { tenant, .. } = event else {
            panic!("wrong variant");
        };
        assert_eq!(tenant, None);
    }

    #[test]
    fn a_version_1_timeout_reads_with_no_unseen_names_listed() {
        let stored = serde_json::json!({"IssuanceTimedOut": {"order_id": "o",
            "deadline": "2026-11-26T12:05:00Z", "timed_out_at": "2026-11-26T12:05:01Z"}});
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        let (payload, version) = upcast("IssuanceTimedOut", "1.0", stored);
        assert_eq!(version, "2.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 2.0");
        assert!(matches!(
            event,
            CustomDomainEvent::IssuanceTimedOut { unseen_names, .. } if unseen_names.is_empty()
        ));
    }

    #[test]
    fn current_versions_pass_unchanged() {
        let payload = serde_json::json!({"PrivateKeyRead": {"certificate_id": "c", "reader": "admin", "read_at": "2026-11-26T12:00:00Z"}});
        let (same, version) = upcast("PrivateKeyRead", "1.0", payload.clone());
        assert_eq!((same, version.as_str()), (payload, "1.0"));
        assert!(!needs_upcast("CertificateRequested", "4.0"));
        assert!(!needs_upcast("OwnershipVerified", "2.0"));
        assert!(!needs_upcast("DomainRegistered", "3.0"));
    }
}
