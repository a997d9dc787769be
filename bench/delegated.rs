//! Run: `cargo bench --bench delegated` (N=20 orders per flow, RUNS=3, POLL_INTERVALS=default,1s,
//! REPLICA_ORDERS=100; STORES=sqlite,postgres, the replica part on PostgreSQL only; PostgreSQL at
//! BENCH_POSTGRES_URL, else TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres;
//! needs pebble, unbound and PostgreSQL, as the test script installs them)
//!
//! What delegated validation saves against a person publishing the TXT record, measured in the
//! same run on the same service, Pebble and store. The delegation chain is the test harness's:
//! pebble-challtestsrv serves the users' zones (the `_acme-challenge` CNAMEs, the manual TXT
//! records), the service serves `acme.platform.test` on its own DNS port, and a private unbound
//! in front of both resolves for Pebble and for the service (`DNS_NAMESERVERS`), following each
//! CNAME from one server into the other. ECDSA P-256 certificate keys, Pebble without nonce
//! rejection or validation sleep, `LOG_LEVEL=info`.
//!
//! For each store and each `POLL_INTERVAL` (`default` leaves it unset: the service's 10 s), a
//! fresh Pebble, store and service; N domains verified by a TXT token (manual) and N by their
//! CNAME (delegated), one untimed delegated issuance to warm up, then the 2N issuances one
//! after the other, manual and delegated in turn, each waited for until `active`:
//! - manual: from the moment challtestsrv has the TXT value (its `set-txt` answered) to the
//!   domain's `active` (`GET /domains/{id}` every 10 ms). The value is published after the
//!   poller's first lookup (seen in challtestsrv's query history), the n-th of the N at the
//!   middle of the n-th of N equal slices of the poll interval after it, as a person comes at
//!   any moment of the cycle: published straight after the `202`, it usually beats that first
//!   lookup and is seen at once, which measures a race rather than the manual flow;
//! - delegated: from the `202` to the service's zone serving the value (a UDP query of the
//!   service's DNS port every millisecond, started before the `POST`, so the zone may be seen
//!   serving it before the `202` arrives: a negative figure), and from the `202` to `active`;
//! - for both, from the domain's own events (`recorded_at`, the same clock): from the start mark
//!   above to `ChallengeRecordObserved` (the poller saw every value; then it tells the CA), and
//!   from there to `CertificateIssued` (the CA's validation, finalization and download).
//!
//! Then, on PostgreSQL, replica propagation: two replicas on one database, each serving the zone
//! on its own DNS port, unbound sending the zone to replica B only (so the CA, and A's poller,
//! can see A's values only once B serves them); REPLICA_ORDERS delegated domains verified on A
//! and issued on A one after the other, the default `POLL_INTERVAL`. For each order: from A's
//! `202` to B's zone serving the value (B's port queried every millisecond), to A's own zone
//! serving it (the same loop, beside it), and to `active`.
//!
//! Every figure is printed per run; a summary at the end gives, per configuration, the median
//! of the runs' figures with their min–max.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod harness;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Utc};
use dns_handling_testkit::{
    delegate_zone, free_dns_port, service_env, verified_domain, Pebble, PebbleOptions, Service,
    StoreKind, TestDatabase,
};
use serde_json::{json, Value};

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

/// The delegation zone the service serves.
const ZONE: &str = "acme.platform.test";

/// How often the driver asks for a domain's status while it waits for `active`.
const STATUS_POLL: Duration = Duration::from_millis(10);

/// The pause between two queries of one zone watcher.
const QUERY_GAP: Duration = Duration::from_millis(1);

/// The longest any one issuance may take before the run fails.
const ISSUANCE_LIMIT: Duration = Duration::from_secs(120);

/// What the bench runs (from the environment; smaller under `cargo test`).
struct Config {
    /// Orders per flow per configuration run.
    domains: usize,
    runs: usize,
    /// `POLL_INTERVAL` values; `default` leaves it unset.
    intervals: Vec<String>,
    /// Orders of the replica-propagation part per run.
    replica_orders: usize,
}

impl Config {
    fn from_env() -> Config {
        let benchmarking = harness::benchmarking();
        let number = |name: &str, bench: usize, smoke: usize| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(if benchmarking { bench } else { smoke })
        };
        let intervals = std::env::var("POLL_INTERVALS")
            .unwrap_or_else(|_| if benchmarking { "default,1s" } else { "1s" }.to_owned());
        Config {
            domains: number("N", 20, 1),
            runs: number("RUNS", 3, 1),
            intervals: intervals
                .split(',')
                .map(str::trim)
                .filter(|interval| !interval.is_empty())
                .map(str::to_owned)
                .collect(),
            replica_orders: number("REPLICA_ORDERS", 100, 2),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A small DNS client: one TXT question without recursion, the TXT strings of the answer.

/// A TXT query for `name` with `id`, recursion not desired (the zone's server is authoritative).
fn txt_query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 16, 0, 1]);
    message
}

/// Skips a (possibly compressed) name starting at `at`; where the next field starts.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = usize::from(*message.get(at)?);
        if length == 0 {
            return Some(at + 1);
        }
        if length & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + length;
    }
}

/// The TXT values of an answer to the query with `id` (each value's strings joined); `None`
/// when the message is not that answer.
fn txt_values(message: &[u8], id: u16) -> Option<Vec<String>> {
    let field = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ])))
    };
    if field(0)? != usize::from(id) || message[2] & 0x80 == 0 {
        return None;
    }
    let (questions, answers) = (field(4)?, field(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(message, at)? + 4;
    }
    let mut values = Vec::new();
    for _ in 0..answers {
        at = skip_name(message, at)?;
        let (record_type, length) = (field(at)?, field(at + 8)?);
        at += 10;
        let data = message.get(at..at + length)?;
        if record_type == 16 {
            let mut value = String::new();
            let mut part = 0;
            while part < data.len() {
                let end = part + 1 + usize::from(data[part]);
                value.push_str(&String::from_utf8_lossy(data.get(part + 1..end)?));
                part = end;
            }
            values.push(value);
        }
        at += length;
    }
    Some(values)
}

/// Asks one DNS server for the TXT values at one name, over and over on a thread of its own,
/// and remembers when each value was first answered; stops when dropped.
struct ZoneWatcher {
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZoneWatcher {
    /// Starts asking `server` for the TXT values at `name`; returns once the first answer came
    /// back, so that the watch covers everything the caller does next.
    fn start(server: SocketAddr, name: &str) -> anyhow::Result<ZoneWatcher> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let first_seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, first_answer) = std::sync::mpsc::channel();
        let thread = {
            let (first_seen, stop, name) = (first_seen.clone(), stop.clone(), name.to_owned());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let mut id: u16 = 0;
                while !stop.load(Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    if socket.send(&txt_query(id, &name)).is_err() {
                        std::thread::sleep(QUERY_GAP);
                        continue;
                    }
                    // Answers to earlier (timed-out) queries are skipped by their id.
                    while let Ok(received) = socket.recv(&mut buffer) {
                        let now = Instant::now();
                        if let Some(values) = txt_values(&buffer[..received], id) {
                            let mut seen = first_seen.lock().unwrap_or_else(|e| e.into_inner());
                            for value in values {
                                seen.entry(value).or_insert(now);
                            }
                            let _ = answered.send(());
                            break;
                        }
                    }
                    std::thread::sleep(QUERY_GAP);
                }
            })
        };
        let watcher = ZoneWatcher {
            first_seen,
            stop,
            thread: Some(thread),
        };
        first_answer
            .recv_timeout(Duration::from_secs(5))
            .with_context(|| format!("{server} does not answer TXT queries for {name}"))?;
        Ok(watcher)
    }

    /// When `value` was first answered, waiting up to `within` for it.
    async fn first_seen(&self, value: &str, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self
                .first_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(value)
            {
                return Some(*at);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for ZoneWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The flows.

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(after) => after.as_secs_f64() * 1e3,
        None => -(from - to).as_secs_f64() * 1e3,
    }
}

/// One issuance, every figure in milliseconds from its start mark (the TXT published for a
/// manual order, the `202` for a delegated one).
struct Sample {
    /// To `active`, as the driver saw it.
    active: f64,
    /// To each watched zone serving the value (delegated orders only); `None` when it did not
    /// within 10 s.
    zones: Vec<Option<f64>>,
    /// To the `ChallengeRecordObserved` event (the service saw every value).
    observed: f64,
    /// From `ChallengeRecordObserved` to `CertificateIssued` (the CA's part).
    ca: f64,
    /// From the `202` to the poller's first lookup, as the driver saw it in challtestsrv's
    /// history (manual orders only).
    first_lookup: f64,
}

/// The environment every service of this bench starts with.
fn bench_env(pebble: &Pebble, database: &TestDatabase, interval: &str) -> HashMap<String, String> {
    let mut env = service_env(pebble, database);
    if interval == "default" {
        env.remove("POLL_INTERVAL");
    } else {
        env.insert("POLL_INTERVAL".into(), interval.into());
    }
    env.insert("POLL_TIMEOUT".into(), "10m".into());
    env.insert("LOG_LEVEL".into(), "info".into());
    env.insert("CERT_KEY_TYPE".into(), "ecdsa-p256".into());
    env
}

/// The poll interval a `POLL_INTERVALS` entry stands for.
fn poll_interval(interval: &str) -> anyhow::Result<Duration> {
    match interval {
        "default" => Ok(Duration::from_secs(10)),
        other => humantime::parse_duration(other)
            .with_context(|| format!("POLL_INTERVALS: {other:?} is not a duration")),
    }
}

/// Pebble validating through unbound, which sends the delegation zone to `dns`.
fn pebble_delegating_to(dns: SocketAddr) -> Pebble {
    Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        delegated_zones: vec![(format!("{ZONE}."), dns)],
        ..PebbleOptions::default()
    })
}

/// Registers `name`, sets its delegation CNAME in the users' DNS and verifies it by the CNAME;
/// returns its id and the CNAME's target (where the service will publish its values).
async fn verified_by_cname(
    service: &Service,
    pebble: &Pebble,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let (code, registered) = service
        .post("/domains", Some(json!({"domain_name": name})))
        .await;
    ensure!(code == 201, "register {name}: {code} {registered}");
    let record = &registered["delegation_record"];
    let (Some(at), Some(target)) = (record["name"].as_str(), record["value"].as_str()) else {
        bail!("no delegation_record in {registered}");
    };
    pebble.set_cname(at, target);
    let id = registered["id"].as_str().context("an id")?.to_owned();
    let (code, verified) = service.post(&format!("/domains/{id}/verify"), None).await;
    ensure!(code == 200, "verify {name}: {code} {verified}");
    Ok((id, target.to_owned()))
}

/// Asks for a certificate: the `202` body and when it arrived.
async fn issue(service: &Service, id: &str, validation: &str) -> anyhow::Result<(Value, Instant)> {
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    let accepted = Instant::now();
    ensure!(code == 202, "issue-certificate: {code} {started}");
    ensure!(
        started["validation"] == validation,
        "expected {validation} validation: {started}"
    );
    Ok((started, accepted))
}

/// Waits until the domain is `active`: when the driver saw it so.
async fn wait_active(service: &Service, id: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + ISSUANCE_LIMIT;
    loop {
        let (code, view) = service.get(&format!("/domains/{id}")).await;
        let now = Instant::now();
        ensure!(code == 200, "GET /domains/{id}: {code} {view}");
        match view["status"].as_str() {
            Some("active") => return Ok(now),
            Some("failed") => bail!("domain {id} failed: {view}"),
            _ => {}
        }
        ensure!(
            now < deadline,
            "domain {id} not active within {ISSUANCE_LIMIT:?}: {view}"
        );
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// From the domain's events: milliseconds from `start` (wall clock) to the last
/// `ChallengeRecordObserved`, and from there to the last `CertificateIssued`.
async fn phases(service: &Service, id: &str, start: DateTime<Utc>) -> anyhow::Result<(f64, f64)> {
    let (code, history) = service.get(&format!("/domains/{id}/events")).await;
    ensure!(code == 200, "history of {id}: {code} {history}");
    let recorded = |event_type: &str| -> anyhow::Result<DateTime<Utc>> {
        let event = history
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find(|event| event["event_type"] == event_type)
            .with_context(|| format!("no {event_type} in the history of {id}"))?;
        let at = event["recorded_at"].as_str().context("recorded_at")?;
        Ok(DateTime::parse_from_rfc3339(at)?.with_timezone(&Utc))
    };
    let (observed, issued) = (
        recorded("ChallengeRecordObserved")?,
        recorded("CertificateIssued")?,
    );
    let ms = |delta: chrono::TimeDelta| delta.num_microseconds().unwrap_or(0) as f64 / 1e3;
    Ok((ms(observed - start), ms(issued - observed)))
}

/// pebble-challtestsrv's management API: the TXT records a person would publish, and the
/// queries its DNS server answered.
struct Challtestsrv {
    client: reqwest::Client,
    base: String,
}

impl Challtestsrv {
    fn of(pebble: &Pebble) -> Challtestsrv {
        Challtestsrv {
            client: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{}", pebble.challtestsrv_port),
        }
    }

    async fn set_txt(&self, host: &Value, value: &Value) -> anyhow::Result<()> {
        self.client
            .post(format!("{}/set-txt", self.base))
            .json(&json!({"host": host, "value": value}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// How many TXT queries for `host` (no trailing dot) the DNS server has answered.
    async fn txt_queries(&self, host: &str) -> anyhow::Result<usize> {
        let history: Value = self
            .client
            .post(format!("{}/dns-request-history", self.base))
            .json(&json!({ "host": host }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(history
            .as_array()
            .into_iter()
            .flatten()
            .filter(|query| query["Question"]["Qtype"] == 16)
            .count())
    }
}

/// A manual issuance of `name`: the `202`, the poller's first lookup of the challenge name
/// (seen in challtestsrv's query history), `phase` later the TXT values published, then
/// `active`. The lookup is waited for because a driver publishing straight after the `202`
/// usually beats the poller's first lookup (its actor starts as the `202` is sent), and is then
/// seen at once: no person is that fast, and a script that is skips the poll wait only by
/// winning that race.
async fn manual_order(
    service: &Service,
    challtestsrv: &Challtestsrv,
    id: &str,
    name: &str,
    phase: Duration,
) -> anyhow::Result<Sample> {
    let host = format!("_acme-challenge.{name}");
    let lookups_before = challtestsrv.txt_queries(&host).await?;
    let (started, accepted) = issue(service, id, "manual").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while challtestsrv.txt_queries(&host).await? == lookups_before {
        ensure!(
            Instant::now() < deadline,
            "no lookup of {host} within 10 s of the 202"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first_lookup = Instant::now();
    tokio::time::sleep(phase).await;
    for challenge in started["challenges"].as_array().into_iter().flatten() {
        challtestsrv
            .set_txt(
                &challenge["challenge_domain"],
                &challenge["expected_txt_value"],
            )
            .await?;
    }
    let (published, published_wall) = (Instant::now(), Utc::now());
    let active = wait_active(service, id).await?;
    let (observed, ca) = phases(service, id, published_wall).await?;
    Ok(Sample {
        active: signed_ms(published, active),
        zones: Vec::new(),
        observed,
        ca,
        first_lookup: signed_ms(accepted, first_lookup),
    })
}

/// A delegated issuance: the `202`, each of `zones` serving the value, then `active`.
async fn delegated_order(
    service: &Service,
    zones: &[SocketAddr],
    id: &str,
    target: &str,
) -> anyhow::Result<Sample> {
    let watchers = zones
        .iter()
        .map(|zone| ZoneWatcher::start(*zone, target))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (started, accepted) = issue(service, id, "delegated").await?;
    let accepted_wall = Utc::now();
    let value = started["challenges"][0]["expected_txt_value"]
        .as_str()
        .context("a value")?;
    ensure!(
        started["challenges"][0]["delegated_to"] == target,
        "published elsewhere than {target}: {started}"
    );
    let mut served = Vec::new();
    for watcher in &watchers {
        let seen = watcher.first_seen(value, Duration::from_secs(10)).await;
        served.push(seen.map(|at| signed_ms(accepted, at)));
    }
    drop(watchers);
    let active = wait_active(service, id).await?;
    let (observed, ca) = phases(service, id, accepted_wall).await?;
    Ok(Sample {
        active: signed_ms(accepted, active),
        zones: served,
        observed,
        ca,
        first_lookup: 0.0,
    })
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// The `p` quantile (0.0–1.0) of `samples`, nearest rank, as `bench/stats.rs` takes it.
fn quantile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds as text: `812 ms`, `10.43 s`, `1.3 ms`, `-0.4 ms`.
fn duration(ms: f64) -> String {
    if ms.abs() >= 1_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms.abs() >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// p50 / p99 / max of milliseconds, as text.
fn spread(samples: &[f64]) -> String {
    format!(
        "p50 {} / p99 {} / max {}",
        duration(quantile(samples, 0.5)),
        duration(quantile(samples, 0.99)),
        duration(quantile(samples, 1.0))
    )
}

/// The system's load averages, as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-minute load average.
fn load_1m() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|load| load.parse().ok())
        .unwrap_or(0.0)
}

#[derive(Clone, Copy)]
enum Unit {
    Ms,
    Ratio,
    Plain,
}

/// Each run's figures, by configuration and figure, for the summary at the end.
/// One configuration's figures: each one's name, unit and value per run.
type Figures = Vec<(String, Unit, Vec<f64>)>;

#[derive(Default)]
struct Summary(Vec<(String, Figures)>);

impl Summary {
    fn record(&mut self, configuration: &str, figure: &str, unit: Unit, value: f64) {
        let index = match self.0.iter().position(|(name, _)| name == configuration) {
            Some(index) => index,
            None => {
                self.0.push((configuration.to_owned(), Vec::new()));
                self.0.len() - 1
            }
        };
        let figures = &mut self.0[index].1;
        match figures.iter_mut().find(|(name, _, _)| name == figure) {
            Some((_, _, values)) => values.push(value),
            None => figures.push((figure.to_owned(), unit, vec![value])),
        }
    }

    fn print(&self) {
        println!("\n== summary: the median of the runs' figures (min–max) ==");
        for (configuration, figures) in &self.0 {
            println!("{configuration}");
            for (figure, unit, values) in figures {
                let text = |value: f64| match unit {
                    Unit::Ms => duration(value),
                    Unit::Ratio => format!("{value:.1}×"),
                    Unit::Plain => format!("{value:.2}"),
                };
                println!(
                    "  {figure}: {} ({} to {}) [runs: {}]",
                    text(quantile(values, 0.5)),
                    text(quantile(values, 0.0)),
                    text(quantile(values, 1.0)),
                    values.len()
                );
            }
        }
    }
}

type SharedSummary = Arc<Mutex<Summary>>;

fn record(summary: &SharedSummary, configuration: &str, figure: &str, unit: Unit, value: f64) {
    summary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(configuration, figure, unit, value);
}

// ---------------------------------------------------------------------------------------------
// The runs.

/// Flows 1 and 2 on one store with one `POLL_INTERVAL`: manual and delegated orders in turn.
async fn flows(
    kind: StoreKind,
    interval: &str,
    run: usize,
    config: &Config,
    summary: &SharedSummary,
) -> anyhow::Result<()> {
    let interval_name = match interval {
        "default" => "POLL_INTERVAL default (10s)".to_owned(),
        other => format!("POLL_INTERVAL={other}"),
    };
    let configuration = format!("{kind:?} × 1, {interval_name}");
    let load_before = load_average();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let pebble = pebble_delegating_to(dns);
    let database = TestDatabase::create(kind).await;
    let mut env = bench_env(&pebble, &database, interval);
    delegate_zone(&mut env, ZONE, dns);
    let service = Service::start(BINARY, &env);

    let mut manual_ids = Vec::with_capacity(config.domains);
    let mut delegated_ids = Vec::with_capacity(config.domains);
    for n in 0..config.domains {
        manual_ids.push(verified_domain(&service, &pebble, &format!("m{n}.manual.test")).await);
        delegated_ids
            .push(verified_by_cname(&service, &pebble, &format!("d{n}.delegated.test")).await?);
    }
    // One untimed issuance first: the ACME account, the first connections to the CA.
    let (warm_id, warm_target) =
        verified_by_cname(&service, &pebble, "warm.delegated.test").await?;
    delegated_order(&service, &[dns], &warm_id, &warm_target).await?;

    let challtestsrv = Challtestsrv::of(&pebble);
    let cycle = poll_interval(interval)?;
    let (mut manual, mut delegated) = (Vec::new(), Vec::new());
    for (n, (manual_id, (delegated_id, target))) in
        manual_ids.iter().zip(&delegated_ids).enumerate()
    {
        // The n-th manual record is published at the middle of the n-th of N equal slices of
        // the poll cycle after the first lookup: a person comes at any moment of the cycle.
        let phase = cycle.mul_f64((n as f64 + 0.5) / config.domains as f64);
        let name = format!("m{n}.manual.test");
        manual.push(manual_order(&service, &challtestsrv, manual_id, &name, phase).await?);
        delegated.push(delegated_order(&service, &[dns], delegated_id, target).await?);
    }
    let load_after = load_average();

    let of = |samples: &[Sample], figure: fn(&Sample) -> f64| -> Vec<f64> {
        samples.iter().map(figure).collect()
    };
    let zone: Vec<f64> = delegated.iter().filter_map(|s| s.zones[0]).collect();
    let unseen = delegated.len() - zone.len();
    let before_202 = zone.iter().filter(|ms| **ms < 0.0).count();
    let manual_active = of(&manual, |s| s.active);
    let delegated_active = of(&delegated, |s| s.active);
    println!(
        "run {run}, {configuration}, ECDSA P-256, {n} manual + {n} delegated orders in turn \
         (load average {load_before} before, {load_after} after)",
        n = config.domains
    );
    println!(
        "  manual:    202 → poller's first lookup {} | TXT published → active {} | → observed {} \
         | observed → issued {}",
        spread(&of(&manual, |s| s.first_lookup)),
        spread(&manual_active),
        spread(&of(&manual, |s| s.observed)),
        spread(&of(&manual, |s| s.ca)),
    );
    println!(
        "  delegated: 202 → zone serves {} ({before_202} of {} before the 202, {unseen} not seen) \
         | 202 → active {} | → observed {} | observed → issued {}",
        if zone.is_empty() {
            "none".to_owned()
        } else {
            spread(&zone)
        },
        zone.len(),
        spread(&delegated_active),
        spread(&of(&delegated, |s| s.observed)),
        spread(&of(&delegated, |s| s.ca)),
    );
    let ratio = quantile(&manual_active, 0.5) / quantile(&delegated_active, 0.5);
    println!("  manual / delegated, p50 to active: {ratio:.1}×");

    let add =
        |figure: &str, unit: Unit, value: f64| record(summary, &configuration, figure, unit, value);
    add("load average (1 min) at the end", Unit::Plain, load_1m());
    add(
        "manual, TXT published → active, p50",
        Unit::Ms,
        quantile(&manual_active, 0.5),
    );
    add(
        "manual, TXT published → active, max",
        Unit::Ms,
        quantile(&manual_active, 1.0),
    );
    add(
        "manual, TXT published → observed, p50",
        Unit::Ms,
        quantile(&of(&manual, |s| s.observed), 0.5),
    );
    add(
        "manual, observed → issued, p50",
        Unit::Ms,
        quantile(&of(&manual, |s| s.ca), 0.5),
    );
    if !zone.is_empty() {
        add(
            "delegated, 202 → zone serves, p50",
            Unit::Ms,
            quantile(&zone, 0.5),
        );
        add(
            "delegated, 202 → zone serves, max",
            Unit::Ms,
            quantile(&zone, 1.0),
        );
    }
    add(
        "delegated, 202 → active, p50",
        Unit::Ms,
        quantile(&delegated_active, 0.5),
    );
    add(
        "delegated, 202 → active, max",
        Unit::Ms,
        quantile(&delegated_active, 1.0),
    );
    add(
        "delegated, 202 → observed, p50",
        Unit::Ms,
        quantile(&of(&delegated, |s| s.observed), 0.5),
    );
    add(
        "delegated, observed → issued, p50",
        Unit::Ms,
        quantile(&of(&delegated, |s| s.ca), 0.5),
    );
    add("manual / delegated, p50 to active", Unit::Ratio, ratio);
    Ok(())
}

/// Flow 3: delegated orders created on replica A, served by replica B.
async fn replicas(run: usize, config: &Config, summary: &SharedSummary) -> anyhow::Result<()> {
    let configuration = "PostgreSQL × 2, POLL_INTERVAL default (10s), orders on A".to_owned();
    let load_before = load_average();
    let dns_a = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let dns_b = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    // Unbound sends the zone to B only: the CA validates A's orders only once B serves them.
    let pebble = pebble_delegating_to(dns_b);
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = bench_env(&pebble, &database, "default");
    let mut on_a = env.clone();
    delegate_zone(&mut on_a, ZONE, dns_a);
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = env;
    delegate_zone(&mut on_b, ZONE, dns_b);
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    let replica_a = Service::start(BINARY, &on_a);
    let _replica_b = Service::start(BINARY, &on_b);

    let mut domains = Vec::with_capacity(config.replica_orders);
    for n in 0..config.replica_orders {
        domains
            .push(verified_by_cname(&replica_a, &pebble, &format!("r{n}.delegated.test")).await?);
    }
    let (warm_id, warm_target) =
        verified_by_cname(&replica_a, &pebble, "warm.delegated.test").await?;
    delegated_order(&replica_a, &[dns_b, dns_a], &warm_id, &warm_target).await?;

    let mut samples = Vec::with_capacity(domains.len());
    for (id, target) in &domains {
        samples.push(delegated_order(&replica_a, &[dns_b, dns_a], id, target).await?);
    }
    let load_after = load_average();
    let on_b: Vec<f64> = samples.iter().filter_map(|s| s.zones[0]).collect();
    let on_a: Vec<f64> = samples.iter().filter_map(|s| s.zones[1]).collect();
    ensure!(
        on_b.len() == samples.len(),
        "replica B did not serve {} of {} values within 10 s",
        samples.len() - on_b.len(),
        samples.len()
    );
    let active: Vec<f64> = samples.iter().map(|s| s.active).collect();
    let within_a_second = on_b.iter().filter(|ms| **ms <= 1_000.0).count();
    println!(
        "run {run}, {configuration}, {} delegated orders one after the other \
         (load average {load_before} before, {load_after} after)",
        samples.len()
    );
    println!(
        "  A's 202 → B's zone serves {} ({within_a_second} of {} within 1 s) | → A's own zone {} \
         | → active {}",
        spread(&on_b),
        on_b.len(),
        if on_a.is_empty() {
            "none".to_owned()
        } else {
            spread(&on_a)
        },
        spread(&active),
    );
    let add = |figure: &str, value: f64| record(summary, &configuration, figure, Unit::Ms, value);
    add("A's 202 → B's zone serves, p50", quantile(&on_b, 0.5));
    add("A's 202 → B's zone serves, p99", quantile(&on_b, 0.99));
    add("A's 202 → B's zone serves, max", quantile(&on_b, 1.0));
    if !on_a.is_empty() {
        add("A's 202 → A's zone serves, p50", quantile(&on_a, 0.5));
        add("A's 202 → A's zone serves, max", quantile(&on_a, 1.0));
    }
    add("A's 202 → active, p50", quantile(&active, 0.5));
    add("A's 202 → active, max", quantile(&active, 1.0));
    record(
        summary,
        &configuration,
        "load average (1 min) at the end",
        Unit::Plain,
        load_1m(),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    dns_handling::install_crypto_provider();
    let config = Config::from_env();
    let summary = SharedSummary::default();
    harness::on_each_store(|kind| {
        let (config, summary) = (&config, summary.clone());
        async move {
            for run in 1..=config.runs {
                for interval in &config.intervals {
                    flows(kind, interval, run, config, &summary).await?;
                }
                if kind == StoreKind::Postgres && config.replica_orders > 0 {
                    replicas(run, config, &summary).await?;
                }
            }
            Ok(())
        }
    })?;
    summary.lock().unwrap_or_else(|e| e.into_inner()).print();
    Ok(())
}
