//! The tables of sealed secrets: the ACME account's credentials, the certificate keys and the
//! webhook signing secrets (written in `webhooks.rs`), as
//! the vault stores them (the store sees only ciphertext), and the paging and replacing that
//! re-sealing under a new key needs.

use chrono::Utc;
use sqlx::Row;

use super::{Store, StoreError};

/// A table that holds sealed secrets (see `vault`), each value bound to its row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretTable {
    /// Certificate private keys, by order id.
    CertificateKeys,
    /// ACME account credentials, by directory URL.
    AcmeAccounts,
    /// Webhook signing secrets, by secret id.
    WebhookSecrets,
}

impl SecretTable {
    /// The table's name (also the first part of each value's sealing context).
    pub fn name(self) -> &'static str {
        match self {
            SecretTable::CertificateKeys => "certificate_keys",
            SecretTable::AcmeAccounts => "acme_accounts",
            SecretTable::WebhookSecrets => "webhook_secrets",
        }
    }

    /// The key column and the sealed column.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            SecretTable::CertificateKeys => ("order_id", "private_key"),
            SecretTable::AcmeAccounts => ("directory_url", "credentials"),
            SecretTable::WebhookSecrets => ("secret_id", "secret"),
        }
    }
}

impl Store {
    /// The stored ACME account credentials (JSON) for a directory, if any.
    pub async fn acme_account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT credentials FROM acme_accounts WHERE directory_url = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(directory_url)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("credentials"))
            .transpose()?))
    }

    /// Stores new ACME account credentials unless another process stored some first; returns
    /// the credentials that are now the account of record.
    pub async fn insert_acme_account(
        &self,
        directory_url: &str,
        account_id: &str,
        credentials: &str,
    ) -> Result<String, StoreError> {
        let sql = "INSERT INTO acme_accounts (directory_url, account_id, credentials, created_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (directory_url) DO NOTHING";
        let now = Utc::now().to_rfc3339();
        on_pool!(self, pool => sqlx::query(sql)
            .bind(directory_url)
            .bind(account_id)
            .bind(credentials)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(self
            .acme_account(directory_url)
            .await?
            .unwrap_or_else(|| credentials.to_owned()))
    }

    /// The private key (PEM) stored for an order, if any.
    pub async fn certificate_key(&self, order_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT private_key FROM certificate_keys WHERE order_id = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(order_id)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("private_key"))
            .transpose()?))
    }

    /// Stores an order's private key unless one is stored already; returns the key of record, so
    /// that an order resumed after a crash finalizes with the same key it may already have used.
    pub async fn insert_certificate_key(
        &self,
        order_id: &str,
        domain_id: &str,
        private_key_pem: &str,
    ) -> Result<String, StoreError> {
        let sql = "INSERT INTO certificate_keys (order_id, domain_id, private_key, created_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING";
        let now = Utc::now().to_rfc3339();
        on_pool!(self, pool => sqlx::query(sql)
            .bind(order_id)
            .bind(domain_id)
            .bind(private_key_pem)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(self
            .certificate_key(order_id)
            .await?
            .unwrap_or_else(|| private_key_pem.to_owned()))
    }

    /// Up to `limit` certificate keys whose destruction is due by `now`: (order id, domain id,
    /// why, certificate id). First the keys of removed domains that no disposal mark reached
    /// (stored after the removal's mark was written: a replica that finalized an order after
    /// another removed its domain), due at once whenever they were stored, so that no key
    /// outlives its domain; then the marked ones, the longest due first. Both through the
    /// `destroy_after` index (unmarked keys are those of open orders, a few).
    pub async fn keys_due_for_destruction(
        &self,
        now: chrono::DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String, String, Option<String>)>, StoreError> {
        let unmarked =
            "SELECT k.order_id, k.domain_id, CAST($1 AS TEXT) AS destroy_reason, k.certificate_id \
                        FROM certificate_keys k JOIN domain_views v ON v.id = k.domain_id \
                        WHERE k.destroy_after IS NULL AND v.status = $2 \
                        ORDER BY k.order_id LIMIT $3";
        let marked =
            "SELECT order_id, domain_id, destroy_reason, certificate_id FROM certificate_keys \
                   WHERE destroy_after IS NOT NULL AND destroy_after <= $1 \
                   ORDER BY destroy_after LIMIT $2";
        let domain_removed = serde_json::to_value(dns_handling_events::KeyDisposal::DomainRemoved)?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut due: Vec<(String, String, String, Option<String>)> = on_pool!(self, pool => sqlx::query(unmarked)
            .bind(&domain_removed)
            .bind(super::views::REMOVED_STATUS)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("order_id")?,
                    row.try_get("domain_id")?,
                    row.try_get("destroy_reason")?,
                    row.try_get("certificate_id")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        let left = i64::from(limit) - i64::try_from(due.len()).unwrap_or(i64::MAX);
        if left > 0 {
            due.extend(on_pool!(self, pool => sqlx::query(marked)
                .bind(super::sortable_time(now))
                .bind(left)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                Ok((
                    row.try_get("order_id")?,
                    row.try_get("domain_id")?,
                    row.try_get("destroy_reason")?,
                    row.try_get("certificate_id")?,
                ))
            })
                .collect::<Result<Vec<_>, sqlx::Error>>()?));
        }
        Ok(due)
    }

    /// Deletes an order's certificate key: nothing of it is kept (it was sealed at rest, so the
    /// database's free pages hold only ciphertext under the key-encryption key).
    pub async fn delete_certificate_key(&self, order_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM certificate_keys WHERE order_id = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(order_id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Up to `limit` rows of a secrets table after row key `after`, in key order: `(key, sealed)`.
    pub async fn sealed_secrets(
        &self,
        table: SecretTable,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (key, sealed) = table.columns();
        let sql = format!(
            "SELECT {key}, {sealed} FROM {} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
            table.name()
        );
        let rows = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        Ok(rows)
    }

    /// Replaces sealed values, each `(key, the value read, its replacement)`, in one
    /// transaction; a row whose value is no longer the one read (written meanwhile) fails it
    /// all, so nothing is overwritten unseen.
    pub async fn replace_secrets(
        &self,
        table: SecretTable,
        replacements: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        if replacements.is_empty() {
            return Ok(());
        }
        let (key, sealed) = table.columns();
        let sql = format!(
            "UPDATE {} SET {sealed} = $1 WHERE {key} = $2 AND {sealed} = $3",
            table.name()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (row, read, replacement) in replacements {
                let updated = sqlx::query(&sql)
                    .bind(replacement)
                    .bind(row)
                    .bind(read)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if updated != 1 {
                    return Err(StoreError::Changed(format!(
                        "{}/{row} changed while it was re-sealed; nothing in its batch was \
                         written, run again",
                        table.name()
                    )));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated store on a fresh SQLite file, and the file's path (for removing it).
    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("store-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        (store, path)
    }

    #[tokio::test]
    async fn a_key_stored_after_its_domain_was_removed_is_due_for_destruction_at_once() {
        use dns_handling_events::CustomDomainEvent;
        use dns_handling_projections::DomainView;

        let (store, path) = sqlite_store().await;
        let now = Utc::now();
        let registered = |name: &str| CustomDomainEvent::DomainRegistered {
            domain_name: name.into(),
            verification_token: "token".into(),
            verification_record_name: format!("_acme-challenge.{name}."),
            registered_at: now,
            alt_names: vec![],
            tenant: None,
        };
        let kept = DomainView::from_registration("kept", 1, &registered("kept.example.com"))
            .expect("a view");
        let mut gone = DomainView::from_registration("gone", 1, &registered("gone.example.com"))
            .expect("a view");
        let removed = CustomDomainEvent::DomainRemoved {
            domain_name: "gone.example.com".into(),
            removed_at: now,
        };
        gone.apply(2, &removed);
        let views = [kept, gone];
        // The removal's disposal mark is written with its view, before either key exists.
        let marks = [super::super::KeyDisposalMark {
            domain_id: "gone".into(),
            order_id: None,
            certificate_id: None,
            why: dns_handling_events::KeyDisposal::DomainRemoved,
            after: now,
        }];
        store
            .write_projection(super::super::ProjectionWrite {
                views: &views,
                key_disposals: &marks,
                ..Default::default()
            })
            .await
            .expect("views written");
        store
            .insert_certificate_key("late-order", "gone", "sealed")
            .await
            .expect("stored");
        store
            .insert_certificate_key("open-order", "kept", "sealed")
            .await
            .expect("stored");
        // Due whatever the time, and the key of a domain still there is not.
        let due = store
            .keys_due_for_destruction(now - chrono::Duration::days(1), 10)
            .await
            .expect("read");
        assert_eq!(
            due,
            vec![(
                "late-order".to_owned(),
                "gone".to_owned(),
                "domain_removed".to_owned(),
                None
            )]
        );
        store
            .delete_certificate_key("late-order")
            .await
            .expect("deleted");
        assert!(store
            .keys_due_for_destruction(now, 10)
            .await
            .expect("read")
            .is_empty());
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn a_secret_written_meanwhile_fails_its_whole_replacement_batch() {
        let (store, path) = sqlite_store().await;
        for order in ["o1", "o2"] {
            store
                .insert_certificate_key(order, "d", &format!("sealed-{order}"))
                .await
                .expect("stored");
        }
        let table = SecretTable::CertificateKeys;
        let read = store.sealed_secrets(table, "", 10).await.expect("read");
        assert_eq!(
            read,
            vec![
                ("o1".to_owned(), "sealed-o1".to_owned()),
                ("o2".to_owned(), "sealed-o2".to_owned())
            ]
        );
        // o2's replacement was computed from a value that is no longer the stored one.
        let stale = [
            ("o1".to_owned(), "sealed-o1".to_owned(), "new-o1".to_owned()),
            (
                "o2".to_owned(),
                "an-older-o2".to_owned(),
                "new-o2".to_owned(),
            ),
        ];
        let error = store
            .replace_secrets(table, &stale)
            .await
            .expect_err("refused");
        assert!(
            error.to_string().contains("certificate_keys/o2 changed"),
            "{error}"
        );
        assert_eq!(
            store.sealed_secrets(table, "", 10).await.expect("read"),
            read,
            "o1 was not replaced either"
        );
        let fresh = [("o1".to_owned(), "sealed-o1".to_owned(), "new-o1".to_owned())];
        store
            .replace_secrets(table, &fresh)
            .await
            .expect("replaced");
        assert_eq!(
            store.certificate_key("o1").await.expect("read").as_deref(),
            Some("new-o1")
        );
        assert_eq!(
            store.sealed_secrets(table, "o1", 10).await.expect("read"),
            vec![("o2".to_owned(), "sealed-o2".to_owned())],
            "pages start after the given key"
        );
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
