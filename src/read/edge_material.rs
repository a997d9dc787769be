//! The chains and keys the edge routes hand out, from a bounded cache in front of the store:
//! memory stays bounded however many certificates are served, and an edge asking at every
//! handshake costs no query once its certificate is cached.
//!
//! Keyed by certificate id: a certificate never changes, so an entry is never stale; a
//! renewed one is another key, and the one it replaced is evicted in time.

use std::sync::Arc;

use dns_handling_events::CustomDomainEvent;

use crate::adapters::store::{Store, StoreError};
use crate::adapters::vault::{KeyVault, VaultError};
use crate::edge::names::ServedEntry;
use crate::metrics::METRICS;

/// A certificate as an edge gets it: its chain and its private key.
#[derive(Clone)]
pub struct CertificateMaterial {
    /// The domain.
    pub domain_id: String,
    /// The certificate.
    pub certificate_id: String,
    /// The chain, PEM, leaf first.
    pub chain_pem: String,
    /// The private key, PEM.
    pub private_key_pem: String,
}

impl std::fmt::Debug for CertificateMaterial {
    /// Everything but the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("domain_id", &self.domain_id)
            .field("certificate_id", &self.certificate_id)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key could not be opened.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The bounded cache, by certificate id.
pub struct MaterialCache {
    cache: moka::sync::Cache<String, Arc<CertificateMaterial>>,
}

impl MaterialCache {
    /// A cache of at most `entries` certificates, the least used evicted first.
    pub fn new(entries: usize) -> Self {
        Self {
            cache: moka::sync::Cache::new(entries as u64),
        }
    }

    /// The chain and key of the certificate `served` names: from the cache, else read (one
    /// indexed read of the domain's current certificate, one of the key) and kept. `None` when
    /// its key is gone (destroyed since the index was told).
    pub async fn get(
        &self,
        store: &Store,
        vault: &KeyVault,
        served: &ServedEntry,
    ) -> Result<Option<Arc<CertificateMaterial>>, MaterialError> {
        if let Some(cached) = self.cache.get(&served.certificate_id) {
            METRICS.edge.cache_hits.inc();
            return Ok(Some(cached));
        }
        METRICS.edge.cache_misses.inc();
        let Some((order_id, chain_pem)) = chain_of(store, served).await? else {
            return Ok(None);
        };
        let Some(private_key_pem) = vault.certificate_key(&order_id).await? else {
            return Ok(None);
        };
        let material = Arc::new(CertificateMaterial {
            domain_id: served.domain_id.clone(),
            certificate_id: served.certificate_id.clone(),
            chain_pem,
            private_key_pem,
        });
        self.cache
            .insert(served.certificate_id.clone(), material.clone());
        Ok(Some(material))
    }

    /// How many certificates it holds, once its pending evictions are done.
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The order and chain of the certificate `served` names: the domain's current certificate's
/// view, or (when the views are not there yet, or already past it) its `CertificateIssued`.
async fn chain_of(
    store: &Store,
    served: &ServedEntry,
) -> Result<Option<(String, String)>, StoreError> {
    if let Some(view) = store.certificate_view(&served.domain_id).await? {
        if view.id == served.certificate_id {
            return Ok(Some((view.order_id, view.chain_pem)));
        }
    }
    for stored in store
        .domain_history(&served.domain_id)
        .await?
        .into_iter()
        .rev()
    {
        let event = stored
            .decode()
            .map_err(|e| StoreError::other("a stored event of a served domain is unreadable", e))?;
        if let CustomDomainEvent::CertificateIssued { certificate, .. } = event {
            if certificate.certificate_id == served.certificate_id {
                return Ok(Some((certificate.order_id, certificate.chain_pem)));
            }
        }
    }
    Ok(None)
}
