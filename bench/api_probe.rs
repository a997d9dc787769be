//! The API probe shared by the `dns` and `health` benches: a lean client asking the API at a
//! fixed rate on one keep-alive connection while something else loads the service, its latency
//! counted from when each request was due.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::percentile;

/// What the API probe measured over one window.
#[derive(Default)]
pub struct ApiResult {
    /// Median latency of the answered requests, from when each was due.
    pub p50: Duration,
    /// Their 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
    /// Requests answered `200`.
    pub answered: usize,
    /// Requests that failed: another status, or an I/O error (the connection is made again).
    pub failed: usize,
}

/// A lean HTTP/1.1 client on one keep-alive connection: `GET path`, the status once the whole
/// body is read.
struct ApiConnection {
    reader: BufReader<TcpStream>,
}

impl ApiConnection {
    /// Connects, with Nagle's algorithm off (a request is one small write).
    fn connect(address: SocketAddr) -> std::io::Result<ApiConnection> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(ApiConnection {
            reader: BufReader::new(stream),
        })
    }

    /// One request and its whole answer; the status code.
    fn get(&mut self, path: &str, token: &str) -> std::io::Result<u16> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

/// Runs the API probe on a thread of its own until `stop`: `GET path(n)` for n = 0, 1, 2, …
/// with `token`, `rate` a second on a fixed schedule. Each latency counts from the moment the
/// request was due, not from when it went out, so a stall delays the requests queued behind it
/// and is counted in them too (no coordinated omission).
pub fn start(
    address: SocketAddr,
    token: &'static str,
    path: impl Fn(u32) -> String + Send + 'static,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ApiResult> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut latencies = Vec::new();
        let mut failed = 0;
        let mut connection = None;
        let started = Instant::now();
        let mut sent = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let due = started + period * sent;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let path = path(sent);
            sent += 1;
            if connection.is_none() {
                connection = ApiConnection::connect(address).ok();
            }
            match connection.as_mut().map(|c| c.get(&path, token)) {
                Some(Ok(200)) => latencies.push(due.elapsed()),
                Some(Ok(_)) => failed += 1,
                Some(Err(_)) | None => {
                    failed += 1;
                    connection = None;
                }
            }
        }
        if latencies.is_empty() {
            return ApiResult {
                failed,
                ..ApiResult::default()
            };
        }
        ApiResult {
            p50: percentile(&mut latencies, 0.50),
            p99: percentile(&mut latencies, 0.99),
            max: percentile(&mut latencies, 1.0),
            answered: latencies.len(),
            failed,
        }
    })
}

/// [`start`] asking `GET /domains/{id}` of the `domains` seeded domains in turn
/// (`bench/seed.rs`'s ids).
pub fn start_on_seeded_domains(
    address: SocketAddr,
    token: &'static str,
    domains: usize,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ApiResult> {
    let path = move |n: u32| format!("/domains/{}", crate::seed::domain_id(n as usize % domains));
    start(address, token, path, rate, stop)
}
