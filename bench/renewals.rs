//! Run: `cargo bench --bench renewals` (N=1000000 active domains, DUE=1000 of them due, RUNS=3
//! service starts, RENEWAL_CHECK_INTERVAL_S=10, POLL_INTERVAL_S=10, IDLE_WINDOW=60 s;
//! STORES=sqlite,postgres; PostgreSQL at BENCH_POSTGRES_URL, else TEST_POSTGRES_URL, else
//! postgres://postgres@127.0.0.1:5432/postgres)
//!
//! The renewal scale test. Seeds a store once with N `active` domains whose renewal is
//! scheduled (events hash-chained as the service chains them, names reserved, domain and
//! certificate views written as the projector writes them, the checkpoint at the last event):
//! DUE of them, spread over the id range, fell due within the last hour; the rest are due 30 to
//! 42 days on (each domain its own time).
//! Then, RUNS times, on a fresh copy of that store (PostgreSQL: `CREATE DATABASE … TEMPLATE`;
//! SQLite: a copy of the file) and with a fresh Pebble, it starts the release binary and
//! measures:
//! - start: from spawn until `/readyz` answers 200 (connect, migrate, projection catch-up with
//!   nothing to do, resume of no pending order), against a raw `SELECT COUNT(*) FROM events`
//!   on the same copy just before;
//! - the due query as the scheduler runs it, on the copy before the start: PostgreSQL's
//!   `EXPLAIN (ANALYZE, BUFFERS)`, SQLite's `EXPLAIN QUERY PLAN` and the query's time;
//! - renewals: when the first and the last of the `RenewalRequested` events were recorded, how
//!   many, and every other event written since the seed (there should be none: no
//!   `RenewalScheduled` for the domains not due, no failures), counted two check intervals after
//!   the last renewal started;
//! - memory: VmHWM (peak RSS) and VmRSS, against the size of the stored views;
//! - idle: over IDLE_WINDOW seconds after that, with nothing due (the DUE renewal orders wait
//!   for TXT records that never come, their pollers looking every POLL_INTERVAL_S), the
//!   service's CPU share, beside the PostgreSQL server's (every `postgres` process) and
//!   Pebble's over the same window, and the events written in it;
//! - then one `GET /metrics` (its counts read the views) and, in the first run only, the first
//!   signed audit checkpoint of the process (`POST /audit/checkpoints`, which walks the log, the
//!   seed storing no checkpoint), then the service restarted on the same copy and its first
//!   checkpoint, which starts from the one just signed (SIGN_CHECKPOINT=0 leaves both out).

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod harness;

mod process;

#[allow(dead_code)]
mod seed;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dns_handling::adapters::store::Store;
use dns_handling::read::projector::DOMAIN_VIEWS;
use dns_handling_testkit::{
    drop_postgres_database, postgres_admin_url, service_env, ChildGuard, Pebble, PebbleOptions,
    StoreKind, TempDir, TestDatabase,
};
use process::{cpu_seconds, status_mib};
use sqlx::{Connection, Row};

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

/// The scheduler's due query, as `Store::due_domain_views` runs it (`$1` is now, `$2` 1,000).
const DUE_QUERY: &str = "SELECT payload FROM domain_views \
                         WHERE wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT $2";

macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

struct Config {
    domains: usize,
    due: usize,
    runs: usize,
    check_interval: Duration,
    poll_interval: Duration,
    idle_window: Duration,
    /// Whether the first run also times the process's first audit checkpoint.
    sign_checkpoint: bool,
}

/// Whether seeded domain `n` is one of the `due` due ones (spread evenly over the ids).
fn is_due(n: usize, domains: usize, due: usize) -> bool {
    let step = (domains / due.max(1)).max(1);
    due > 0 && n.is_multiple_of(step) && n / step < due
}

/// A UTC time as the views store it (`wake_at`).
fn sortable(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A copy of the seeded store, removed on drop.
struct Copy {
    url: String,
    postgres_name: Option<String>,
    _dir: TempDir,
}

impl Copy {
    async fn of(seeded: &TestDatabase, run: usize) -> anyhow::Result<Copy> {
        let dir = TempDir::new("dns-handling-renewals-copy");
        match seeded.kind {
            StoreKind::Postgres => {
                let (base, template) = seeded
                    .url
                    .rsplit_once('/')
                    .ok_or_else(|| anyhow::anyhow!("no database name in {}", seeded.url))?;
                let name = format!("{template}_run{run}");
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await?;
                // The template must have no session (an autovacuum worker counts): try again.
                let mut attempts = 0;
                while let Err(error) =
                    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                        .execute(&mut admin)
                        .await
                {
                    attempts += 1;
                    anyhow::ensure!(attempts < 120, "cannot copy {template}: {error}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(Copy {
                    url: format!("{base}/{name}"),
                    postgres_name: Some(name),
                    _dir: dir,
                })
            }
            StoreKind::Sqlite => {
                let from = sqlite_file(&seeded.url);
                let to = dir.path().join("service.db");
                std::fs::copy(&from, &to)?;
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", from.display()));
                    if side.exists() {
                        std::fs::copy(&side, format!("{}{suffix}", to.display()))?;
                    }
                }
                Ok(Copy {
                    url: format!("sqlite://{}", to.display()),
                    postgres_name: None,
                    _dir: dir,
                })
            }
        }
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if let Some(name) = self.postgres_name.take() {
            drop_postgres_database(&name);
        }
    }
}

fn sqlite_file(url: &str) -> PathBuf {
    PathBuf::from(url.trim_start_matches("sqlite://"))
}

/// Seconds a raw `SELECT COUNT(*) FROM events` takes, and the count.
async fn time_count(store: &Store) -> anyhow::Result<(f64, i64)> {
    let started = Instant::now();
    let count: i64 = on_pool!(store, pool => sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await?);
    Ok((started.elapsed().as_secs_f64(), count))
}

/// The due query's plan (PostgreSQL: executed, with buffers) and its time in milliseconds.
async fn due_plan(store: &Store, due: usize) -> anyhow::Result<(String, f64)> {
    let now = sortable(Utc::now());
    let limit = 1_000i64;
    Ok(match store {
        Store::Postgres(pool) => {
            // The literal stands for the parameter: the plan the scheduler's query gets.
            let sql = format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                DUE_QUERY
                    .replace("$1", &format!("'{now}'"))
                    .replace("$2", &limit.to_string())
            );
            let lines: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await?;
            let execution_ms = lines
                .iter()
                .find_map(|line| line.strip_prefix("Execution Time: "))
                .and_then(|text| text.trim_end_matches(" ms").parse().ok())
                .unwrap_or(f64::NAN);
            (lines.join("\n"), execution_ms)
        }
        Store::Sqlite(pool) => {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {DUE_QUERY}"))
                .bind(&now)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("detail"))
                .collect::<Result<_, _>>()?;
            let started = Instant::now();
            let rows = sqlx::query(DUE_QUERY)
                .bind(&now)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .len();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(rows == due, "the due query found {rows} rows, not {due}");
            (plan.join("\n"), ms)
        }
    })
}

/// Events written after `position`, by type.
async fn types_after(store: &Store, position: i64) -> anyhow::Result<BTreeMap<String, i64>> {
    let sql = "SELECT event_type, COUNT(*) FROM events WHERE position > $1 GROUP BY event_type";
    let rows: Vec<(String, i64)> =
        on_pool!(store, pool => sqlx::query_as(sql).bind(position).fetch_all(pool).await?);
    Ok(rows.into_iter().collect())
}

async fn renewals_after(store: &Store, position: i64) -> anyhow::Result<i64> {
    let sql = "SELECT COUNT(*) FROM events WHERE position > $1 AND event_type = 'RenewalRequested'";
    Ok(on_pool!(store, pool => sqlx::query_scalar(sql).bind(position).fetch_one(pool).await?))
}

/// When the first and the last `RenewalRequested` after `position` were recorded.
async fn renewal_span(
    store: &Store,
    position: i64,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let sql = "SELECT MIN(recorded_at), MAX(recorded_at) FROM events \
               WHERE position > $1 AND event_type = 'RenewalRequested'";
    let (first, last): (Option<String>, Option<String>) =
        on_pool!(store, pool => sqlx::query_as(sql).bind(position).fetch_one(pool).await?);
    let parse = |text: Option<String>| {
        text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Ok(parse(first).zip(parse(last)))
}

/// The stored domain views' size in MiB: on PostgreSQL `domain_views` with its indexes and
/// TOAST; on SQLite (no `dbstat` here) the bytes of their payloads, a lower bound.
async fn views_mib(store: &Store) -> anyhow::Result<f64> {
    let sql = match store {
        Store::Postgres(_) => "SELECT pg_total_relation_size('domain_views')",
        Store::Sqlite(_) => "SELECT SUM(LENGTH(payload)) FROM domain_views",
    };
    let bytes: i64 = on_pool!(store, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
    Ok(bytes as f64 / 1048576.0)
}

/// Every process whose command name is `comm` (and whose command line contains `marker`).
fn pids_named(comm: &str, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            name.trim() == comm && String::from_utf8_lossy(&line).contains(marker)
        })
        .collect()
}

/// CPU seconds so far of each of `pids`.
fn cpu_of(pids: &[u32]) -> HashMap<u32, f64> {
    pids.iter().map(|pid| (*pid, cpu_seconds(*pid))).collect()
}

/// CPU seconds spent since `before` by the processes still running.
fn cpu_since(before: &HashMap<u32, f64>) -> f64 {
    before
        .iter()
        .map(|(pid, then)| (cpu_seconds(*pid) - then).max(0.0))
        .sum()
}

/// The service process, its stdout's first line (the address) read, its log in a file.
struct Running {
    guard: ChildGuard,
    log_path: PathBuf,
    address: SocketAddr,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.guard.child.try_wait()? {
            anyhow::bail!("the service exited with {status}; its log:\n{}", self.log());
        }
        Ok(())
    }

    /// The time of the first log line containing `needle`.
    fn logged_at(&self, needle: &str) -> Option<DateTime<Utc>> {
        let file = std::fs::File::open(&self.log_path).ok()?;
        let line = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains(needle))?;
        line.split_whitespace().next()?.parse().ok()
    }
}

/// Spawns the service and waits for its address line.
fn spawn(env: &HashMap<String, String>, log_path: &Path) -> anyhow::Result<Running> {
    let log = std::fs::File::create(log_path)?;
    let mut child = Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SERVER_ADDR", "127.0.0.1:0")
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = sender.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let mut running = Running {
        guard: ChildGuard { child },
        log_path: log_path.to_owned(),
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let line = receiver
        .recv_timeout(Duration::from_secs(300))
        .unwrap_or_default();
    running.address = match line.trim().rsplit("http://").next().map(str::parse) {
        Some(Ok(address)) => address,
        _ => {
            running.ensure_alive()?;
            anyhow::bail!("no address line ({line:?}); log:\n{}", running.log());
        }
    };
    Ok(running)
}

/// What one run measured.
#[derive(Debug, Clone)]
struct RunFigures {
    count_s: f64,
    ready_s: f64,
    due_query_ms: f64,
    first_renewal_s: f64,
    last_renewal_s: f64,
    renewals: i64,
    others: BTreeMap<String, i64>,
    hwm_mib: f64,
    rss_mib: f64,
    idle_cpu_pct: f64,
    postgres_cpu_pct: f64,
    pebble_cpu_pct: f64,
    idle_events: i64,
    metrics_s: f64,
}

/// The PostgreSQL backends' CPU share, for a PostgreSQL run.
fn postgres_share(kind: StoreKind, percent: f64) -> String {
    match kind {
        StoreKind::Postgres => format!("{percent:.2} %"),
        StoreKind::Sqlite => "n/a".to_owned(),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `median (min–max)` of one figure over the runs.
fn summary(runs: &[RunFigures], figure: impl Fn(&RunFigures) -> f64, decimals: usize) -> String {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    let middle = median(&mut values);
    let (low, high) = (values[0], values[values.len() - 1]);
    format!("{middle:.decimals$} ({low:.decimals$}–{high:.decimals$})")
}

async fn one_run(
    kind: StoreKind,
    config: &Config,
    seeded: &TestDatabase,
    seeded_position: i64,
    run: usize,
    log_dir: &Path,
) -> anyhow::Result<RunFigures> {
    let copying = Instant::now();
    let copy = Copy::of(seeded, run).await?;
    let store = Store::connect(&copy.url).await?;
    // A copy that lost the seed's last writes would have the service catch up (or worse).
    let checkpoint = store.checkpoint(DOMAIN_VIEWS).await?;
    anyhow::ensure!(
        checkpoint == seeded_position,
        "the copy's views checkpoint is {checkpoint}, not {seeded_position}"
    );
    let (count_s, events) = time_count(&store).await?;
    let (plan, due_query_ms) = due_plan(&store, config.due).await?;
    eprintln!(
        "{kind:?} run {run}: copied the store in {:.1} s; COUNT(*) of {events} events: {count_s:.3} s; due query {due_query_ms:.2} ms, plan:\n{plan}",
        copying.elapsed().as_secs_f64()
    );

    let pebble = Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let mut env = service_env(&pebble, seeded);
    env.extend([
        ("DATABASE_URL".to_owned(), copy.url.clone()),
        (
            "RENEWAL_CHECK_INTERVAL".to_owned(),
            format!("{}ms", config.check_interval.as_millis()),
        ),
        (
            "POLL_INTERVAL".to_owned(),
            format!("{}ms", config.poll_interval.as_millis()),
        ),
        // The first checkpoint of a process walks the whole log: measured on its own below.
        ("AUDIT_CHECKPOINT_INTERVAL".to_owned(), "24h".to_owned()),
        // The scheduler alone: with CAA unchecked (and no routing targets, no delegation zone)
        // the health checks find nothing to record, so every event is the scheduler's.
        ("CAA_CHECK".to_owned(), "off".to_owned()),
        (
            "LOG_LEVEL".to_owned(),
            std::env::var("SERVICE_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned()),
        ),
    ]);
    let client = dns_handling_testkit::client_builder().build()?;
    let spawned_wall = Utc::now();
    let spawned = Instant::now();
    let mut service = spawn(&env, &log_dir.join(format!("{kind:?}-run{run}.log")))?;
    wait_ready(&client, &mut service).await?;
    let ready_s = spawned.elapsed().as_secs_f64();

    // Every due renewal started (or a deadline far past what one tick should take).
    let deadline = Instant::now() + config.check_interval * 10 + Duration::from_secs(300);
    while renewals_after(&store, seeded_position).await? < config.due as i64 {
        service.ensure_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} renewals started; log:\n{}",
            renewals_after(&store, seeded_position).await?,
            config.due,
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two more ticks: nothing else may happen.
    tokio::time::sleep(config.check_interval * 2 + Duration::from_millis(500)).await;
    service.ensure_alive()?;
    let mut others = types_after(&store, seeded_position).await?;
    let renewals = others.remove("RenewalRequested").unwrap_or(0);
    let since =
        |at: DateTime<Utc>| (at - spawned_wall).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let (first, last) = renewal_span(&store, seeded_position)
        .await?
        .map_or((f64::NAN, f64::NAN), |(first, last)| {
            (since(first), since(last))
        });
    if let Some(at) = service.logged_at("supervisor started") {
        eprintln!(
            "{kind:?} run {run}: `supervisor started` (the scheduler's first tick follows) at {:.2} s",
            since(at)
        );
    }

    // Idle: nothing due, the renewal orders waiting.
    let pid = service.pid();
    // The PostgreSQL backends connected to this copy: the service's (and this bench's idle one).
    let postgres = copy.postgres_name.as_deref().map_or_else(Vec::new, |name| {
        pids_named("postgres", &format!(" {name} "))
    });
    let pebble_pids = pids_named("pebble", &pebble.dir.path().display().to_string());
    let events_before = types_after(&store, seeded_position)
        .await?
        .values()
        .sum::<i64>();
    let window_start = Instant::now();
    let (cpu_before, postgres_before, pebble_before) =
        (cpu_seconds(pid), cpu_of(&postgres), cpu_of(&pebble_pids));
    tokio::time::sleep(config.idle_window).await;
    let wall = window_start.elapsed().as_secs_f64();
    let idle_cpu_pct = (cpu_seconds(pid) - cpu_before) / wall * 100.0;
    let postgres_cpu_pct = cpu_since(&postgres_before) / wall * 100.0;
    let pebble_cpu_pct = cpu_since(&pebble_before) / wall * 100.0;
    service.ensure_alive()?;
    let idle_events = types_after(&store, seeded_position)
        .await?
        .values()
        .sum::<i64>()
        - events_before;
    let (hwm_mib, rss_mib) = (status_mib(pid, "VmHWM:"), status_mib(pid, "VmRSS:"));

    let scraping = Instant::now();
    let metrics = client.get(service.url("/metrics")).send().await?;
    let metrics_status = metrics.status();
    let _ = metrics.text().await?;
    let metrics_s = scraping.elapsed().as_secs_f64();
    eprintln!("{kind:?} run {run}: GET /metrics {metrics_status} in {metrics_s:.3} s");
    if run == 1 && config.sign_checkpoint {
        let cpu = cpu_seconds(pid);
        let signing = Instant::now();
        let signed = client
            .post(service.url("/audit/checkpoints"))
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        let status = signed.status();
        let _ = signed.text().await?;
        eprintln!(
            "{kind:?} run {run}: the process's first audit checkpoint (walks {events} events): {status} in {:.1} s, {:.1} CPU s; VmHWM after it {:.0} MiB",
            signing.elapsed().as_secs_f64(),
            cpu_seconds(pid) - cpu,
            status_mib(pid, "VmHWM:")
        );
        // A restarted process starts from the checkpoint just signed and hashes only what
        // came after; its walk of the log behind that checkpoint runs in the background.
        service.guard.kill();
        let restarted = Instant::now();
        service = spawn(
            &env,
            &log_dir.join(format!("{kind:?}-run{run}-restart.log")),
        )?;
        wait_ready(&client, &mut service).await?;
        let ready_s = restarted.elapsed().as_secs_f64();
        let signing = Instant::now();
        let signed = client
            .post(service.url("/audit/checkpoints"))
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        eprintln!(
            "{kind:?} run {run}: restarted, ready in {ready_s:.2} s; its first audit checkpoint: {} in {:.3} s",
            signed.status(),
            signing.elapsed().as_secs_f64()
        );
    }
    service.guard.kill();
    seed::close(store).await;
    drop(pebble);
    drop(copy);
    Ok(RunFigures {
        count_s,
        ready_s,
        due_query_ms,
        first_renewal_s: first,
        last_renewal_s: last,
        renewals,
        others,
        hwm_mib,
        rss_mib,
        idle_cpu_pct,
        postgres_cpu_pct,
        pebble_cpu_pct,
        idle_events,
        metrics_s,
    })
}

/// Waits until `/readyz` answers 200 (ten minutes at most).
async fn wait_ready(client: &reqwest::Client, service: &mut Running) -> anyhow::Result<()> {
    let spawned = Instant::now();
    loop {
        service.ensure_alive()?;
        let ready = client.get(service.url("/readyz")).send().await;
        if ready.is_ok_and(|response| response.status() == 200) {
            return Ok(());
        }
        anyhow::ensure!(spawned.elapsed() < Duration::from_secs(600), "not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let Config {
        domains,
        due,
        runs,
        check_interval,
        ..
    } = *config;
    let seeded = TestDatabase::create(kind).await;
    let store = Store::connect(&seeded.url).await?;
    let seeding = Instant::now();
    let now = Utc::now();
    // Every domain its own due time, as a real schedule has them (the index holds N distinct
    // keys): the due ones within the last hour, the rest 30 to 42 days on, before their expiry.
    let lifecycle = |n: usize| seed::Lifecycle::RenewalScheduled {
        due_at: if is_due(n, domains, due) {
            now - chrono::Duration::hours(1) + chrono::Duration::milliseconds(n as i64 % 3_600_000)
        } else {
            now + chrono::Duration::days(30) + chrono::Duration::seconds(n as i64)
        },
    };
    let events = seed::seed_with(&store, domains, lifecycle, true).await?;
    let seed_s = seeding.elapsed().as_secs_f64();
    if let Store::Postgres(pool) = &store {
        // What autovacuum does after a bulk load, here at once (and not later, while the
        // copies are made): visibility, hint bits, the planner's statistics.
        let vacuuming = Instant::now();
        sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
        eprintln!(
            "{kind:?}: VACUUM (ANALYZE) after the load took {:.1} s",
            vacuuming.elapsed().as_secs_f64()
        );
    }
    let (seeded_position, stored) = store.feed_extent().await?;
    let views = views_mib(&store).await?;
    seed::close(store).await;
    if kind == StoreKind::Sqlite {
        // Everything into the database file, the WAL emptied, before the file is copied.
        let mut connection = sqlx::SqliteConnection::connect(&seeded.url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut connection)
            .await?;
        connection.close().await?;
    }
    eprintln!(
        "{kind:?}: seeded {domains} active domains, {due} due ({events} events, {stored} stored, views {views:.0} MiB) in {seed_s:.1} s ({:.0} domains/s)",
        domains as f64 / seed_s
    );

    let logs = TempDir::new("dns-handling-renewals-bench");
    // SERVICE_LOG_DIR keeps the service's logs (<store>-run<k>.log) for a look afterwards.
    let log_dir = std::env::var("SERVICE_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| logs.path().to_owned());
    let mut figures = Vec::new();
    for run in 1..=runs {
        let run_figures = one_run(kind, config, &seeded, seeded_position, run, &log_dir).await?;
        let f = &run_figures;
        println!(
            "{kind:?} run {run}: N={domains}, {due} due, check every {} s | start to /readyz {:.2} s (raw COUNT(*) of the events {:.2} s) | due query {:.2} ms | {} RenewalRequested, first at {:.2} s, last at {:.2} s after spawn; other events {:?} | VmHWM {:.0} MiB, VmRSS {:.0} MiB (views stored: {views:.0} MiB) | idle {} s: service {:.2} % of a core, PostgreSQL backends {}, Pebble {:.2} %, {} events | GET /metrics {:.2} s",
            check_interval.as_secs_f64(),
            f.ready_s,
            f.count_s,
            f.due_query_ms,
            f.renewals,
            f.first_renewal_s,
            f.last_renewal_s,
            f.others,
            f.hwm_mib,
            f.rss_mib,
            config.idle_window.as_secs(),
            f.idle_cpu_pct,
            postgres_share(kind, f.postgres_cpu_pct),
            f.pebble_cpu_pct,
            f.idle_events,
            f.metrics_s,
        );
        anyhow::ensure!(
            f.renewals == due as i64 && f.others.is_empty() && f.idle_events == 0,
            "{kind:?} run {run}: {} renewals started (not {due}), other events {:?}, {} in the idle window",
            f.renewals,
            f.others,
            f.idle_events
        );
        figures.push(run_figures);
    }
    println!(
        "{kind:?} summary over {runs} runs, median (min–max): start {} s = {} × the raw COUNT(*) ({} s) | due query {} ms | renewals started {} s to {} s after spawn (spread {} s) | VmHWM {} MiB = {} % of the stored views ({views:.0} MiB) | idle CPU {} % of a core (PostgreSQL backends {}, Pebble {} %) | GET /metrics {} s",
        summary(&figures, |f| f.ready_s, 2),
        summary(&figures, |f| f.ready_s / f.count_s, 2),
        summary(&figures, |f| f.count_s, 2),
        summary(&figures, |f| f.due_query_ms, 2),
        summary(&figures, |f| f.first_renewal_s, 2),
        summary(&figures, |f| f.last_renewal_s, 2),
        summary(&figures, |f| f.last_renewal_s - f.first_renewal_s, 2),
        summary(&figures, |f| f.hwm_mib, 0),
        summary(&figures, |f| f.hwm_mib / views * 100.0, 1),
        summary(&figures, |f| f.idle_cpu_pct, 2),
        match kind {
            StoreKind::Postgres => format!("{} %", summary(&figures, |f| f.postgres_cpu_pct, 2)),
            StoreKind::Sqlite => "n/a".to_owned(),
        },
        summary(&figures, |f| f.pebble_cpu_pct, 2),
        summary(&figures, |f| f.metrics_s, 3),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seconds = |name: &str, bench: u64, smoke: u64| {
        Duration::from_secs(number(name).unwrap_or(if benchmarking { bench } else { smoke }))
    };
    let config = Config {
        domains: number("N").unwrap_or(if benchmarking { 1_000_000 } else { 2_000 }) as usize,
        due: number("DUE").unwrap_or(if benchmarking { 1_000 } else { 20 }) as usize,
        runs: number("RUNS").unwrap_or(if benchmarking { 3 } else { 1 }) as usize,
        check_interval: seconds("RENEWAL_CHECK_INTERVAL_S", 10, 1),
        poll_interval: seconds("POLL_INTERVAL_S", 10, 10),
        idle_window: seconds("IDLE_WINDOW", 60, 2),
        sign_checkpoint: number("SIGN_CHECKPOINT") != Some(0),
    };
    anyhow::ensure!(
        config.due <= 1_000,
        "one tick looks at 1,000 domains at most"
    );
    harness::on_each_store(|kind| run(kind, &config))
}
