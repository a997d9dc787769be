//! Run: `cargo bench --bench health` (N=100000 active domains; RECORD_RATE=500 checks/s asked
//! of the recording pass; RATES=100,300,1000 checks/s asked of the steady passes; DURATION=20 s
//! windows; API_RATE=200 requests/s; STORES=sqlite,postgres; PostgreSQL at BENCH_POSTGRES_URL,
//! else TEST_POSTGRES_URL; needs `unbound`)
//!
//! The periodic health checks at scale, against a real resolver. Seeds a fresh store with N
//! `active` domains (`bench/seed.rs`), and starts unbound answering from local data for every
//! seeded name (an `A` record at the routing target `192.0.2.10`, no `AAAA`, no CAA up the tree),
//! as the users' DNS would; the service resolves through it (`DNS_NAMESERVERS`) with
//! `ROUTING_TARGETS=192.0.2.10` (and CAA checked, the default), so a check asks unbound for `A`
//! and `AAAA` of the name and CAA of the name and each parent. A rate is asked of the service
//! through `HEALTH_CHECK_INTERVAL` = N / rate.
//!
//! Windows of DURATION, each with the API probe (`api_probe.rs`: `GET /domains/{id}` of the
//! seeded domains in turn, API_RATE a second on one keep-alive connection, each latency counted
//! from when the request was due), one `unbound-control stats_noreset` a second, and the
//! service's CPU:
//! - **without checks**: the service started with `HEALTH_CHECK_INTERVAL=1000d` (a check every
//!   864 s: none in the window), after an unmeasured window;
//! - **recording pass**: started again at RECORD_RATE; every check finds a domain never checked,
//!   so each records a `HealthChanged` event (once in a domain's life, and again only when
//!   something changes). The pass is awaited to its end;
//! - **without checks, after the recording pass**: as the first, on the store as the steady
//!   passes find it (the recording pass's events written, the database's work after them);
//! - **steady pass** at each of RATES: started again, after an unmeasured window; every check
//!   finds nothing changed and records nothing (a platform's steady state). Its p99 is set
//!   beside the second window without checks.
//!
//! Reports, per window: checks per second done (the `health_checks` counter), the queries per
//! second unbound answered (mean, and the busiest second against the mean: a pass is spread
//! evenly, so no second should exceed 2× the mean), the service's CPU and RSS, and the probe's
//! p50, p99 and max, its p99 beside a window without checks (the issue's target: within 1.2×).
//!
//! Under `cargo test --all-targets`, a smoke run: 300 domains, 100 checks/s, 1 s windows. It
//! fails when a check is missing or a domain is not found routed to the target, when unbound saw
//! no queries during a pass or some without one, or when an API request fails.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod api_probe;
mod harness;
mod process;
mod stats;

#[allow(dead_code)]
mod seed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    database_env, free_dns_port, sample, ChildGuard, Service, StoreKind, TempDir, TestDatabase,
};

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

const TOKEN: &str = "health-bench-admin-token";

/// Where every seeded name routes, and what the service is told the platform's edge is.
const ROUTING_TARGET: &str = "192.0.2.10";

struct Config {
    domains: usize,
    /// Checks a second asked of the recording pass.
    record_rate: u32,
    /// Checks a second asked of each steady pass.
    rates: Vec<u32>,
    duration: Duration,
    api_rate: u32,
    /// An unmeasured window first (connections, page cache, allocator after the start).
    warm_up: bool,
}

impl Config {
    fn from_env(benchmarking: bool) -> Config {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Config {
            domains: number("N").unwrap_or(if benchmarking { 100_000 } else { 300 }) as usize,
            record_rate: number("RECORD_RATE").unwrap_or(if benchmarking { 500 } else { 100 })
                as u32,
            rates: std::env::var("RATES")
                .unwrap_or_else(|_| if benchmarking { "100,300,1000" } else { "100" }.to_owned())
                .split(',')
                .filter_map(|rate| rate.trim().parse().ok())
                .collect(),
            duration: Duration::from_secs(number("DURATION").unwrap_or(if benchmarking {
                20
            } else {
                1
            })),
            api_rate: number("API_RATE").unwrap_or(200) as u32,
            warm_up: benchmarking,
        }
    }
}

/// Debian installs unbound's programs in /usr/sbin, which a non-root PATH may lack.
fn sbin(program: &str) -> PathBuf {
    let installed = Path::new("/usr/sbin").join(program);
    if installed.exists() {
        installed
    } else {
        PathBuf::from(program)
    }
}

/// unbound answering every seeded name from local data, its statistics read through its control
/// socket.
struct Unbound {
    _child: ChildGuard,
    dir: TempDir,
    port: u16,
}

impl Unbound {
    fn start(domains: usize) -> anyhow::Result<Unbound> {
        let dir = TempDir::new("health-bench-unbound");
        let port = free_dns_port();
        let mut data = String::with_capacity(domains * 64);
        for n in 0..domains {
            data.push_str(&format!(
                "local-data: \"{}. 300 IN A {ROUTING_TARGET}\"\n",
                seed::domain_name(n)
            ));
        }
        std::fs::write(dir.path().join("records.conf"), data)?;
        let config = format!(
            r#"server:
  interface: 127.0.0.1@{port}
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  verbosity: 0
  num-threads: 1
  # Every answer from the local data below, none from elsewhere: a name with no data is
  # NXDOMAIN, a name above the seeded ones (example.com, com) has no records of its own.
  local-zone: "." static
  include: "{dir}/records.conf"
remote-control:
  control-enable: yes
  control-use-cert: no
  control-interface: "{dir}/control.sock"
"#,
            dir = dir.path().display()
        );
        let config_path = dir.path().join("unbound.conf");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("unbound.log"))?;
        let child = Command::new(sbin("unbound"))
            .args(["-d", "-c"])
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start unbound ({e}); apt-get install unbound"))?;
        let unbound = Unbound {
            _child: ChildGuard { child },
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while unbound.queries().is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "unbound did not answer its control socket in 60 s: {}",
                std::fs::read_to_string(unbound.dir.path().join("unbound.log"))?
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(unbound)
    }

    fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The queries unbound has answered since it started.
    fn queries(&self) -> anyhow::Result<u64> {
        let output = Command::new(sbin("unbound-control"))
            .arg("-c")
            .arg(self.dir.path().join("unbound.conf"))
            .arg("stats_noreset")
            .output()?;
        anyhow::ensure!(output.status.success(), "unbound-control failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("total.num.queries="))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no total.num.queries in unbound's statistics"))
    }
}

/// Samples unbound's query count every second until told to stop: the queries of each second.
fn sample_queries(
    unbound: Arc<Unbound>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut per_second = Vec::new();
        let mut last = unbound.queries().unwrap_or(0);
        let mut next = Instant::now() + Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += Duration::from_secs(1);
            let now = unbound.queries().unwrap_or(last);
            per_second.push(now - last);
            last = now;
        }
        per_second
    })
}

/// What one window measured.
struct Window {
    checks_per_second: f64,
    queries_per_second: f64,
    busiest_to_mean: f64,
    queries: u64,
    service_cpu_pct: f64,
    rss_mib: f64,
    api: api_probe::ApiResult,
}

/// The `health_checks` counter, recorded or failed.
async fn checks(service: &Service) -> (f64, f64) {
    let metrics = service.metrics().await;
    let recorded = sample(
        &metrics,
        r#"dns_handling_health_checks_total{outcome="recorded"}"#,
    )
    .unwrap_or(0.0);
    let failed = sample(
        &metrics,
        r#"dns_handling_health_checks_total{outcome="failed"}"#,
    )
    .unwrap_or(0.0);
    (recorded, failed)
}

/// Probes the API for the window while sampling unbound and the service's CPU.
async fn measure(
    service: &Service,
    unbound: &Arc<Unbound>,
    config: &Config,
) -> anyhow::Result<Window> {
    let (checks_before, _) = checks(service).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_queries(unbound.clone(), stop.clone());
    let probe = api_probe::start_on_seeded_domains(
        service.address,
        TOKEN,
        config.domains,
        config.api_rate,
        stop.clone(),
    );
    let cpu_before = process::cpu_seconds(service.pid());
    let started = Instant::now();
    tokio::time::sleep(config.duration).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = process::cpu_seconds(service.pid()) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let per_second = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let api = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the API probe panicked"))?;
    let (checks_after, _) = checks(service).await;
    let queries: u64 = per_second.iter().sum();
    let mean = queries as f64 / per_second.len().max(1) as f64;
    let busiest = per_second.iter().copied().max().unwrap_or(0) as f64;
    Ok(Window {
        checks_per_second: (checks_after - checks_before) / wall,
        queries_per_second: mean,
        busiest_to_mean: if mean > 0.0 { busiest / mean } else { 0.0 },
        queries,
        service_cpu_pct: cpu / wall * 100.0,
        rss_mib: process::status_mib(service.pid(), "VmRSS:"),
        api,
    })
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn report(kind: StoreKind, name: &str, window: &Window, without: Option<&Window>) {
    let ratio = without.map_or(String::new(), |without| {
        format!(
            " = p99 {:.2}× without checks",
            window.api.p99.as_secs_f64() / without.api.p99.as_secs_f64()
        )
    });
    println!(
        "{kind:?} {name}: {:.0} checks/s | unbound {:.0} queries/s, busiest second {:.2}× the mean | service CPU {:.0} % of a core, VmRSS {:.0} MiB | API probe {} answered, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{ratio}",
        window.checks_per_second,
        window.queries_per_second,
        window.busiest_to_mean,
        window.service_cpu_pct,
        window.rss_mib,
        window.api.answered,
        window.api.failed,
        ms(window.api.p50),
        ms(window.api.p99),
        ms(window.api.max),
    );
}

fn service_env(
    database: &TestDatabase,
    unbound: &Unbound,
    interval: &str,
) -> HashMap<String, String> {
    let mut env = database_env(database);
    env.extend(
        [
            ("AUTH_TOKEN", TOKEN.to_owned()),
            ("LOG_LEVEL", "warn".to_owned()),
            // Never contacted: nothing is issued here.
            ("ACME_DIRECTORY", "http://127.0.0.1:9/dir".to_owned()),
            ("DNS_NAMESERVERS", unbound.nameserver()),
            ("ROUTING_TARGETS", ROUTING_TARGET.to_owned()),
            ("HEALTH_CHECK_INTERVAL", interval.to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    env
}

/// Waits until `health_checks` reaches `count` (a pass finished), within `within`.
async fn wait_for_checks(service: &Service, count: f64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (recorded, failed) = checks(service).await;
        anyhow::ensure!(failed == 0.0, "{failed} checks could not be recorded");
        if recorded >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{recorded} of {count} checks after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let database = seed::active_database(kind, config.domains).await?;
    let unbound = Arc::new(Unbound::start(config.domains)?);

    // Without checks.
    let mut service = Service::start(BINARY, &service_env(&database, &unbound, "1000d"));
    let (code, body) = service
        .get(&format!("/domains/{}", seed::domain_id(config.domains - 1)))
        .await;
    anyhow::ensure!(code == 200 && body["status"] == "active", "{code} {body}");
    // Domain 0's check falls at the start; the window begins after it.
    wait_for_checks(&service, 1.0, Duration::from_secs(30)).await?;
    if config.warm_up {
        measure(&service, &unbound, config).await?;
    }
    let without = measure(&service, &unbound, config).await?;
    report(kind, "without checks", &without, None);
    service.terminate();

    // The recording pass: every check finds a domain never checked and records it.
    let domains = config.domains as f64;
    let service = Service::start(
        BINARY,
        &service_env(
            &database,
            &unbound,
            &interval(config.domains, config.record_rate),
        ),
    );
    // The checks' lease the previous process held lapses after LEASE_TTL (30 s) on PostgreSQL:
    // the window begins with the pass.
    wait_for_checks(&service, 1.0, LEASE_LAPSE).await?;
    let recording = measure(&service, &unbound, config).await?;
    let name = format!("recording pass, {} checks/s asked", config.record_rate);
    report(kind, &name, &recording, Some(&without));
    let pass = Duration::from_secs_f64(domains / f64::from(config.record_rate));
    wait_for_checks(&service, domains, pass * 3).await?;
    // What a smoke run holds to: every domain checked, and found routed here.
    let metrics = service.metrics().await;
    let ok = sample(
        &metrics,
        r#"dns_handling_domains_health{check="routing",outcome="ok"}"#,
    )
    .unwrap_or(0.0);
    anyhow::ensure!(
        ok == domains,
        "{ok} of {domains} domains route to the target: {}",
        metrics
            .lines()
            .filter(|line| line.starts_with("dns_handling_domains_health"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(service);

    // Without checks again, as the steady passes find the store (a hundred thousand events
    // more, and whatever the database does after them): the steady passes' reference.
    let service = Service::start(BINARY, &service_env(&database, &unbound, "1000d"));
    wait_for_checks(&service, 1.0, LEASE_LAPSE).await?;
    if config.warm_up {
        measure(&service, &unbound, config).await?;
    }
    let settled = measure(&service, &unbound, config).await?;
    report(
        kind,
        "without checks, after the recording pass",
        &settled,
        Some(&without),
    );
    drop(service);

    // Steady passes, which find nothing changed and record nothing, at each rate.
    let mut windows = vec![(name, recording)];
    for &rate in &config.rates {
        let service = Service::start(
            BINARY,
            &service_env(&database, &unbound, &interval(config.domains, rate)),
        );
        wait_for_checks(&service, 1.0, LEASE_LAPSE).await?;
        if config.warm_up {
            // What a start does besides (the edge index, the audit log's walk) settles first.
            measure(&service, &unbound, config).await?;
        }
        let window = measure(&service, &unbound, config).await?;
        let name = format!("steady pass, {rate} checks/s asked");
        report(kind, &name, &window, Some(&settled));
        windows.push((name, window));
    }

    for (name, window) in &windows {
        anyhow::ensure!(window.queries > 0, "unbound saw no query in the {name}");
        anyhow::ensure!(
            window.api.failed == 0,
            "{name}: {} API requests failed",
            window.api.failed
        );
    }
    anyhow::ensure!(
        settled.queries < 20,
        "unbound saw {} queries without checks after the recording pass",
        settled.queries
    );
    anyhow::ensure!(
        without.queries < 20,
        "unbound saw {} queries without checks",
        without.queries
    );
    anyhow::ensure!(
        without.api.failed == 0,
        "{} API requests failed without checks",
        without.api.failed
    );
    Ok(())
}

/// How long a stopped process's checks' lease takes to lapse (`LEASE_TTL`, 30 s) and the next
/// process's first check to follow.
const LEASE_LAPSE: Duration = Duration::from_secs(60);

/// The `HEALTH_CHECK_INTERVAL` at which `domains` are checked at `rate` a second.
fn interval(domains: usize, rate: u32) -> String {
    format!("{}ms", domains as u64 * 1000 / u64::from(rate.max(1)))
}

fn main() -> anyhow::Result<()> {
    let config = Config::from_env(harness::benchmarking());
    harness::on_each_store(|kind| run(kind, &config))
}
