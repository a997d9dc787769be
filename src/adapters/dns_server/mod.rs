//! The authoritative DNS server of the delegation zone (hickory-server): SOA and NS at the apex,
//! the TXT values of live delegated challenges at their labels, NXDOMAIN for other names of the
//! zone, REFUSED for names outside it, never recursion. hickory's catalog answers the protocol
//! (EDNS, truncation of UDP answers that do not fit and the TCP fallback, FORMERR for malformed
//! queries, RFC 8482's minimal answer to ANY, AXFR refused); this module keeps its in-memory zone
//! current and runs it apart from the API. The two answers it gives most, a published name's
//! TXT values and NXDOMAIN for a missing name, it takes from a hash map of its own by name
//! rather than from hickory's zone, through the same response builder.
//!
//! Answers stay small whatever the query asks, so the server is no amplifier: a label holds the
//! values of one order's authorizations for one `_acme-challenge` name (a name and its wildcard:
//! two), and the apex only the operator's few NS names.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use dns_handling_events::{OrderDetails, Validation};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;

use prometheus_client::metrics::counter::Counter;

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
    /// The record sets of the names that hold values now, and the zone's apex and SOA: what the
    /// server answers from itself, without asking hickory's zone, for the two queries it gets
    /// most (see [`NameIndex::shortcut`]).
    index: Arc<NameIndex>,
}

/// What the server needs to answer the TXT query of a published name, or a missing name, by
/// itself. hickory's zone searches a B-tree of `RrKey`s ordered by a label-by-label comparison
/// (27 % of the server's time for existing names, at 10,000 orders) and, for a name it does
/// not hold, walks every record (88 % under a mix of missing names); a hash map by lower-case
/// name takes neither.
struct NameIndex {
    origin: LowerName,
    soa: Record,
    /// The TXT record set of each name that holds values: the same `Arc` as in hickory's zone,
    /// so the two never disagree and the values are held once.
    sets: RwLock<HashMap<LowerName, Arc<RecordSet>>>,
    /// Values served, kept as they change (recounting them at every change made filling a
    /// large zone quadratic).
    values: AtomicI64,
}

/// How the server answers a query: from the index, or through hickory's catalog.
enum Shortcut {
    /// NOERROR with these values: the TXT query of a published name.
    Values(Arc<RecordSet>),
    /// NXDOMAIN with the SOA: a name below the apex that holds nothing.
    Missing,
    /// Anything else (the apex, other types at a published name, names outside the zone, other
    /// opcodes or EDNS versions), which the catalog answers as it always has.
    Catalog,
}

impl NameIndex {
    /// How to answer `request`. Only a plain query (one question, opcode QUERY, no EDNS or EDNS
    /// version 0) takes a shortcut: the catalog answers the rest with the right error.
    fn shortcut(&self, request: &Request) -> Shortcut {
        let metadata = &request.metadata;
        if metadata.message_type != MessageType::Query
            || metadata.op_code != OpCode::Query
            || request.edns.as_ref().is_some_and(|edns| edns.version() > 0)
        {
            return Shortcut::Catalog;
        }
        let [query] = request.queries.queries() else {
            return Shortcut::Catalog;
        };
        let name = query.name();
        // Every name the zone holds below its apex is one label below it, so a name below the
        // apex that is not published has nothing below it either: NXDOMAIN, not NODATA.
        if name == &self.origin || !self.origin.zone_of(name) {
            return Shortcut::Catalog;
        }
        match self.read().get(name) {
            Some(set) if query.query_type() == RecordType::TXT => Shortcut::Values(set.clone()),
            // NODATA for other types, and RFC 8482's answer to ANY, stay hickory's.
            Some(_) => Shortcut::Catalog,
            None => Shortcut::Missing,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<LowerName, Arc<RecordSet>>> {
        self.sets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
                sets: RwLock::new(HashMap::new()),
                values: AtomicI64::new(0),
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
        self.index
            .read()
            .get(&LowerName::new(&name))
            .map(|set| {
                set.records_without_rrsigs()
                    .filter_map(|record| crate::adapters::dns::txt_value(&record.data))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the TXT record set of each name with its values (none: the name goes, and
    /// answers NXDOMAIN), in hickory's zone and in the index alike.
    async fn apply(&self, changes: BTreeMap<LowerName, Vec<String>>) {
        let mut records = self.handler.records_mut().await;
        let mut sets = self
            .index
            .sets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut change_in_values = 0i64;
        for (name, values) in changes {
            let key = RrKey::new(name.clone(), RecordType::TXT);
            if let Some(old) = records.remove(&key) {
                change_in_values -= i64::try_from(old.records_count()).unwrap_or(0);
            }
            if values.is_empty() {
                sets.remove(&name);
                continue;
            }
            change_in_values += i64::try_from(values.len()).unwrap_or(0);
            let mut set =
                RecordSet::with_ttl(Name::from(name.clone()), RecordType::TXT, CHALLENGE_TTL);
            for value in values {
                set.add_rdata(RData::TXT(TXT::new(vec![value])));
            }
            let set = Arc::new(set);
            records.insert(key, set.clone());
            sets.insert(name, set);
        }
        let served = self
            .index
            .values
            .fetch_add(change_in_values, Ordering::Relaxed)
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
    /// The counter of each response code (0–15) once used: looking it up in the metric family
    /// by its name for every answer took two allocations and a lock.
    counters: [OnceLock<Counter>; 16],
}

impl ZoneServer {
    fn new(catalog: Catalog, index: Arc<NameIndex>) -> Self {
        Self {
            catalog,
            index,
            counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Answers `request` from the index, as hickory's catalog would from the zone: the
    /// header's flags, EDNS (version 0, the client's payload size but at least 512), and the
    /// truncation of a UDP answer that does not fit all come from the same builder and
    /// response handle; `answers` go in the answer section, `authorities` (the SOA of a
    /// negative answer) in the authority section.
    async fn respond<'a, R: ResponseHandler>(
        request: &Request,
        mut response_handle: R,
        response_code: ResponseCode,
        answers: impl Iterator<Item = &'a Record> + Send + 'a,
        authorities: impl Iterator<Item = &'a Record> + Send + 'a,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.response_code = response_code;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answers,
            std::iter::empty(),
            authorities,
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, ?response_code, "could not send an answer");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }

    /// Counts an answer by its response code.
    fn count(&self, response_code: ResponseCode) {
        let counter = || {
            // A clone shares the family's counter.
            METRICS
                .dns_queries
                .get_or_create(&RcodeLabel {
                    rcode: format!("{response_code:?}").to_ascii_lowercase(),
                })
                .clone()
        };
        match self.counters.get(usize::from(u16::from(response_code))) {
            Some(cached) => cached.get_or_init(counter).inc(),
            None => counter().inc(),
        };
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneServer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let info = match self.index.shortcut(request) {
            Shortcut::Values(set) => {
                let answers = set.records_without_rrsigs();
                let empty = std::iter::empty();
                Self::respond(
                    request,
                    response_handle,
                    ResponseCode::NoError,
                    answers,
                    empty,
                )
                .await
            }
            Shortcut::Missing => {
                let soa = std::iter::once(&self.index.soa);
                let empty = std::iter::empty();
                Self::respond(request, response_handle, ResponseCode::NXDomain, empty, soa).await
            }
            Shortcut::Catalog => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        };
        self.count(info.response_code);
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
                    let mut server = Server::new(ZoneServer::new(catalog, index));
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
    use hickory_server::net::xfer::Protocol;

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

    /// A zone served on a loopback port, and the server (stops when dropped).
    fn served() -> (ChallengeZone, DnsServer) {
        let zone = zone();
        let origin = DelegationZone::parse("acme.platform.test").expect("a zone");
        let listen = "127.0.0.1:0".parse().expect("an address");
        let server = DnsServer::start(&zone, &origin, listen).expect("a server");
        (zone, server)
    }

    /// A query of `name` for `record_type`, with EDNS (this payload size, version) or without.
    fn query(name: &str, record_type: RecordType, edns: Option<(u16, u8)>) -> Vec<u8> {
        use hickory_server::proto::op::{Message, Query};
        let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(
            Name::from_ascii(name).expect("a name"),
            record_type,
        ));
        if let Some((payload, version)) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            edns.set_version(version);
            message.set_edns(edns);
        }
        message.to_vec().expect("encoded")
    }

    /// The server's answer to `query`, over UDP.
    async fn ask(server: &DnsServer, query: &[u8]) -> hickory_server::proto::op::Message {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a socket");
        socket.send_to(query, server.address).await.expect("sent");
        let mut buffer = vec![0u8; 65_535];
        let (length, _) =
            tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
                .await
                .expect("an answer in time")
                .expect("received");
        hickory_server::proto::op::Message::from_vec(&buffer[..length]).expect("a DNS message")
    }

    /// The server's answer to `query`, over TCP (two bytes of length before each message).
    async fn ask_over_tcp(server: &DnsServer, query: &[u8]) -> hickory_server::proto::op::Message {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .expect("TCP");
        let length = u16::try_from(query.len()).expect("a short query");
        stream
            .write_all(&length.to_be_bytes())
            .await
            .expect("written");
        stream.write_all(query).await.expect("written");
        let read = async {
            let length = stream.read_u16().await.expect("a length");
            let mut buffer = vec![0u8; usize::from(length)];
            stream.read_exact(&mut buffer).await.expect("an answer");
            buffer
        };
        let buffer = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer in time");
        hickory_server::proto::op::Message::from_vec(&buffer).expect("a DNS message")
    }

    fn txt_values(records: &[Record]) -> Vec<String> {
        let mut values: Vec<String> = records
            .iter()
            .filter_map(|record| crate::adapters::dns::txt_value(&record.data))
            .collect();
        values.sort();
        values
    }

    fn answered(code: &str) -> u64 {
        METRICS
            .dns_queries
            .get_or_create(&RcodeLabel {
                rcode: code.to_owned(),
            })
            .get()
    }

    #[tokio::test]
    async fn a_published_name_is_answered_from_the_index_with_every_value() {
        let (zone, server) = served();
        let both = [
            ("shop.test", LABEL, "value-apex"),
            ("*.shop.test", LABEL, "value-wildcard"),
        ];
        zone.publish("d1", &order("o1", Validation::Delegated, &both))
            .await;
        let before = answered("noerror");
        let shortcut = |name: &str, record_type| {
            let query = query(name, record_type, None);
            let source = "127.0.0.1:5353".parse().expect("an address");
            let request = Request::from_bytes(query, source, Protocol::Udp).expect("a request");
            zone.index.shortcut(&request)
        };
        assert!(
            matches!(shortcut(LABEL, RecordType::TXT), Shortcut::Values(set) if set.records_count() == 2)
        );
        assert!(matches!(
            shortcut(OTHER, RecordType::TXT),
            Shortcut::Missing
        ));
        assert!(matches!(shortcut(LABEL, RecordType::A), Shortcut::Catalog));

        // Any case: names compare without it, and the question comes back as it was asked.
        let asked = "A1.Acme.Platform.TEST.";
        let answer = ask(&server, &query(asked, RecordType::TXT, None)).await;

        assert_eq!(answer.metadata.id, 4242);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative, "{answer:?}");
        assert!(answer.metadata.recursion_desired && !answer.metadata.recursion_available);
        assert_eq!(answer.queries[0].name().to_ascii(), asked);
        assert_eq!(
            txt_values(&answer.answers),
            ["value-apex", "value-wildcard"]
        );
        assert!(answer
            .answers
            .iter()
            .all(|record| record.ttl == CHALLENGE_TTL && record.name.to_ascii() == LABEL));
        assert!(
            answer.authorities.is_empty() && answer.edns.is_none(),
            "{answer:?}"
        );
        assert!(answered("noerror") > before, "counted by its response code");
    }

    #[tokio::test]
    async fn a_missing_or_withdrawn_name_is_answered_nxdomain_with_the_soa() {
        let (zone, server) = served();
        let first = [("shop.test", LABEL, "v1")];
        zone.publish("d1", &order("o1", Validation::Delegated, &first))
            .await;
        zone.withdraw("d1", Some("o1")).await;

        for name in [LABEL, OTHER, "below.b2.acme.platform.test."] {
            for record_type in [RecordType::TXT, RecordType::A] {
                let answer = ask(&server, &query(name, record_type, Some((1232, 0)))).await;
                assert_eq!(
                    answer.metadata.response_code,
                    ResponseCode::NXDomain,
                    "{name}"
                );
                assert!(answer.metadata.authoritative && answer.answers.is_empty());
                assert_eq!(answer.authorities.len(), 1, "{answer:?}");
                assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
                assert_eq!(answer.edns.as_ref().map(Edns::max_payload), Some(1232));
            }
        }
    }

    #[tokio::test]
    async fn other_questions_of_a_published_name_and_the_apex_are_hickorys_zones_to_answer() {
        let (zone, server) = served();
        let first = [("shop.test", LABEL, "v1")];
        zone.publish("d1", &order("o1", Validation::Delegated, &first))
            .await;

        // NODATA: the name exists, with no record of that type.
        let other_type = ask(&server, &query(LABEL, RecordType::A, None)).await;
        assert_eq!(other_type.metadata.response_code, ResponseCode::NoError);
        assert!(other_type.answers.is_empty(), "{other_type:?}");
        assert_eq!(other_type.authorities[0].record_type(), RecordType::SOA);

        let apex = ask(
            &server,
            &query("acme.platform.test.", RecordType::SOA, None),
        )
        .await;
        assert_eq!(apex.metadata.response_code, ResponseCode::NoError);
        assert_eq!(apex.answers[0].record_type(), RecordType::SOA, "{apex:?}");

        let outside = ask(&server, &query("example.com.", RecordType::TXT, None)).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

        let newer_edns = ask(&server, &query(LABEL, RecordType::TXT, Some((1232, 1)))).await;
        // BADVERS and BADSIG share the code 16, which the parser reads as BADSIG.
        let code = u16::from(newer_edns.metadata.response_code);
        assert_eq!(code, u16::from(ResponseCode::BADVERS), "{newer_edns:?}");
        assert!(newer_edns.answers.is_empty(), "{newer_edns:?}");
    }

    #[tokio::test]
    async fn a_published_answer_too_large_for_udp_is_truncated_and_whole_over_tcp_or_with_edns() {
        let (zone, server) = served();
        let values: Vec<String> = (0..20)
            .map(|n| format!("{n:02}{}", "v".repeat(41)))
            .collect();
        let challenges: Vec<(&str, &str, &str)> = values
            .iter()
            .map(|value| ("shop.test", LABEL, value.as_str()))
            .collect();
        zone.publish("d1", &order("o1", Validation::Delegated, &challenges))
            .await;

        let without_edns = ask(&server, &query(LABEL, RecordType::TXT, None)).await;
        assert!(without_edns.metadata.truncation, "{without_edns:?}");
        assert!(without_edns.answers.len() < values.len());

        let with_edns = ask(&server, &query(LABEL, RecordType::TXT, Some((4096, 0)))).await;
        assert!(!with_edns.metadata.truncation);
        assert_eq!(with_edns.answers.len(), values.len());

        let over_tcp = ask_over_tcp(&server, &query(LABEL, RecordType::TXT, None)).await;
        assert!(!over_tcp.metadata.truncation);
        assert_eq!(txt_values(&over_tcp.answers), values);
    }
}
