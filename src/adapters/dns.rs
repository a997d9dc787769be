//! TXT, CNAME and CAA lookups through hickory-resolver, with no caching: a poller must see a
//! record the moment the authoritative answer changes, not when a cached negative answer expires.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::CAA;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::domain::caa::{CaaIssuer, CaaRecord};
use crate::domain::health::Resolution;

/// A DNS lookup that failed (timeout, SERVFAIL, refused), as opposed to "no such record".
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct DnsError {
    /// The name looked up.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// The lookups the service makes: TXT values, the CNAME of a delegated name, CAA records.
#[async_trait]
pub trait DnsLookup: Send + Sync {
    /// All TXT values at `name` (each record's strings joined); empty when the name or the
    /// record does not exist.
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, DnsError>;

    /// The target of the CNAME at `name`, with its trailing dot; `None` when there is none.
    async fn cname_target(&self, name: &str) -> Result<Option<String>, DnsError>;

    /// The CAA records at `name` (RFC 8659), following a CNAME there as a resolver does; empty
    /// when the name or the record does not exist. One name: the climb towards the root is
    /// `adapters::caa`'s.
    async fn caa_records(&self, name: &str) -> Result<Vec<CaaRecord>, DnsError>;

    /// The A and AAAA addresses of `name` and the CNAME chain on the way to them, as a
    /// recursive resolver follows it (the health check's routing).
    async fn resolve_addresses(&self, name: &str) -> Result<Resolution, DnsError>;

    /// Which resolvers answer, for the record of what was observed where.
    fn describe(&self) -> String;
}

/// How many lookups one process has in flight at once. Every pending order is polled the moment
/// the service starts, so tens of thousands of lookups can start together: past a few dozen,
/// hickory refuses the excess (`no connections available`, after its own back-off), which left
/// half of 20,000 resumed orders unpolled for a whole interval, and every lookup in flight holds
/// a socket and its buffers. Waiting here for a turn costs well under a millisecond.
const MAX_LOOKUPS_IN_FLIGHT: usize = 64;

/// The production lookup: hickory-resolver against the configured name servers.
pub struct HickoryDnsLookup {
    resolver: TokioResolver,
    description: String,
    in_flight: tokio::sync::Semaphore,
}

impl HickoryDnsLookup {
    /// A resolver for `nameservers`, or the system's resolvers when the list is empty.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, DnsError> {
        let setup_error = |error: &dyn std::fmt::Display| DnsError {
            name: String::new(),
            reason: format!("resolver setup failed: {error}"),
        };
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| setup_error(&e))?
        } else {
            let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            for address in nameservers {
                let mut udp = ConnectionConfig::udp();
                udp.port = address.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = address.port();
                config.add_name_server(NameServerConfig::new(address.ip(), true, vec![udp, tcp]));
            }
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.cache_size = 0;
        options.timeout = timeout;
        options.attempts = 1;
        // A TXT name can hold many values (one per pending validation, plus verification
        // tokens): accept large UDP answers, and ask again over TCP when a UDP answer cannot be
        // read (some servers ignore the EDNS size and send answers no buffer was sized for).
        options.edns_payload_len = 4096;
        options.try_tcp_on_error = true;
        let resolver = builder.build().map_err(|e| setup_error(&e))?;
        let description = if nameservers.is_empty() {
            "system resolvers".to_owned()
        } else {
            nameservers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        Ok(Self {
            resolver,
            description,
            in_flight: tokio::sync::Semaphore::new(MAX_LOOKUPS_IN_FLIGHT),
        })
    }
}

#[async_trait]
impl DnsLookup for HickoryDnsLookup {
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let fqdn = fully_qualified(name);
        // The semaphore is never closed, so a permit always comes.
        let _turn = self.in_flight.acquire().await.map_err(|error| DnsError {
            name: fqdn.clone(),
            reason: error.to_string(),
        })?;
        match self.resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| txt_value(&record.data))
                .collect()),
            // "Not there (yet)" is an answer, not a failure.
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(DnsError {
                name: fqdn,
                reason: error.to_string(),
            }),
        }
    }

    async fn cname_target(&self, name: &str) -> Result<Option<String>, DnsError> {
        let fqdn = fully_qualified(name);
        let _turn = self.in_flight.acquire().await.map_err(|error| DnsError {
            name: fqdn.clone(),
            reason: error.to_string(),
        })?;
        match self.resolver.lookup(fqdn.as_str(), RecordType::CNAME).await {
            // A resolver answers a CNAME query with the chain it followed: the record owned by
            // the name asked is the one wanted.
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .find_map(|record| match &record.data {
                    RData::CNAME(target) if names_equal(&record.name.to_string(), &fqdn) => {
                        Some(target.0.to_string())
                    }
                    _ => None,
                })),
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => Ok(None),
            Err(error) => Err(DnsError {
                name: fqdn,
                reason: error.to_string(),
            }),
        }
    }

    async fn caa_records(&self, name: &str) -> Result<Vec<CaaRecord>, DnsError> {
        let fqdn = fully_qualified(name);
        let _turn = self.in_flight.acquire().await.map_err(|error| DnsError {
            name: fqdn.clone(),
            reason: error.to_string(),
        })?;
        match self.resolver.lookup(fqdn.as_str(), RecordType::CAA).await {
            // Asked of a recursive resolver, a CAA query for an alias answers the CNAME chain
            // and the CAA records at its end: those are the name's (RFC 8659 §3).
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::CAA(caa) => Some(caa_record(caa)),
                    _ => None,
                })
                .collect()),
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(DnsError {
                name: fqdn,
                reason: error.to_string(),
            }),
        }
    }

    async fn resolve_addresses(&self, name: &str) -> Result<Resolution, DnsError> {
        let fqdn = fully_qualified(name);
        let _turn = self.in_flight.acquire().await.map_err(|error| DnsError {
            name: fqdn.clone(),
            reason: error.to_string(),
        })?;
        let mut aliases: Vec<String> = Vec::new();
        let mut addresses = Vec::new();
        for record_type in [RecordType::A, RecordType::AAAA] {
            match self.resolver.lookup(fqdn.as_str(), record_type).await {
                // The answer holds the CNAME chain the resolver followed, then the addresses.
                Ok(lookup) => {
                    for record in lookup.answers() {
                        match &record.data {
                            RData::CNAME(target) => {
                                let target = target.0.to_string();
                                let target = target.trim_end_matches('.').to_owned();
                                if !aliases.contains(&target) {
                                    aliases.push(target);
                                }
                            }
                            RData::A(address) => addresses.push(IpAddr::V4(address.0)),
                            RData::AAAA(address) => addresses.push(IpAddr::V6(address.0)),
                            _ => {}
                        }
                    }
                }
                Err(error) if error.is_nx_domain() => return Ok(Resolution::NoSuchName),
                Err(error) if error.is_no_records_found() => {}
                Err(error) => {
                    return Err(DnsError {
                        name: fqdn,
                        reason: error.to_string(),
                    })
                }
            }
        }
        Ok(Resolution::Found { aliases, addresses })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A CAA record as the decisions read it, its `issue`/`issuewild` value read by hickory's
/// parser; a value that does not parse names no issuer (RFC 8659 §4.2: "treated the same as
/// one specifying an empty issuer-domain-name").
pub fn caa_record(caa: &CAA) -> CaaRecord {
    let tag = caa.tag.to_ascii_lowercase();
    let issuer = (tag == "issue" || tag == "issuewild").then(|| match caa.value_as_issue() {
        Ok((name, parameters)) => CaaIssuer {
            domain: name.map(|name| name.to_ascii().trim_end_matches('.').to_owned()),
            parameters: parameters
                .iter()
                .map(|pair| (pair.key().to_owned(), pair.value().to_owned()))
                .collect(),
        },
        Err(_) => CaaIssuer::default(),
    });
    CaaRecord {
        flags: caa.flags(),
        tag,
        value: String::from_utf8_lossy(&caa.value).into_owned(),
        issuer,
    }
}

/// A TXT record's value: its strings joined (`None` for other records).
pub fn txt_value(data: &RData) -> Option<String> {
    match data {
        RData::TXT(txt) => Some(
            txt.txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// `name` with its trailing dot, so the resolver never appends a search domain.
fn fully_qualified(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// DNS names compare without regard to case or a trailing dot.
fn names_equal(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::rr::{RData, RecordType};

    use super::*;

    /// A CAA record as a zone file writes it, read by hickory as from an answer.
    fn read(presentation: &str) -> CaaRecord {
        match RData::try_from_str(RecordType::CAA, presentation) {
            Ok(RData::CAA(caa)) => caa_record(&caa),
            other => panic!("{presentation}: {other:?}"),
        }
    }

    #[test]
    fn an_issue_record_is_read_with_its_issuer_and_parameters() {
        let record = read(r#"0 issue "ca.example; accounturi=https://ca.example/acct/1""#);
        assert_eq!(record.flags, 0);
        assert_eq!(record.tag, "issue");
        let issuer = record.issuer.clone().expect("an issuer value");
        assert_eq!(issuer.domain.as_deref(), Some("ca.example"));
        assert_eq!(
            issuer.parameters,
            [(
                "accounturi".to_owned(),
                "https://ca.example/acct/1".to_owned()
            )]
        );
        assert_eq!(
            record.to_string(),
            r#"0 issue "ca.example; accounturi=https://ca.example/acct/1""#
        );
    }

    #[test]
    fn an_empty_or_malformed_issue_value_names_no_issuer() {
        for value in [";", "%%%%%"] {
            let record = read(&format!(r#"0 issue "{value}""#));
            let issuer = record.issuer.expect("an issuer value");
            assert_eq!(issuer.domain, None, "{value}");
        }
    }

    #[test]
    fn a_critical_record_of_another_tag_keeps_its_flag_and_has_no_issuer() {
        let record = read(r#"128 tbs "unknown""#);
        assert!(record.critical());
        assert_eq!(record.tag, "tbs");
        assert_eq!(record.issuer, None);
    }
}
