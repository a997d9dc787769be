//! The database going away for a while: requests are answered `503` with `Retry-After` after
//! `STORE_TIMEOUT`, nothing half-done is stored, and the service recovers on its own.
//!
//! The outage is real: the test stops a PostgreSQL instance of its own (never the shared one
//! other tests use) and starts it again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dns_handling::adapters::store::is_unreachable;
use dns_handling_testkit::{
    free_port, postgres_admin_url, Service, TempDir, TEST_AUDIT_SIGNING_KEY,
    TEST_KEY_ENCRYPTION_KEY,
};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::BINARY;

/// A PostgreSQL server of one test's own, on a free port, in a temporary directory; stopped and
/// removed on drop, however the test ends.
struct PrivatePostgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    /// initdb refuses to run as root: as root, the server runs as `postgres`.
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir = TempDir::new("private-postgres");
        let as_postgres = running_as_root();
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres", &display(dir.path())]));
        }
        let postgres = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        postgres.run_tool(
            "initdb",
            &[
                "-D",
                &display(&postgres.data()),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        postgres.start_again();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            display(self.dir.path())
        );
        let data = display(&self.data());
        let log = display(&self.dir.path().join("postgres.log"));
        self.run_tool(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server at once, without a checkpoint: as a crash or a lost host would.
    fn stop(&self) {
        self.run_tool(
            "pg_ctl",
            &[
                "-D",
                &display(&self.data()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    fn tool(&self, name: &str, args: &[&str]) -> Command {
        let program = display(&self.bin.join(name));
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &program]);
            command
        } else {
            Command::new(&program)
        };
        command.args(args);
        command
    }

    fn run_tool(&self, name: &str, args: &[&str]) {
        let output = self.tool(name, args).output().expect("the tool runs");
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Already stopped is fine; the directory goes with `dir`.
        let _ = self
            .tool(
                "pg_ctl",
                &[
                    "-D",
                    &display(&self.data()),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an `initdb`.
fn postgres_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("no PostgreSQL under {}: {e}", root.display()))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no initdb under {}", root.display()))
        .1
}

fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn run(command: &mut Command) {
    let status = command.status().expect("the command runs");
    assert!(status.success(), "{command:?} failed");
}

/// An answer with its status, `Retry-After` header, body and how long it took.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    Answer {
        status,
        retry_after,
        body,
        took: started.elapsed(),
    }
}

/// Asserts the answer of a request made while the store is down.
fn assert_store_unavailable(what: &str, answer: &Answer, service: &Service) {
    assert_eq!(
        answer.status,
        503,
        "{what}: {}; service log:\n{}",
        answer.body,
        service.log()
    );
    let seconds: u32 = answer
        .retry_after
        .as_deref()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After {:?}", answer.retry_after));
    assert!((1..=5).contains(&seconds), "{what}: Retry-After {seconds}");
    let error = answer.body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the store is unavailable") && error.contains("retry"),
        "{what}: {}",
        answer.body
    );
    // STORE_TIMEOUT is 1 s; the pool's old default was 10 s.
    assert!(
        answer.took < Duration::from_secs(5),
        "{what} took {:?}",
        answer.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_503_with_retry_after_and_recovers() {
    let postgres = PrivatePostgres::start();
    let env = [
        ("DATABASE_URL", postgres.url()),
        ("KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY.to_owned()),
        ("AUDIT_SIGNING_KEY", TEST_AUDIT_SIGNING_KEY.to_owned()),
        ("STORE_TIMEOUT", "1s".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let service = Service::start(BINARY, &env);
    let (id, _, _) = service.register("before.outage.example.test").await;
    let get = || service.client.get(service.url(&format!("/domains/{id}")));
    let post = || {
        service
            .client
            .post(service.url("/domains"))
            .json(&json!({"domain_name": "during.outage.example.test"}))
    };

    postgres.stop();
    let read = send(get()).await;
    assert_store_unavailable("GET /domains/{id}", &read, &service);
    let write = send(post()).await;
    assert_store_unavailable("POST /domains", &write, &service);
    println!(
        "503 after {:?} (GET) and {:?} (POST) with STORE_TIMEOUT=1s: {}",
        read.took, write.took, write.body
    );

    postgres.start_again();
    // The pool connects again by itself; the first requests may still meet the restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = loop {
        let read = send(get()).await;
        if read.status != 503 || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(read.status, 200, "{}; log:\n{}", read.body, service.log());
    assert_eq!(read.body["domain_name"], "before.outage.example.test");
    // Nothing of the refused registration was stored: no domain, no name reservation.
    let (code, list) = service.get("/domains").await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["domain_name"].as_str())
        .collect();
    assert_eq!(names, ["before.outage.example.test"], "{list}");
    let mut connection = sqlx::PgConnection::connect(&postgres.url())
        .await
        .expect("the private PostgreSQL is back");
    let reserved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domain_names")
        .fetch_one(&mut connection)
        .await
        .expect("count");
    assert_eq!(reserved, 1, "only the first domain's name is reserved");
    connection.close().await.expect("close");
    // So the same registration simply goes through now.
    let write = send(post()).await;
    assert_eq!(write.status, 201, "{}", write.body);
}

/// A connection PostgreSQL ends (as it does to every client when it shuts down) counts as an
/// unreachable store, whether sqlx sees the server's `57P01` or the closed socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_postgresql_terminates_counts_as_unreachable() {
    let mut connection = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("PostgreSQL is reachable (the test script starts it)");
    let error = match sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut connection)
        .await
    {
        Err(error) => error,
        Ok(_) => sqlx::query("SELECT 1")
            .execute(&mut connection)
            .await
            .expect_err("the connection was terminated"),
    };
    println!("a terminated connection answers: {error:?}");
    assert!(is_unreachable(&error), "{error:?}");
}
