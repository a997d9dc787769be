//! Run: `cargo bench --bench dns` (N=10000 open delegated orders; RUNS=5 rounds; DURATION=12 s
//! per dnsperf run; CLIENTS=8 and OUTSTANDING=200 for the saturating runs; RATE=5000 queries/s
//! for the fixed-rate runs; API_RATE=50 requests/s for the API probe; PIN=0 leaves every process
//! unpinned; SERVICE_LOG_LEVEL=info, the service's LOG_LEVEL; HOLD_SECONDS=600 keeps both servers
//! up that long once they answer, printing their ports, pids and query files, to profile or run
//! dnsperf by hand; needs `dnsperf` and `nsd`: `apt-get install -y dnsperf nsd`)
//!
//! The embedded DNS server of the delegation zone under load, beside NSD serving the same records
//! from a zone file, measured in the same run. Seeds a fresh SQLite store with N domains, each
//! verified by its CNAME and with an open delegated order (one challenge, a 43-character value
//! at its label in `acme.platform.test`); starts the release binary with `DELEGATION_ZONE` (its
//! start builds the views from the events and fills the zone from them) and waits until the zone
//! serves the N values (`dns_handling_delegation_zone_values`); writes an NSD configuration and
//! zone file with the same SOA, NS and N TXT records and starts `nsd -d` on another loopback
//! port. Both servers are checked to give the same answers. Then, RUNS rounds, each:
//! - the API probe alone (no DNS load): `GET /domains/{id}` at API_RATE requests/s on one
//!   keep-alive connection, p50 / p99 / max latency, counted from when each request was due;
//! - for each server (the order alternating from round to round), a saturating dnsperf run
//!   (CLIENTS sockets, OUTSTANDING queries in flight, no rate limit) and a fixed-rate run (RATE
//!   queries/s), each with the API probe running beside it: queries/s, lost queries, response
//!   codes, the latency of every answer (dnsperf `-v`: p50 / p99 / max computed here, as this
//!   dnsperf has no histogram), the server's CPU (and so its queries per CPU second), and the
//!   API probe's figures.
//!
//! Then, once, a saturating run of each server with each kind of query alone: where the time of
//! the mix goes.
//!
//! The query file mixes 90 % TXT queries of existing labels (uniformly random) with 10 % TXT
//! queries of labels that do not exist (NXDOMAIN). On two or more cores dnsperf runs on core 0
//! and each server's query-answering code on core 1: NSD's processes (one server process,
//! `server-count: 1`), and the service's `dns-server` thread (the rest of the service is left
//! where the scheduler puts it, as it would be in production). The seeded orders' pollers are
//! parked (see `BlackHole`), and the first audit checkpoint is a day away, so that the service's
//! CPU goes to the DNS server and the API. Under `cargo test --all-targets` the bench is a smoke
//! run: 200 domains, one round of 1 s runs, failing when dnsperf or nsd is missing, when an
//! answer is neither NOERROR nor NXDOMAIN, when an API request fails, or when the service logs
//! per query.

// A bench binary: lints for undocumented items are for the library; every item here has a doc
// comment all the same.
#![allow(missing_docs)]

mod api_probe;
#[allow(dead_code)]
mod harness;

#[allow(dead_code)]
mod process;

#[allow(dead_code)]
mod seed;

mod stats;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use dns_handling::adapters::dns::{DnsLookup, HickoryDnsLookup};
use dns_handling::adapters::store::Store;
use dns_handling_testkit::{
    database_env, free_dns_port, ChildGuard, Service, StoreKind, TempDir, TestDatabase,
};
use process::cpu_seconds;
use rand::{Rng, SeedableRng};
use stats::percentile;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

/// The admin token the service is started with, sent by the API probe.
const TOKEN: &str = "dns-bench-admin-token";

/// The zone's nameserver names, in the service's setting and NSD's zone file alike.
const NAMESERVERS: [&str; 2] = ["ns1.platform.test", "ns2.platform.test"];

/// Lines of the dnsperf query file; dnsperf goes through it again and again.
const QUERY_LINES: usize = 100_000;

/// What the bench is asked to do, from the environment (smaller under `cargo test`).
struct Config {
    /// Domains seeded, each with an open delegated order: the zone's TXT records.
    domains: usize,
    /// Rounds: each measures both servers, saturated and at the fixed rate.
    rounds: usize,
    /// Seconds of each dnsperf run.
    duration: u64,
    /// dnsperf's sockets (`-c`) in the saturating runs.
    clients: u32,
    /// Queries in flight at most (`-q`) in the saturating runs.
    outstanding: u32,
    /// Queries/s of the fixed-rate runs (`-Q`).
    rate: u32,
    /// Requests/s of the API probe.
    api_rate: u32,
    /// Whether dnsperf and the servers are pinned to cores of their own.
    pin: bool,
    /// The service's `LOG_LEVEL`.
    log_level: String,
}

impl Config {
    /// The configuration of a measurement (`--bench`) or of a smoke run, with the environment's
    /// overrides.
    fn from_env(benchmarking: bool) -> Config {
        let number = |name: &str, measured: u64, smoke: u64| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(if benchmarking { measured } else { smoke })
        };
        Config {
            domains: number("N", 10_000, 200) as usize,
            rounds: number("RUNS", 5, 1) as usize,
            duration: number("DURATION", 12, 1),
            clients: number("CLIENTS", 8, 8) as u32,
            outstanding: number("OUTSTANDING", 200, 200) as u32,
            rate: number("RATE", 5_000, 1_000) as u32,
            api_rate: number("API_RATE", 50, 50) as u32,
            // Pinning needs a core for dnsperf and another for the server.
            pin: std::env::var("PIN").map_or(true, |value| value != "0")
                && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
            log_level: std::env::var("SERVICE_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned()),
        }
    }
}

/// `nsd`'s path: Debian installs it in `/usr/sbin`, which a user's `PATH` may lack.
fn nsd_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nsd"))
        .find(|candidate| candidate.is_file());
    in_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nsd"))
}

/// Fails, saying how to install them, when dnsperf or nsd is missing: a smoke run that skipped
/// silently would assert nothing.
fn require_tools() -> anyhow::Result<()> {
    let hint = "apt-get install -y dnsperf nsd (tests/run.sh installs them)";
    anyhow::ensure!(
        Command::new("dnsperf").arg("-h").output().is_ok(),
        "dnsperf is not installed: {hint}"
    );
    anyhow::ensure!(
        Command::new(nsd_binary()).arg("-v").output().is_ok(),
        "nsd is not installed: {hint}"
    );
    Ok(())
}

/// The DNS server under test, for the dnsperf runs and the report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    /// The service's own DNS server (hickory-server, in the service process).
    Embedded,
    /// NSD, the peer, serving the same records from a zone file.
    Nsd,
}

/// A name of the zone's label `label`, without the trailing dot (as dnsperf's input has it).
fn zone_name(label: &str) -> String {
    format!("{label}.{}", seed::DELEGATION_ZONE)
}

/// A label that no seeded domain has: 32 hex characters like real labels, from `rng`.
fn missing_label(rng: &mut impl Rng) -> String {
    // Real labels are SHA-256 based: a random 128-bit label collides with none of them.
    format!("{:032x}", rng.gen::<u128>())
}

/// Writes a dnsperf query file: `QUERY_LINES` TXT queries in random order, the share `existing`
/// of them for existing labels (uniformly random domains), the rest for labels that do not
/// exist.
fn write_query_file(path: &Path, domains: usize, existing: f64) -> anyhow::Result<()> {
    // A fixed seed: every run of the bench asks the same questions in the same order.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0d15_ea5e);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..QUERY_LINES {
        let name = if rng.gen_bool(existing) {
            let target = seed::delegation_target(rng.gen_range(0..domains));
            target.trim_end_matches('.').to_owned()
        } else {
            zone_name(&missing_label(&mut rng))
        };
        writeln!(file, "{name} TXT")?;
    }
    file.flush()?;
    Ok(())
}

/// NSD running in the foreground (`-d`) on a private configuration; stopped on drop.
struct Nsd {
    /// The process started (it forks the main and server processes).
    guard: ChildGuard,
    /// Where it answers, UDP and TCP.
    port: u16,
    /// Its configuration, zone file, pid file and state.
    _dir: TempDir,
}

impl Nsd {
    /// Writes the zone (SOA and NS as the service serves them, the N TXT records with the
    /// service's TTL of 1 s) and a configuration that needs no root, chroot or system files,
    /// checks both with nsd-checkconf and nsd-checkzone, and starts NSD on `port`, on core 1
    /// when `pin`.
    fn start(domains: usize, port: u16, pin: bool) -> anyhow::Result<Nsd> {
        let dir = TempDir::new("dns-handling-dns-bench-nsd");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let zone = seed::DELEGATION_ZONE;
        let mut zone_text = format!(
            "$ORIGIN {zone}.\n$TTL 3600\n\
             @ IN SOA {primary}. hostmaster.{zone}. 1 3600 600 86400 1\n",
            primary = NAMESERVERS[0],
        );
        for nameserver in NAMESERVERS {
            zone_text.push_str(&format!("@ IN NS {nameserver}.\n"));
        }
        for n in 0..domains {
            zone_text.push_str(&format!(
                "{} 1 IN TXT \"{}\"\n",
                seed::delegation_target(n),
                seed::challenge_value(n)
            ));
        }
        std::fs::write(path("zone"), zone_text)?;
        // `username: ""` and `chroot: ""` keep NSD from dropping privileges or changing root;
        // `database: ""` (no nsd.db) and its own pid, state and zone-list files keep it off
        // /var/lib/nsd, so it never meets a system NSD. Response rate limiting (on by default in
        // Debian's build, 200 answers/s per client network) is turned off: every query here
        // comes from 127.0.0.1, and the service has no such limit. `minimal-responses` keeps
        // the NS records out of the authority section of positive answers, as the service does
        // (checked against the answers' sizes, which dnsperf reports).
        let config = format!(
            "server:\n\
             \x20 server-count: 1\n\
             \x20 ip-address: 127.0.0.1@{port}\n\
             \x20 do-ip6: no\n\
             \x20 username: \"\"\n\
             \x20 chroot: \"\"\n\
             \x20 zonesdir: \"{dir}\"\n\
             \x20 database: \"\"\n\
             \x20 pidfile: \"{pid}\"\n\
             \x20 xfrdfile: \"{xfrd}\"\n\
             \x20 zonelistfile: \"{zonelist}\"\n\
             \x20 xfrdir: \"{dir}\"\n\
             \x20 logfile: \"{log}\"\n\
             \x20 verbosity: 1\n\
             \x20 minimal-responses: yes\n\
             \x20 rrl-ratelimit: 0\n\
             \x20 rrl-whitelist-ratelimit: 0\n\
             remote-control:\n\
             \x20 control-enable: no\n\
             zone:\n\
             \x20 name: {zone}\n\
             \x20 zonefile: \"{zonefile}\"\n",
            dir = dir.path().display(),
            pid = path("nsd.pid"),
            xfrd = path("xfrd.state"),
            zonelist = path("zone.list"),
            log = path("nsd.log"),
            zonefile = path("zone"),
        );
        std::fs::write(path("nsd.conf"), config)?;
        let checked = Command::new(nsd_binary().with_file_name("nsd-checkconf"))
            .arg(path("nsd.conf"))
            .output()?;
        anyhow::ensure!(
            checked.status.success(),
            "nsd-checkconf refused the configuration: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let checked = Command::new(nsd_binary().with_file_name("nsd-checkzone"))
            .args([zone, &path("zone")])
            .output()?;
        anyhow::ensure!(
            checked.status.success(),
            "nsd-checkzone refused the zone: {}",
            String::from_utf8_lossy(&checked.stdout)
        );
        let mut command = pinned(pin.then_some(1), nsd_binary());
        command
            .args(["-d", "-c", &path("nsd.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn()?;
        Ok(Nsd {
            guard: ChildGuard { child },
            port,
            _dir: dir,
        })
    }

    /// The process started and every process below it (with `-d`, NSD 4.6 runs xfrd in the
    /// process started, which forks the main process, which forks the server), for their CPU.
    fn processes(&self) -> Vec<u32> {
        let mut pids = vec![self.guard.child.id()];
        let mut next = 0;
        while let Some(&parent) = pids.get(next) {
            pids.extend(children_of(parent));
            next += 1;
        }
        pids
    }
}

impl Drop for Nsd {
    /// SIGTERM first: NSD stops all its processes on it, where a SIGKILL (the guard's) would
    /// leave the forked ones running.
    fn drop(&mut self) {
        let pid = self.guard.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.guard.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The processes whose parent is `parent` (from `/proc/<pid>/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the command name in brackets: state, then the parent's id.
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// The id of the service's DNS server thread (named `dns-server` by `DnsServer::start`).
fn dns_thread(pid: u32) -> anyhow::Result<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|comm| comm.trim() == "dns-server")
        })
        .ok_or_else(|| anyhow::anyhow!("the service has no dns-server thread"))
}

/// `program` as a command, run on `core` alone when given (through `taskset`).
fn pinned(core: Option<u32>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A UDP and TCP port that accepts queries and never answers, for the service's resolver
/// (`DNS_NAMESERVERS`): the pollers of the N seeded orders look their records up through it, and
/// with `DNS_TIMEOUT=60s` each lookup waits a minute, 64 at a time (the resolver's limit), so
/// the pollers stay parked and the service's own CPU goes to the DNS server and the API. A port
/// with no socket would not do: the kernel's refusal fails each lookup at once, and a failed
/// lookup of a delegated order is tried again 50 ms later.
struct BlackHole {
    /// Bound and never read.
    _udp: UdpSocket,
    /// Listening and never accepting (the kernel completes the handshakes).
    _tcp: TcpListener,
    /// Where it listens.
    port: u16,
}

impl BlackHole {
    /// Binds both on a free loopback port.
    fn bind() -> anyhow::Result<BlackHole> {
        let port = free_dns_port();
        Ok(BlackHole {
            _udp: UdpSocket::bind(("127.0.0.1", port))?,
            _tcp: TcpListener::bind(("127.0.0.1", port))?,
            port,
        })
    }
}

/// Checks that `server` at `port` answers every sampled label with its one value and a missing
/// label with nothing (NXDOMAIN), through the resolver the service itself uses.
async fn check_answers(server: Server, port: u16, domains: usize) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let lookup = HickoryDnsLookup::new(&[address], Duration::from_secs(2))?;
    let step = (domains / 50).max(1);
    for n in (0..domains).step_by(step) {
        let values = lookup.txt_values(&seed::delegation_target(n)).await?;
        anyhow::ensure!(
            values == vec![seed::challenge_value(n)],
            "{server:?} serves {values:?} for domain {n}, not its value"
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let missing = zone_name(&missing_label(&mut rng));
    let values = lookup.txt_values(&missing).await?;
    anyhow::ensure!(
        values.is_empty(),
        "{server:?} serves {values:?} at {missing}"
    );
    Ok(())
}

/// Waits until `server` at `port` answers a TXT query of domain 0's label.
async fn wait_until_answering(server: Server, port: u16, within: Duration) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let lookup = HickoryDnsLookup::new(&[address], Duration::from_millis(200))?;
    let deadline = Instant::now() + within;
    loop {
        match lookup.txt_values(&seed::delegation_target(0)).await {
            Ok(values) if !values.is_empty() => return Ok(()),
            outcome => anyhow::ensure!(
                Instant::now() < deadline,
                "{server:?} does not answer on port {port} after {within:?}: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a dnsperf run loads the server.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// As fast as it can: `clients` sockets, `outstanding` queries in flight, no rate limit.
    Saturating {
        /// dnsperf's `-c`.
        clients: u32,
        /// dnsperf's `-q`.
        outstanding: u32,
    },
    /// `qps` queries per second.
    FixedRate {
        /// dnsperf's `-Q`.
        qps: u32,
    },
}

/// What one dnsperf run measured.
struct DnsperfResult {
    /// Answers per second, as dnsperf counts them.
    queries_per_second: f64,
    /// Queries sent.
    sent: u64,
    /// Queries answered.
    completed: u64,
    /// Seconds from the first query to the end of the time limit, as dnsperf counts them.
    run_time: f64,
    /// Queries not answered within dnsperf's timeout (5 s).
    lost: u64,
    /// dnsperf's `Response codes:` line.
    response_codes: String,
    /// dnsperf's `Average packet size:` line.
    packet_sizes: String,
    /// The median latency of all answers (from `-v`'s line per answer).
    p50: Duration,
    /// Their 99th percentile.
    p99: Duration,
    /// The slowest.
    max: Duration,
}

/// The number after `label` on its line of dnsperf's statistics.
fn statistic(output: &str, label: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// The rest of `label`'s line of dnsperf's statistics.
fn statistic_text(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_default()
}

/// The response codes named in dnsperf's `Response codes:` line
/// (`NOERROR 55689 (90.05%), NXDOMAIN 6155 (9.95%)`).
fn response_code_names(line: &str) -> Vec<String> {
    line.split(", ")
        .filter_map(|part| part.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Runs dnsperf against `port` for `seconds` with `queries`, on core 0 when `pin`; `-v` writes a
/// line per answer (`> NOERROR name TXT 0.000123`) to `output`, read back for the latencies
/// (a file, not a pipe, so that reading it never slows dnsperf down).
fn run_dnsperf(
    port: u16,
    queries: &Path,
    seconds: u64,
    load: Load,
    pin: bool,
    output: &Path,
) -> anyhow::Result<DnsperfResult> {
    let mut command = pinned(pin.then_some(0), "dnsperf");
    command
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-v"])
        // Warnings and errors go to stdout too, into the file.
        .arg("-W");
    match load {
        Load::Saturating {
            clients,
            outstanding,
        } => command.args(["-c", &clients.to_string(), "-q", &outstanding.to_string()]),
        Load::FixedRate { qps } => command.args(["-Q", &qps.to_string()]),
    };
    let status = command
        .stdout(std::fs::File::create(output)?)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|error| anyhow::anyhow!("cannot run dnsperf: {error}"))?;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut statistics = String::new();
    for line in BufReader::new(std::fs::File::open(output)?).lines() {
        let line = line?;
        match line.strip_prefix("> ") {
            Some(answer) => {
                // A timed-out query is reported as `> T …` with no latency; dnsperf counts it
                // as lost, reported beside.
                if let Some(seconds) = answer
                    .rsplit(' ')
                    .next()
                    .and_then(|value| value.parse::<f64>().ok())
                {
                    latencies.push(Duration::from_secs_f64(seconds));
                }
            }
            None => {
                statistics.push_str(&line);
                statistics.push('\n');
            }
        }
    }
    anyhow::ensure!(
        status.success() && !latencies.is_empty(),
        "dnsperf failed ({status}):\n{statistics}"
    );
    let queries_per_second = statistic(&statistics, "Queries per second:")
        .ok_or_else(|| anyhow::anyhow!("no queries/s in dnsperf's output:\n{statistics}"))?;
    Ok(DnsperfResult {
        queries_per_second,
        sent: statistic(&statistics, "Queries sent:").unwrap_or(0.0) as u64,
        completed: statistic(&statistics, "Queries completed:").unwrap_or(0.0) as u64,
        run_time: statistic(&statistics, "Run time (s):").unwrap_or(f64::NAN),
        lost: statistic(&statistics, "Queries lost:").unwrap_or(0.0) as u64,
        response_codes: statistic_text(&statistics, "Response codes:"),
        packet_sizes: statistic_text(&statistics, "Average packet size:"),
        p50: percentile(&mut latencies, 0.50),
        p99: percentile(&mut latencies, 0.99),
        max: percentile(&mut latencies, 1.0),
    })
}

/// Runs `during` with the API probe beside it; both results.
fn with_api_probe<T>(
    service: &Service,
    config: &Config,
    during: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, api_probe::ApiResult)> {
    let stop = Arc::new(AtomicBool::new(false));
    let probe = api_probe::start_on_seeded_domains(
        service.address,
        TOKEN,
        config.domains,
        config.api_rate,
        stop.clone(),
    );
    let result = during();
    stop.store(true, Ordering::Relaxed);
    let api = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the API probe panicked"))?;
    Ok((result?, api))
}

/// One measured dnsperf run, with what was measured beside it.
struct Measured {
    /// The server queried.
    server: Server,
    /// How.
    load: Load,
    /// What dnsperf measured.
    dns: DnsperfResult,
    /// What the API probe measured meanwhile.
    api: api_probe::ApiResult,
    /// CPU seconds of the server's query-answering code during the run: the service's
    /// `dns-server` thread, or all of NSD's processes.
    server_cpu_seconds: f64,
    /// The same for the whole service process (in both servers' runs: the API and background
    /// work share it).
    service_cpu_seconds: f64,
    /// Bytes the service logged during the run.
    service_log_bytes: usize,
    /// The first line it logged during the run, if any.
    service_log_sample: String,
}

impl Measured {
    /// The server's share of a core over dnsperf's run time (which ends before dnsperf's wait
    /// for the answers to lost queries).
    fn server_cpu(&self) -> f64 {
        self.server_cpu_seconds / self.dns.run_time.max(f64::EPSILON)
    }

    /// The same for the whole service process.
    fn service_cpu(&self) -> f64 {
        self.service_cpu_seconds / self.dns.run_time.max(f64::EPSILON)
    }

    /// Queries answered per second of the server's CPU: its efficiency, comparable even where
    /// dnsperf, not the server, set the pace (NSD's saturating runs).
    fn queries_per_cpu_second(&self) -> f64 {
        self.dns.completed as f64 / self.server_cpu_seconds.max(f64::EPSILON)
    }
}

/// Everything running: the service, NSD, and where their query-answering code is.
struct Servers {
    /// The service, with its DNS server.
    service: Service,
    /// The service's DNS port (UDP and TCP).
    dns_port: u16,
    /// The id of the service's `dns-server` thread.
    dns_thread: u32,
    /// The peer.
    nsd: Nsd,
}

impl Servers {
    /// The port of `server`.
    fn port(&self, server: Server) -> u16 {
        match server {
            Server::Embedded => self.dns_port,
            Server::Nsd => self.nsd.port,
        }
    }

    /// CPU seconds so far of `server`'s query-answering code.
    fn server_cpu(&self, server: Server) -> f64 {
        match server {
            Server::Embedded => cpu_seconds(self.dns_thread),
            Server::Nsd => self.nsd.processes().into_iter().map(cpu_seconds).sum(),
        }
    }
}

/// One dnsperf run of `load` against `server`, the API probe and the CPU meters beside it.
fn measure(
    servers: &Servers,
    server: Server,
    load: Load,
    config: &Config,
    queries: &Path,
    scratch: &Path,
) -> anyhow::Result<Measured> {
    let log_before = servers.service.log().len();
    let server_before = servers.server_cpu(server);
    let service_before = cpu_seconds(servers.service.pid());
    let (dns, api) = with_api_probe(&servers.service, config, || {
        run_dnsperf(
            servers.port(server),
            queries,
            config.duration,
            load,
            config.pin,
            &scratch.join("dnsperf.out"),
        )
    })?;
    let log = servers.service.log();
    let service_log_sample = log
        .get(log_before..)
        .and_then(|logged| logged.lines().next())
        .unwrap_or_default()
        .to_owned();
    Ok(Measured {
        server,
        load,
        server_cpu_seconds: servers.server_cpu(server) - server_before,
        service_cpu_seconds: cpu_seconds(servers.service.pid()) - service_before,
        service_log_bytes: log.len() - log_before,
        service_log_sample,
        dns,
        api,
    })
}

/// Milliseconds, for the report.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Prints one run's figures, after `label`.
fn print_run(label: &str, run: &Measured) {
    println!(
        "{label} {:?} {:?}: {:.0} queries/s, {} sent, {} lost; latency p50 {:.3} ms, \
         p99 {:.3} ms, max {:.3} ms; server CPU {:.0} % ({:.0} queries per CPU second), \
         service CPU {:.0} %; API p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} answered, {} failed); service log +{} bytes; \
         codes: {}; sizes: {}",
        run.server,
        run.load,
        run.dns.queries_per_second,
        run.dns.sent,
        run.dns.lost,
        ms(run.dns.p50),
        ms(run.dns.p99),
        ms(run.dns.max),
        run.server_cpu() * 100.0,
        run.queries_per_cpu_second(),
        run.service_cpu() * 100.0,
        ms(run.api.p50),
        ms(run.api.p99),
        ms(run.api.max),
        run.api.answered,
        run.api.failed,
        run.service_log_bytes,
        run.dns.response_codes,
        run.dns.packet_sizes,
    );
}

/// "median (min–max)" of `values`, with `decimals`.
fn spread(values: &[f64], decimals: usize) -> String {
    if values.is_empty() {
        return "—".to_owned();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    if sorted.len() == 1 {
        format!("{median:.decimals$}")
    } else {
        format!("{median:.decimals$} ({min:.decimals$}–{max:.decimals$})")
    }
}

/// Prints the summary over all rounds: per server and load, the median and range of each figure,
/// the ratio embedded / NSD of each round's pair, and the API probe's figures without DNS load.
fn print_summary(runs: &[(usize, Measured)], idle_api: &[api_probe::ApiResult]) {
    println!(
        "\nsummary over {} rounds (median (min–max)):",
        idle_api.len()
    );
    let idle = |pick: fn(&api_probe::ApiResult) -> Duration| -> Vec<f64> {
        idle_api.iter().map(|api| ms(pick(api))).collect()
    };
    println!(
        "  API probe, no DNS load: p50 {} ms, p99 {} ms, max {} ms, {} failed",
        spread(&idle(|api| api.p50), 2),
        spread(&idle(|api| api.p99), 2),
        spread(&idle(|api| api.max), 2),
        idle_api.iter().map(|api| api.failed).sum::<usize>(),
    );
    for saturating in [true, false] {
        for server in [Server::Embedded, Server::Nsd] {
            let selected: Vec<&Measured> = runs
                .iter()
                .map(|(_, run)| run)
                .filter(|run| {
                    run.server == server
                        && matches!(run.load, Load::Saturating { .. }) == saturating
                })
                .collect();
            let Some(first) = selected.first() else {
                continue;
            };
            let of = |pick: &dyn Fn(&Measured) -> f64| -> Vec<f64> {
                selected.iter().map(|run| pick(run)).collect()
            };
            println!(
                "  {server:?} {:?}: {} queries/s, latency p50 {} ms, p99 {} ms, lost {} of {}, \
                 server CPU {} % ({} queries per CPU second); API p50 {} ms, p99 {} ms, \
                 {} failed; service log +{} bytes",
                first.load,
                spread(&of(&|run| run.dns.queries_per_second), 0),
                spread(&of(&|run| ms(run.dns.p50)), 3),
                spread(&of(&|run| ms(run.dns.p99)), 3),
                selected.iter().map(|run| run.dns.lost).sum::<u64>(),
                selected.iter().map(|run| run.dns.sent).sum::<u64>(),
                spread(&of(&|run| run.server_cpu() * 100.0), 0),
                spread(&of(&|run| run.queries_per_cpu_second()), 0),
                spread(&of(&|run| ms(run.api.p50)), 2),
                spread(&of(&|run| ms(run.api.p99)), 2),
                selected.iter().map(|run| run.api.failed).sum::<usize>(),
                selected
                    .iter()
                    .map(|run| run.service_log_bytes)
                    .sum::<usize>(),
            );
        }
    }
    // The ratios of each round's pair: both measured within a minute, on the same machine state.
    let saturating = |round: usize, server: Server| {
        runs.iter()
            .find(|(r, run)| {
                *r == round && run.server == server && matches!(run.load, Load::Saturating { .. })
            })
            .map(|(_, run)| run)
    };
    let ratios = |figure: fn(&Measured) -> f64| -> Vec<f64> {
        (0..idle_api.len())
            .filter_map(|round| {
                let embedded = saturating(round, Server::Embedded)?;
                let nsd = saturating(round, Server::Nsd)?;
                Some(figure(embedded) / figure(nsd))
            })
            .collect()
    };
    for (what, figure) in [
        (
            "queries/s",
            (|run| run.dns.queries_per_second) as fn(&Measured) -> f64,
        ),
        ("queries per CPU second", Measured::queries_per_cpu_second),
    ] {
        let ratios = ratios(figure);
        println!(
            "  saturating, embedded / NSD {what}, per round: {} → {}",
            ratios
                .iter()
                .map(|ratio| format!("{ratio:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            spread(&ratios, 2),
        );
    }
}

/// Seeds the store, starts both servers, checks their answers, and runs the rounds.
async fn run(config: &Config) -> anyhow::Result<()> {
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let store = Store::connect(&database.url).await?;
    let seeding = Instant::now();
    let lifecycle = seed::Lifecycle::DelegatedPending {
        // Pollers are parked by the black-hole resolver; a long interval keeps them quiet even
        // where a lookup ends.
        poll_interval_ms: 3_600_000,
        deadline: Utc::now() + chrono::Duration::days(1),
    };
    let events = seed::seed(&store, config.domains, lifecycle).await?;
    seed::close(store).await;
    eprintln!(
        "seeded {} domains with an open delegated order ({events} events) in {:.1} s",
        config.domains,
        seeding.elapsed().as_secs_f64()
    );

    let scratch = TempDir::new("dns-handling-dns-bench");
    let queries = scratch.path().join("queries.txt");
    write_query_file(&queries, config.domains, 0.9)?;
    // The two kinds of query alone, for the last pass: what each costs.
    let existing_only = scratch.path().join("existing.txt");
    write_query_file(&existing_only, config.domains, 1.0)?;
    let missing_only = scratch.path().join("missing.txt");
    write_query_file(&missing_only, config.domains, 0.0)?;

    let black_hole = BlackHole::bind()?;
    let dns_port = free_dns_port();
    let mut env: HashMap<String, String> = database_env(&database);
    env.extend(
        [
            ("AUTH_TOKEN", TOKEN.to_owned()),
            // The service's default: what it logs in production is part of what it costs.
            ("LOG_LEVEL", config.log_level.clone()),
            // Never contacted: no poller sees its record (see `BlackHole`).
            ("ACME_DIRECTORY", "http://127.0.0.1:9/dir".to_owned()),
            ("DELEGATION_ZONE", seed::DELEGATION_ZONE.to_owned()),
            ("DNS_LISTEN_ADDR", format!("127.0.0.1:{dns_port}")),
            ("DELEGATION_NAMESERVERS", NAMESERVERS.join(",")),
            ("DNS_NAMESERVERS", format!("127.0.0.1:{}", black_hole.port)),
            ("DNS_TIMEOUT", "60s".to_owned()),
            // The first audit checkpoint of a process walks the whole log (see the renewals
            // bench): not in a measured window.
            ("AUDIT_CHECKPOINT_INTERVAL", "24h".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    let starting = Instant::now();
    let service = Service::start(BINARY, &env);
    let values = service
        .wait_for_metric(
            "dns_handling_delegation_zone_values",
            Duration::from_secs(120),
            |values| values as usize == config.domains,
        )
        .await;
    wait_until_answering(Server::Embedded, dns_port, Duration::from_secs(30)).await?;
    let zone_full = starting.elapsed();
    let dns_thread = dns_thread(service.pid())?;
    if config.pin {
        // The same treatment as NSD's server process: its query-answering code on core 1.
        let status = Command::new("taskset")
            .args(["-p", "-c", "1", &dns_thread.to_string()])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "taskset could not pin the dns-server thread"
        );
    }
    let idle_from = cpu_seconds(service.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu = (cpu_seconds(service.pid()) - idle_from) / 2.0;
    eprintln!(
        "service: {values} values served {:.2} s after spawn; idle CPU {:.1} % of a core",
        zone_full.as_secs_f64(),
        idle_cpu * 100.0
    );

    let nsd = Nsd::start(config.domains, free_dns_port(), config.pin)?;
    wait_until_answering(Server::Nsd, nsd.port, Duration::from_secs(30)).await?;
    check_answers(Server::Embedded, dns_port, config.domains).await?;
    check_answers(Server::Nsd, nsd.port, config.domains).await?;
    if let Some(seconds) = std::env::var("HOLD_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
    {
        eprintln!(
            "holding for {seconds} s: service (pid {}, dns-server thread {dns_thread}) on port \
             {dns_port}, NSD (pid {}) on port {}; query files in {}",
            service.pid(),
            nsd.guard.child.id(),
            nsd.port,
            scratch.path().display()
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    let servers = Servers {
        service,
        dns_port,
        dns_thread,
        nsd,
    };

    println!(
        "dns bench: {} TXT records, {} rounds of {} s dnsperf runs (saturating: -c {} -q {}; \
         fixed rate: -Q {}), API probe {} requests/s, pinned: {}, load average before: {}",
        config.domains,
        config.rounds,
        config.duration,
        config.clients,
        config.outstanding,
        config.rate,
        config.api_rate,
        config.pin,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
    let saturating = Load::Saturating {
        clients: config.clients,
        outstanding: config.outstanding,
    };
    let fixed_rate = Load::FixedRate { qps: config.rate };
    let mut runs = Vec::new();
    let mut idle_api = Vec::new();
    for round in 0..config.rounds {
        let (_, api) = with_api_probe(&servers.service, config, || {
            std::thread::sleep(Duration::from_secs(config.duration));
            Ok(())
        })?;
        println!(
            "round {round} API probe alone: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
             ({} answered, {} failed)",
            ms(api.p50),
            ms(api.p99),
            ms(api.max),
            api.answered,
            api.failed
        );
        idle_api.push(api);
        // Alternate which server goes first, so neither always meets the machine as the other
        // left it.
        let order = if round % 2 == 0 {
            [Server::Embedded, Server::Nsd]
        } else {
            [Server::Nsd, Server::Embedded]
        };
        for server in order {
            for load in [saturating, fixed_rate] {
                let run = measure(&servers, server, load, config, &queries, scratch.path())?;
                print_run(&format!("round {round}"), &run);
                runs.push((round, run));
            }
        }
    }
    print_summary(&runs, &idle_api);

    // Each kind of query alone, saturating, once: where the time of the mix goes.
    println!("\neach kind of query alone, saturating:");
    let mut by_kind = Vec::new();
    for (kind, file) in [
        ("existing labels", &existing_only),
        ("missing labels", &missing_only),
    ] {
        for server in [Server::Embedded, Server::Nsd] {
            let run = measure(&servers, server, saturating, config, file, scratch.path())?;
            print_run(kind, &run);
            by_kind.push(run);
        }
    }

    // What the smoke run asserts: both servers answered, nothing logged per query, the API
    // answered throughout.
    for run in runs.iter().map(|(_, run)| run).chain(&by_kind) {
        // Only the two answers the queries call for: no SERVFAIL, REFUSED or FORMERR.
        let codes = response_code_names(&run.dns.response_codes);
        anyhow::ensure!(
            !codes.is_empty()
                && codes
                    .iter()
                    .all(|code| code == "NOERROR" || code == "NXDOMAIN"),
            "{:?} answered {}",
            run.server,
            run.dns.response_codes
        );
        anyhow::ensure!(
            run.api.answered > 0 && run.api.failed == 0,
            "the API probe saw {} failures",
            run.api.failed
        );
        // A log line per query would be megabytes; a few lines of background work are not.
        anyhow::ensure!(
            run.service_log_bytes < 100_000,
            "the service logged {} bytes during a DNS run, starting with: {}",
            run.service_log_bytes,
            run.service_log_sample
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let config = Config::from_env(harness::benchmarking());
    require_tools()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&config))
}
