//! A name's relevant CAA RRset (RFC 8659 §3), through the service's resolvers: the CAA records
//! of the name, else of its parent, and so on up to (not including) the root; the first
//! non-empty set wins. A CNAME on the way is followed by the resolver. Reusable by anything that
//! asks what CAA says of a name: the check before an order, a periodic health check.

use super::dns::{DnsError, DnsLookup};
use crate::domain::caa::{caa_base_name, CaaRecord, NameCaa};

/// What the lookup of a name's relevant CAA RRset found.
#[derive(Debug, Clone)]
pub enum CaaLookup {
    /// The relevant records, and the name that holds them.
    Found {
        /// The name whose CAA RRset it is (the name itself or an ancestor), without a dot.
        at: String,
        /// The records (never empty).
        records: Vec<CaaRecord>,
    },
    /// No name up to the top-level domain has CAA records: issuance is unrestricted.
    None,
    /// A lookup failed (SERVFAIL, timeout): what CAA says is unknown. Never blocks an order.
    Failed(DnsError),
}

impl CaaLookup {
    /// What the decisions take of it for the order's `name`; `None` for a failed lookup.
    pub fn for_name(&self, name: &str) -> Option<NameCaa> {
        match self {
            Self::Found { at, records } => Some(NameCaa {
                name: name.to_owned(),
                found_at: Some(at.clone()),
                records: records.clone(),
            }),
            Self::None => Some(NameCaa {
                name: name.to_owned(),
                found_at: None,
                records: Vec::new(),
            }),
            Self::Failed(_) => None,
        }
    }
}

/// The relevant CAA RRset of an order's `name` (a wildcard's base name is looked up): the
/// name's own, else its nearest ancestor's below the root. A failure at any step ends the climb:
/// a parent's records cannot stand in for a set that could not be read.
pub async fn relevant_caa(dns: &dyn DnsLookup, name: &str) -> CaaLookup {
    let base = caa_base_name(name).trim_end_matches('.');
    let labels: Vec<&str> = base.split('.').filter(|label| !label.is_empty()).collect();
    for start in 0..labels.len() {
        let candidate = labels[start..].join(".");
        match dns.caa_records(&candidate).await {
            Ok(records) if records.is_empty() => continue,
            Ok(records) => {
                return CaaLookup::Found {
                    at: candidate,
                    records,
                }
            }
            Err(error) => return CaaLookup::Failed(error),
        }
    }
    CaaLookup::None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::caa::CaaIssuer;

    /// CAA records by name, a name that fails, and every name asked.
    #[derive(Default)]
    struct Zone {
        records: HashMap<String, Vec<CaaRecord>>,
        failing: Option<String>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl DnsLookup for Zone {
        async fn txt_values(&self, _name: &str) -> Result<Vec<String>, DnsError> {
            Ok(Vec::new())
        }

        async fn cname_target(&self, _name: &str) -> Result<Option<String>, DnsError> {
            Ok(None)
        }

        async fn caa_records(&self, name: &str) -> Result<Vec<CaaRecord>, DnsError> {
            self.asked.lock().expect("lock").push(name.to_owned());
            if self.failing.as_deref() == Some(name) {
                return Err(DnsError {
                    name: name.to_owned(),
                    reason: "SERVFAIL".into(),
                });
            }
            Ok(self.records.get(name).cloned().unwrap_or_default())
        }

        async fn resolve_addresses(
            &self,
            _name: &str,
        ) -> Result<crate::domain::health::Resolution, DnsError> {
            Ok(crate::domain::health::Resolution::NoSuchName)
        }

        fn describe(&self) -> String {
            "a test zone".into()
        }
    }

    fn issue(domain: &str) -> CaaRecord {
        CaaRecord {
            flags: 0,
            tag: "issue".into(),
            value: domain.into(),
            issuer: Some(CaaIssuer {
                domain: Some(domain.into()),
                parameters: Vec::new(),
            }),
        }
    }

    #[tokio::test]
    async fn the_climb_stops_at_the_nearest_name_with_caa_records() {
        let zone = Zone {
            records: HashMap::from([
                ("users.test".to_owned(), vec![issue("near.example")]),
                ("test".to_owned(), vec![issue("far.example")]),
            ]),
            ..Zone::default()
        };
        let found = relevant_caa(&zone, "a.b.users.test").await;
        let CaaLookup::Found { at, records } = found else {
            panic!("{found:?}");
        };
        assert_eq!(at, "users.test");
        assert_eq!(records, [issue("near.example")]);
        assert_eq!(
            *zone.asked.lock().expect("lock"),
            ["a.b.users.test", "b.users.test", "users.test"]
        );
    }

    #[tokio::test]
    async fn a_wildcard_climbs_from_its_base_name_and_no_records_anywhere_is_none() {
        let zone = Zone::default();
        assert!(matches!(
            relevant_caa(&zone, "*.shop.test").await,
            CaaLookup::None
        ));
        assert_eq!(*zone.asked.lock().expect("lock"), ["shop.test", "test"]);
    }

    #[tokio::test]
    async fn a_failed_lookup_ends_the_climb_as_failed() {
        let zone = Zone {
            records: HashMap::from([("test".to_owned(), vec![issue("far.example")])]),
            failing: Some("shop.test".to_owned()),
            ..Zone::default()
        };
        let found = relevant_caa(&zone, "www.shop.test").await;
        assert!(matches!(found, CaaLookup::Failed(_)), "{found:?}");
        assert!(found.for_name("www.shop.test").is_none());
    }
}
