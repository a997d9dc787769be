//! dns-handling: TLS certificates for the custom domains of a hosting platform's users, through
//! ACME DNS-01, as an event-sourced actor system.
//!
//! The map of the code (the rooms, their boundaries, the invariants) is `ARCHITECTURE.md`, in
//! one place; each module's own doc says what it holds.

#![forbid(unsafe_code)]

pub mod actors;
pub mod adapters;
pub mod analytics;
pub mod app;
pub mod app_state;
pub mod audit;
pub mod cli;
pub mod deliveries;
pub mod domain;
pub mod edge;
pub mod http;
pub mod metrics;
pub mod read;
pub mod settings;
pub mod tasks;
pub mod use_cases;

/// Installs the process-wide rustls crypto provider. Both ring (through sqlx) and aws-lc-rs
/// (through instant-acme and rcgen) are linked, so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    /// `ARCHITECTURE.md` is the one map of the code: every folder of `src/` and every module
    /// file at its top is named there, so a room added without its line fails here.
    #[test]
    fn the_architecture_map_names_every_room_of_src() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let map = std::fs::read_to_string(manifest.join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md is readable");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(manifest.join("src")).expect("src/ is readable") {
            let path = entry.expect("an entry").path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .to_owned();
            let named_as = if path.is_dir() {
                format!("`src/{name}/`")
            } else if name.ends_with(".rs") && !["lib.rs", "main.rs"].contains(&name.as_str()) {
                format!("`{name}`")
            } else {
                continue;
            };
            if !map.contains(&named_as) {
                missing.push(named_as);
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "rooms missing from ARCHITECTURE.md: {missing:?}"
        );
    }
}
