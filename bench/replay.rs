//! Run: `cargo bench --bench replay`
//!
//! Criterion benchmarks of the event-sourced core: replaying a domain's events (deserialise +
//! apply), the projection update, event serialisation, and command handling on an aggregate
//! with a long history. No network, no database.

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
use dns_handling_events::{CustomDomainEvent, IssuedCertificate, OrderDetails};
use dns_handling_projections::DomainView;

/// A realistic history: registration, verification, then `issuances` full issuance cycles.
fn history(issuances: usize) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let mut events = vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: "shop.example.com".into(),
            verification_token: "6f1c0b0d9e3a4c5b8a7f6e5d4c3b2a19".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            registered_at: now,
        },
        CustomDomainEvent::OwnershipVerified {
            observed_values: vec!["6f1c0b0d9e3a4c5b8a7f6e5d4c3b2a19".into()],
            verified_at: now,
        },
    ];
    for n in 0..issuances {
        let order_id = format!("0193a7c2-0000-7000-8000-{n:012}");
        events.push(CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id: order_id.clone(),
                order_url: format!("https://acme.example/order/{n}"),
                challenge_url: format!("https://acme.example/chall/{n}"),
                challenge_domain: "_acme-challenge.shop.example.com.".into(),
                expected_txt_value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into(),
                account_id: "https://acme.example/acct/1".into(),
                poll_interval_ms: 10_000,
                deadline: now + Duration::minutes(5),
                key_type: dns_handling_events::CertificateKeyType::Rsa2048,
            },
            requested_at: now,
        });
        events.push(CustomDomainEvent::ChallengeRecordObserved {
            order_id: order_id.clone(),
            observed_values: vec!["LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into()],
            resolver: "127.0.0.1:53".into(),
            observed_at: now,
        });
        events.push(CustomDomainEvent::CertificateIssued {
            certificate: IssuedCertificate {
                certificate_id: format!("cert-{n}"),
                order_id,
                serial: "03a1b2c3d4e5f60718293a4b5c6d7e8f".into(),
                not_before: now,
                not_after: now + Duration::days(90),
                fingerprint_sha256: "ab".repeat(32),
                chain_pem: "-----BEGIN CERTIFICATE-----\n".to_owned() + &"A".repeat(1500),
            },
            issued_at: now,
        });
    }
    events
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_domain");
    for issuances in [1usize, 333] {
        let events = history(issuances);
        let stored: Vec<String> = events
            .iter()
            .map(|event| serde_json::to_string(event).expect("serialises"))
            .collect();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}_events", events.len())),
            &stored,
            |b, stored| {
                b.iter(|| {
                    let mut domain = CustomDomain::default();
                    for json in stored {
                        let event: CustomDomainEvent =
                            serde_json::from_str(json).expect("deserialises");
                        domain.apply(event);
                    }
                    black_box(domain)
                })
            },
        );
    }
    group.finish();
}

fn project(c: &mut Criterion) {
    let events = history(333);
    c.bench_function("project_domain_view_1001_events", |b| {
        b.iter(|| {
            let mut view = DomainView::from_registration("d", 1, &events[0]).expect("registration");
            for (index, event) in events.iter().enumerate().skip(1) {
                view.apply(index as u64 + 1, event);
            }
            black_box(view)
        })
    });
}

fn serialise(c: &mut Criterion) {
    let events = history(1);
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

/// `handle` on an aggregate that has applied 1,001 events (333 issuances; `active`, with
/// `cert-332` current): an accepted `RecordPrivateKeyRead` (one event to the sink) and a
/// refused `RequestCertificate` (wrong status). The aggregate is rebuilt once, outside the
/// measurement; loading it from the store is what `replay_domain` measures.
fn handle_command(c: &mut Criterion) {
    let mut domain = CustomDomain::default();
    for event in history(333) {
        domain.apply(event);
    }
    let order = match &history(1)[2] {
        CustomDomainEvent::CertificateRequested { order, .. } => order.clone(),
        _ => unreachable!("the third event of a history is a request"),
    };
    let mut group = c.benchmark_group("handle_command_1001_events");
    group.bench_function("record_private_key_read_accepted", |b| {
        b.iter(|| {
            let sink = EventSink::default();
            let command = CustomDomainCommand::RecordPrivateKeyRead {
                certificate_id: "cert-332".into(),
                reader: "admin".into(),
                at: Utc::now(),
            };
            run_ready(domain.handle(black_box(command), &(), &sink)).expect("accepted");
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
            let refused = run_ready(domain.handle(black_box(command), &(), &sink));
            black_box(refused.expect_err("refused: the domain is active"))
        })
    });
    group.finish();
}

criterion_group!(benches, replay, project, serialise, handle_command);
criterion_main!(benches);
