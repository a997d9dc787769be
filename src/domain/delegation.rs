//! Delegated validation: where each name of a domain points its `_acme-challenge` record (one
//! CNAME, set once by the owner) in the zone the service serves itself, and what a CNAME seen in
//! DNS proves.
//!
//! A name's label in the zone is derived from the domain's verification token (160 random bits,
//! recorded in `DomainRegistered`) and the name, so it is stable for the domain's life, says
//! nothing of the name it serves, cannot be guessed before the domain's owner is told it, and an
//! auditor can recompute it from the history. A wildcard shares its base name's label, as it
//! shares its `_acme-challenge` record (RFC 8555 §8.4).

use dns_handling_events::OrderChallenge;
use sha2::{Digest, Sha256};

use super::domain_name::{DomainName, DomainNameError};

/// Bytes of the digest a label keeps: 128 bits, 32 hex characters.
const LABEL_BYTES: usize = 16;

/// The zone the service serves for delegated validation, e.g. `acme.platform.example`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationZone {
    /// Normalised, without the trailing dot.
    zone: DomainName,
}

/// The record an owner sets once for one name: `_acme-challenge.<name>.` CNAME `<label>.<zone>.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRecord {
    /// `_acme-challenge.<name>.`, with the trailing dot.
    pub name: String,
    /// `<label>.<zone>.`, with the trailing dot.
    pub target: String,
}

impl DelegationZone {
    /// The zone of a setting's text.
    pub fn parse(text: &str) -> Result<Self, DomainNameError> {
        DomainName::parse(text).map(|zone| Self { zone })
    }

    /// The zone's name, without the trailing dot.
    pub fn name(&self) -> &str {
        self.zone.as_str()
    }

    /// The record `name` (an identifier of the domain: itself, an alt name, a wildcard) needs.
    pub fn record_for(&self, verification_token: &str, name: &str) -> DelegationRecord {
        let base = name.strip_prefix("*.").unwrap_or(name);
        let digest = Sha256::new()
            .chain_update(b"dns-handling delegation label\0")
            .chain_update(verification_token.as_bytes())
            .chain_update(b"\0")
            .chain_update(base.as_bytes())
            .finalize();
        let label: String = digest[..LABEL_BYTES]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        DelegationRecord {
            name: OrderChallenge::record_name(name),
            target: format!("{label}.{}.", self.zone.as_str()),
        }
    }

    /// Why the CNAME seen at `record.name` does not delegate it (`None` when it does). DNS
    /// names compare without regard to case or a trailing dot.
    pub fn problem_with(record: &DelegationRecord, seen: Option<&str>) -> Option<String> {
        let canonical = |name: &str| name.trim_end_matches('.').to_ascii_lowercase();
        match seen {
            None => Some(format!(
                "{} has no CNAME; set it to {} to let the service publish the challenges",
                record.name, record.target
            )),
            Some(target) if canonical(target) == canonical(&record.target) => None,
            Some(target) => Some(format!(
                "{} is a CNAME to {target}, not to {}",
                record.name, record.target
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> DelegationZone {
        DelegationZone::parse("acme.platform.example.").expect("a zone")
    }

    #[test]
    fn a_name_gets_one_stable_label_that_does_not_show_the_name() {
        let first = zone().record_for("token-1", "shop.example.com");
        let again = zone().record_for("token-1", "shop.example.com");
        assert_eq!(first, again);
        assert_eq!(first.name, "_acme-challenge.shop.example.com.");
        assert!(first.target.ends_with(".acme.platform.example."));
        let label = first.target.split('.').next().expect("a label");
        assert_eq!(label.len(), 32);
        assert!(!first.target.contains("shop"));
    }

    #[test]
    fn a_wildcard_shares_its_base_names_record_and_other_names_get_their_own() {
        let apex = zone().record_for("t", "shop.example.com");
        let wildcard = zone().record_for("t", "*.shop.example.com");
        let www = zone().record_for("t", "www.shop.example.com");
        assert_eq!(apex, wildcard);
        assert_ne!(apex.target, www.target);
        assert_eq!(www.name, "_acme-challenge.www.shop.example.com.");
    }

    #[test]
    fn another_domain_with_the_same_name_gets_another_label() {
        let before = zone().record_for("token-1", "shop.example.com");
        let after = zone().record_for("token-2", "shop.example.com");
        assert_ne!(before.target, after.target);
    }

    #[test]
    fn a_cname_to_the_record_target_delegates_whatever_its_case_or_final_dot() {
        let record = zone().record_for("t", "shop.example.com");
        let shouted = record.target.trim_end_matches('.').to_ascii_uppercase();
        assert_eq!(DelegationZone::problem_with(&record, Some(&shouted)), None);
    }

    #[test]
    fn a_missing_or_wrong_cname_is_a_problem_that_names_the_record() {
        let record = zone().record_for("t", "shop.example.com");
        let missing = DelegationZone::problem_with(&record, None).expect("a problem");
        assert!(missing.contains("has no CNAME"), "{missing}");
        assert!(missing.contains(&record.target), "{missing}");
        let wrong =
            DelegationZone::problem_with(&record, Some("elsewhere.example.")).expect("a problem");
        assert!(wrong.contains("elsewhere.example."), "{wrong}");
    }
}
