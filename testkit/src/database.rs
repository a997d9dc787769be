//! A database of its own for each test: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database on `TEST_POSTGRES_URL`'s server, dropped at the end.

use sqlx::{Connection, Row};

use crate::process::TempDir;

/// Which store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// A database of its own for one test: a SQLite file, or a PostgreSQL database dropped at the end.
pub struct TestDatabase {
    /// The URL the service takes as `DATABASE_URL`.
    pub url: String,
    /// Which store it is.
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
    /// Creates an empty database of `kind`.
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

    /// Runs one SQL statement on the test database (to simulate crashes and tampering).
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

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.postgres_name.take() {
            drop_postgres_database(&name);
        }
    }
}

/// Drops a PostgreSQL database (with its connections), from anywhere: `Drop` runs outside any
/// runtime guarantee, so this uses a short-lived runtime on another thread.
pub fn drop_postgres_database(name: &str) {
    let admin = postgres_admin_url();
    let name = name.to_owned();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                if let Ok(mut connection) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut connection)
                        .await;
                }
            });
        }
    })
    .join();
}
