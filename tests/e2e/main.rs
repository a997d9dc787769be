//! End-to-end tests: the real binary against a real Pebble, a real DNS server and a real
//! database (a SQLite file and a fresh PostgreSQL database).
//!
//! Run them through the test script (`tests/run.sh`), which installs and starts what they need.
//! The fixtures are the `dns-handling-testkit` crate (`testkit/`), shared with the benches.

/// The service binary cargo built for these tests; the testkit's functions that run it take it.
pub const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

/// Runs one scenario (an `async fn(StoreKind)` in the invoking module) once per store.
#[macro_export]
macro_rules! on_both_stores {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$scenario(::dns_handling_testkit::StoreKind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$scenario(::dns_handling_testkit::StoreKind::Postgres).await;
            }
        }
    };
}

mod analytics;
mod ari;
mod audit;
mod ca_etiquette;
mod ca_outages;
mod caa;
mod console;
mod crash;
mod delegation;
mod dns_hardening;
mod ecosystem;
mod edge_routes;
mod edge_stream;
mod edge_sync;
mod edge_terminators;
mod feed_consumers;
mod hardening;
mod health;
mod http_contract;
mod issuance;
mod key_custody;
mod keys_and_roles;
mod lifecycle;
mod names;
mod packaging;
mod renewal;
mod replicas;
mod resilience;
mod retired_ca;
mod revocation;
mod role_matrix;
mod store_outage;
mod tamper;
mod tenants;
mod tokens;
mod webhook_races;
mod webhooks;
mod zone_lag;
