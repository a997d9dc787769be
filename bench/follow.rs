//! Run: `cargo bench --bench follow` (N=500 events; STORES=sqlite,postgres; PostgreSQL at
//! BENCH_POSTGRES_URL, else TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres)
//!
//! Feed delivery latency: how long after a write is acknowledged a consumer following the feed
//! (`GET /events?follow=true`, NDJSON) has its event. Starts the release binary — on SQLite one
//! process, written to and followed; on PostgreSQL two replicas, one written to and the other
//! followed, so every event crosses replicas through `NOTIFY` — with the default
//! `FEED_POLL_INTERVAL` (1 s). Then registers N domains one after the other, each once the
//! previous one's event has arrived, and reports p50 / p99 / max of the time from sending each
//! `POST /domains` to the follower reading that domain's `DomainRegistered` line, beside the
//! same figures for the `201` itself, and how often the follower had the event first.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod feed_reader;
mod harness;

mod stats;

use std::time::{Duration, Instant};

use dns_handling_testkit::{database_env, Service, StoreKind, TestDatabase};
use serde_json::{json, Value};
use stats::percentile;
use tokio::sync::mpsc;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

const TOKEN: &str = "follow-bench-admin-token";

async fn run(kind: StoreKind, events: usize) -> anyhow::Result<()> {
    let database = TestDatabase::create(kind).await;
    let mut env = database_env(&database);
    env.insert("AUTH_TOKEN".into(), TOKEN.into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    let writer = Service::start(BINARY, &env);
    // On PostgreSQL the follower is another replica; SQLite is one process.
    let other = (kind == StoreKind::Postgres).then(|| Service::start(BINARY, &env));
    let reader = other.as_ref().unwrap_or(&writer);

    let stream = reader
        .client
        .get(reader.url("/events?after=0&follow=true"))
        .header("accept", "application/x-ndjson")
        .send()
        .await?;
    anyhow::ensure!(stream.status() == 200, "follow: {}", stream.status());
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let follower = tokio::spawn(feed_reader::follow(stream, None, sender));

    let mut delivered = Vec::with_capacity(events);
    let mut acknowledged = Vec::with_capacity(events);
    let mut delivered_first = 0;
    for n in 0..events {
        let sent = Instant::now();
        let response = writer
            .client
            .post(writer.url("/domains"))
            .json(&json!({"domain_name": format!("d{n}.follow.example.test")}))
            .send()
            .await?;
        acknowledged.push(sent.elapsed());
        anyhow::ensure!(response.status() == 201, "register: {}", response.status());
        let body: Value = response.json().await?;
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        loop {
            let (arrived_id, arrived) =
                tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                    .await
                    .map_err(|_| anyhow::anyhow!("event {n} did not arrive within 30 s"))?
                    .ok_or_else(|| anyhow::anyhow!("the following stream ended"))?;
            if arrived_id == id {
                let arrived = arrived.saturating_duration_since(sent);
                if arrived < acknowledged[n] {
                    delivered_first += 1;
                }
                delivered.push(arrived);
                break;
            }
        }
    }
    follower.abort();
    let summary = |samples: &mut Vec<Duration>| {
        let max = samples.iter().max().copied().unwrap_or_default();
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(percentile(samples, 0.50)),
            ms(percentile(samples, 0.99)),
            ms(max)
        )
    };
    println!(
        "{kind:?}{}, {events} events from sending the POST:\n  the follower has the event: {}\n  \
         the 201 arrives:            {}\n  the follower had it before the 201: {delivered_first} of {events}",
        if other.is_some() { " (written on one replica, followed on another)" } else { "" },
        summary(&mut delivered),
        summary(&mut acknowledged),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let events = std::env::var("N")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(if benchmarking { 500 } else { 20 });
    harness::on_each_store(|kind| run(kind, events))
}
