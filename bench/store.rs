//! Run: `cargo bench --bench store` (EVENTS=1000000 by default; PostgreSQL at BENCH_POSTGRES_URL,
//! default postgres://postgres:postgres@127.0.0.1:5432/postgres; STORES=sqlite,postgres)
//!
//! Loads EVENTS events (domains of five events each: registered, verified, requested,
//! observed, issued) into a fresh database of each store, then measures:
//! - replay: rebuilding every projection from the first event (events/s);
//! - feed read: reading the whole global feed in pages of 5,000 (events/s);
//! - history: reading one domain's history with EVENTS in the store (p50/p99 of 2,000 reads).

// A bench binary: its items need no docs.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use chrono::Utc;
use dns_handling::projector::ViewProjector;
use dns_handling::store::Store;
use dns_handling_events::{CertificateKeyType, CustomDomainEvent, IssuedCertificate, OrderDetails};
use rand::Rng;
use sqlx::Connection;

const EVENTS_PER_DOMAIN: usize = 5;

fn domain_events(n: usize) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let name = format!("shop{n}.example.com");
    let order_id = format!("0193a7c2-0000-7000-8000-{n:012}");
    vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: name.clone(),
            verification_token: "6f1c0b0d9e3a4c5b8a7f6e5d4c3b2a1900112233".into(),
            verification_record_name: format!("_acme-challenge.{name}."),
            registered_at: now,
        },
        CustomDomainEvent::OwnershipVerified {
            observed_values: vec!["6f1c0b0d9e3a4c5b8a7f6e5d4c3b2a1900112233".into()],
            verified_at: now,
        },
        CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id: order_id.clone(),
                order_url: format!("https://acme.example/order/{n}"),
                challenge_url: format!("https://acme.example/chall/{n}"),
                challenge_domain: format!("_acme-challenge.{name}."),
                expected_txt_value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into(),
                account_id: "https://acme.example/acct/1".into(),
                poll_interval_ms: 10_000,
                deadline: now + chrono::Duration::minutes(5),
                key_type: CertificateKeyType::Rsa2048,
            },
            requested_at: now,
        },
        CustomDomainEvent::ChallengeRecordObserved {
            order_id: order_id.clone(),
            observed_values: vec!["LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into()],
            resolver: "127.0.0.1:53".into(),
            observed_at: now,
        },
        CustomDomainEvent::CertificateIssued {
            certificate: IssuedCertificate {
                certificate_id: format!("cert-{n}"),
                order_id,
                serial: "03a1b2c3d4e5f60718293a4b5c6d7e8f".into(),
                not_before: now,
                not_after: now + chrono::Duration::days(90),
                fingerprint_sha256: "ab".repeat(32),
                chain_pem: format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    "A".repeat(1400)
                ),
            },
            issued_at: now,
        },
    ]
}

/// One multi-row insert of `rows` events; PostgreSQL's payload and metadata columns are `json`.
fn insert_sql(rows: usize, postgres: bool) -> String {
    let json = if postgres { "::json" } else { "" };
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let b = r * 5;
            format!(
                "('CustomDomain', ${}, ${}, ${}, ${}, ${}{json}, '{{}}'{json})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            )
        })
        .collect();
    format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES {}",
        values.join(",")
    )
}

/// A stored event row: stream, sequence, type, version, payload.
type Row = (String, i64, &'static str, String, String);

/// Inserts the events with multi-row statements in large transactions (the triggers still
/// hand out every position, one by one).
async fn load(store: &Store, events: usize) -> anyhow::Result<()> {
    const ROWS_PER_STATEMENT: usize = 100;
    let domains = events / EVENTS_PER_DOMAIN;
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for n in 0..domains {
        for (index, event) in domain_events(n).into_iter().enumerate() {
            rows.push((
                format!("domain-{n:08}"),
                index as i64 + 1,
                event.type_name(),
                event.version().to_owned(),
                serde_json::to_string(&event)?,
            ));
        }
        if rows.len() < 50_000 && n + 1 < domains {
            continue;
        }
        macro_rules! insert_all {
            ($pool:expr, $postgres:expr) => {{
                let mut tx = $pool.begin().await?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let sql = insert_sql(chunk.len(), $postgres);
                    let mut query = sqlx::query(&sql);
                    for (id, sequence, kind, version, payload) in chunk {
                        query = query
                            .bind(id)
                            .bind(sequence)
                            .bind(*kind)
                            .bind(version)
                            .bind(payload);
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }};
        }
        match store {
            Store::Postgres(pool) => insert_all!(pool, true),
            Store::Sqlite(pool) => insert_all!(pool, false),
        }
        rows.clear();
        eprint!(
            "\r  loaded {} of {} events",
            (n + 1) * EVENTS_PER_DOMAIN,
            domains * EVENTS_PER_DOMAIN
        );
    }
    eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(label: &str, store: Store, events: usize) -> anyhow::Result<()> {
    store.migrate().await?;
    load(&store, events).await?;

    let started = Instant::now();
    let replayed = ViewProjector::new(store.clone()).rebuild(|_| {}).await?;
    let replay = started.elapsed();

    let started = Instant::now();
    let mut read = 0usize;
    let mut after = 0;
    loop {
        let page = store.events_after(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        read += page.len();
    }
    let feed = started.elapsed();

    let domains = events / EVENTS_PER_DOMAIN;
    let mut samples = Vec::with_capacity(2_000);
    let mut rng = rand::thread_rng();
    for _ in 0..2_000 {
        let id = format!("domain-{:08}", rng.gen_range(0..domains));
        let started = Instant::now();
        let history = store.domain_history(&id).await?;
        samples.push(started.elapsed());
        assert_eq!(history.len(), EVENTS_PER_DOMAIN);
    }
    // Every event was replayed and read exactly once.
    assert_eq!(replayed as usize, events, "replayed events");
    assert_eq!(read, events, "events read from the feed");
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);

    println!(
        "{label:<9} replay {replayed} events in {:.2} s = {:.0} events/s | feed read {read} events in {:.2} s = {:.0} events/s | one domain's history p50 {:.2} ms, p99 {:.2} ms",
        replay.as_secs_f64(),
        replayed as f64 / replay.as_secs_f64(),
        feed.as_secs_f64(),
        read as f64 / feed.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // as a quick smoke test of the same code paths on a few thousand events.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let events: usize = match std::env::var("EVENTS").ok().and_then(|v| v.parse().ok()) {
        Some(events) => events,
        None if benchmarking => 1_000_000,
        None => 5_000,
    };
    let stores = std::env::var("STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    if stores.contains("sqlite") {
        let dir = std::env::temp_dir().join(format!("dns-handling-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
        let result = measure("sqlite", store, events).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    if stores.contains("postgres") {
        let admin = std::env::var("BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
        let name = format!("dns_handling_bench_{}", std::process::id());
        let mut connection = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin);
        let store = Store::connect(&format!("{base}/{name}")).await?;
        let result = measure("postgres", store.clone(), events).await;
        if let Store::Postgres(pool) = store {
            pool.close().await;
        }
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut connection)
            .await?;
        result?;
    }
    Ok(())
}
