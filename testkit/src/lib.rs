//! The fixtures of dns-handling's end-to-end tests and benches: a real Pebble with its DNS
//! server, a real database (a SQLite file or a fresh PostgreSQL database), and the real service
//! binary. A dev-only crate: the root package's `tests/e2e/` and `bench/` use it, nothing ships
//! it.
//!
//! Every fixture picks its own free ports and directories, so tests run in parallel, and every
//! child process is killed and waited for when its guard drops.
//!
//! | module | what |
//! | --- | --- |
//! | `process` | temporary directories, free ports, child processes killed on drop |
//! | `pebble` | Pebble (External Account Binding when asked) and pebble-challtestsrv, the DNS server the tests publish on |
//! | `unbound` | a recursive resolver chaining DNS servers on loopback (Pebble's, for delegations) |
//! | `dig` | dig as a test's DNS client: status, flags and records of an answer |
//! | `ca_front` | an HTTPS front for Pebble injecting rate limits, outages, profiles, renewal information |
//! | `ari` | that front with ACME Renewal Information, under the names the renewal tests know |
//! | `database` | a test database of its own on SQLite or PostgreSQL, and SQL straight at it |
//! | `service` | the service binary as a process, its operator commands, HTTP calls to it |
//! | `setup` | the environment a service starts with, and domains taken to `verified`/`active` |
//! | `webhooks` | a webhook receiver that verifies signatures with the Standard Webhooks library |
//! | `edge_agent` | `dns-handling edge sync` as a process, killed and started again |
//! | `terminators` | Caddy, nginx and HAProxy on loopback from `docs/edge/`'s configurations, and the serial (or the leaf, in process) each serves for a name |

#![forbid(unsafe_code)]

mod ari;
mod ca_front;
mod database;
mod dig;
mod edge_agent;
mod pebble;
mod process;
mod service;
mod setup;
mod terminators;
#[cfg(test)]
mod test_support;
mod unbound;
mod webhooks;

pub use ari::AriFront;
pub use ca_front::{CaFront, FrontTarget};
pub use database::{drop_postgres_database, postgres_admin_url, StoreKind, TestDatabase};
pub use dig::{dig, try_dig, DigAnswer, DigRecord};
pub use edge_agent::EdgeAgent;
pub use pebble::{eab_key, Pebble, PebbleOptions};
pub use process::{free_dns_port, free_port, ChildGuard, TempDir};
pub use service::{
    client_builder, run_command, sample, start_expecting_refusal, Service, CLIENT_IDLE,
};
pub use setup::{
    active_domain, database_env, delegate_zone, issue_and_publish, pebble_and_database,
    service_env, verified_domain, verified_domain_with_alt_names, TEST_AUDIT_SIGNING_KEY,
    TEST_KEY_ENCRYPTION_KEY,
};
pub use terminators::{
    fill_template, normalized_serial, presented_leaf, served_serial, wait_for_served, Caddy,
    Haproxy, Nginx,
};
pub use unbound::Unbound;
pub use webhooks::{ReceivedWebhook, WebhookReceiver};
