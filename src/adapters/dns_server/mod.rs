//! The authoritative DNS server of the delegation zone (hickory-server): SOA and NS at the apex,
//! the TXT values of live delegated challenges at their labels, A and AAAA for the zone's own
//! nameservers (`DELEGATION_NAMESERVER_ADDRESSES`), NXDOMAIN for other names of the zone,
//! REFUSED for names outside it, never recursion. hickory's catalog answers the protocol
//! (EDNS, truncation of UDP answers that do not fit and the TCP fallback, FORMERR for malformed
//! queries, RFC 8482's minimal answer to ANY, AXFR refused); this module keeps its in-memory zone
//! current and runs it apart from the API. The two answers it gives most, a published name's
//! TXT values and NXDOMAIN for a missing name, it takes from a hash map of its own by name
//! rather than from hickory's zone, through the same response builder.
//!
//! Answers stay small whatever the query asks, so the server is no amplifier: a label holds the
//! values of one order's authorizations for one `_acme-challenge` name (a name and its wildcard:
//! two), and the apex only the operator's few NS names.
//!
//! Its parts: this file (the zone, its index, the handler and the server's thread), `tcp.rs`
//! (the TCP listener: connections capped in total and per source, a lifetime each, accept
//! errors backed off), and `tests.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

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
use crate::settings::NameserverAddress;

mod tcp;
pub use tcp::{cap_to_descriptors, TcpLimits};

/// TTL of the challenge values and of negative answers (the SOA minimum): a resolver that asked
/// a moment before a value was published asks again a second later, not minutes later.
const CHALLENGE_TTL: u32 = 1;

/// TTL of the apex's SOA and NS records, which change only with the configuration.
const APEX_TTL: u32 = 3600;

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
    /// The zone's own nameserver names that have addresses in it, and the names between them
    /// and the apex: hickory's zone answers them (A, AAAA, NODATA), never the shortcut's
    /// NXDOMAIN.
    hosts: HashSet<LowerName>,
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
        // Every name the zone holds below its apex is one label below it, or one of its own
        // nameservers (left to the catalog with the names above them), so a name below the
        // apex that is not published has nothing below it either: NXDOMAIN, not NODATA.
        if name == &self.origin || !self.origin.zone_of(name) || self.hosts.contains(name) {
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
        Self::with_nameserver_addresses(zone, nameservers, &[])
    }

    /// [`ChallengeZone::new`], with the A and AAAA records of the nameservers whose names are
    /// inside the zone (`ns1.<zone>`): the parent's glue gives resolvers those addresses, and
    /// the zone, authoritative for the names, must give the same rather than NXDOMAIN (a lame
    /// delegation). `addresses` outside the zone are refused.
    pub fn with_nameserver_addresses(
        zone: &DelegationZone,
        nameservers: &[String],
        addresses: &[NameserverAddress],
    ) -> Result<Self, ZoneError> {
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
        let apex = LowerName::new(&origin);
        let mut hosts = HashSet::new();
        for given in addresses {
            let host = name(&given.name)?;
            if !origin.zone_of(&host) || host == origin {
                return Err(ZoneError(format!(
                    "{given}: the nameserver is not inside {}",
                    zone.name()
                )));
            }
            let data = match given.address {
                IpAddr::V4(v4) => RData::A(v4.into()),
                IpAddr::V6(v6) => RData::AAAA(v6.into()),
            };
            handler.upsert_mut(Record::from_rdata(host.clone(), APEX_TTL, data), serial);
            let mut at = LowerName::new(&host);
            while at != apex {
                hosts.insert(at.clone());
                at = at.base_name();
            }
        }
        Ok(Self {
            handler: Arc::new(handler),
            published: Mutex::new(HashMap::new()),
            index: Arc::new(NameIndex {
                origin: LowerName::new(&origin),
                soa,
                sets: RwLock::new(HashMap::new()),
                values: AtomicI64::new(0),
                hosts,
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

/// The one [`ZoneServer`] both transports answer with: hickory's server owns its handler, and
/// the TCP listener ([`tcp::serve`]) shares it.
struct SharedZoneServer(Arc<ZoneServer>);

#[async_trait::async_trait]
impl RequestHandler for SharedZoneServer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
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
    /// take that one thread, never the API's workers. TCP connections are held within
    /// `tcp_limits`, its total cap lowered to half the process's limit of open files (raised
    /// to its hard limit first, see [`cap_to_descriptors`]), so that held connections cannot
    /// take the descriptors the API, the database pool and webhook sends need.
    pub fn start(
        zone: &ChallengeZone,
        origin: &DelegationZone,
        listen: SocketAddr,
        tcp_limits: TcpLimits,
    ) -> Result<Self, ZoneError> {
        let (max_connections, open_files) = cap_to_descriptors(tcp_limits.max_connections);
        if max_connections < tcp_limits.max_connections {
            tracing::warn!(
                configured = tcp_limits.max_connections,
                max_connections,
                ?open_files,
                "DNS_TCP_MAX_CONNECTIONS lowered to half the limit of open files"
            );
        }
        let tcp_limits = TcpLimits {
            max_connections,
            ..tcp_limits
        };
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
                    let handler = Arc::new(ZoneServer::new(catalog, index));
                    let mut server = Server::new(SharedZoneServer(handler.clone()));
                    // Aborted when dropped, with every connection it serves.
                    let mut tcp_listener = tokio::task::JoinSet::new();
                    match (
                        tokio::net::UdpSocket::from_std(udp),
                        tokio::net::TcpListener::from_std(tcp),
                    ) {
                        (Ok(udp), Ok(tcp)) => {
                            server.register_socket(udp);
                            tcp_listener.spawn(tcp::serve(tcp, handler, tcp_limits));
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
                    tcp_listener.shutdown().await;
                    if let Err(error) = server.shutdown_gracefully().await {
                        tracing::warn!(%error, "the DNS server did not stop cleanly");
                    }
                });
            })
            .map_err(|error| ZoneError(format!("no thread for the DNS server: {error}")))?;
        tracing::info!(
            %address,
            zone = %origin,
            tcp_max_connections = tcp_limits.max_connections,
            tcp_max_per_source = tcp_limits.max_per_source,
            "DNS server of the delegation zone listening"
        );
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
mod tests;
