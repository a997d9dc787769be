//! The authoritative DNS server of the delegation zone (hickory-server): SOA and NS at the apex,
//! the TXT values of live delegated challenges at their labels, NXDOMAIN for other names of the
//! zone, REFUSED for names outside it, never recursion. hickory's catalog answers the protocol
//! (EDNS, truncation of UDP answers that do not fit and the TCP fallback, FORMERR for malformed
//! queries, RFC 8482's minimal answer to ANY, AXFR refused); this module keeps its in-memory zone
//! current and runs it apart from the API.
//!
//! Answers stay small whatever the query asks, so the server is no amplifier: a label holds the
//! values of one order's authorizations for one `_acme-challenge` name (a name and its wildcard:
//! two), and the apex only the operator's few NS names.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns_handling_events::{OrderDetails, Validation};
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::rdata::{NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;

use crate::domain::delegation::DelegationZone;
use crate::metrics::{RcodeLabel, METRICS};

/// TTL of the challenge values and of negative answers (the SOA minimum): a resolver that asked
/// a moment before a value was published asks again a second later, not minutes later.
const CHALLENGE_TTL: u32 = 1;

/// TTL of the apex's SOA and NS records, which change only with the configuration.
const APEX_TTL: u32 = 3600;

/// How long a TCP connection may stay idle before the server closes it.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Outgoing buffer per TCP connection, in messages.
const TCP_RESPONSE_BUFFER: usize = 16;

/// What the zone publishes for one domain: its open delegated order's values, by record name.
struct Published {
    order_id: String,
    values: BTreeMap<LowerName, Vec<String>>,
}

/// The delegation zone in memory: the apex records, and the values of every open delegated
/// order, one order per domain (a domain has one open order at a time).
pub struct ChallengeZone {
    handler: Arc<InMemoryZoneHandler>,
    published: Mutex<HashMap<String, Published>>,
    /// The names that hold values now, and the zone's apex and SOA: what the server answers
    /// NXDOMAIN from without asking hickory's zone, whose search for a missing name walks
    /// every record (88 % of the server's time under a mix of missing names, at 10,000 orders).
    index: Arc<NameIndex>,
}

/// What the server needs to answer a missing name itself.
struct NameIndex {
    origin: LowerName,
    soa: Record,
    names: std::sync::RwLock<std::collections::HashSet<LowerName>>,
    /// Values served, kept as they change (recounting them at every change made filling a
    /// large zone quadratic).
    values: std::sync::atomic::AtomicI64,
}

impl NameIndex {
    /// Whether `name` is in the zone below its apex and holds nothing: NXDOMAIN for sure
    /// (every name the zone holds is one label below the apex, so no missing name has
    /// something below it).
    fn is_missing(&self, name: &LowerName) -> bool {
        name != &self.origin
            && self.origin.zone_of(name)
            && !self
                .names
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(name)
    }
}

/// Why the zone or its server could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("delegation zone: {0}")]
pub struct ZoneError(String);

impl ChallengeZone {
    /// An empty zone with its SOA and NS records: `nameservers` are the names the parent zone
    /// delegates it to, the first one the SOA's primary.
    pub fn new(zone: &DelegationZone, nameservers: &[String]) -> Result<Self, ZoneError> {
        let name = |text: &str| {
            Name::from_ascii(format!("{}.", text.trim_end_matches('.')))
                .map_err(|error| ZoneError(format!("{text}: {error}")))
        };
        let origin = name(zone.name())?;
        let primary = nameservers
            .first()
            .ok_or_else(|| ZoneError("no nameserver names".into()))?;
        // The serial only needs to grow between starts: nothing transfers this zone.
        let serial =
            u32::try_from(chrono::Utc::now().timestamp() % i64::from(u32::MAX)).unwrap_or_default();
        let soa = SOA::new(
            name(primary)?,
            name(&format!("hostmaster.{}", zone.name()))?,
            serial,
            3600,
            600,
            86_400,
            CHALLENGE_TTL,
        );
        let mut handler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = Record::from_rdata(origin.clone(), APEX_TTL, RData::SOA(soa));
        handler.upsert_mut(soa.clone(), serial);
        for nameserver in nameservers {
            let ns = RData::NS(NS(name(nameserver)?));
            handler.upsert_mut(Record::from_rdata(origin.clone(), APEX_TTL, ns), serial);
        }
        Ok(Self {
            handler: Arc::new(handler),
            published: Mutex::new(HashMap::new()),
            index: Arc::new(NameIndex {
                origin: LowerName::new(&origin),
                soa,
                names: std::sync::RwLock::new(std::collections::HashSet::new()),
                values: std::sync::atomic::AtomicI64::new(0),
            }),
        })
    }

    /// Serves `order`'s values for `domain_id`, in place of whatever the domain served before.
    /// A manual order serves nothing: the domain's previous values go.
    pub async fn publish(&self, domain_id: &str, order: &OrderDetails) {
        let mut values: BTreeMap<LowerName, Vec<String>> = BTreeMap::new();
        if order.validation == Validation::Delegated {
            for challenge in &order.challenges {
                let Some(target) = &challenge.delegated_to else {
                    continue;
                };
                let Ok(name) = Name::from_ascii(target) else {
                    tracing::warn!(%domain_id, %target, "not a DNS name; not published");
                    continue;
                };
                let at = values.entry(LowerName::new(&name)).or_default();
                if !at.contains(&challenge.expected_txt_value) {
                    at.push(challenge.expected_txt_value.clone());
                }
            }
        }
        let previous = {
            let mut published = self.lock();
            let previous = published.remove(domain_id);
            if !values.is_empty() {
                published.insert(
                    domain_id.to_owned(),
                    Published {
                        order_id: order.order_id.clone(),
                        values: values.clone(),
                    },
                );
            }
            previous
        };
        let mut changes: BTreeMap<LowerName, Vec<String>> = previous
            .map(|previous| previous.values.into_keys().map(|name| (name, Vec::new())))
            .into_iter()
            .flatten()
            .collect();
        changes.extend(values);
        self.apply(changes).await;
    }

    /// Stops serving the values of `domain_id`'s order `order_id` (of whatever order it has,
    /// when `None`): the order completed, failed, timed out, or the domain was removed.
    pub async fn withdraw(&self, domain_id: &str, order_id: Option<&str>) {
        let removed = {
            let mut published = self.lock();
            match published.get(domain_id) {
                Some(found) if order_id.is_none_or(|id| id == found.order_id) => {
                    published.remove(domain_id)
                }
                _ => None,
            }
        };
        if let Some(removed) = removed {
            let changes = removed
                .values
                .into_keys()
                .map(|name| (name, Vec::new()))
                .collect();
            self.apply(changes).await;
        }
    }

    /// The values served at `name` now.
    pub async fn values_at(&self, name: &str) -> Vec<String> {
        let Ok(name) = Name::from_ascii(name) else {
            return Vec::new();
        };
        let key = RrKey::new(LowerName::new(&name), RecordType::TXT);
        let records = self.handler.records().await;
        records
            .get(&key)
            .map(|set| {
                set.records_without_rrsigs()
                    .filter_map(|record| crate::adapters::dns::txt_value(&record.data))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the TXT record set of each name with its values (none: the name goes, and
    /// answers NXDOMAIN).
    async fn apply(&self, changes: BTreeMap<LowerName, Vec<String>>) {
        let mut records = self.handler.records_mut().await;
        let mut names = self
            .index
            .names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut change_in_values = 0i64;
        for (name, values) in changes {
            let key = RrKey::new(name.clone(), RecordType::TXT);
            if let Some(old) = records.remove(&key) {
                change_in_values -= i64::try_from(old.records_count()).unwrap_or(0);
            }
            if values.is_empty() {
                names.remove(&name);
                continue;
            }
            change_in_values += i64::try_from(values.len()).unwrap_or(0);
            let mut set =
                RecordSet::with_ttl(Name::from(name.clone()), RecordType::TXT, CHALLENGE_TTL);
            for value in values {
                set.add_rdata(RData::TXT(TXT::new(vec![value])));
            }
            records.insert(key, Arc::new(set));
            names.insert(name);
        }
        let served = self
            .index
            .values
            .fetch_add(change_in_values, std::sync::atomic::Ordering::Relaxed)
            + change_in_values;
        METRICS.delegation_zone_values.set(served);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Published>> {
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The catalog of the one zone, counting its answers by response code.
struct ZoneServer {
    catalog: Catalog,
    index: Arc<NameIndex>,
}

impl ZoneServer {
    /// NXDOMAIN for a name of the zone that holds nothing, with the SOA for negative caching,
    /// answered here rather than by hickory's zone (see [`ChallengeZone`]'s `index`); `None`
    /// for every other query, which the catalog answers.
    async fn missing<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> Option<ResponseInfo> {
        let info = request.request_info().ok()?;
        if !self.index.is_missing(info.query.name()) {
            return None;
        }
        let mut metadata =
            hickory_server::proto::op::Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        metadata.response_code = hickory_server::proto::op::ResponseCode::NXDomain;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = hickory_server::proto::op::Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            std::iter::empty(),
            std::iter::empty(),
            std::iter::once(&self.index.soa),
            std::iter::empty(),
        );
        Some(match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "could not send an NXDOMAIN answer");
                return None;
            }
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneServer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let info = match self.missing(request, response_handle.clone()).await {
            Some(info) => info,
            None => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        };
        METRICS
            .dns_queries
            .get_or_create(&RcodeLabel {
                rcode: format!("{:?}", info.response_code).to_ascii_lowercase(),
            })
            .inc();
        info
    }
}

/// The running DNS server: stops when dropped.
pub struct DnsServer {
    /// Where it listens, UDP and TCP.
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds `listen` (UDP and TCP, on the same port when `listen`'s is 0) and serves `zone`
    /// on a thread of its own, with its own single-threaded runtime: a flood of queries can
    /// take that one thread, never the API's workers.
    pub fn start(
        zone: &ChallengeZone,
        origin: &DelegationZone,
        listen: SocketAddr,
    ) -> Result<Self, ZoneError> {
        let bind_error = |error: std::io::Error| {
            ZoneError(format!(
                "cannot listen on {listen} (DNS_LISTEN_ADDR): {error}"
            ))
        };
        let udp = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        let address = udp.local_addr().map_err(bind_error)?;
        let tcp = std::net::TcpListener::bind(address).map_err(bind_error)?;
        udp.set_nonblocking(true).map_err(bind_error)?;
        tcp.set_nonblocking(true).map_err(bind_error)?;
        let mut catalog = Catalog::new();
        let origin = Name::from_ascii(format!("{}.", origin.name()))
            .map_err(|error| ZoneError(error.to_string()))?;
        let handler: Arc<dyn ZoneHandler> = zone.handler.clone();
        let index = zone.index.clone();
        catalog.upsert(LowerName::new(&origin), vec![handler]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| ZoneError(format!("no runtime for the DNS server: {error}")))?;
        let thread = std::thread::Builder::new()
            .name("dns-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut server = Server::new(ZoneServer { catalog, index });
                    match (
                        tokio::net::UdpSocket::from_std(udp),
                        tokio::net::TcpListener::from_std(tcp),
                    ) {
                        (Ok(udp), Ok(tcp)) => {
                            server.register_socket(udp);
                            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
                        }
                        (udp, tcp) => {
                            tracing::error!(
                                ?udp,
                                ?tcp,
                                "the DNS server's sockets could not be used"
                            );
                            return;
                        }
                    }
                    let _ = stopped.await;
                    if let Err(error) = server.shutdown_gracefully().await {
                        tracing::warn!(%error, "the DNS server did not stop cleanly");
                    }
                });
            })
            .map_err(|error| ZoneError(format!("no thread for the DNS server: {error}")))?;
        tracing::info!(%address, zone = %origin, "DNS server of the delegation zone listening");
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use dns_handling_events::{CertificateKeyType, OrderChallenge};

    fn zone() -> ChallengeZone {
        let zone = DelegationZone::parse("acme.platform.test").expect("a zone");
        ChallengeZone::new(&zone, &["ns1.platform.test".to_owned()]).expect("a zone")
    }

    /// An order of `id` with one challenge per (identifier, published at, value).
    fn order(id: &str, validation: Validation, challenges: &[(&str, &str, &str)]) -> OrderDetails {
        OrderDetails {
            order_id: id.into(),
            order_url: format!("https://ca.test/order/{id}"),
            names: challenges
                .iter()
                .map(|(name, _, _)| (*name).to_owned())
                .collect(),
            challenges: challenges
                .iter()
                .map(|(identifier, at, value)| OrderChallenge {
                    identifier: (*identifier).to_owned(),
                    challenge_url: "https://ca.test/chall".into(),
                    challenge_domain: OrderChallenge::record_name(identifier),
                    expected_txt_value: (*value).to_owned(),
                    delegated_to: Some((*at).to_owned()),
                })
                .collect(),
            account_id: "https://ca.test/acct/1".into(),
            poll_interval_ms: 1000,
            deadline: Utc::now(),
            key_type: CertificateKeyType::EcdsaP256,
            validation,
            delegation_problem: None,
            ca_directory: String::new(),
        }
    }

    const LABEL: &str = "a1.acme.platform.test.";
    const OTHER: &str = "b2.acme.platform.test.";

    #[tokio::test]
    async fn a_domain_and_its_wildcard_are_served_as_two_values_at_one_name() {
        let zone = zone();
        let both = [
            ("shop.test", LABEL, "value-apex"),
            ("*.shop.test", LABEL, "value-wildcard"),
        ];
        zone.publish("d1", &order("o1", Validation::Delegated, &both))
            .await;
        let mut values = zone.values_at(LABEL).await;
        values.sort();
        assert_eq!(values, ["value-apex", "value-wildcard"]);
    }

    #[tokio::test]
    async fn the_end_of_an_order_withdraws_its_values_and_only_its_own() {
        let zone = zone();
        let first = [("shop.test", LABEL, "v1")];
        zone.publish("d1", &order("o1", Validation::Delegated, &first))
            .await;
        zone.withdraw("d1", Some("an-older-order")).await;
        assert_eq!(zone.values_at(LABEL).await, ["v1"]);
        zone.withdraw("d1", Some("o1")).await;
        assert!(zone.values_at(LABEL).await.is_empty());
    }

    #[tokio::test]
    async fn a_new_order_replaces_the_domains_values_and_a_manual_one_serves_none() {
        let zone = zone();
        let first = [("shop.test", LABEL, "v1"), ("www.shop.test", OTHER, "w1")];
        zone.publish("d1", &order("o1", Validation::Delegated, &first))
            .await;
        let second = [("shop.test", LABEL, "v2")];
        zone.publish("d1", &order("o2", Validation::Delegated, &second))
            .await;
        assert_eq!(zone.values_at(LABEL).await, ["v2"]);
        assert!(zone.values_at(OTHER).await.is_empty());
        zone.publish("d1", &order("o3", Validation::Manual, &second))
            .await;
        assert!(zone.values_at(LABEL).await.is_empty());
    }

    #[tokio::test]
    async fn removing_a_domain_withdraws_whatever_order_it_had() {
        let zone = zone();
        zone.publish(
            "d1",
            &order("o1", Validation::Delegated, &[("shop.test", LABEL, "v1")]),
        )
        .await;
        zone.publish(
            "d2",
            &order("o2", Validation::Delegated, &[("blog.test", OTHER, "v2")]),
        )
        .await;
        zone.withdraw("d1", None).await;
        assert!(zone.values_at(LABEL).await.is_empty());
        assert_eq!(zone.values_at(OTHER).await, ["v2"]);
    }
}
