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

/// Every upcaster, oldest first.
const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "CertificateRequested",
    from_version: "1.0",
    to_version: "2.0",
    upcast: certificate_requested_1_to_2,
}];

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

    #[test]
    fn a_version_1_certificate_request_reads_as_an_rsa_2048_order() {
        let stored: Value = serde_json::from_str(STORED_V1).expect("JSON");
        assert!(serde_json::from_value::<CustomDomainEvent>(stored.clone()).is_err());
        assert!(needs_upcast("CertificateRequested", "1.0"));
        let (payload, version) = upcast("CertificateRequested", "1.0", stored);
        assert_eq!(version, "2.0");
        let event: CustomDomainEvent = serde_json::from_value(payload).expect("reads as 2.0");
        let CustomDomainEvent::CertificateRequested { order, .. } = event else {
            panic!("wrong variant");
        };
        assert_eq!(order.key_type, CertificateKeyType::Rsa2048);
        assert_eq!(order.order_id, "o-1");
    }

    #[test]
    fn current_versions_pass_unchanged() {
        let payload = serde_json::json!({"OwnershipVerified": {"observed_values": [], "verified_at": "2026-11-26T12:00:00Z"}});
        let (same, version) = upcast("OwnershipVerified", "1.0", payload.clone());
        assert_eq!((same, version.as_str()), (payload, "1.0"));
        assert!(!needs_upcast("CertificateRequested", "2.0"));
    }
}
