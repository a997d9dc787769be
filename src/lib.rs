//! dns-handling: TLS certificates for the custom domains of a hosting platform's users, through
//! ACME DNS-01, as an event-sourced actor system.
//!
//! The map (each line a module; `ARCHITECTURE.md` tells how they work together):
//! - [`domain`]: the decisions. [`domain::aggregate`] is the `CustomDomain` aggregate: its
//!   commands, the events they emit, its refusals (given/when/then tests in
//!   `domain/aggregate/tests.rs`); [`domain::domain_name`] is the parsed, normalised host name;
//!   [`domain::alt_names`], the further names a certificate covers, checked against the domain;
//!   [`domain::renewal`], when a certificate is due and when a failed renewal is tried again;
//!   [`domain::delegation`], each name's label in the delegation zone and what a CNAME proves;
//!   [`domain::webhook_endpoint`], the `WebhookEndpoint` aggregate; [`domain::notifications`],
//!   what the platform is told of each event.
//!   The events themselves are the crate `dns-handling-events` (`events/`).
//! - [`adapters`]: the world outside. [`adapters::acme`]: the CA (instant-acme, rcgen);
//!   [`adapters::dns`]: TXT and CNAME lookups (hickory-resolver); [`adapters::dns_server`]: the
//!   delegation zone's authoritative DNS server (hickory-server); [`adapters::store`]: PostgreSQL or
//!   SQLite, each difference between the two decided inside it;
//!   [`adapters::event_repository`]: the cqrs-es repository with the hash chain;
//!   [`adapters::vault`]: private keys encrypted at rest; [`adapters::certificate_keys`]: the
//!   custody of each order's certificate key (stored before the CA sees a CSR);
//!   [`adapters::commit_signal`]: commits wake feed followers, across replicas too;
//!   [`adapters::webhook_sender`]: signed webhook deliveries (Standard Webhooks), never to
//!   private addresses. `acme/` and
//!   `store/` are folders of a file per concern, mapped in their own `mod.rs`.
//! - [`read`]: the read side. [`read::feed_follower`] is the one loop that follows the event
//!   feed, for each of its consumers; [`read::projector`] keeps the views (crate
//!   `dns-handling-projections`, `projections/`) in step with the events;
//!   [`read::view_reader`] serves them, concurrent reads coalesced; [`read::zone_follower`]
//!   keeps every replica's delegation zone in step with the feed, [`read::zone_lag`] how far
//!   behind it is; [`read::stuck`], the feed
//!   consumers stopped at an event they cannot read.
//! - [`actors`]: the supervisor and its per-order pollers, the renewal scheduler (actix).
//! - [`deliveries`]: webhook deliveries. [`deliveries::messages`] makes every endpoint's
//!   messages from the feed, once per event; [`deliveries::sending`] sends each endpoint's
//!   messages in order from the replica holding its lease.
//! - [`audit`]: tamper evidence. [`audit::checkpoints`] signs checkpoints of the log;
//!   [`audit::verify`] is `audit verify`.
//! - [`http`]: the REST API (actix-web), its bodies, errors, authentication and OpenAPI.
//! - [`cli`]: the command line's grammar (clap); [`cli::operator`], the operator commands
//!   (`replay`, `audit`, `export`, `keys`); [`cli::client`], `dns-handling domains …` and
//!   `dns-handling webhooks …` for people.
//! - [`app`]: builds the service from its settings; [`app_state`]: what handlers and actors
//!   share; [`settings`]: configuration (figment), its layers ([`settings::layers`]) and values
//!   ([`settings::values`]); [`metrics`]: the Prometheus metrics;
//!   [`tasks`]: spawned tasks that end with their owner.

#![forbid(unsafe_code)]

pub mod actors;
pub mod adapters;
pub mod app;
pub mod app_state;
pub mod audit;
pub mod cli;
pub mod deliveries;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod read;
pub mod settings;
pub mod tasks;

/// Installs the process-wide rustls crypto provider. Both ring (through sqlx) and aws-lc-rs
/// (through instant-acme and rcgen) are linked, so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    /// The map above names every module of `src/` down to the parts of each folder (the files
    /// of `http/` and `actors/`, and deeper ones, are mapped in their own module docs): a module
    /// added or moved without its line fails here, so the map cannot drift from the code.
    #[test]
    fn the_module_map_names_every_module() {
        let map = include_str!("lib.rs");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        let mut folders = vec![(root.clone(), String::new())];
        while let Some((folder, prefix)) = folders.pop() {
            let entries = std::fs::read_dir(&folder).expect("src/ is readable");
            for entry in entries.map(|entry| entry.expect("an entry").path()) {
                let name = entry
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let is_module_folder = entry.join("mod.rs").exists();
                let is_module_file = entry.extension().is_some_and(|ext| ext == "rs")
                    && !["lib", "main", "mod", "tests"].contains(&name.as_str());
                if !is_module_folder && !is_module_file {
                    continue;
                }
                let path = format!("{prefix}{name}");
                if !map.contains(&format!("[`{path}`]")) {
                    missing.push(path.clone());
                }
                let mapped_below =
                    prefix.is_empty() && !["http", "actors"].contains(&name.as_str());
                if is_module_folder && mapped_below {
                    folders.push((entry, format!("{path}::")));
                }
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "modules missing from the map in lib.rs: {missing:?}"
        );
    }

    /// A folder two levels down (`adapters/store/`) maps its parts in its own `mod.rs` doc,
    /// each named as `` `part.rs` ``: a part added without its line there fails here.
    #[test]
    fn deeper_folders_map_their_parts_in_their_own_docs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        for top in std::fs::read_dir(&root).expect("src/ is readable") {
            let top = top.expect("an entry").path();
            if !top.is_dir() {
                continue;
            }
            for folder in std::fs::read_dir(&top).expect("a folder is readable") {
                let folder = folder.expect("an entry").path();
                let Ok(doc) = std::fs::read_to_string(folder.join("mod.rs")) else {
                    continue;
                };
                for part in std::fs::read_dir(&folder).expect("a folder is readable") {
                    let part = part.expect("an entry").path();
                    let name = part
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_owned();
                    let is_part =
                        name.ends_with(".rs") && !["mod.rs", "tests.rs"].contains(&name.as_str());
                    if is_part && !doc.contains(&format!("`{name}`")) {
                        missing.push(
                            part.strip_prefix(&root)
                                .unwrap_or(&part)
                                .display()
                                .to_string(),
                        );
                    }
                }
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "parts missing from their folder's map in its mod.rs: {missing:?}"
        );
    }
}
