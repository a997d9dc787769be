//! Run: `cargo bench --bench issuance` (N=200 domains; RSA-2048 keys on sqlite×1, postgres×1 and
//! postgres×3 replicas, then ECDSA P-256 keys on sqlite×1 and postgres×1, each certificate for
//! one name; then three names per certificate (the domain, `www` and the wildcard: one order,
//! three authorizations) with RSA-2048 keys on sqlite×1 and postgres×1; needs pebble and
//! PostgreSQL, as the test script installs them. `KEY_TYPE=…` and `NAMES=1|3` pick rows.)
//!
//! The end-to-end issuance throughput driver: starts Pebble and its DNS server (no nonce
//! rejection, no validation sleep) and the release binary, registers and verifies N domains,
//! then calls `issue-certificate` on all of them at once (spread over the replicas), publishes
//! each TXT record right after its `202`, and waits until all are `active`. Reports
//! certificates/s, the service's CPU seconds per certificate (from /proc), its peak RSS, the
//! p50/p99 time from TXT published to `active` (POLL_INTERVAL=1s), and how the finalizations
//! were spread over the replicas.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod process;
mod stats;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    service_env, verified_domain_with_alt_names, Pebble, PebbleOptions, Service, StoreKind,
    TestDatabase,
};
use futures::future::join_all;
use process::{cpu_seconds, status_mib};
use serde_json::{json, Value};
use stats::percentile;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

/// Registers `name` with `names - 1` further names (`www.` and `*.`) and proves its ownership
/// through Pebble's DNS server; returns its id.
async fn verified_domain_with_names(
    service: &Service,
    pebble: &Pebble,
    name: &str,
    names: usize,
) -> String {
    let alt_names = [format!("www.{name}"), format!("*.{name}")];
    let alt_names: Vec<&str> = alt_names
        .iter()
        .map(String::as_str)
        .take(names - 1)
        .collect();
    verified_domain_with_alt_names(service, pebble, name, &alt_names).await
}

async fn run(
    kind: StoreKind,
    replicas: usize,
    key_type: &str,
    names: usize,
    domains: usize,
) -> anyhow::Result<()> {
    let pebble = Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(kind).await;
    let mut env = service_env(&pebble, &database);
    env.insert("POLL_INTERVAL".into(), "1s".into());
    env.insert("POLL_TIMEOUT".into(), "10m".into());
    env.insert("LOG_LEVEL".into(), "info".into());
    env.insert("CERT_KEY_TYPE".into(), key_type.into());
    if replicas > 1 {
        env.remove("REPLICA_ID");
    }
    let services: Vec<Service> = (0..replicas)
        .map(|_| Service::start(BINARY, &env))
        .collect();
    let mut ids = Vec::with_capacity(domains);
    for n in 0..domains {
        ids.push(
            verified_domain_with_names(
                &services[n % replicas],
                &pebble,
                &format!("b{n}.example.test"),
                names,
            )
            .await,
        );
    }
    let cpu_before: f64 = services.iter().map(|s| cpu_seconds(s.pid())).sum();
    let dns = reqwest::Client::new();
    let set_txt = format!("http://127.0.0.1:{}/set-txt", pebble.challtestsrv_port);

    let started = Instant::now();
    let issue = ids.iter().enumerate().map(|(n, id)| {
        let service = &services[n % replicas];
        let (dns, set_txt) = (&dns, &set_txt);
        async move {
            let (code, body) = service
                .post(&format!("/domains/{id}/issue-certificate"), None)
                .await;
            assert_eq!(code, 202, "{body}");
            for challenge in body["challenges"].as_array().into_iter().flatten() {
                dns.post(set_txt)
                    .json(&json!({"host": challenge["challenge_domain"], "value": challenge["expected_txt_value"]}))
                    .send()
                    .await
                    .expect("set-txt");
            }
            (id.clone(), Instant::now())
        }
    });
    let published: HashMap<String, Instant> = join_all(issue).await.into_iter().collect();

    let mut active_at: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while active_at.len() < domains {
        assert!(
            Instant::now() < deadline,
            "not all active within 10 minutes"
        );
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/domains?status=active&limit=500&cursor={cursor}"),
                None => "/domains?status=active&limit=500".to_owned(),
            };
            let (_, page) = services[0].get(&path).await;
            let now = Instant::now();
            for item in page["items"].as_array().into_iter().flatten() {
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                active_at.entry(id).or_insert(now);
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = active_at
        .values()
        .max()
        .map_or(Duration::ZERO, |last| *last - started);
    let cpu: f64 = services.iter().map(|s| cpu_seconds(s.pid())).sum::<f64>() - cpu_before;
    let rss = services
        .iter()
        .map(|s| status_mib(s.pid(), "VmHWM:"))
        .fold(0.0, f64::max);
    let mut latencies: Vec<Duration> = active_at
        .iter()
        .map(|(id, at)| at.saturating_duration_since(published[id]))
        .collect();
    let spread: Vec<usize> = services
        .iter()
        .map(|s| s.log().matches("finalizing order").count())
        .collect();
    let events: Value = json!(database.count("events").await);
    println!(
        "{kind:?} × {replicas}, {key_type}, {names} name(s) each: {domains} certificates in {:.2} s = {:.2} certificates/s | CPU {:.3} s per certificate | peak RSS {:.0} MiB | TXT→active p50 {:.2} s, p99 {:.2} s | finalizations per replica {spread:?} | {events} events",
        elapsed.as_secs_f64(),
        domains as f64 / elapsed.as_secs_f64(),
        cpu / domains as f64,
        rss,
        percentile(&mut latencies, 0.50).as_secs_f64(),
        percentile(&mut latencies, 0.99).as_secs_f64(),
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    dns_handling::install_crypto_provider();
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is a smoke run.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let domains: usize = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benchmarking { 200 } else { 6 });
    // (store, replicas, key type, names per certificate)
    let configurations: &[(StoreKind, usize, &str, usize)] = if benchmarking {
        &[
            (StoreKind::Sqlite, 1, "rsa2048", 1),
            (StoreKind::Postgres, 1, "rsa2048", 1),
            (StoreKind::Postgres, 3, "rsa2048", 1),
            (StoreKind::Sqlite, 1, "ecdsa-p256", 1),
            (StoreKind::Postgres, 1, "ecdsa-p256", 1),
            (StoreKind::Sqlite, 1, "rsa2048", 3),
            (StoreKind::Postgres, 1, "rsa2048", 3),
        ]
    } else {
        &[
            (StoreKind::Sqlite, 1, "rsa2048", 1),
            (StoreKind::Postgres, 2, "ecdsa-p256", 1),
            (StoreKind::Sqlite, 1, "ecdsa-p256", 3),
        ]
    };
    // `KEY_TYPE=ecdsa-p256` (or `rsa2048`) and `NAMES=3` (or `1`) run only those rows.
    let only_key = std::env::var("KEY_TYPE").ok();
    let only_names: Option<usize> = std::env::var("NAMES").ok().and_then(|n| n.parse().ok());
    for (kind, replicas, key_type, names) in configurations {
        if only_key.as_deref().is_some_and(|only| only != *key_type)
            || only_names.is_some_and(|only| only != *names)
        {
            continue;
        }
        run(*kind, *replicas, key_type, *names, domains).await?;
    }
    Ok(())
}
