//! Run: `cargo bench --bench webhooks` (N=2000 messages per endpoint for the throughput,
//! ENDPOINTS=1,4, REMOVALS=300 at RATE=20 per second for the latency, RUNS=5; IDLE_ENDPOINTS=1000
//! and SECONDS=20 for the API beside idle endpoints; PARTS=latency,throughput,writers,idle;
//! STORES=sqlite,postgres; PostgreSQL at BENCH_POSTGRES_URL, else TEST_POSTGRES_URL, else
//! postgres://postgres@127.0.0.1:5432/postgres; SERVICE_LOG_LEVEL, default warn;
//! SYNCHRONOUS_COMMIT=off sets PostgreSQL's for the service's database, a diagnostic)
//!
//! Webhook delivery, measured at a receiver inside this process: a few lines of HTTP/1.1 over
//! `std::net` (a thread per connection, keep-alive, `204` to everything) that notes when each
//! request was read in full, its path (one per endpoint) and its body. Every configuration runs
//! on a fresh database and a freshly started release binary (one process on either store), with
//! `WEBHOOK_ALLOW_PRIVATE_TARGETS=true` and one or more endpoints, each told of
//! `domain.removed`, the cheapest event with a notification (a domain registered, then
//! removed: `POST /domains`, `DELETE /domains/{id}`).
//!
//! - **Throughput**: the receiver holds its first request unanswered while the bench registers
//!   and removes N domains (eight at a time), so each endpoint's driver, which sends one message
//!   at a time, waits on its first message while the backlog is written. Then the receiver
//!   answers, and the figure is the N − 1 other messages over the time from that answer to the
//!   last one's arrival, for each endpoint and for all of them; with the service's CPU (and on
//!   PostgreSQL its backends') per delivery over the same window.
//! - **Latency**: REMOVALS domains registered beforehand, then removed at RATE per second on a
//!   fixed schedule while a `GET /events?follow=true` stream on the same process (the way
//!   `bench/follow.rs` measures the feed) follows. For each removal: from sending the `DELETE` to
//!   the webhook's arrival, and to the feed line's; from the `204` to the webhook; from the
//!   body's `timestamp` (the removal's time, taken before its commit) to the webhook.
//! - **Writers' cost of idle endpoints**: N registrations (eight at a time; no notification)
//!   with no endpoint, then N more once the largest number of ENDPOINTS have running drivers
//!   that have nothing to send: every commit wakes every driver, which reads the feed and moves
//!   its cursor past the event.
//! - **The API beside many idle endpoints** (the target of issue 24): registrations paced at
//!   RATE per second for SECONDS (20 s; smoke 1 s), timed one by one, on a service with no
//!   endpoint, then on one with IDLE_ENDPOINTS (1,000; smoke 10) endpoints told only of
//!   `certificate.expired`, which no registration makes. Figures: the API's p50/p99, the
//!   answers other than `201` (a `503` among them), and the database's queries per second over
//!   the paced window: on PostgreSQL `xact_commit + xact_rollback` of `pg_stat_database` for the
//!   service's database (every statement outside a transaction is one); on SQLite the statements
//!   sqlx logs (the service runs with `LOG_LEVEL=warn,sqlx::query=debug` there, and the lines
//!   of target `sqlx::query` written during the window are counted).
//!
//! PARTS (default `latency,throughput,writers,idle`) picks the parts to run.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod feed_reader;
mod harness;

#[allow(dead_code)]
mod process;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dns_handling_testkit::{database_env, Service, StoreKind, TestDatabase};
use process::cpu_seconds;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

const TOKEN: &str = "webhooks-bench-admin-token";

/// Requests of the bench's own client in flight while it writes a backlog.
const WRITERS: usize = 8;

/// How long the bench waits for anything to arrive before it gives up.
const PATIENCE: Duration = Duration::from_secs(120);

struct Config {
    /// Messages per endpoint in a throughput run.
    events: usize,
    /// Endpoint counts of the throughput runs.
    endpoints: Vec<usize>,
    /// Removals timed in a latency run.
    removals: usize,
    /// Removals per second in a latency run.
    rate: f64,
    runs: usize,
    log_level: String,
    /// PostgreSQL's `synchronous_commit` for the service's database, when set (a diagnostic:
    /// how much of a delivery is waiting for the WAL flush of its two commits).
    synchronous_commit: Option<String>,
    /// The parts to run: `latency`, `throughput`, `writers`, `idle`.
    parts: Vec<String>,
    /// Idle endpoints registered beside the paced API calls of the `idle` part.
    idle_endpoints: usize,
    /// How long the `idle` part paces its registrations.
    seconds: f64,
}

impl Config {
    fn runs_part(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver.

/// One request as the receiver read it.
struct Arrival {
    /// The request's path: which endpoint sent it.
    path: String,
    /// When its last byte was read.
    at: Instant,
    /// The same moment on the wall clock, to compare with the body's `timestamp`.
    wall: DateTime<Utc>,
    body: Vec<u8>,
}

/// Whether the receiver answers yet.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut open = self.open.lock().expect("gate");
        while !*open {
            open = self.opened.wait(open).expect("gate");
        }
    }
}

struct Receiver {
    address: SocketAddr,
    gate: Arc<Gate>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
}

impl Receiver {
    /// Listens on loopback; answers nothing until the gate opens when `held`.
    fn start(held: bool) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let gate = Arc::new(Gate::default());
        if !held {
            gate.open();
        }
        let (sender, arrivals) = mpsc::unbounded_channel();
        let accepting = gate.clone();
        // The threads end with the process (the accept loop never returns while it runs).
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (gate, sender) = (accepting.clone(), sender.clone());
                std::thread::spawn(move || serve(stream, &gate, &sender));
            }
        });
        Ok(Receiver {
            address,
            gate,
            arrivals,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn next(&mut self) -> anyhow::Result<Arrival> {
        tokio::time::timeout(PATIENCE, self.arrivals.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no webhook arrived within {PATIENCE:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))
    }
}

/// Reads requests from one connection, one after the other, and answers each `204`.
fn serve(mut stream: TcpStream, gate: &Gate, arrivals: &mpsc::UnboundedSender<Arrival>) {
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0_u8; 8192];
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let (at, wall) = (Instant::now(), Utc::now());
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let _ = arrivals.send(Arrival {
            path,
            at,
            wall,
            body,
        });
        gate.pass();
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// What a message's body says: the removed domain, the event's feed position and its time.
fn parse_body(body: &[u8]) -> anyhow::Result<(String, i64, DateTime<Utc>)> {
    let body: Value = serde_json::from_slice(body)?;
    anyhow::ensure!(body["type"] == "domain.removed", "unexpected {body}");
    let data = &body["data"];
    let domain = data["domain_id"].as_str().unwrap_or_default().to_owned();
    let position = data["position"].as_i64().unwrap_or(-1);
    let timestamp = body["timestamp"].as_str().unwrap_or_default().parse()?;
    Ok((domain, position, timestamp))
}

// ---------------------------------------------------------------------------------------------
// The service.

/// A fresh database of `kind`, with `SYNCHRONOUS_COMMIT` applied on PostgreSQL.
async fn fresh_database(kind: StoreKind, config: &Config) -> anyhow::Result<TestDatabase> {
    let database = TestDatabase::create(kind).await;
    if let (StoreKind::Postgres, Some(setting)) = (kind, &config.synchronous_commit) {
        anyhow::ensure!(
            ["on", "off", "local", "remote_write", "remote_apply"].contains(&setting.as_str()),
            "SYNCHRONOUS_COMMIT={setting:?}"
        );
        let name = database.url.rsplit('/').next().unwrap_or_default();
        database
            .execute(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = {setting}"
            ))
            .await;
    }
    Ok(database)
}

fn start_service(database: &TestDatabase, config: &Config) -> Service {
    start_service_logging(database, &config.log_level)
}

fn start_service_logging(database: &TestDatabase, log_level: &str) -> Service {
    let mut env = database_env(database);
    env.insert("AUTH_TOKEN".into(), TOKEN.into());
    env.insert("LOG_LEVEL".into(), log_level.to_owned());
    env.insert("WEBHOOK_ALLOW_PRIVATE_TARGETS".into(), "true".into());
    // The throughput runs hold the first message while the backlog is written.
    env.insert("WEBHOOK_TIMEOUT".into(), "20s".into());
    Service::start(BINARY, &env)
}

async fn create_endpoint(service: &Service, url: &str) -> anyhow::Result<String> {
    let body = json!({"url": url, "events": ["domain.removed"]});
    let (code, created) = service.post("/webhooks", Some(body)).await;
    anyhow::ensure!(code == 201, "POST /webhooks: {code} {created}");
    Ok(created["id"].as_str().unwrap_or_default().to_owned())
}

async fn register(service: &Service, name: &str) -> anyhow::Result<String> {
    let response = service
        .client
        .post(service.url("/domains"))
        .json(&json!({"domain_name": name}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "register: {}", response.status());
    let body: Value = response.json().await?;
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

async fn remove(service: &Service, id: &str) -> anyhow::Result<()> {
    let response = service
        .client
        .delete(service.url(&format!("/domains/{id}")))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 204, "remove: {}", response.status());
    Ok(())
}

/// Registers `names` domains `prefix`0, `prefix`1, … and, when `and_remove`, removes each right
/// after: `WRITERS` at a time. Returns the ids in order.
async fn write_domains(
    service: &Arc<Service>,
    prefix: &str,
    names: usize,
    and_remove: bool,
) -> anyhow::Result<Vec<String>> {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (service, prefix) = (service.clone(), prefix.to_owned());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (writer..names).step_by(WRITERS) {
                let id = register(&service, &format!("d{n}.{prefix}.example.test")).await?;
                if and_remove {
                    remove(&service, &id).await?;
                }
                ids.push((n, id));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = vec![String::new(); names];
    for writer in writers {
        for (n, id) in writer.await?? {
            ids[n] = id;
        }
    }
    Ok(ids)
}

/// Process ids of the PostgreSQL backends connected to `database` (none on SQLite).
fn postgres_backends(database: &TestDatabase) -> Vec<u32> {
    if database.kind != StoreKind::Postgres {
        return Vec::new();
    }
    let name = database.url.rsplit('/').next().unwrap_or_default();
    let marker = format!(" {name} ");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&line).contains(&marker)
        })
        .collect()
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

// ---------------------------------------------------------------------------------------------
// Throughput.

struct Throughput {
    /// Messages per second over all endpoints, from the answer to the held first message to
    /// the last arrival.
    rate: f64,
    /// The slowest and fastest endpoint's own rate.
    slowest: f64,
    fastest: f64,
    /// Service CPU milliseconds per delivery over the drain.
    cpu_ms: f64,
    /// The same for the PostgreSQL backends of the service's database.
    postgres_cpu_ms: f64,
    /// Removals per second the bench wrote the backlog at (two requests each).
    written: f64,
}

async fn throughput(
    kind: StoreKind,
    config: &Config,
    endpoints: usize,
    run: usize,
) -> anyhow::Result<Throughput> {
    let database = fresh_database(kind, config).await?;
    let service = Arc::new(start_service(&database, config));
    let mut receiver = Receiver::start(true)?;
    for endpoint in 0..endpoints {
        create_endpoint(&service, &receiver.url(&format!("/e{endpoint}"))).await?;
    }
    let events = config.events;
    let writing = Instant::now();
    write_domains(&service, &format!("t{run}"), events, true).await?;
    let written = events as f64 / writing.elapsed().as_secs_f64();

    // Every endpoint's driver holds its first message; then the backlog drains.
    let mut arrived: HashMap<String, Vec<(Instant, i64)>> = HashMap::new();
    while arrived.len() < endpoints {
        let arrival = receiver.next().await?;
        let (_, position, _) = parse_body(&arrival.body)?;
        arrived
            .entry(arrival.path)
            .or_default()
            .push((arrival.at, position));
    }
    let backends = postgres_backends(&database);
    let (cpu_before, postgres_before) = (cpu_seconds(service.pid()), cpu_of(&backends));
    let opened = Instant::now();
    receiver.gate.open();
    let total = events * endpoints;
    let mut count = endpoints;
    while count < total {
        let arrival = receiver.next().await?;
        let (_, position, _) = parse_body(&arrival.body)?;
        arrived
            .entry(arrival.path)
            .or_default()
            .push((arrival.at, position));
        count += 1;
    }
    let (cpu, postgres_cpu) = (
        cpu_seconds(service.pid()) - cpu_before,
        cpu_of(&backends) - postgres_before,
    );
    let mut last = opened;
    let mut rates = Vec::new();
    for (path, deliveries) in &arrived {
        anyhow::ensure!(
            deliveries.len() == events,
            "{path}: {} messages, not {events}",
            deliveries.len()
        );
        anyhow::ensure!(
            deliveries.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "{path}: messages out of feed order"
        );
        let own_last = deliveries.iter().map(|(at, _)| *at).max().unwrap_or(opened);
        rates.push((events - 1) as f64 / (own_last - opened).as_secs_f64());
        last = last.max(own_last);
    }
    rates.sort_by(f64::total_cmp);
    let drained = (total - endpoints) as f64;
    Ok(Throughput {
        rate: drained / (last - opened).as_secs_f64(),
        slowest: rates[0],
        fastest: rates[rates.len() - 1],
        cpu_ms: cpu / drained * 1e3,
        postgres_cpu_ms: postgres_cpu / drained * 1e3,
        written,
    })
}

// ---------------------------------------------------------------------------------------------
// Latency.

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn ms_between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(after) => after.as_secs_f64() * 1e3,
        None => -(from - to).as_secs_f64() * 1e3,
    }
}

/// The `p` quantile (0.0–1.0) of `samples`, nearest rank (as `bench/stats.rs`); sorts them.
fn quantile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default)]
struct Latency {
    /// From sending the `DELETE`: the webhook's arrival, p50 and p99 (ms).
    webhook: (f64, f64),
    /// From sending the `DELETE`: the feed line's arrival.
    feed: (f64, f64),
    /// From the `204` to the webhook's arrival.
    after_204: (f64, f64),
    /// From the `204` to the feed line's arrival (negative: the line came first).
    feed_after_204: (f64, f64),
    /// From the body's `timestamp` to the webhook's arrival (wall clock; ms precision).
    after_timestamp: (f64, f64),
    /// The `204` itself, from sending the `DELETE`.
    acknowledged: (f64, f64),
    /// The largest webhook latency from sending.
    webhook_max: f64,
    /// Service CPU over the paced removals, % of one core.
    cpu_pct: f64,
}

async fn latency(kind: StoreKind, config: &Config, run: usize) -> anyhow::Result<Latency> {
    let database = fresh_database(kind, config).await?;
    let service = Arc::new(start_service(&database, config));
    let mut receiver = Receiver::start(false)?;
    create_endpoint(&service, &receiver.url("/e0")).await?;
    let stream = service
        .client
        .get(service.url("/events?after=0&follow=true"))
        .header("accept", "application/x-ndjson")
        .send()
        .await?;
    anyhow::ensure!(stream.status() == 200, "follow: {}", stream.status());
    let (sender, mut seen) = mpsc::unbounded_channel();
    let follower = tokio::spawn(feed_reader::follow(stream, Some("DomainRemoved"), sender));

    let removals = config.removals;
    let ids = write_domains(&service, &format!("l{run}"), removals + 1, false).await?;
    // A first removal, untimed: the driver has started and read past the registrations, the
    // receiver's connection is open, the follower streams.
    remove(&service, &ids[removals]).await?;
    receiver.next().await?;
    tokio::time::timeout(PATIENCE, seen.recv()).await?;

    let period = Duration::from_secs_f64(1.0 / config.rate);
    let cpu_before = cpu_seconds(service.pid());
    let started = tokio::time::Instant::now();
    let mut removing = Vec::with_capacity(removals);
    for (n, id) in ids[..removals].iter().enumerate() {
        tokio::time::sleep_until(started + period * n as u32).await;
        let (service, id) = (service.clone(), id.clone());
        removing.push(tokio::spawn(async move {
            let sent = Instant::now();
            remove(&service, &id).await?;
            anyhow::Ok((id, sent, Instant::now()))
        }));
    }
    let mut requests = HashMap::new();
    for removal in removing {
        let (id, sent, acknowledged) = removal.await??;
        requests.insert(id, (sent, acknowledged));
    }
    let mut webhooks = HashMap::new();
    while webhooks.len() < removals {
        let arrival = receiver.next().await?;
        let (id, _, timestamp) = parse_body(&arrival.body)?;
        webhooks.insert(id, (arrival.at, arrival.wall, timestamp));
    }
    let cpu_pct =
        (cpu_seconds(service.pid()) - cpu_before) / started.elapsed().as_secs_f64() * 100.0;
    let mut lines = HashMap::new();
    while lines.len() < removals {
        let (id, at) = tokio::time::timeout(PATIENCE, seen.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the following stream ended"))?;
        lines.insert(id, at);
    }
    follower.abort();

    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (id, (sent, acknowledged)) in &requests {
        let (arrived, wall, timestamp) = webhooks
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no webhook for {id}"))?;
        let line = lines
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no feed line for {id}"))?;
        let mut push = |name, value| samples.entry(name).or_default().push(value);
        push("webhook", ms_between(*sent, *arrived));
        push("feed", ms_between(*sent, *line));
        push("after_204", ms_between(*acknowledged, *arrived));
        push("feed_after_204", ms_between(*acknowledged, *line));
        push("acknowledged", ms_between(*sent, *acknowledged));
        let after_timestamp = (*wall - *timestamp).num_microseconds().unwrap_or(0) as f64 / 1e3;
        push("after_timestamp", after_timestamp);
    }
    let mut figures = |name: &str| {
        let values = samples.get_mut(name).expect("sampled");
        (quantile(values, 0.50), quantile(values, 0.99))
    };
    let mut result = Latency {
        webhook: figures("webhook"),
        feed: figures("feed"),
        after_204: figures("after_204"),
        feed_after_204: figures("feed_after_204"),
        after_timestamp: figures("after_timestamp"),
        acknowledged: figures("acknowledged"),
        webhook_max: 0.0,
        cpu_pct,
    };
    result.webhook_max = quantile(samples.get_mut("webhook").expect("sampled"), 1.0);
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Writers' cost of idle endpoints.

struct WriterCost {
    /// Registrations per second with no endpoint, and with `endpoints` idle ones.
    without: f64,
    with: f64,
    /// Service CPU milliseconds per registration, without and with.
    cpu_without: f64,
    cpu_with: f64,
    /// PostgreSQL backends' CPU milliseconds per registration, without and with.
    postgres_without: f64,
    postgres_with: f64,
}

async fn writer_cost(
    kind: StoreKind,
    config: &Config,
    endpoints: usize,
    run: usize,
) -> anyhow::Result<WriterCost> {
    let database = fresh_database(kind, config).await?;
    let service = Arc::new(start_service(&database, config));
    let mut receiver = Receiver::start(false)?;
    let warm = write_domains(&service, &format!("w{run}"), WRITERS, false).await?;
    let backends = postgres_backends(&database);
    let pid = service.pid();
    let timed = |prefix: String| {
        let (service, backends) = (service.clone(), backends.clone());
        async move {
            let (cpu, postgres) = (cpu_seconds(pid), cpu_of(&backends));
            let started = Instant::now();
            write_domains(&service, &prefix, config.events, false).await?;
            let seconds = started.elapsed().as_secs_f64();
            let per = |spent: f64| spent / config.events as f64 * 1e3;
            anyhow::Ok((
                config.events as f64 / seconds,
                per(cpu_seconds(pid) - cpu),
                per(cpu_of(&backends) - postgres),
            ))
        }
    };
    let (without, cpu_without, postgres_without) = timed(format!("a{run}")).await?;
    for endpoint in 0..endpoints {
        create_endpoint(&service, &receiver.url(&format!("/e{endpoint}"))).await?;
    }
    // One removal reaches every endpoint: all the drivers run, and have caught up.
    remove(&service, &warm[0]).await?;
    for _ in 0..endpoints {
        receiver.next().await?;
    }
    let (with, cpu_with, postgres_with) = timed(format!("b{run}")).await?;
    Ok(WriterCost {
        without,
        with,
        cpu_without,
        cpu_with,
        postgres_without,
        postgres_with,
    })
}

// ---------------------------------------------------------------------------------------------
// The API beside many idle endpoints.

struct IdleCost {
    /// The registrations' latency, p50 and p99 (ms).
    api: (f64, f64),
    /// Answers other than `201`, and how many of them were `503`.
    refused: usize,
    unavailable: usize,
    /// The database's queries per second over the paced window.
    queries_per_second: f64,
}

/// Queries the database has run so far, by the measure of `kind` (see the file's head), and
/// when they were counted.
async fn queries_so_far(database: &TestDatabase, service: &Service) -> (f64, Instant) {
    let count = match database.kind {
        StoreKind::Postgres => {
            // A backend reports its counts when idle for a moment: give the last ones time.
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let sql = "CAST(xact_commit + xact_rollback AS TEXT) FROM pg_stat_database \
                       WHERE datname = current_database()";
            let counts = database.texts(sql).await;
            counts[0].parse().unwrap_or(0.0)
        }
        StoreKind::Sqlite => service.log().matches("sqlx::query").count() as f64,
    };
    (count, Instant::now())
}

/// Creates `count` endpoints told only of `certificate.expired`, eight at a time.
async fn create_idle_endpoints(
    service: &Arc<Service>,
    url: &str,
    count: usize,
) -> anyhow::Result<()> {
    let mut creating = Vec::new();
    for writer in 0..WRITERS {
        let (service, url) = (service.clone(), url.to_owned());
        creating.push(tokio::spawn(async move {
            for _ in (writer..count).step_by(WRITERS) {
                let body = json!({"url": url, "events": ["certificate.expired"]});
                let (code, created) = service.post("/webhooks", Some(body)).await;
                anyhow::ensure!(code == 201, "POST /webhooks: {code} {created}");
            }
            anyhow::Ok(())
        }));
    }
    for creating in creating {
        creating.await??;
    }
    Ok(())
}

async fn idle_cost(
    kind: StoreKind,
    config: &Config,
    endpoints: usize,
    run: usize,
) -> anyhow::Result<IdleCost> {
    let database = fresh_database(kind, config).await?;
    let log_level = match kind {
        StoreKind::Sqlite => format!("{},sqlx::query=debug", config.log_level),
        StoreKind::Postgres => config.log_level.clone(),
    };
    let service = Arc::new(start_service_logging(&database, &log_level));
    let receiver = Receiver::start(false)?;
    create_idle_endpoints(&service, &receiver.url("/idle"), endpoints).await?;
    // Whatever starts for the endpoints (drivers, leases) has started (a smoke run waits less).
    tokio::time::sleep(Duration::from_secs_f64(config.seconds.min(3.0))).await;

    let requests = ((config.seconds * config.rate).round() as usize).max(1);
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let (queries_before, counted_from) = queries_so_far(&database, &service).await;
    let started = tokio::time::Instant::now();
    let mut registering = Vec::with_capacity(requests);
    for n in 0..requests {
        tokio::time::sleep_until(started + period * n as u32).await;
        let service = service.clone();
        registering.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = service
                .client
                .post(service.url("/domains"))
                .json(&json!({"domain_name": format!("d{n}.i{run}.example.test")}))
                .send()
                .await?;
            anyhow::Ok((response.status().as_u16(), sent.elapsed()))
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let (mut refused, mut unavailable) = (0, 0);
    for registration in registering {
        let (status, took) = registration.await??;
        if status != 201 {
            refused += 1;
        }
        if status == 503 {
            unavailable += 1;
        }
        latencies.push(took.as_secs_f64() * 1e3);
    }
    let (queries_after, counted_to) = queries_so_far(&database, &service).await;
    let window = (counted_to - counted_from).as_secs_f64();
    let queries = queries_after - queries_before;
    Ok(IdleCost {
        api: (
            quantile(&mut latencies, 0.50),
            quantile(&mut latencies, 0.99),
        ),
        refused,
        unavailable,
        queries_per_second: queries / window,
    })
}

// ---------------------------------------------------------------------------------------------
// Summaries.

/// `median (min–max)` of one figure over the runs.
fn summary<T>(runs: &[T], figure: impl Fn(&T) -> f64, decimals: usize) -> String {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let middle = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let (low, high) = (values[0], values[n - 1]);
    if n == 1 {
        format!("{middle:.decimals$}")
    } else {
        format!("{middle:.decimals$} ({low:.decimals$}–{high:.decimals$})")
    }
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let most = config.endpoints.iter().copied().max().unwrap_or(1);
    let mut latencies = Vec::new();
    let mut throughputs: BTreeMap<usize, Vec<Throughput>> = BTreeMap::new();
    let mut costs = Vec::new();
    let mut idle: Vec<(IdleCost, IdleCost)> = Vec::new();
    for run in 0..config.runs {
        if config.runs_part("idle") {
            let without = idle_cost(kind, config, 0, run).await?;
            let with = idle_cost(kind, config, config.idle_endpoints, run).await?;
            println!(
                "{kind:?} run {run}: API at {}/s for {} s, ms p50 / p99 | no endpoint {:.2} / {:.2}, {} idle endpoints {:.2} / {:.2} (p99 {:.2}×) | not 201: {} → {} (503: {} → {}) | database queries/s {:.0} → {:.0} ({:.2}×)",
                config.rate,
                config.seconds,
                without.api.0,
                without.api.1,
                config.idle_endpoints,
                with.api.0,
                with.api.1,
                with.api.1 / without.api.1,
                without.refused,
                with.refused,
                without.unavailable,
                with.unavailable,
                without.queries_per_second,
                with.queries_per_second,
                with.queries_per_second / without.queries_per_second,
            );
            idle.push((without, with));
        }
        if config.runs_part("latency") {
            latencies.push(latency_run(kind, config, run).await?);
        }
        if config.runs_part("throughput") {
            for &endpoints in &config.endpoints {
                let t = throughput(kind, config, endpoints, run).await?;
                println!(
                    "{kind:?} run {run}: throughput, {endpoints} endpoint(s) × {} messages | {:.1} deliveries/s in all, per endpoint {:.1}–{:.1} | service CPU {:.2} ms per delivery, PostgreSQL backends {:.2} ms | backlog written at {:.0} removals/s",
                    config.events,
                    t.rate,
                    t.slowest,
                    t.fastest,
                    t.cpu_ms,
                    t.postgres_cpu_ms,
                    t.written,
                );
                throughputs.entry(endpoints).or_default().push(t);
            }
        }
        if config.runs_part("writers") {
            costs.push(writers_run(kind, config, most, run).await?);
        }
    }
    summarize(kind, config, &latencies, &throughputs, &costs, &idle);
    Ok(())
}

/// One latency run, printed.
async fn latency_run(kind: StoreKind, config: &Config, run: usize) -> anyhow::Result<Latency> {
    {
        let l = latency(kind, config, run).await?;
        println!(
            "{kind:?} run {run}: latency, {} removals at {}/s, ms p50 / p99 | from sending the DELETE: webhook {:.2} / {:.2} (max {:.2}), feed {:.2} / {:.2}, ratio {:.2} / {:.2} | after the 204: webhook {:.2} / {:.2}, feed {:.2} / {:.2} | webhook after the body's timestamp {:.1} / {:.1} | the 204 {:.2} / {:.2} | service CPU {:.1} %",
            config.removals,
            config.rate,
            l.webhook.0,
            l.webhook.1,
            l.webhook_max,
            l.feed.0,
            l.feed.1,
            l.webhook.0 / l.feed.0,
            l.webhook.1 / l.feed.1,
            l.after_204.0,
            l.after_204.1,
            l.feed_after_204.0,
            l.feed_after_204.1,
            l.after_timestamp.0,
            l.after_timestamp.1,
            l.acknowledged.0,
            l.acknowledged.1,
            l.cpu_pct,
        );
        Ok(l)
    }
}

/// One run of the writers' cost, printed.
async fn writers_run(
    kind: StoreKind,
    config: &Config,
    most: usize,
    run: usize,
) -> anyhow::Result<WriterCost> {
    {
        let c = writer_cost(kind, config, most, run).await?;
        println!(
            "{kind:?} run {run}: {} registrations | no endpoint {:.0}/s, {most} idle endpoints {:.0}/s ({:.2}×) | service CPU {:.2} → {:.2} ms per registration, PostgreSQL backends {:.2} → {:.2} ms",
            config.events,
            c.without,
            c.with,
            c.with / c.without,
            c.cpu_without,
            c.cpu_with,
            c.postgres_without,
            c.postgres_with,
        );
        Ok(c)
    }
}

/// The summaries over the runs of every part that ran.
fn summarize(
    kind: StoreKind,
    config: &Config,
    latencies: &[Latency],
    throughputs: &BTreeMap<usize, Vec<Throughput>>,
    costs: &[WriterCost],
    idle: &[(IdleCost, IdleCost)],
) {
    let runs = config.runs;
    let most = config.endpoints.iter().copied().max().unwrap_or(1);
    if !idle.is_empty() {
        println!(
            "{kind:?} summary over {runs} runs, median (min–max): API at {}/s, no endpoint → {} idle endpoints | p50 {} → {} ms, p99 {} → {} ms, p99 ratio {} | not 201: {} → {}, 503: {} → {} | database queries/s {} → {}, ratio {}",
            config.rate,
            config.idle_endpoints,
            summary(idle, |(w, _)| w.api.0, 2),
            summary(idle, |(_, w)| w.api.0, 2),
            summary(idle, |(w, _)| w.api.1, 2),
            summary(idle, |(_, w)| w.api.1, 2),
            summary(idle, |(without, with)| with.api.1 / without.api.1, 2),
            summary(idle, |(w, _)| w.refused as f64, 0),
            summary(idle, |(_, w)| w.refused as f64, 0),
            summary(idle, |(w, _)| w.unavailable as f64, 0),
            summary(idle, |(_, w)| w.unavailable as f64, 0),
            summary(idle, |(w, _)| w.queries_per_second, 0),
            summary(idle, |(_, w)| w.queries_per_second, 0),
            summary(
                idle,
                |(without, with)| with.queries_per_second / without.queries_per_second,
                2
            ),
        );
    }
    if latencies.is_empty() {
        summarize_deliveries(throughputs, costs, most);
        return;
    }
    let l = latencies;
    println!(
        "{kind:?} summary over {runs} runs, median (min–max), ms:\n  latency from sending the DELETE: webhook p50 {} p99 {}, feed p50 {} p99 {}, webhook / feed p50 {} p99 {}\n  after the 204: webhook p50 {} p99 {}, feed p50 {} p99 {}; webhook after the body's timestamp: p50 {} p99 {}; the 204: p50 {} p99 {}; service CPU {} %",
        summary(l, |l| l.webhook.0, 2),
        summary(l, |l| l.webhook.1, 2),
        summary(l, |l| l.feed.0, 2),
        summary(l, |l| l.feed.1, 2),
        summary(l, |l| l.webhook.0 / l.feed.0, 2),
        summary(l, |l| l.webhook.1 / l.feed.1, 2),
        summary(l, |l| l.after_204.0, 2),
        summary(l, |l| l.after_204.1, 2),
        summary(l, |l| l.feed_after_204.0, 2),
        summary(l, |l| l.feed_after_204.1, 2),
        summary(l, |l| l.after_timestamp.0, 1),
        summary(l, |l| l.after_timestamp.1, 1),
        summary(l, |l| l.acknowledged.0, 2),
        summary(l, |l| l.acknowledged.1, 2),
        summary(l, |l| l.cpu_pct, 1),
    );
    summarize_deliveries(throughputs, costs, most);
}

/// The summaries of the throughput and writers' parts.
fn summarize_deliveries(
    throughputs: &BTreeMap<usize, Vec<Throughput>>,
    costs: &[WriterCost],
    most: usize,
) {
    // Several endpoints' rate is compared with one endpoint's in the same run.
    let one: Option<Vec<f64>> = throughputs
        .get(&1)
        .map(|one| one.iter().map(|t| t.rate).collect());
    for (endpoints, t) in throughputs {
        let spread = match (*endpoints > 1, &one) {
            (true, one) => format!(
                "{}; slowest endpoint {}, fastest {}",
                one.as_ref().map_or(String::new(), |one| {
                    let ratios: Vec<f64> = t.iter().zip(one).map(|(t, one)| t.rate / one).collect();
                    format!(" = {} × one endpoint's", summary(&ratios, |r| *r, 2))
                }),
                summary(t, |t| t.slowest, 1),
                summary(t, |t| t.fastest, 1),
            ),
            (false, _) => String::new(),
        };
        println!(
            "  throughput, {endpoints} endpoint(s): {} deliveries/s in all{spread} | service CPU {} ms per delivery, PostgreSQL backends {} ms | backlog written at {} removals/s",
            summary(t, |t| t.rate, 1),
            summary(t, |t| t.cpu_ms, 2),
            summary(t, |t| t.postgres_cpu_ms, 2),
            summary(t, |t| t.written, 0),
        );
    }
    if costs.is_empty() {
        return;
    }
    let c = costs;
    println!(
        "  registrations: no endpoint {}/s, {most} idle endpoints {}/s ({}×) | service CPU {} → {} ms per registration, PostgreSQL backends {} → {} ms",
        summary(c, |c| c.without, 0),
        summary(c, |c| c.with, 0),
        summary(c, |c| c.with / c.without, 2),
        summary(c, |c| c.cpu_without, 2),
        summary(c, |c| c.cpu_with, 2),
        summary(c, |c| c.postgres_without, 2),
        summary(c, |c| c.postgres_with, 2),
    );
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let pick = |name: &str, bench: f64, smoke: f64| {
        number(name).unwrap_or(if benchmarking { bench } else { smoke })
    };
    let endpoints = std::env::var("ENDPOINTS").unwrap_or_else(|_| "1,4".into());
    let config = Config {
        events: pick("N", 2_000.0, 20.0) as usize,
        endpoints: endpoints
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        removals: pick("REMOVALS", 300.0, 10.0) as usize,
        rate: pick("RATE", 20.0, 20.0),
        runs: pick("RUNS", 5.0, 1.0) as usize,
        log_level: std::env::var("SERVICE_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        synchronous_commit: std::env::var("SYNCHRONOUS_COMMIT").ok(),
        parts: std::env::var("PARTS")
            .unwrap_or_else(|_| "latency,throughput,writers,idle".into())
            .split(',')
            .map(|part| part.trim().to_owned())
            .collect(),
        idle_endpoints: pick("IDLE_ENDPOINTS", 1_000.0, 10.0) as usize,
        seconds: pick("SECONDS", 20.0, 1.0),
    };
    anyhow::ensure!(
        config.events >= 2 && config.removals >= 1 && config.runs >= 1,
        "N ≥ 2, REMOVALS ≥ 1, RUNS ≥ 1"
    );
    harness::on_each_store(|kind| run(kind, &config))
}
