//! Fixtures for the end-to-end tests: a real Pebble with its DNS server, a real database
//! (a SQLite file or a fresh PostgreSQL database), and the real service binary.
//!
//! Every fixture picks its own free ports and directories, so tests run in parallel, and every
//! child process is killed and waited for when its guard drops.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Row};

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ports are handed out from below the kernel's ephemeral range (32768–60999 on Linux). A port
/// found free is released before its server binds it; inside the ephemeral range any process's
/// outgoing connection can be given it as its local port in that window (CI once saw Pebble's
/// management port taken so). Below the range only another listener can take it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port, never the same twice in this test process: the port is released
/// before the server that gets it binds it, and two fixtures must not be handed one port.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), PORT_RANGE);
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A free UDP and TCP port pair for a DNS server.
pub fn free_dns_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `port` accepts connections; an error when the child exits first or never listens.
fn wait_for_tcp(port: u16, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early with {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not listen on port {port} within 20 s"))
}

/// A child process that is killed and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    /// Sends SIGKILL and waits: the harshest stop, as a crash would be.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(command: &mut Command, name: &str, hint: &str) -> ChildGuard {
    let child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {name}: {error}. {hint}"));
    ChildGuard { child }
}

const INSTALL_HINT: &str =
    "Run the test script (tests/run.sh), which installs Pebble (apt-get install pebble).";

/// Pebble (ACME) and pebble-challtestsrv (its DNS server), on free ports.
pub struct Pebble {
    pub dir: TempDir,
    pub acme_port: u16,
    pub management_port: u16,
    pub dns_port: u16,
    pub challtestsrv_port: u16,
    pebble: ChildGuard,
    _challtestsrv: ChildGuard,
}

/// Options for a Pebble run.
#[derive(Clone, Default)]
pub struct PebbleOptions {
    /// Percentage of nonces Pebble rejects; `None` keeps Pebble's own default (5%).
    pub nonce_reject_percent: Option<u8>,
}

impl Pebble {
    /// Starts Pebble and its DNS server, on fresh ports again if a port was taken in between.
    pub fn start(options: PebbleOptions) -> Pebble {
        const ATTEMPTS: usize = 3;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Pebble::try_start(&options) {
                Ok(pebble) => return pebble,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "Pebble did not start in {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// One start on fresh ports; the error carries what the process that failed logged.
    fn try_start(options: &PebbleOptions) -> Result<Pebble, String> {
        let dir = TempDir::new("pebble");
        let (acme_port, management_port, dns_port, challtestsrv_port) =
            (free_port(), free_port(), free_dns_port(), free_port());
        write_https_identity(dir.path());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.path().join("pebble-cert.pem"),
            "privateKey": dir.path().join("pebble-key.pem"),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log_of =
            |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

        let challtestsrv_log =
            std::fs::File::create(dir.path().join("challtestsrv.log")).expect("log file");
        let mut challtestsrv = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{challtestsrv_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(Stdio::null())
                .stderr(challtestsrv_log),
            "pebble-challtestsrv",
            INSTALL_HINT,
        );
        wait_for_tcp(
            challtestsrv_port,
            "pebble-challtestsrv",
            &mut challtestsrv.child,
        )
        .map_err(|error| format!("{error}; its log:\n{}", log_of("challtestsrv.log")))?;

        let pebble_log = std::fs::File::create(dir.path().join("pebble.log")).expect("log file");
        let mut command = Command::new("pebble");
        command
            .args(["-config", &config_path.to_string_lossy()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(pebble_log.try_clone().expect("log file"))
            .stderr(pebble_log);
        match options.nonce_reject_percent {
            Some(percent) => command.env("PEBBLE_WFE_NONCEREJECT", percent.to_string()),
            None => command.env_remove("PEBBLE_WFE_NONCEREJECT"),
        };
        let mut pebble = spawn(&mut command, "pebble", INSTALL_HINT);
        wait_for_tcp(acme_port, "pebble", &mut pebble.child)
            .and_then(|()| wait_for_tcp(management_port, "pebble management", &mut pebble.child))
            .map_err(|error| format!("{error}; its log:\n{}", log_of("pebble.log")))?;
        Ok(Pebble {
            dir,
            acme_port,
            management_port,
            dns_port,
            challtestsrv_port,
            pebble,
            _challtestsrv: challtestsrv,
        })
    }

    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("test-ca.pem")
    }

    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.dns_port)
    }

    fn challtestsrv(&self, path: &str, body: Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.challtestsrv_port);
        assert!(curl_post(&url, &body), "challtestsrv {path} {body} failed");
    }

    /// Publishes a TXT value (appended to any already there). `host` must end with a dot.
    pub fn set_txt(&self, host: &str, value: &str) {
        assert!(
            host.ends_with('.'),
            "challtestsrv ignores hosts without the trailing dot"
        );
        self.challtestsrv("/set-txt", json!({"host": host, "value": value}));
    }

    /// Stops the ACME server (its DNS server keeps running), as a CA outage would.
    pub fn stop_acme(&mut self) {
        self.pebble.kill();
    }

    /// Makes every query for `host` answer SERVFAIL.
    pub fn set_servfail(&self, host: &str) {
        self.challtestsrv("/set-servfail", json!({"host": host}));
    }

    /// Removes every TXT value at `host`.
    pub fn clear_txt(&self, host: &str) {
        self.challtestsrv("/clear-txt", json!({"host": host}));
    }

    /// Undoes [`Pebble::set_servfail`].
    pub fn clear_servfail(&self, host: &str) {
        self.challtestsrv("/clear-servfail", json!({"host": host}));
    }

    /// How many DNS queries for `host` the DNS server has answered so far (its request history;
    /// Pebble's own validation lookups count too). `host` may end with a dot.
    pub fn dns_queries(&self, host: &str) -> usize {
        let url = format!(
            "http://127.0.0.1:{}/dns-request-history",
            self.challtestsrv_port
        );
        let body = json!({"host": host.trim_end_matches('.')});
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "challtestsrv {url} failed: {text}");
        let history: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("the DNS request history is not JSON: {text:?}"));
        history.as_array().map_or(0, Vec::len)
    }

    /// The root Pebble issues under (it changes on every start).
    pub fn issuing_root_pem(&self) -> String {
        let output = Command::new("curl")
            .args([
                "-sSfk",
                &format!("https://127.0.0.1:{}/roots/0", self.management_port),
            ])
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "fetching Pebble's root failed");
        String::from_utf8(output.stdout).expect("PEM is text")
    }
}

/// A throwaway CA and a `localhost`/`127.0.0.1` certificate for Pebble's HTTPS.
fn write_https_identity(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dns-handling test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    std::fs::write(dir.join("test-ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).expect("write cert");
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).expect("write key");
}

/// Which store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// A database of its own for one test: a SQLite file, or a PostgreSQL database dropped at the end.
pub struct TestDatabase {
    pub url: String,
    pub kind: StoreKind,
    postgres_name: Option<String>,
    _dir: TempDir,
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestDatabase {
    pub async fn create(kind: StoreKind) -> TestDatabase {
        let dir = TempDir::new("dns-handling-db");
        match kind {
            StoreKind::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.path().join("service.db").display()),
                kind,
                postgres_name: None,
                _dir: dir,
            },
            StoreKind::Postgres => {
                let name = format!("dns_handling_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is not reachable at {admin}: {e}. The test script starts it.")
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut connection)
                    .await
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin);
                TestDatabase {
                    url: format!("{base}/{name}"),
                    kind,
                    postgres_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }

    /// Events stored for a domain, by type, straight from the table.
    pub async fn event_types(&self, aggregate_id: &str) -> Vec<String> {
        assert!(!aggregate_id.contains('\''), "ids are quoted into SQL here");
        self.texts(&format!(
            "event_type FROM events WHERE aggregate_id = '{aggregate_id}' ORDER BY sequence"
        ))
        .await
    }

    /// Every value of a text expression over a table (e.g. `CAST(payload AS TEXT) FROM events`).
    pub async fn texts(&self, select: &str) -> Vec<String> {
        let sql = format!("SELECT {select}");
        match self.kind {
            StoreKind::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open sqlite");
                sqlx::query(&sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect("query")
                    .iter()
                    .map(|row| row.get::<String, _>(0))
                    .collect()
            }
            StoreKind::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open postgres");
                sqlx::query(&sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect("query")
                    .iter()
                    .map(|row| row.get::<String, _>(0))
                    .collect()
            }
        }
    }

    /// How many rows a table has.
    pub async fn count(&self, table: &str) -> i64 {
        let counts = self
            .texts(&format!("CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await;
        counts[0].parse().expect("a count")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.postgres_name.take() {
            // Drop runs outside any runtime guarantee: use psql-free plain blocking SQL through a
            // short-lived runtime on another thread.
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut connection) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&mut connection)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// The real service binary, started with its own environment.
pub struct Service {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    log_path: PathBuf,
    /// The process; `None` for a service running in the test's own process.
    guard: Option<ChildGuard>,
    _log_dir: TempDir,
}

impl Service {
    /// Starts the binary with `env` (plus `SERVER_ADDR=127.0.0.1:0`) and waits for its address.
    pub fn start(env: &HashMap<String, String>) -> Service {
        let log_dir = TempDir::new("dns-handling-log");
        let log_path = log_dir.path().join("service.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_dns-handling"));
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
        let client = reqwest::Client::builder()
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

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        into_parts(response).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_parts(request.send().await.expect("POST")).await
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

async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"));
    (status, body)
}

/// Runs an operator command of the binary (`replay`, `audit verify`, `export …`) to its end.
pub fn run_command(
    env: &HashMap<String, String>,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dns-handling"))
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

/// Runs one SQL statement on the test database (to simulate crashes and tampering).
impl TestDatabase {
    pub async fn execute(&self, sql: &str) {
        match self.kind {
            StoreKind::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open sqlite");
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .expect("statement");
            }
            StoreKind::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open postgres");
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .expect("statement");
            }
        }
    }
}

/// Runs the binary with `env` expecting it to refuse to start: returns its exit status and log.
pub fn start_expecting_refusal(
    env: &HashMap<String, String>,
) -> (std::process::ExitStatus, String) {
    let mut guard = spawn(
        Command::new(env!("CARGO_BIN_EXE_dns-handling"))
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

/// A fixed test key-encryption key (32 bytes, base64).
pub const TEST_KEY_ENCRYPTION_KEY: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

/// A fixed test audit signing key (the base64 of a 32-byte Ed25519 seed).
pub const TEST_AUDIT_SIGNING_KEY: &str = "dGVzdC1hdWRpdC1zaWduaW5nLWtleS0zMi1ieXRlcyE=";

/// The environment for a service on `database` alone. PostgreSQL needs a configured
/// key-encryption key and audit signing key; SQLite tests leave them out so the generated-key
/// paths run too.
pub fn database_env(database: &TestDatabase) -> HashMap<String, String> {
    let mut env = HashMap::from([("DATABASE_URL".to_owned(), database.url.clone())]);
    if database.kind == StoreKind::Postgres {
        env.insert(
            "KEY_ENCRYPTION_KEY".to_owned(),
            TEST_KEY_ENCRYPTION_KEY.to_owned(),
        );
        env.insert(
            "AUDIT_SIGNING_KEY".to_owned(),
            TEST_AUDIT_SIGNING_KEY.to_owned(),
        );
    }
    env
}

/// Registers `name` and proves its ownership through Pebble's DNS server; returns its id.
pub async fn verified_domain(service: &Service, pebble: &Pebble, name: &str) -> String {
    let (id, record_name, token) = service.register(name).await;
    pebble.set_txt(&record_name, &token);
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "verified");
    id
}

/// Takes `name` all the way to `active`; returns its id.
pub async fn active_domain(service: &Service, pebble: &Pebble, name: &str) -> String {
    let id = verified_domain(service, pebble, name).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"]
            .as_str()
            .expect("challenge_domain"),
        started["expected_txt_value"]
            .as_str()
            .expect("expected_txt_value"),
    );
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    id
}

/// The usual start of a test: a Pebble with default options, a fresh database of `kind`, and
/// the environment a service needs for both.
pub async fn pebble_and_database(
    kind: StoreKind,
) -> (Pebble, TestDatabase, HashMap<String, String>) {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(kind).await;
    let env = service_env(&pebble, &database);
    (pebble, database, env)
}

/// The environment for a service that uses `pebble` and `database`.
pub fn service_env(pebble: &Pebble, database: &TestDatabase) -> HashMap<String, String> {
    let mut env = database_env(database);
    env.extend([
        ("ACME_DIRECTORY".to_owned(), pebble.directory_url()),
        (
            "ACME_CA_BUNDLE".to_owned(),
            pebble.ca_bundle().display().to_string(),
        ),
        ("DNS_NAMESERVERS".to_owned(), pebble.nameserver()),
        ("POLL_INTERVAL".to_owned(), "200ms".to_owned()),
        ("POLL_TIMEOUT".to_owned(), "60s".to_owned()),
        // A restarted service is the same replica: it takes its order leases back at once.
        ("REPLICA_ID".to_owned(), "test-replica".to_owned()),
    ]);
    env
}

/// A blocking HTTP POST for challtestsrv's management API (plain HTTP on loopback), usable
/// from synchronous fixture code.
fn curl_post(url: &str, body: &Value) -> bool {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "-d",
            &body.to_string(),
            url,
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "curl {url} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Err(error) => {
            eprintln!("curl {url} did not run: {error}");
            false
        }
    }
}
