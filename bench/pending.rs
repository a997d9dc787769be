//! Run: `cargo bench --bench pending` (N=20000 pending orders, WINDOW=60 s of steady state,
//! orders polled every POLL_INTERVAL_MS=10000; STORES=sqlite,postgres; PostgreSQL at
//! BENCH_POSTGRES_URL, else TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres)
//!
//! The scale test of many orders waiting for TXT records that never appear. Seeds a fresh
//! store with N domains in `certificate_pending` (their events written directly, hash-chained,
//! names reserved; fake ACME URLs, which a poller never calls before it sees its record; a
//! deadline an hour away), runs a small UDP DNS server in this process that answers every query
//! NXDOMAIN and records when each name was asked, and starts the release binary with
//! `DNS_NAMESERVERS` pointing at it. The first start catches the projections up (building the
//! N views) and the supervisor resumes every order. Reports:
//! - resume: from process start until every name was queried once (and when the service
//!   logged `supervisor started`);
//! - over a steady WINDOW (after one poll interval of settling): the service's VmRSS and VmHWM,
//!   its CPU share (utime + stime over wall time; 100 % is one core), DNS queries/s, and the
//!   lateness of polls: for each name, each gap from a query inside the window to its next
//!   query (even one after the window) minus the poll interval (p50 / p99 / max of all gaps);
//! - resume after a restart: the service is killed (SIGKILL, same `REPLICA_ID`) and started
//!   again on the same store; the time until every name was queried again.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod harness;

mod process;

#[allow(dead_code)]
mod seed;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dns_handling::adapters::store::Store;
use dns_handling_testkit::{
    database_env, free_dns_port, ChildGuard, StoreKind, TempDir, TestDatabase,
};
use process::{cpu_seconds, status_mib};

/// What the in-process DNS server saw.
#[derive(Default)]
struct DnsLog {
    queries: AtomicU64,
    by_name: Mutex<HashMap<String, Vec<Instant>>>,
    stop: AtomicBool,
}

impl DnsLog {
    fn clear(&self) {
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn names_seen(&self) -> usize {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The latest first query over all names (when the last name was asked for the first time).
    fn last_first_query(&self) -> Option<Instant> {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name
            .values()
            .filter_map(|times| times.first())
            .max()
            .copied()
    }
}

/// The query name of a DNS message (lower case, with the trailing dot) and where its question
/// section ends; `None` for anything but a one-question query.
fn parse_query(message: &[u8]) -> Option<(String, usize)> {
    if message.len() < 12 || message[2] & 0x80 != 0 || message[4..6] != [0, 1] {
        return None;
    }
    let mut name = String::new();
    let mut at = 12;
    loop {
        let length = usize::from(*message.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        if length > 63 {
            return None; // compression pointers do not occur in a question we sent ourselves
        }
        let label = message.get(at..at + length)?;
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        name.push('.');
        at += length;
    }
    let end = at + 4; // type and class
    (message.len() >= end).then_some((name, end))
}

/// Answers every query NXDOMAIN (the challenge record's name does not exist yet), recording
/// when each name was asked. Runs on its own thread until `log.stop` is set.
fn start_dns_server(port: u16, log: Arc<DnsLog>) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let socket = UdpSocket::bind(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut reply = Vec::with_capacity(512);
        while !log.stop.load(Ordering::Relaxed) {
            let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            let now = Instant::now();
            let Some((name, question_end)) = parse_query(&buffer[..length]) else {
                continue;
            };
            reply.clear();
            reply.extend_from_slice(&buffer[..2]); // id
            reply.push(0x80 | (buffer[2] & 0x79)); // response; opcode and RD copied
            reply.push(0x03); // NXDOMAIN
            reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, nothing else
            reply.extend_from_slice(&buffer[12..question_end]);
            let _ = socket.send_to(&reply, peer);
            log.queries.fetch_add(1, Ordering::Relaxed);
            log.by_name
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name)
                .or_default()
                .push(now);
        }
    }))
}

/// The service process, its stdout drained and its log in a file.
struct Running {
    guard: ChildGuard,
    log_path: PathBuf,
    started: Instant,
    started_wall: DateTime<Utc>,
}

impl Running {
    fn start(env: &HashMap<String, String>, log_path: &Path) -> anyhow::Result<Running> {
        let log = std::fs::File::create(log_path)?;
        let started_wall = Utc::now();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dns-handling"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SERVER_ADDR", "127.0.0.1:0")
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
            });
        }
        Ok(Running {
            guard: ChildGuard { child },
            log_path: log_path.to_owned(),
            started,
            started_wall,
        })
    }

    fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Seconds from process start to the first log line containing `needle`.
    fn logged_after(&self, needle: &str) -> Option<f64> {
        let file = std::fs::File::open(&self.log_path).ok()?;
        let line = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains(needle))?;
        let stamp = line.split_whitespace().next()?;
        let at: DateTime<Utc> = stamp.parse().ok()?;
        Some((at - self.started_wall).num_microseconds()? as f64 / 1e6)
    }

    /// Waits until every one of `names` names was queried; the seconds since process start.
    fn wait_for_resume(&mut self, dns: &DnsLog, names: usize) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(900);
        while dns.names_seen() < names {
            if let Some(status) = self.guard.child.try_wait()? {
                anyhow::bail!("the service exited with {status}; its log:\n{}", self.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {names} names queried after 15 minutes",
                dns.names_seen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let last = dns.last_first_query().unwrap_or_else(Instant::now);
        Ok(last.duration_since(self.started).as_secs_f64())
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

struct Config {
    domains: usize,
    interval: Duration,
    window: Duration,
}

async fn run(kind: StoreKind, config: &Config) -> anyhow::Result<()> {
    let Config {
        domains,
        interval,
        window,
    } = *config;
    let database = TestDatabase::create(kind).await;
    let store = Store::connect(&database.url).await?;
    let seeding = Instant::now();
    let deadline = Utc::now() + chrono::Duration::hours(1);
    let events = seed::seed(
        &store,
        domains,
        seed::Lifecycle::Pending {
            poll_interval_ms: interval.as_millis() as u64,
            deadline,
        },
    )
    .await?;
    seed::close(store).await;
    eprintln!(
        "{kind:?}: seeded {domains} pending domains ({events} events) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let dns = Arc::new(DnsLog::default());
    let dns_port = free_dns_port();
    let server = start_dns_server(dns_port, dns.clone())?;
    let mut env = database_env(&database);
    env.extend([
        (
            "DNS_NAMESERVERS".to_owned(),
            format!("127.0.0.1:{dns_port}"),
        ),
        // Never contacted: no order sees its record. A closed local port, not the internet.
        (
            "ACME_DIRECTORY".to_owned(),
            "http://127.0.0.1:9/dir".to_owned(),
        ),
        (
            "POLL_INTERVAL".to_owned(),
            format!("{}ms", interval.as_millis()),
        ),
        ("POLL_TIMEOUT".to_owned(), "1h".to_owned()),
        (
            "LOG_LEVEL".to_owned(),
            std::env::var("SERVICE_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned()),
        ),
        // A restarted replica with the same name takes its leases back at once (PostgreSQL).
        ("REPLICA_ID".to_owned(), "bench-replica".to_owned()),
    ]);
    let logs = TempDir::new("dns-handling-pending-bench");
    // SERVICE_LOG_DIR keeps the service's logs (<store>-first.log, <store>-restart.log), and
    // SERVICE_LOG_LEVEL sets their level, for a look afterwards.
    let log_dir = std::env::var("SERVICE_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| logs.path().to_owned());

    let mut service = Running::start(&env, &log_dir.join(format!("{kind:?}-first.log")))?;
    let resume = service.wait_for_resume(&dns, domains)?;
    let supervisor_started = service.logged_after("supervisor started");
    let caught_up = service.logged_after("read projections caught up");

    // Let the resume burst pass, then watch one steady window.
    std::thread::sleep(interval);
    let pid = service.pid();
    let window_start = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let queries_before = dns.queries.load(Ordering::Relaxed);
    std::thread::sleep(window);
    let window_end = Instant::now();
    let cpu = cpu_seconds(pid) - cpu_before;
    let queries = dns.queries.load(Ordering::Relaxed) - queries_before;
    let (rss, hwm) = (status_mib(pid, "VmRSS:"), status_mib(pid, "VmHWM:"));
    let wall = window_end.duration_since(window_start).as_secs_f64();
    if let Some(status) = service.guard.child.try_wait()? {
        anyhow::bail!(
            "the service exited with {status}; its log:\n{}",
            service.log()
        );
    }

    // Every poll that started inside the window gets its next poll counted, even one that
    // comes after the window: wait for those (a poll lost entirely counts as missed).
    std::thread::sleep(interval.mul_f64(1.5));
    let mut lateness: Vec<f64> = Vec::new();
    let mut missed = 0usize;
    {
        let by_name = dns.by_name.lock().unwrap_or_else(|e| e.into_inner());
        for times in by_name.values() {
            for (index, start) in times.iter().enumerate() {
                if *start < window_start || *start >= window_end {
                    continue;
                }
                match times.get(index + 1) {
                    Some(next) => lateness
                        .push(next.duration_since(*start).as_secs_f64() - interval.as_secs_f64()),
                    None => missed += 1,
                }
            }
        }
    }
    lateness.sort_by(|a, b| a.total_cmp(b));
    service.guard.kill();
    dns.clear();
    let mut restarted = Running::start(&env, &log_dir.join(format!("{kind:?}-restart.log")))?;
    let resume_again = restarted.wait_for_resume(&dns, domains)?;
    let supervisor_restarted = restarted.logged_after("supervisor started");
    // The restarted process skips the first start's projection catch-up: its memory after a
    // few intervals of polling is the steady figure of a service that was simply restarted.
    std::thread::sleep(interval * 3);
    let (restart_rss, restart_hwm) = (
        status_mib(restarted.pid(), "VmRSS:"),
        status_mib(restarted.pid(), "VmHWM:"),
    );
    restarted.guard.kill();
    dns.stop.store(true, Ordering::Relaxed);
    let _ = server.join();

    let seconds = |value: Option<f64>| value.map_or("?".to_owned(), |s| format!("{s:.2} s"));
    println!(
        "{kind:?}: {domains} pending orders, poll every {} ms | first start: views caught up at {}, `supervisor started` at {}, every name queried by {resume:.2} s | steady {wall:.0} s window: VmRSS {rss:.0} MiB, VmHWM {hwm:.0} MiB, CPU {:.1} % of a core, {:.0} DNS queries/s, poll lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} gaps, {missed} polls with no next poll) | after SIGKILL and restart: `supervisor started` at {}, every name queried by {resume_again:.2} s; three intervals later VmRSS {restart_rss:.0} MiB, VmHWM {restart_hwm:.0} MiB",
        interval.as_millis(),
        seconds(caught_up),
        seconds(supervisor_started),
        cpu / wall * 100.0,
        queries as f64 / wall,
        percentile(&lateness, 0.50) * 1e3,
        percentile(&lateness, 0.99) * 1e3,
        lateness.last().copied().unwrap_or(f64::NAN) * 1e3,
        lateness.len(),
        seconds(supervisor_restarted),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let config = Config {
        domains: number("N").unwrap_or(if benchmarking { 20_000 } else { 50 }) as usize,
        interval: Duration::from_millis(number("POLL_INTERVAL_MS").unwrap_or(if benchmarking {
            10_000
        } else {
            300
        })),
        window: Duration::from_secs(number("WINDOW").unwrap_or(if benchmarking { 60 } else { 1 })),
    };
    harness::on_each_store(|kind| run(kind, &config))
}
