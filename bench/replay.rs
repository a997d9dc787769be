//! Run: `cargo bench --bench replay`
//!
//! Criterion benchmarks of the event-sourced core: replaying a domain's events (deserialise +
//! apply), the projection update, and event serialisation. No network, no database.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use chrono::{Duration, Utc};
use cqrs_es::Aggregate;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use dns_handling::aggregate::CustomDomain;
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

criterion_group!(benches, replay, project, serialise);
criterion_main!(benches);
