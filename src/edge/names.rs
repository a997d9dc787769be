//! Which certificate serves a TLS handshake's name: the in-memory index an edge's question is
//! answered from (`GET /edge/certificate?server_name=…`), without a query.
//!
//! An exact name of a domain (its name or an alt name) wins; else a wildcard `*.<parent>`
//! covering exactly one more label, as a certificate's wildcard does (RFC 6125 §6.4.3). Names
//! are matched as the service parses a domain's name: case-insensitively, a trailing dot
//! ignored, internationalised names in their A-label form (`bücher.example` is
//! `xn--bcher-kva.example`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::domain_name::DomainName;

/// The certificate a domain serves now, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntry {
    /// The domain.
    pub domain_id: String,
    /// The certificate served for its names.
    pub certificate_id: String,
    /// Its end: past it, nothing is served.
    pub not_after: DateTime<Utc>,
}

/// A `server_name` that is not a host name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("server_name {0:?} is not a host name")]
pub struct NotAHostName(pub String);

/// The index: every served name, exact and wildcard, to its domain's entry.
#[derive(Debug, Default)]
pub struct NameIndex {
    /// Exact names, and wildcards by their parent (`*.shop.example` under `shop.example`).
    exact: HashMap<Box<str>, Arc<ServedEntry>>,
    wildcards: HashMap<Box<str>, Arc<ServedEntry>>,
    /// Each domain's entry and names as indexed, to take them out again.
    names_of: HashMap<String, (Arc<ServedEntry>, Vec<Box<str>>)>,
}

impl NameIndex {
    /// Serves `names` (lower case A-labels, wildcards as `*.<parent>`) with `entry`, in place
    /// of what the domain served before.
    pub fn serve(&mut self, names: &[String], entry: ServedEntry) {
        self.withdraw(&entry.domain_id);
        let domain_id = entry.domain_id.clone();
        let entry = Arc::new(entry);
        let mut indexed = Vec::with_capacity(names.len());
        for name in names {
            let name: Box<str> = normalise(name).into();
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcards.insert(parent.into(), entry.clone()),
                None => self.exact.insert(name.clone(), entry.clone()),
            };
            indexed.push(name);
        }
        self.names_of.insert(domain_id, (entry, indexed));
    }

    /// Serves nothing more for the domain.
    pub fn withdraw(&mut self, domain_id: &str) {
        let Some((_, names)) = self.names_of.remove(domain_id) else {
            return;
        };
        for name in names {
            let (map, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcards, parent),
                None => (&mut self.exact, &*name),
            };
            // Only if it is still this domain's: another may have taken the name since.
            if map
                .get(key)
                .is_some_and(|entry| entry.domain_id == domain_id)
            {
                map.remove(key);
            }
        }
    }

    /// Serves nothing more for the domain if it serves `certificate_id` now (a certificate it
    /// replaced may be revoked, or its key destroyed, without touching the one in service).
    pub fn withdraw_certificate(&mut self, domain_id: &str, certificate_id: &str) {
        if self
            .served(domain_id)
            .is_some_and(|entry| entry.certificate_id == certificate_id)
        {
            self.withdraw(domain_id);
        }
    }

    /// What the domain serves now, if anything.
    pub fn served(&self, domain_id: &str) -> Option<&ServedEntry> {
        self.names_of
            .get(domain_id)
            .map(|(entry, _)| entry.as_ref())
    }

    /// The certificate serving `server_name` at `now`: `Ok(None)` when none does (not ours, or
    /// past its end).
    pub fn lookup(
        &self,
        server_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<&ServedEntry>, NotAHostName> {
        let name = host_name(server_name)?;
        let found = self.exact.get(name.as_str()).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcards.get(parent)
        });
        Ok(found.map(Arc::as_ref).filter(|entry| entry.not_after > now))
    }

    /// How many names are served.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    /// Whether no name is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored name as the index keys it: lower case, no trailing dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A handshake's name as the index keys it: parsed as the service parses a domain's name (an
/// A-label, lower case, no trailing dot), so that what was registered is what is found.
fn host_name(server_name: &str) -> Result<String, NotAHostName> {
    DomainName::parse(server_name)
        .map(DomainName::into_string)
        .map_err(|_| NotAHostName(server_name.chars().take(300).collect()))
}

#[cfg(test)]
mod tests;
