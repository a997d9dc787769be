//! Run: `cargo bench --bench replay`
//!
//! Criterion benchmarks of the event-sourced core, in memory: rebuilding a `CustomDomain` from
//! its events' JSON payloads (deserialise + `apply`), the projection update, event
//! serialisation, and command decisions (`handle`) on an aggregate with a long history. No
//! network and no database: reading a domain's events from the store, which the service does
//! for every command before it decides, is not measured here (`bench/store.rs` measures one
//! domain's history read), nor is appending the events a command decides.
//!
//! Every history is decided by the aggregate itself (`handle`, command by command), so each one
//! measured is a history the service can record.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chrono::{Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use dns_handling::domain::aggregate::{CustomDomain, CustomDomainCommand};
use dns_handling::domain::domain_name::DomainName;
use dns_handling::domain::renewal::RenewalPolicy;
use dns_handling_events::{
    CertificateKeyType, CustomDomainEvent, FailureReason, IssuedCertificate, OrderDetails,
};
use dns_handling_projections::DomainView;

/// The challenge value every order of a history expects (and finds).
const CHALLENGE_VALUE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

/// The verification token of every history.
const TOKEN: &str = "6f1c0b0d9e3a4c5b8a7f6e5d4c3b2a19";

/// The id of the certificate a history's one issuance stores.
const CERTIFICATE_ID: &str = "cert-issued";

/// The histories measured: (name, refused orders, key reads); see [`history`].
const HISTORIES: [(&str, usize, usize); 3] = [
    // Registered, verified, one order issued.
    ("5_events_issued", 0, 0),
    // Issued, then its key read 996 times: how an active domain's history grows.
    ("1001_events_996_key_reads", 0, 996),
    // 249 orders refused by the CA and retried, then one issued.
    ("1001_events_249_refused_orders", 249, 0),
];

/// Runs `command` through the aggregate's own decision, which also applies the events it
/// decides; returns them. Panics on a refusal: every history here is one the aggregate accepts.
fn decide(domain: &mut CustomDomain, command: CustomDomainCommand) -> Vec<CustomDomainEvent> {
    let sink = EventSink::default();
    run_ready(domain.handle(command, &RenewalPolicy::default(), &sink))
        .expect("the aggregate accepts the command");
    run_ready(sink.collect())
}

/// The `n`th order of a history.
fn order(n: usize) -> OrderDetails {
    OrderDetails {
        order_id: format!("0193a7c2-0000-7000-8000-{n:012}"),
        order_url: format!("https://acme.example/order/{n}"),
        names: vec!["shop.example.com".into()],
        challenges: vec![dns_handling_events::OrderChallenge {
            identifier: "shop.example.com".into(),
            challenge_url: format!("https://acme.example/chall/{n}"),
            challenge_domain: "_acme-challenge.shop.example.com.".into(),
            expected_txt_value: CHALLENGE_VALUE.into(),
            delegated_to: None,
        }],
        account_id: "https://acme.example/acct/1".into(),
        poll_interval_ms: 10_000,
        deadline: Utc::now() + Duration::minutes(5),
        key_type: CertificateKeyType::Rsa2048,
        validation: dns_handling_events::Validation::Manual,
        delegation_problem: None,
        ca_directory: String::new(),
    }
}

/// Requests order `n` and observes its challenge record: two events.
fn request_and_observe(domain: &mut CustomDomain, n: usize) -> (String, Vec<CustomDomainEvent>) {
    let order = order(n);
    let order_id = order.order_id.clone();
    let at = Utc::now();
    let mut events = decide(
        domain,
        CustomDomainCommand::RequestCertificate { order, at },
    );
    events.extend(decide(
        domain,
        CustomDomainCommand::TxtObserved {
            order_id: order_id.clone(),
            observed_values: [(
                "_acme-challenge.shop.example.com.".to_owned(),
                vec![TOKEN.to_owned(), CHALLENGE_VALUE.to_owned()],
            )]
            .into(),
            resolver: "127.0.0.1:53".into(),
            at,
        },
    ));
    (order_id, events)
}

/// A domain's history as the aggregate decides it, `2 + 4 × refused_orders + 3 + key_reads`
/// events: registration and verification; `refused_orders` orders whose record was seen and
/// which the CA then refused, each retried (four events each); one order issued (three events,
/// a 1.5 kB chain in `CertificateIssued`); then `key_reads` reads of its private key. Once a
/// domain is active, key reads are all its history can grow by (until its removal).
fn history(refused_orders: usize, key_reads: usize) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let mut domain = CustomDomain::default();
    let mut events = decide(
        &mut domain,
        CustomDomainCommand::RegisterDomain {
            domain_name: DomainName::parse("shop.example.com").expect("a valid name"),
            verification_token: TOKEN.into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            alt_names: Default::default(),
            tenant: None,
            at: now,
        },
    );
    events.extend(decide(
        &mut domain,
        CustomDomainCommand::VerifyOwnership {
            observed_values: vec![TOKEN.into()],
            delegation: None,
            at: now,
        },
    ));
    for n in 0..refused_orders {
        let (order_id, decided) = request_and_observe(&mut domain, n);
        events.extend(decided);
        events.extend(decide(
            &mut domain,
            CustomDomainCommand::OrderFailed {
                order_id,
                reason: FailureReason::new(
                    "challenge_invalid",
                    "urn:ietf:params:acme:error:unauthorized: Incorrect TXT record found",
                ),
                at: now,
            },
        ));
        events.extend(decide(
            &mut domain,
            CustomDomainCommand::RetryIssuance { at: now },
        ));
    }
    let (order_id, decided) = request_and_observe(&mut domain, refused_orders);
    events.extend(decided);
    events.extend(decide(
        &mut domain,
        CustomDomainCommand::OrderFinalized {
            certificate: IssuedCertificate {
                certificate_id: CERTIFICATE_ID.into(),
                order_id,
                serial: "03a1b2c3d4e5f60718293a4b5c6d7e8f".into(),
                not_before: now,
                not_after: now + Duration::days(90),
                fingerprint_sha256: "ab".repeat(32),
                chain_pem: "-----BEGIN CERTIFICATE-----\n".to_owned() + &"A".repeat(1500),
                ca_directory: String::new(),
            },
            at: now,
        },
    ));
    for _ in 0..key_reads {
        events.extend(decide(
            &mut domain,
            CustomDomainCommand::RecordPrivateKeyRead {
                certificate_id: CERTIFICATE_ID.into(),
                reader: "admin from 10.0.0.7".into(),
                at: now,
            },
        ));
    }
    assert_eq!(events.len(), 2 + 4 * refused_orders + 3 + key_reads);
    events
}

/// Rebuilding the aggregate from its events' JSON text, held in memory: deserialise each
/// payload and `apply` it. Reading the events from a store is not part of it.
fn deserialise_and_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("deserialise_and_apply");
    for (name, refused_orders, key_reads) in HISTORIES {
        let stored: Vec<String> = history(refused_orders, key_reads)
            .iter()
            .map(|event| serde_json::to_string(event).expect("serialises"))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(name), &stored, |b, stored| {
            b.iter(|| {
                let mut domain = CustomDomain::default();
                for json in stored {
                    let event: CustomDomainEvent =
                        serde_json::from_str(json).expect("deserialises");
                    domain.apply(event);
                }
                black_box(domain)
            })
        });
    }
    group.finish();
}

/// Folding a long history's events, already deserialised, into a `DomainView`.
fn project(c: &mut Criterion) {
    let mut group = c.benchmark_group("project_domain_view");
    for (name, refused_orders, key_reads) in HISTORIES.into_iter().skip(1) {
        let events = history(refused_orders, key_reads);
        group.bench_with_input(BenchmarkId::from_parameter(name), &events, |b, events| {
            b.iter(|| {
                let mut view =
                    DomainView::from_registration("d", 1, &events[0]).expect("registration");
                for (index, event) in events.iter().enumerate().skip(1) {
                    view.apply(index as u64 + 1, event);
                }
                black_box(view)
            })
        });
    }
    group.finish();
}

fn serialise(c: &mut Criterion) {
    let events = history(0, 0);
    assert!(matches!(
        events[2],
        CustomDomainEvent::CertificateRequested { .. }
    ));
    c.bench_function("serialise_certificate_requested", |b| {
        b.iter(|| black_box(serde_json::to_vec(&events[2]).expect("serialises")))
    });
}

/// Runs a future that never waits on I/O (`handle` only decides and writes to an in-memory
/// sink) to its end on this thread, without a runtime's overhead in the measurement.
fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// `handle` alone, on an aggregate that has applied 1,001 events (issued, then its key read
/// 996 times; `active`): an accepted `RecordPrivateKeyRead` (one event to the sink) and a
/// refused `RequestCertificate` (wrong status). The aggregate is rebuilt once, outside the
/// measurement. In the service a command first reads the domain's events from the store and
/// rebuilds the aggregate from them (`deserialise_and_apply`, in memory here), then decides.
fn handle_command(c: &mut Criterion) {
    let mut domain = CustomDomain::default();
    for event in history(0, 996) {
        domain.apply(event);
    }
    let order = order(1);
    let mut group = c.benchmark_group("handle_command_after_1001_events");
    group.bench_function("record_private_key_read_accepted", |b| {
        b.iter(|| {
            let sink = EventSink::default();
            let command = CustomDomainCommand::RecordPrivateKeyRead {
                certificate_id: CERTIFICATE_ID.into(),
                reader: "admin".into(),
                at: Utc::now(),
            };
            run_ready(domain.handle(black_box(command), &RenewalPolicy::default(), &sink))
                .expect("accepted");
            black_box(run_ready(sink.collect()))
        })
    });
    group.bench_function("request_certificate_refused", |b| {
        b.iter(|| {
            let sink = EventSink::default();
            let command = CustomDomainCommand::RequestCertificate {
                order: order.clone(),
                at: Utc::now(),
            };
            let refused =
                run_ready(domain.handle(black_box(command), &RenewalPolicy::default(), &sink));
            black_box(refused.expect_err("refused: the domain is active"))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    deserialise_and_apply,
    project,
    serialise,
    handle_command
);
criterion_main!(benches);
