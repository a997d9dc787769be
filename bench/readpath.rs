//! Run: `cargo bench --bench readpath` (N=10000 domains; wrk with THREADS=2, CONNECTIONS=64,
//! DURATION=20s; LOG_LEVELS=info,warn; STORES=sqlite,postgres; PostgreSQL at BENCH_POSTGRES_URL, else
//! TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres; needs `wrk`)
//!
//! The read-path load test: seeds a fresh store with N `active` domains (their events written
//! directly, as `bench/store.rs` does; the service's projection catch-up builds the views on
//! start), starts the release binary with an admin token and `LOG_LEVEL=info`, and loads
//! `GET /domains/{id}` over uniformly random ids from a separate process (`wrk --latency`, a
//! Lua script picking the id per request). Reports wrk's requests/s and its p50/p99 latency;
//! then does the same with `LOG_LEVEL=warn`, to show what the service's logging costs.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod harness;
mod wrk;

#[allow(dead_code)]
mod seed;

use std::collections::HashMap;
use std::process::Command;

use dns_handling_testkit::{database_env, Service, StoreKind, TempDir};

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

const TOKEN: &str = "readpath-bench-admin-token";

struct Config {
    domains: usize,
    log_levels: Vec<String>,
    warm_up: Option<String>,
    threads: u32,
    connections: u32,
    duration: String,
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let database = seed::active_database(kind, config.domains).await?;
    let dir = TempDir::new("dns-handling-readpath-bench");
    let script = dir.path().join("random-domain.lua");
    std::fs::write(
        &script,
        wrk::random_domain_script(&seed::domain_id(0), config.domains, TOKEN),
    )?;

    for log_level in &config.log_levels {
        let mut env: HashMap<String, String> = database_env(&database);
        env.extend([
            ("AUTH_TOKEN".to_owned(), TOKEN.to_owned()),
            ("LOG_LEVEL".to_owned(), log_level.clone()),
            // Never contacted: nothing is issued here.
            (
                "ACME_DIRECTORY".to_owned(),
                "http://127.0.0.1:9/dir".to_owned(),
            ),
        ]);
        let mut service = Service::start(BINARY, &env);
        let (code, body) = service
            .get(&format!("/domains/{}", seed::domain_id(config.domains - 1)))
            .await;
        anyhow::ensure!(code == 200 && body["status"] == "active", "{code} {body}");
        // A short warm-up (connections, page cache, allocator), then the measured run.
        if let Some(warm_up) = &config.warm_up {
            wrk::run(
                &service.url(""),
                &script,
                config.threads,
                config.connections,
                warm_up,
            )?;
        }
        let log_before = service.log().len();
        let result = wrk::run(
            &service.url(""),
            &script,
            config.threads,
            config.connections,
            &config.duration,
        )?;
        let log = service.log();
        let logged = log.len() - log_before;
        println!(
            "{kind:?} LOG_LEVEL={log_level}: GET /domains/{{random id of {}}} with wrk -t{} -c{} -d{}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests{}; service log grew {logged} bytes)",
            config.domains,
            config.threads,
            config.connections,
            config.duration,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            result.requests,
            if result.errors.is_empty() {
                String::new()
            } else {
                format!("; {}", result.errors)
            },
        );
        // What the service logged during the run, a few distinct lines of it, so that a log
        // that grows under load says why.
        let mut seen: Vec<&str> = Vec::new();
        for line in log.get(log_before..).unwrap_or_default().lines() {
            let message = line.get(..160).unwrap_or(line);
            if seen.len() < 5 && !seen.contains(&message) {
                seen.push(message);
            }
        }
        for message in seen {
            println!("  logged: {message}");
        }
        anyhow::ensure!(
            result.errors.is_empty(),
            "wrk saw errors: {}",
            result.errors
        );
        service.terminate();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let config = Config {
        domains: number("N").unwrap_or(if benchmarking { 10_000 } else { 200 }) as usize,
        log_levels: match std::env::var("LOG_LEVELS") {
            Ok(levels) => levels.split(',').map(str::to_owned).collect(),
            Err(_) if benchmarking => vec!["info".to_owned(), "warn".to_owned()],
            Err(_) => vec!["info".to_owned()],
        },
        warm_up: benchmarking.then(|| "2s".to_owned()),
        threads: number("THREADS").unwrap_or(2),
        connections: number("CONNECTIONS").unwrap_or(if benchmarking { 64 } else { 8 }),
        duration: std::env::var("DURATION")
            .unwrap_or_else(|_| if benchmarking { "20s" } else { "1s" }.to_owned()),
    };
    // A smoke run that silently skipped would assert nothing: without wrk, fail and say why.
    anyhow::ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is not installed (apt-get install -y wrk; tests/run.sh installs it)"
    );
    harness::on_each_store(|kind| run(kind, &config))
}
