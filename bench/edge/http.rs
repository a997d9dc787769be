//! Part 2: `GET /edge/certificate?server_name=` over HTTP beside `GET /healthz`, both loaded
//! by wrk in the same run, the edge's cache warm (a working set within `EDGE_CACHE_ENTRIES`)
//! and missing (names uniformly random over every served certificate).

use std::path::Path;
use std::time::{Duration, Instant};

use dns_handling::adapters::store::Store;
use dns_handling_testkit::{Service, StoreKind};
use futures::StreamExt;
use rand::Rng;

use crate::stats::percentile;
use crate::wrk::{self, WrkResult};
use crate::{seed, Config, EDGE_TOKEN};

/// Statements timed per run for the floor of a miss.
const STATEMENTS: usize = 5_000;

/// The wrk script: `GET /edge/certificate` for a domain in `first..=last` picked uniformly,
/// its name, its www. or a name under its wildcard; or `GET /healthz` when `range` is `None`.
fn script(range: Option<(usize, usize)>) -> String {
    let request = match range {
        Some((first, last)) => format!(
            r#"local prefixes = {{ "", "www.", "api." }}
local headers = {{ ["Authorization"] = "Bearer {EDGE_TOKEN}" }}
request = function()
  local name = prefixes[math.random(1, 3)] .. "shop" .. math.random({first}, {last}) .. ".example.com"
  return wrk.format("GET", "/edge/certificate?server_name=" .. name, headers)
end
"#
        ),
        None => r#"request = function()
  return wrk.format("GET", "/healthz")
end
"#
        .to_owned(),
    };
    format!("{}{request}", wrk::SEEDED_THREADS)
}

/// The cache's hits and misses so far.
async fn cache_counts(service: &Service) -> anyhow::Result<(f64, f64)> {
    let metrics = service.metrics().await;
    let sample = |series| {
        dns_handling_testkit::sample(&metrics, series)
            .ok_or_else(|| anyhow::anyhow!("no {series} in /metrics"))
    };
    Ok((
        sample("dns_handling_edge_certificate_cache_hits_total")?,
        sample("dns_handling_edge_certificate_cache_misses_total")?,
    ))
}

/// Asks for each of the `domains` certificates once, `concurrency` at a time: the first read
/// of each in this process (its aggregate loaded to see the edge's read is recorded). Returns
/// the requests per second.
pub async fn read_each_once(
    service: &Service,
    domains: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client = dns_handling_testkit::client_builder().build()?;
    let started = Instant::now();
    let mut answers = futures::stream::iter(0..domains)
        .map(|n| {
            let request = client
                .get(service.url("/edge/certificate"))
                .query(&[("server_name", seed::domain_name(n))])
                .bearer_auth(EDGE_TOKEN)
                .send();
            async move { (n, request.await.map(|response| response.status())) }
        })
        .buffer_unordered(concurrency);
    while let Some((n, status)) = answers.next().await {
        let status = status?;
        anyhow::ensure!(status == 200, "domain {n}'s certificate: {status}");
    }
    Ok(domains as f64 / started.elapsed().as_secs_f64())
}

/// The floor of a cache miss: the statement a miss runs (`Store::edge_materials` of one
/// domain, its row decoded), alone, in this process, one at a time, for domains picked
/// uniformly among `domains`: its p50 and p99 in µs. A miss is this statement plus the
/// request's own path, so its p50 cannot be under this one's.
async fn statement_alone(store: &Store, domains: usize) -> anyhow::Result<(f64, f64)> {
    let mut samples: Vec<Duration> = Vec::with_capacity(STATEMENTS);
    for _ in 0..STATEMENTS {
        let domain_id = seed::domain_id(rand::thread_rng().gen_range(0..domains));
        let started = Instant::now();
        let rows = store
            .edge_materials(std::slice::from_ref(&domain_id))
            .await?;
        samples.push(started.elapsed());
        anyhow::ensure!(
            rows.contains_key(&domain_id),
            "{domain_id} has no certificate"
        );
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    Ok((
        micros(percentile(&mut samples, 0.5)),
        micros(percentile(&mut samples, 0.99)),
    ))
}

/// One measured scenario: per run, `/healthz` then the edge route, each for the configured
/// duration; medians and spreads of the latencies, of their ratio within a run, and the
/// cache's hit rate during the edge runs. With `floor`, each run also times the statement a
/// miss runs, alone (see `statement_alone`).
async fn scenario(
    service: &Service,
    floor: Option<&Store>,
    config: &Config,
    connections: u32,
    dir: &Path,
    label: &str,
    range: (usize, usize),
) -> anyhow::Result<()> {
    let url = service.url("");
    let healthz = dir.join("healthz.lua");
    let edge = dir.join(format!("edge-{}-{}.lua", range.0, range.1));
    std::fs::write(&healthz, script(None))?;
    std::fs::write(&edge, script(Some(range)))?;
    let load = |script: &Path, duration: &str| {
        wrk::run(&url, script, config.threads, connections, duration)
    };
    if let Some(warm_up) = &config.warm_up {
        load(&edge, warm_up)?;
    }
    let mut rows: Vec<(WrkResult, WrkResult, f64)> = Vec::new();
    let mut floors: Vec<(f64, f64, f64)> = Vec::new();
    for _ in 0..config.runs {
        let healthz = load(&healthz, &config.duration)?;
        let (hits, misses) = cache_counts(service).await?;
        let edge = load(&edge, &config.duration)?;
        let (hits_after, misses_after) = cache_counts(service).await?;
        for result in [&healthz, &edge] {
            anyhow::ensure!(
                result.errors.is_empty(),
                "wrk saw errors: {}",
                result.errors
            );
        }
        let (hits, misses) = (hits_after - hits, misses_after - misses);
        let hit_rate = hits / (hits + misses).max(1.0);
        // Not a timing: a working set within the cache that misses means the cache is broken.
        let within_cache = range.1 - range.0 < config.cache_entries;
        anyhow::ensure!(
            !within_cache || hit_rate > 0.5,
            "{label}: a working set within the cache was found there at a rate of {hit_rate:.2}"
        );
        if let Some(store) = floor {
            let (p50, p99) = statement_alone(store, range.1 + 1).await?;
            floors.push((p50, p99, p50 / (healthz.p50_ms * 1e3)));
        }
        rows.push((healthz, edge, hit_rate));
    }
    let spread = |pick: &dyn Fn(&(WrkResult, WrkResult, f64)) -> f64| {
        crate::spread(rows.iter().map(pick).collect::<Vec<_>>())
    };
    println!(
        "  {label}, domains {}..={} ({} runs of wrk -t{} -c{} -d{} each):\n    \
         GET /edge/certificate: p50 {} µs, p99 {} µs, {} requests/s, cache hit rate {}\n    \
         GET /healthz:          p50 {} µs, p99 {} µs, {} requests/s\n    \
         ratio edge / healthz:  p50 {}×, p99 {}×",
        range.0,
        range.1,
        config.runs,
        config.threads,
        connections,
        config.duration,
        spread(&|r| r.1.p50_ms * 1e3),
        spread(&|r| r.1.p99_ms * 1e3),
        spread(&|r| r.1.requests_per_second),
        spread(&|r| r.2),
        spread(&|r| r.0.p50_ms * 1e3),
        spread(&|r| r.0.p99_ms * 1e3),
        spread(&|r| r.0.requests_per_second),
        spread(&|r| r.1.p50_ms / r.0.p50_ms),
        spread(&|r| r.1.p99_ms / r.0.p99_ms),
    );
    if !floors.is_empty() {
        let spread = |pick: &dyn Fn(&(f64, f64, f64)) -> f64| {
            crate::spread(floors.iter().map(pick).collect::<Vec<_>>())
        };
        println!(
            "    the miss's statement alone ({STATEMENTS} in process, one at a time): p50 {} µs, \
             p99 {} µs; its p50 / healthz p50: {}×",
            spread(&|f| f.0),
            spread(&|f| f.1),
            spread(&|f| f.2),
        );
    }
    Ok(())
}

/// Measures both scenarios on a service serving `config.domains` certificates, started with
/// `EDGE_CACHE_ENTRIES = config.cache_entries`.
pub async fn measure(
    kind: StoreKind,
    service: &Service,
    store: &Store,
    config: &Config,
    dir: &Path,
) -> anyhow::Result<()> {
    let rate = read_each_once(service, config.domains, 16).await?;
    println!(
        "{kind:?}: the first read of each of {} certificates after the start (the edge's read \
         already recorded: one aggregate load each, nothing appended): {rate:.0} requests/s",
        config.domains
    );
    let working_set = (config.cache_entries / 2).max(1);
    for &connections in &config.connections {
        let cached = format!(
            "{kind:?}, cached: {working_set} certificates, EDGE_CACHE_ENTRIES={}",
            config.cache_entries
        );
        let range = (0, working_set - 1);
        scenario(service, None, config, connections, dir, &cached, range).await?;
        let missing = format!(
            "{kind:?}, missing: uniformly over all {} certificates, EDGE_CACHE_ENTRIES={}",
            config.domains, config.cache_entries
        );
        let range = (0, config.domains - 1);
        // Once per store (with the first connection count: `-c1` unless told otherwise).
        let floor = (connections == config.connections[0]).then_some(store);
        scenario(service, floor, config, connections, dir, &missing, range).await?;
    }
    Ok(())
}
