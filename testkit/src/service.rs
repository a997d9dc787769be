//! The service under test: its binary started as a process of its own (or one the test runs
//! in its own process, reached over HTTP alike), its operator commands, and the HTTP calls the
//! tests make of it.
//!
//! Every function that runs the binary takes its path: only the root package's own tests and
//! benches know it (`env!("CARGO_BIN_EXE_dns-handling")`, which cargo sets when it compiles
//! them and builds the binary first), so they pass it in rather than this crate guessing where
//! a target directory keeps it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{spawn, ChildGuard, TempDir};

/// How long a test's client keeps an idle connection to the service: less than actix-web's
/// keep-alive (5 s), after which the service closes it. A client holding it longer may send a
/// request on a connection the service is closing that instant, and the request fails with
/// "connection closed before message completed" (a bench hit this on CI, exactly 5 s after its
/// previous request).
pub const CLIENT_IDLE: Duration = Duration::from_secs(2);

/// A client builder for talking to the service: idle connections dropped after [`CLIENT_IDLE`].
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(CLIENT_IDLE)
}

/// The real service binary, started with its own environment.
pub struct Service {
    /// Where it listens.
    pub address: SocketAddr,
    /// A client that sends the admin token when the service has one (`AUTH_TOKEN`).
    pub client: reqwest::Client,
    log_path: PathBuf,
    /// The process; `None` for a service running in the test's own process.
    guard: Option<ChildGuard>,
    _log_dir: TempDir,
}

impl Service {
    /// Starts `binary` with `env` (plus `SERVER_ADDR=127.0.0.1:0`) and waits for its address.
    pub fn start(binary: impl AsRef<Path>, env: &HashMap<String, String>) -> Service {
        let log_dir = TempDir::new("dns-handling-log");
        let log_path = log_dir.path().join("service.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(binary.as_ref());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SERVER_ADDR", "127.0.0.1:0")
            .env("LOG_LEVEL", "info,dns_handling=debug")
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(log);
        let mut guard = spawn(&mut command, "dns-handling", "");
        let stdout = guard.child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep draining so the service never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default();
        let address = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|text| text.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| {
                let mut log = String::new();
                let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut log));
                panic!("the service did not start (first line {line:?}); its log:\n{log}")
            });
        Self::with_address(address, env, log_path, Some(guard), log_dir)
    }

    /// A service the test runs in its own process (to reach inside it), listening on
    /// `address`; its log is the test's own output.
    pub fn attach(address: SocketAddr, env: &HashMap<String, String>) -> Service {
        let log_dir = TempDir::new("dns-handling-log");
        let log_path = log_dir.path().join("service.log");
        Self::with_address(address, env, log_path, None, log_dir)
    }

    fn with_address(
        address: SocketAddr,
        env: &HashMap<String, String>,
        log_path: PathBuf,
        guard: Option<ChildGuard>,
        log_dir: TempDir,
    ) -> Service {
        // Requests carry the admin token when one is configured; tests that act as someone else
        // build their own requests.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = env.get("AUTH_TOKEN") {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        let client = client_builder()
            .default_headers(headers)
            .build()
            .expect("HTTP client");
        Service {
            address,
            client,
            log_path,
            guard,
            _log_dir: log_dir,
        }
    }

    /// The URL of `path` on the service.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.process().kill();
    }

    fn process(&mut self) -> &mut ChildGuard {
        self.guard
            .as_mut()
            .expect("a service in a process of its own")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard
            .as_ref()
            .expect("a service in a process of its own")
            .child
            .id()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIG{signal} was not delivered");
    }

    /// SIGTERM, then waits for the exit: a graceful stop.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM was not delivered");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process().child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        response.text().await.expect("metrics text")
    }

    /// One series of `GET /metrics` (see [`sample`]).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// Polls `GET /metrics` until `series` satisfies `accept`; returns its value. Panics with
    /// the last value after `within`.
    pub async fn wait_for_metric(
        &self,
        series: &str,
        within: Duration,
        accept: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(series).await;
            if let Some(value) = value.filter(|value| accept(*value)) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {value:?} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        into_parts(response).await
    }

    /// `POST path` with an optional JSON body: the status and the JSON body.
    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_parts(request.send().await.expect("POST")).await
    }

    /// `PUT path` with a JSON body: the status and the JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.client.put(self.url(path)).json(&body);
        into_parts(request.send().await.expect("PUT")).await
    }

    /// `DELETE` of `path`: the status code (the answer of a removal has no body).
    pub async fn delete(&self, path: &str) -> u16 {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        response.status().as_u16()
    }

    /// Registers a domain; returns its id and verification record name and token.
    pub async fn register(&self, name: &str) -> (String, String, String) {
        let (status, body) = self
            .post("/domains", Some(json!({"domain_name": name})))
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["verification_record"]["name"]
                .as_str()
                .expect("record name")
                .to_owned(),
            body["verification_token"]
                .as_str()
                .expect("token")
                .to_owned(),
        )
    }

    /// Polls `GET /domains/{id}`, which may answer 404 for a while, until it shows `status`.
    pub async fn wait_for_status_after_404(&self, id: &str, status: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.get(&format!("/domains/{id}")).await;
            if code == 200 && body["status"] == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "domain {id} not {status} in time: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `GET /domains/{id}` until its status is one of `statuses`.
    pub async fn wait_for_status(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.get(&format!("/domains/{id}")).await;
            assert_eq!(code, 200, "{body}");
            if statuses.contains(&body["status"].as_str().unwrap_or_default()) {
                return body;
            }
            if Instant::now() > deadline {
                panic!(
                    "domain {id} still {} after {within:?}; service log:\n{}",
                    body["status"],
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The value of one sample line of the metrics text (`name{labels} value`), `None` when the
/// series is not there (a labelled counter appears only once it was first counted).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A response's status and JSON body; panics when the body is not JSON.
async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"));
    (status, body)
}

/// Runs an operator command of `binary` (`replay`, `audit verify`, `export …`) to its end:
/// its exit status, stdout and stderr.
pub fn run_command(
    binary: impl AsRef<Path>,
    env: &HashMap<String, String>,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let output = Command::new(binary.as_ref())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_LEVEL", "warn")
        .envs(env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `binary` with `env` expecting it to refuse to start: returns its exit status and log.
pub fn start_expecting_refusal(
    binary: impl AsRef<Path>,
    env: &HashMap<String, String>,
) -> (std::process::ExitStatus, String) {
    let mut guard = spawn(
        Command::new(binary.as_ref())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SERVER_ADDR", "127.0.0.1:0")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "dns-handling",
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service started instead of refusing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    if let Some(mut stderr) = guard.child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    (status, log)
}
