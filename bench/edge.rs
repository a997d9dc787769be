//! Run: `cargo bench --bench edge` (PARTS=lookup,http,sync,commit; N=100000 served
//! certificates for `http`, SYNC_N=10000 for `sync` and `commit`; EDGE_CACHE_ENTRIES=1000,
//! RUNS=3, wrk with THREADS=1, CONNECTIONS=1,16 (each), DURATION=10s; LOOKUP_SIZES=100000,1000000,
//! LOOKUPS=1000000; COMMITS=20; RSS_DOMAINS=1000000 adds a start with that many certificates
//! (opt-in: seeding takes minutes); STORES=sqlite,postgres; PostgreSQL at BENCH_POSTGRES_URL,
//! else TEST_POSTGRES_URL; needs `wrk`, and `caddy` for `commit`)
//!
//! Edge delivery (issue 25), in four parts:
//! 1. the in-process name lookup alone (`NameIndex::lookup`), and the index's bytes per name
//!    (`edge/lookup.rs`);
//! 2. `GET /edge/certificate` over HTTP at N served certificates beside `GET /healthz` in the
//!    same runs, cache warm and missing, with the cache's hit rate (`edge/http.rs`); and the
//!    service's RSS once its edge index is built;
//! 3. commit → served: to `GET /edge/certificate`, to Caddy presenting the certificate in a
//!    handshake, to `edge sync`'s file, beside the feed's own commit → follower latency
//!    (`edge/latency.rs`);
//! 4. `edge sync` of SYNC_N certificates into an empty directory: time, peak RSS
//!    (`edge/sync.rs`).
//!
//! The store is seeded directly (`seed_certificates.rs`): real certificates for three names each,
//! keys sealed as the service seals them, and the edge's first read of each key recorded.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod feed_reader;
mod harness;
#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod seed;
mod seed_certificates;
mod stats;
#[allow(dead_code)]
mod wrk;

#[path = "edge/http.rs"]
mod http;
#[path = "edge/latency.rs"]
mod latency;
#[path = "edge/lookup.rs"]
mod lookup;
#[path = "edge/sync.rs"]
mod sync;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dns_handling::adapters::store::Store;
use dns_handling_testkit::{database_env, Service, StoreKind, TempDir, TestDatabase};
use seed_certificates::Authority;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
pub const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

const ADMIN_TOKEN: &str = "edge-bench-admin-token";
/// The edge's name in `EDGE_TOKENS`.
pub const EDGE: &str = "bench";
/// The edge's token.
pub const EDGE_TOKEN: &str = "edge-bench-edge-token";
/// The key-encryption key the seeded keys are sealed under and the service is started with.
const KEK: &str = "ZWRnZS1iZW5jaC1rZXktZW5jcnlwdGlvbi1rZXktMzI=";

/// What to measure, from the environment (smaller in a smoke run).
pub struct Config {
    pub domains: usize,
    pub cache_entries: usize,
    pub runs: usize,
    pub threads: u32,
    /// wrk's connections: each scenario runs at each of them.
    pub connections: Vec<u32>,
    pub duration: String,
    pub warm_up: Option<String>,
    lookup_sizes: Vec<usize>,
    lookups: usize,
    commits: usize,
    /// Certificates served to `edge sync` (parts `sync` and `commit`): fewer than `domains`,
    /// since the agent's snapshot costs grow with the square of their number.
    sync_domains: usize,
    rss_domains: Option<usize>,
    /// Which parts run: `lookup`, `http`, `sync`, `commit` (which runs `sync` too: it needs
    /// its agent); `RSS_DOMAINS` runs whatever they are.
    parts: Vec<String>,
}

impl Config {
    fn part(&self, name: &str) -> bool {
        self.parts.iter().any(|part| part == name)
    }
}

/// The median of `values`, with their range: `1.23 (1.01–1.40)`; one value alone.
pub fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let format = |value: f64| {
        if value.abs() >= 100.0 {
            format!("{value:.0}")
        } else if value.abs() >= 10.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        }
    };
    let median = values[values.len() / 2];
    match values.len() {
        1 => format(median),
        _ => format!(
            "{} ({}–{})",
            format(median),
            format(values[0]),
            format(values[values.len() - 1])
        ),
    }
}

/// The service's environment for `database`.
fn service_env(database: &TestDatabase, cache_entries: usize) -> HashMap<String, String> {
    let mut env = database_env(database);
    env.extend(
        [
            ("AUTH_TOKEN", ADMIN_TOKEN.to_owned()),
            ("EDGE_TOKENS", format!("{EDGE}={EDGE_TOKEN}")),
            ("KEY_ENCRYPTION_KEY", KEK.to_owned()),
            ("EDGE_CACHE_ENTRIES", cache_entries.to_string()),
            // Both routes alike without a log line per request.
            ("LOG_LEVEL", "warn".to_owned()),
            // Never contacted: nothing is issued here.
            ("ACME_DIRECTORY", "http://127.0.0.1:9/dir".to_owned()),
        ]
        .map(|(key, value)| (key.to_owned(), value)),
    );
    env
}

/// Seeds `domains` certificates into a fresh database; returns it and the events written.
async fn seeded(
    kind: StoreKind,
    authority: &Authority,
    domains: usize,
) -> anyhow::Result<TestDatabase> {
    let database = TestDatabase::create(kind).await;
    let store = Store::connect(&database.url).await?;
    let seeding = Instant::now();
    let events = seed_certificates::seed(&store, authority, domains, Some(EDGE)).await?;
    seed::close(store).await;
    println!(
        "{kind:?}: seeded {domains} active domains with real certificates and sealed keys \
         ({events} events) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    Ok(database)
}

/// Starts the service and waits until its edge index is built (its `/readyz` no longer says
/// otherwise: the ACME directory, never started here, is the one thing it may miss) and it
/// serves the last seeded certificate; prints how long that took and its RSS then.
async fn started(
    kind: StoreKind,
    database: &TestDatabase,
    cache_entries: usize,
    domains: usize,
) -> anyhow::Result<Service> {
    let starting = Instant::now();
    let service = Service::start(BINARY, &service_env(database, cache_entries));
    loop {
        let (code, body) = service.get("/readyz").await;
        let error = body["error"].as_str().unwrap_or_default();
        if code == 200 || error.starts_with("ACME directory unreachable") {
            break;
        }
        anyhow::ensure!(
            starting.elapsed() < Duration::from_secs(900),
            "not ready after 15 minutes: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = starting.elapsed().as_secs_f64();
    let last = seed::domain_name(domains - 1);
    let response = reqwest::Client::new()
        .get(service.url("/edge/certificate"))
        .query(&[("server_name", format!("www.{last}"))])
        .bearer_auth(EDGE_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "www.{last} is not served: {}",
        response.status()
    );
    println!(
        "{kind:?}: the service with {domains} served certificates: edge index built {ready:.1} s \
         after the start, RSS then {:.0} MiB",
        process::status_mib(service.pid(), "VmRSS:")
    );
    Ok(service)
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let authority = Authority::new(KEK)?;
    let dir = TempDir::new("dns-handling-edge-bench");
    if config.part("http") {
        let database = seeded(kind, &authority, config.domains).await?;
        let mut service = started(kind, &database, config.cache_entries, config.domains).await?;
        let store = Store::connect(&database.url).await?;
        http::measure(kind, &service, &store, config, dir.path()).await?;
        seed::close(store).await;
        service.terminate();
    }
    if config.part("sync") || config.part("commit") {
        let domains = config.sync_domains;
        let database = seeded(kind, &authority, domains).await?;
        let mut service = started(kind, &database, config.cache_entries, domains).await?;
        let store = Store::connect(&database.url).await?;
        let sync_dir = dir.path().join(format!("edge-sync-{kind:?}"));
        let mut agent = sync::measure(kind, &service, domains, &sync_dir).await?;
        if config.part("commit") {
            latency::measure(
                kind,
                &store,
                &service,
                &authority,
                &mut agent,
                domains,
                config.commits,
            )
            .await?;
        }
        drop(agent);
        seed::close(store).await;
        service.terminate();
    }
    if let Some(domains) = config.rss_domains {
        let database = seeded(kind, &authority, domains).await?;
        let mut service = started(kind, &database, config.cache_entries, domains).await?;
        service.terminate();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Ok(child) = std::env::var(lookup::CHILD) {
        let (domains, lookups) = child
            .split_once(',')
            .and_then(|(d, l)| Some((d.parse().ok()?, l.parse().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("{}={child:?}", lookup::CHILD))?;
        return lookup::child(domains, lookups);
    }
    let benchmarking = harness::benchmarking();
    let number = |name: &str, bench: usize, smoke: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(if benchmarking { bench } else { smoke })
    };
    let list = |name: &str, bench: &str, smoke: &str| {
        let text = std::env::var(name)
            .unwrap_or_else(|_| if benchmarking { bench } else { smoke }.to_owned());
        (text.split(','))
            .filter_map(|item| item.trim().parse().ok())
            .collect::<Vec<usize>>()
    };
    let config = Config {
        domains: number("N", 100_000, 200),
        cache_entries: number("EDGE_CACHE_ENTRIES", 1_000, 20),
        runs: number("RUNS", 3, 1),
        threads: number("THREADS", 1, 1) as u32,
        connections: (list("CONNECTIONS", "1,16", "4").into_iter())
            .map(|c| c as u32)
            .collect(),
        duration: std::env::var("DURATION")
            .unwrap_or_else(|_| if benchmarking { "10s" } else { "1s" }.to_owned()),
        warm_up: benchmarking.then(|| "2s".to_owned()),
        lookup_sizes: list("LOOKUP_SIZES", "100000,1000000", "1000"),
        lookups: number("LOOKUPS", 1_000_000, 10_000),
        commits: number("COMMITS", 20, 3),
        sync_domains: number("SYNC_N", 10_000, 200),
        rss_domains: std::env::var("RSS_DOMAINS")
            .ok()
            .and_then(|v| v.parse().ok()),
        parts: std::env::var("PARTS")
            .unwrap_or_else(|_| "lookup,http,sync,commit".to_owned())
            .split(',')
            .map(|part| part.trim().to_owned())
            .collect(),
    };
    // A smoke run that silently skipped would assert nothing: without wrk, fail and say why.
    anyhow::ensure!(
        std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok(),
        "wrk is not installed (apt-get install -y wrk; tests/run.sh installs it)"
    );
    if config.part("lookup") {
        lookup::measure(&config.lookup_sizes, config.lookups, config.runs)?;
    }
    harness::on_each_store(|kind| run(kind, &config))
}
