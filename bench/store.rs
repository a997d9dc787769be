//! Run: `cargo bench --bench store` (EVENTS=1000000 by default; PostgreSQL at BENCH_POSTGRES_URL,
//! default postgres://postgres:postgres@127.0.0.1:5432/postgres; STORES=sqlite,postgres)
//!
//! Loads EVENTS events (domains of five events each: registered, verified, requested,
//! observed, issued; hash-chained metadata as the service writes it, see `seed.rs`) into a
//! fresh database of each store, then measures:
//! - replay: rebuilding every projection from the first event (events/s);
//! - feed read: reading the whole global feed in pages of 5,000 (events/s);
//! - history: reading one domain's history with EVENTS in the store (p50/p99 of 2,000 reads).

// A bench binary: its items need no docs.
#![allow(missing_docs)]

#[allow(dead_code)]
mod seed;
mod stats;

use std::time::Instant;

use dns_handling::adapters::store::Store;
use dns_handling::read::projector::ViewProjector;
use rand::Rng;
use sqlx::Connection;
use stats::percentile;

const EVENTS_PER_DOMAIN: usize = 5;

async fn measure(label: &str, store: Store, events: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let domains = events / EVENTS_PER_DOMAIN;
    let loaded = seed::seed(&store, domains, seed::Lifecycle::Active).await?;
    eprintln!(
        "  loaded {loaded} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

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

    let mut samples = Vec::with_capacity(2_000);
    let mut rng = rand::thread_rng();
    for _ in 0..2_000 {
        let id = seed::domain_id(rng.gen_range(0..domains));
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
