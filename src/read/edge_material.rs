//! The chains and keys the edge routes hand out, from a bounded cache in front of the store:
//! memory stays bounded however many certificates are served, and an edge asking at every
//! handshake costs no query once its certificate is cached.
//!
//! Keyed by certificate id: a certificate never changes, so an entry is never stale; a
//! renewed one is another key, and the one it replaced is evicted in time.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dns_handling_events::CustomDomainEvent;
use futures::FutureExt;

use super::batched_reads::BatchedReads;
use crate::adapters::store::{EdgeMaterialRow, Store, StoreError};
use crate::adapters::vault::{KeyVault, VaultError};
use crate::edge::names::ServedEntry;
use crate::metrics::METRICS;

/// A certificate as an edge gets it: its chain and its private key, and which edges this
/// process saw its key read by.
pub struct CertificateMaterial {
    /// The domain.
    pub domain_id: String,
    /// The certificate.
    pub certificate_id: String,
    /// What `GET /edge/certificate` answers, built once: the PEM chain (leaf first), then the
    /// PEM private key.
    pub pem_body: Bytes,
    /// The edges whose read of this certificate's key this process saw recorded: a handshake
    /// of one of them records nothing and takes no other lock (see `edge_certificate`).
    recorded_readers: RwLock<Vec<Arc<str>>>,
}

impl CertificateMaterial {
    /// The material of a certificate from its chain and key.
    pub fn new(domain_id: &str, certificate_id: &str, chain_pem: &str, key_pem: &str) -> Self {
        let mut body = String::with_capacity(chain_pem.len() + key_pem.len() + 1);
        body.push_str(chain_pem);
        if !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(key_pem);
        Self {
            domain_id: domain_id.to_owned(),
            certificate_id: certificate_id.to_owned(),
            pem_body: Bytes::from(body),
            recorded_readers: RwLock::default(),
        }
    }

    /// Whether `edge`'s read of the key was seen recorded.
    pub fn read_recorded_for(&self, edge: &str) -> bool {
        self.recorded_readers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .any(|reader| **reader == *edge)
    }

    /// Notes that `edge`'s read of the key is recorded.
    pub fn note_read_recorded(&self, edge: &Arc<str>) {
        let mut readers = self
            .recorded_readers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !readers.iter().any(|reader| reader == edge) {
            readers.push(edge.clone());
        }
    }
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

/// The bounded cache, by certificate id, and the batched read behind its misses.
pub struct MaterialCache {
    cache: moka::sync::Cache<String, Arc<CertificateMaterial>>,
    /// Misses waiting at the same moment are read by one statement (see `batched_reads`).
    misses: BatchedReads<EdgeMaterialRow>,
}

impl MaterialCache {
    /// A cache of at most `entries` certificates, the least used evicted first, reading its
    /// misses from `store`; spawns the batching task of its misses on the current runtime.
    pub fn new(entries: usize, store: Store) -> Self {
        Self {
            cache: moka::sync::Cache::new(entries as u64),
            misses: BatchedReads::new(store, |store, domain_ids| {
                async move { store.edge_materials(&domain_ids).await }.boxed()
            }),
        }
    }

    /// The chain and key of the certificate `served` names: from the cache, else read (the
    /// domain's current certificate and its sealed key in one statement, shared with the other
    /// misses waiting then) and kept. `None` when its key is gone (destroyed since the index
    /// was told).
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
        let current = self.misses.read(&served.domain_id).await?;
        let (chain_pem, key_pem) = match current {
            Some(row) if row.certificate.id == served.certificate_id => {
                let Some(sealed) = row.sealed_key else {
                    return Ok(None);
                };
                let order_id = &row.certificate.order_id;
                let key_pem = vault.open_certificate_key(order_id, &sealed)?;
                (row.certificate.chain_pem, key_pem)
            }
            // The views are not there yet, or already past it: from its `CertificateIssued`.
            _ => {
                let Some((order_id, chain_pem)) = issued_chain(store, served).await? else {
                    return Ok(None);
                };
                let Some(key_pem) = vault.certificate_key(&order_id).await? else {
                    return Ok(None);
                };
                (chain_pem, key_pem)
            }
        };
        let material = Arc::new(CertificateMaterial::new(
            &served.domain_id,
            &served.certificate_id,
            &chain_pem,
            &key_pem,
        ));
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

    /// Forgets every certificate, as a process that starts holds none.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

/// The order and chain of the certificate `served` names, from its `CertificateIssued`.
async fn issued_chain(
    store: &Store,
    served: &ServedEntry,
) -> Result<Option<(String, String)>, StoreError> {
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
