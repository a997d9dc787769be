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
    let zone = zone();
    let origin = DelegationZone::parse("acme.platform.test").expect("a zone");
    let listen = "127.0.0.1:0".parse().expect("an address");
    let limits = TcpLimits {
        max_connections: 64,
        max_per_source: 64,
        idle: TcpLimits::IDLE,
        lifetime: TcpLimits::LIFETIME,
    };
    let server = DnsServer::start(&zone, &origin, listen, limits).expect("a server");
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
