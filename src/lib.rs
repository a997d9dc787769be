//! dns-handling: TLS certificates for the custom domains of a hosting platform's users, through
//! ACME DNS-01, as an event-sourced actor system.
//!
//! Module map:
//! - [`domain_name`]: `DomainName`, the parsed and normalised host name.
//! - [`aggregate`]: the `CustomDomain` aggregate: commands, decisions, refusals.
//! - [`store`]: PostgreSQL (postgres-es) or SQLite (sqlite-es) behind one interface.
//! - [`event_repository`]: the cqrs-es repository, with the events' hash chain.
//! - [`checkpoints`]: signed checkpoints of the whole log (Ed25519, key outside the database).
//! - [`projector`]: keeps the read projections (crate `dns-handling-projections`) up to date.
//! - [`acme`]: the ACME account, orders and their completion (instant-acme).
//! - [`dns`]: TXT lookups (hickory-resolver).
//! - [`actors`]: the supervisor and its per-order pollers (actix).
//! - [`api`]: the REST API (actix-web).
//! - [`metrics`]: the Prometheus metrics.
//! - [`view_reader`]: single view reads for the API, coalesced into batches.
//! - [`vault`]: private keys encrypted at rest (XChaCha20-Poly1305).
//! - [`settings`]: configuration from the environment.
//! - [`app`]: wiring it all together.
//! - [`cli`]: the operator commands (`replay`, `audit views`, `export`, `keys rotate`).
//! - [`log_audit`]: `audit verify`: the hash chains and the signed checkpoints, from the
//!   database or through the API.
//! - [`client`]: `dns-handling domains …`, the command-line client for people.
//!
//! The events themselves live in the crate `dns-handling-events`.

#![forbid(unsafe_code)]

pub mod acme;
pub mod actors;
pub mod aggregate;
pub mod api;
pub mod app;
pub mod checkpoints;
pub mod cli;
pub mod client;
pub mod commit_signal;
pub mod dns;
pub mod domain_name;
pub mod event_repository;
pub mod log_audit;
pub mod metrics;
pub mod projector;
pub mod services;
pub mod settings;
pub mod store;
pub mod vault;
pub mod view_reader;

/// Installs the process-wide rustls crypto provider. Both ring (through sqlx) and aws-lc-rs
/// (through instant-acme and rcgen) are linked, so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
