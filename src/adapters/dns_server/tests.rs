//! The delegation zone's DNS server, in process: its zone, its answers over UDP and TCP, and
//! the limits of its TCP connections.

use super::*;
use chrono::Utc;
use dns_handling_events::{CertificateKeyType, OrderChallenge};
use hickory_server::net::xfer::Protocol;
use std::time::Duration;

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
    served_with(zone(), limits(64, 64))
}

/// `zone` served on a loopback port within `limits`, and the server (stops when dropped).
fn served_with(zone: ChallengeZone, limits: TcpLimits) -> (ChallengeZone, DnsServer) {
    let origin = DelegationZone::parse("acme.platform.test").expect("a zone");
    let listen = "127.0.0.1:0".parse().expect("an address");
    let server = DnsServer::start(&zone, &origin, listen, limits).expect("a server");
    (zone, server)
}

/// TCP limits of `max_connections` in total and `max_per_source` per source.
fn limits(max_connections: usize, max_per_source: usize) -> TcpLimits {
    TcpLimits {
        max_connections,
        max_per_source,
        idle: TcpLimits::IDLE,
        lifetime: TcpLimits::LIFETIME,
    }
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
    let (length, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
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

/// A TCP connection to the server from the loopback address `source` (any of 127/8).
async fn connect_from(server: &DnsServer, source: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bound to a loopback address");
    socket.connect(server.address).await.expect("connected")
}

/// Whether the server closed `stream` within `within` (end of stream or reset).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer to an earlier query: read on.
            Ok(Ok(_)) => {}
        }
    }
}

/// Asks `query` on an open connection and reads the answer.
async fn ask_on(
    stream: &mut tokio::net::TcpStream,
    query: &[u8],
) -> hickory_server::proto::op::Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let length = u16::try_from(query.len()).expect("a short query");
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.expect("written");
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

#[tokio::test]
async fn tcp_connections_over_either_cap_are_closed_at_once_and_those_held_still_answer() {
    let (_zone, server) = served_with(zone(), limits(4, 2));
    let soa = query("acme.platform.test.", RecordType::SOA, None);
    let mut held = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 2], [127, 0, 0, 3]] {
        held.push(connect_from(&server, source).await);
    }
    // A third from one source: over the per-source cap.
    let mut third_from_one = connect_from(&server, [127, 0, 0, 2]).await;
    assert!(closed_within(&mut third_from_one, Duration::from_secs(2)).await);
    held.push(connect_from(&server, [127, 0, 0, 3]).await);
    // A fifth in all: over the total cap, whatever its source.
    let mut fifth = connect_from(&server, [127, 0, 0, 4]).await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);

    for stream in &mut held {
        let answer = ask_on(stream, &soa).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(!closed_within(stream, Duration::from_millis(100)).await);
    }
    // A closed connection gives its slot back.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from(&server, [127, 0, 0, 4]).await;
        if !closed_within(&mut again, Duration::from_millis(200)).await {
            let answer = ask_on(&mut again, &soa).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}

#[tokio::test]
async fn a_tcp_connection_that_keeps_asking_is_closed_at_the_end_of_its_lifetime() {
    let lifetime = Duration::from_millis(1500);
    let (_zone, server) = served_with(
        zone(),
        TcpLimits {
            lifetime,
            ..limits(8, 8)
        },
    );
    let soa = query("acme.platform.test.", RecordType::SOA, None);
    let mut stream = connect_from(&server, [127, 0, 0, 5]).await;
    let opened = std::time::Instant::now();
    let mut answered = 0;
    // A query well within the idle timeout each time, which reset hickory's idle timer for
    // ever: the lifetime ends it all the same.
    while opened.elapsed() < lifetime * 3 {
        use tokio::io::AsyncWriteExt;
        let length = u16::try_from(soa.len()).expect("a short query");
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&soa);
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(300)).await {
            break;
        }
        answered += 1;
    }
    let lived = opened.elapsed();
    assert!(answered >= 2, "answered while it lived: {answered}");
    assert!(
        lived >= lifetime && lived < lifetime * 3,
        "closed after {lived:?}, lifetime {lifetime:?}"
    );
}

/// The zone with nameservers inside it (one two labels down) and one outside, and the
/// addresses of those inside.
fn zone_with_its_own_nameservers() -> ChallengeZone {
    let zone = DelegationZone::parse("acme.platform.test").expect("a zone");
    let nameservers = [
        "ns1.acme.platform.test",
        "a.ns.acme.platform.test",
        "ns2.platform.test",
    ]
    .map(str::to_owned);
    let address = |name: &str, ip: &str| NameserverAddress {
        name: name.to_owned(),
        address: ip.parse().expect("an address"),
    };
    let addresses = [
        address("ns1.acme.platform.test", "192.0.2.53"),
        address("ns1.acme.platform.test", "2001:db8::53"),
        address("a.ns.acme.platform.test", "192.0.2.54"),
    ];
    ChallengeZone::with_nameserver_addresses(&zone, &nameservers, &addresses).expect("a zone")
}

#[tokio::test]
async fn the_zones_own_nameservers_are_answered_with_their_addresses_not_nxdomain() {
    let (_zone, server) = served_with(zone_with_its_own_nameservers(), limits(8, 8));
    let addresses = |answer: &hickory_server::proto::op::Message| -> Vec<String> {
        answer
            .answers
            .iter()
            .map(|record| record.data.to_string())
            .collect()
    };
    let a = ask(
        &server,
        &query("NS1.acme.platform.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{a:?}");
    assert!(a.metadata.authoritative, "{a:?}");
    assert_eq!(addresses(&a), ["192.0.2.53"]);
    let aaaa = ask(
        &server,
        &query("ns1.acme.platform.test.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(addresses(&aaaa), ["2001:db8::53"]);
    let deeper = ask(
        &server,
        &query("a.ns.acme.platform.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&deeper), ["192.0.2.54"]);

    // NODATA for another type, and for the name between a nameserver and the apex; NXDOMAIN
    // below a nameserver's name.
    for (name, record_type) in [
        ("ns1.acme.platform.test.", RecordType::TXT),
        ("ns.acme.platform.test.", RecordType::A),
    ] {
        let answer = ask(&server, &query(name, record_type, None)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(answer.answers.is_empty(), "{answer:?}");
    }
    let below = ask(
        &server,
        &query("x.ns1.acme.platform.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(below.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn an_address_for_a_nameserver_outside_the_zone_is_refused() {
    let zone = DelegationZone::parse("acme.platform.test").expect("a zone");
    let outside = NameserverAddress {
        name: "ns2.platform.test".to_owned(),
        address: "192.0.2.1".parse().expect("an address"),
    };
    let refused = ChallengeZone::with_nameserver_addresses(
        &zone,
        &["ns2.platform.test".to_owned()],
        &[outside],
    );
    assert!(refused.is_err());
}
