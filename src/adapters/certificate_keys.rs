//! `CertificateKeys`: the custody of certificate private keys, one per order. The ACME client
//! does not decide where a key comes from or where it is kept: it is handed an [`OrderKey`] for
//! the order it completes and asks it for the key when the CA is ready for the CSR.
//!
//! A key is generated on first need and stored, sealed by the vault under its order id, before
//! it is handed out. That order is what makes completion crash-safe: a CSR is only ever sent
//! for a stored key, so an order resumed after a crash (between the CSR and the certificate)
//! finalizes with the key the CA may already have seen, not with a new one.

use dns_handling_events::{CertificateKeyType, OrderDetails};
use tokio::sync::Semaphore;

use crate::adapters::vault::{KeyVault, VaultError};

/// Why an order's key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyCustodyError {
    /// The vault (or the store under it) failed: trying again later may work.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Key generation could not run this time (its task died or its queue closed).
    #[error("{0}")]
    Unavailable(String),
    /// The key could not be generated at all: trying again will not change it.
    #[error("{0}")]
    GenerationFailed(String),
}

/// The keeper of certificate keys: reads them from the vault, generates the missing ones, and
/// stores them before anyone uses them.
pub struct CertificateKeys {
    vault: KeyVault,
    /// Keys generated at once: one per core. RSA-2048 generation is pure CPU; with hundreds of
    /// orders ready together, running all at once only makes every one of them finish late,
    /// while a bounded number finishes the first orders early.
    generation: Semaphore,
}

impl CertificateKeys {
    /// Custody over the certificate keys of `vault`.
    pub fn new(vault: KeyVault) -> Self {
        Self {
            vault,
            generation: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        }
    }

    /// The key of `order` (of domain `domain_id`), to be asked for when it is needed.
    pub fn for_order<'a>(&'a self, domain_id: &'a str, order: &'a OrderDetails) -> OrderKey<'a> {
        OrderKey {
            keys: self,
            domain_id,
            order_id: &order.order_id,
            key_type: order.key_type,
        }
    }
}

/// The private key of one order, not fetched or generated until [`OrderKey::get_or_create`]:
/// an order that is already finalized at the CA needs none.
pub struct OrderKey<'a> {
    keys: &'a CertificateKeys,
    domain_id: &'a str,
    order_id: &'a str,
    key_type: CertificateKeyType,
}

impl OrderKey<'_> {
    /// The order's private key (PEM): the stored one, or a fresh one, stored before it is
    /// returned. Two callers racing on one order get the same key: the first one stored wins.
    pub async fn get_or_create(&self) -> Result<String, KeyCustodyError> {
        let vault = &self.keys.vault;
        if let Some(existing) = vault.certificate_key(self.order_id).await? {
            return Ok(existing);
        }
        // RSA-2048 generation takes tens to hundreds of milliseconds of CPU: run it on the
        // blocking pool so it never stalls an actor's or an HTTP worker's thread.
        let algorithm = match self.key_type {
            CertificateKeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            CertificateKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let _permit =
            self.keys.generation.acquire().await.map_err(|e| {
                KeyCustodyError::Unavailable(format!("key generation is closed: {e}"))
            })?;
        let generated = tokio::task::spawn_blocking(move || {
            rcgen::KeyPair::generate_for(algorithm).map(|key| key.serialize_pem())
        })
        .await
        .map_err(|e| KeyCustodyError::Unavailable(format!("key generation task failed: {e}")))?
        .map_err(|e| KeyCustodyError::GenerationFailed(e.to_string()))?;
        // Stored before it is returned, so no CSR is ever built from a key that a crash could
        // lose; if another poller stored one first, that one is the key of record.
        Ok(vault
            .store_certificate_key(self.order_id, self.domain_id, &generated)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::store::Store;
    use crate::adapters::vault::{KeyEncryptionKey, KeyRing};

    fn order(order_id: &str) -> OrderDetails {
        OrderDetails {
            order_id: order_id.to_owned(),
            order_url: "https://ca.example/order/1".into(),
            names: vec!["example.com".into()],
            challenges: vec![],
            account_id: "https://ca.example/account/1".into(),
            poll_interval_ms: 1000,
            deadline: chrono::Utc::now(),
            key_type: CertificateKeyType::EcdsaP256,
            validation: dns_handling_events::Validation::Manual,
            delegation_problem: None,
            ca_directory: String::new(),
        }
    }

    #[tokio::test]
    async fn an_orders_key_is_stored_before_it_is_handed_out_and_comes_back_the_same() {
        let path = std::env::temp_dir().join(format!("keys-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let vault = KeyVault::new(store, KeyRing::new(KeyEncryptionKey::generate(), vec![]));
        let order = order("o1");

        let keys = CertificateKeys::new(vault.clone());
        let key = keys
            .for_order("d1", &order)
            .get_or_create()
            .await
            .expect("a key");
        assert_eq!(
            vault.certificate_key("o1").await.expect("read").as_deref(),
            Some(key.as_str()),
            "stored before it was handed out"
        );
        // As after a crash: a new custody over the same vault hands the stored key out again.
        let again = CertificateKeys::new(vault.clone())
            .for_order("d1", &order)
            .get_or_create()
            .await
            .expect("the key");
        assert_eq!(again, key);
        let other = keys
            .for_order("d1", &self::order("o2"))
            .get_or_create()
            .await;
        assert_ne!(
            other.expect("a key"),
            key,
            "each order has a key of its own"
        );

        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
