//! The reads behind the edge routes: the current certificates of a batch of domains with their
//! sealed keys, in one statement (`GET /edge/certificate`'s cache misses); and behind the
//! certificate stream edges follow (`GET /edge/certificates`): a snapshot of the views as of one
//! feed position, read a page at a time inside one read transaction, and
//! what a change line needs from a domain's stream (its name, the certificate it replaces).
//!
//! The snapshot is one transaction so that every page shows the same moment: PostgreSQL's
//! `REPEATABLE READ` (one MVCC snapshot for every statement), SQLite's read transaction in WAL
//! mode (the WAL frames as of its first read). The projection checkpoint is its first read, so
//! the views it pages through are at that position or ahead of it (the commits' own path
//! writes them before the checkpoint moves), never behind; each row says where its view
//! stands, and the stream's reader folds the few ahead of it from their events up to the
//! position, in the same transaction.

use std::collections::HashMap;

use dns_handling_events::AGGREGATE_TYPE;
use dns_handling_projections::CertificateView;
use sqlx::Row;

use super::{FeedRow, Store, StoreError, BATCH_ROWS};

/// A domain's current certificate as the edges are handed it: its view and its private key,
/// sealed as stored.
#[derive(Debug, Clone)]
pub struct EdgeMaterialRow {
    /// The certificate (its chain included).
    pub certificate: CertificateView,
    /// Its order's private key, sealed (see `KeyVault`); `None` once destroyed.
    pub sealed_key: Option<String>,
}

/// One domain of a snapshot page, as the views have it.
#[derive(Debug, Clone)]
pub struct EdgeSnapshotRow {
    /// The domain.
    pub domain_id: String,
    /// Its view (a `DomainView`, JSON).
    pub view: String,
    /// The feed position of the last event its view applied (`None`: not found).
    pub view_position: Option<i64>,
    /// Its current certificate's view (a `CertificateView`, JSON), if it has one.
    pub certificate: Option<String>,
}

/// The open read transaction of a snapshot.
enum Transaction {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Runs the same expression on whichever transaction the snapshot holds.
macro_rules! on_transaction {
    ($transaction:expr, $tx:ident => $body:expr) => {
        match $transaction {
            Transaction::Postgres($tx) => $body,
            Transaction::Sqlite($tx) => $body,
        }
    };
}

/// A snapshot of the views as of one feed position, read a page at a time. It holds a store
/// connection until it is dropped (or [`EdgeSnapshot::close`]d).
pub struct EdgeSnapshot {
    transaction: Transaction,
    position: i64,
}

impl Store {
    /// The current certificates of these domains (those that have one) with their sealed keys,
    /// by domain id: one statement per 500 domains, the key joined on the view's order id.
    pub async fn edge_materials(
        &self,
        domain_ids: &[String],
    ) -> Result<HashMap<String, EdgeMaterialRow>, StoreError> {
        // The view is JSON text in both stores; each extracts its order id its own way.
        let order_id = match self {
            Store::Postgres(_) => "CAST(c.payload AS jsonb) ->> 'order_id'",
            Store::Sqlite(_) => "c.payload ->> '$.order_id'",
        };
        let mut materials = HashMap::with_capacity(domain_ids.len());
        for chunk in domain_ids.chunks(BATCH_ROWS) {
            let sql = format!(
                "SELECT CAST(c.payload AS TEXT) AS certificate, k.private_key \
                 FROM certificate_views c LEFT JOIN certificate_keys k ON k.order_id = ({order_id}) \
                 WHERE c.domain_id IN ({})",
                self.placeholders(chunk.len(), 1).join(",")
            );
            let rows: Vec<(String, Option<String>)> = on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for domain_id in chunk {
                    query = query.bind(domain_id.as_str());
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| Ok((row.try_get("certificate")?, row.try_get("private_key")?)))
                    .collect::<Result<_, sqlx::Error>>()?
            });
            for (certificate, sealed_key) in rows {
                let certificate: CertificateView = serde_json::from_str(&certificate)?;
                materials.insert(
                    certificate.domain_id.clone(),
                    EdgeMaterialRow {
                        certificate,
                        sealed_key,
                    },
                );
            }
        }
        Ok(materials)
    }

    /// Opens a snapshot as of the checkpoint of projection `checkpoint`, which it reads first,
    /// inside the transaction.
    pub async fn edge_snapshot(&self, checkpoint: &str) -> Result<EdgeSnapshot, StoreError> {
        let mut transaction = match self {
            Store::Postgres(pool) => Transaction::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            // A deferred transaction: its first read fixes what every later one sees.
            Store::Sqlite(pool) => Transaction::Sqlite(pool.begin().await?),
        };
        let sql = "SELECT position FROM projection_checkpoints WHERE name = $1";
        let position: Option<i64> = on_transaction!(&mut transaction, tx => sqlx::query(sql)
            .bind(checkpoint)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("position"))
            .transpose()?);
        Ok(EdgeSnapshot {
            transaction,
            position: position.unwrap_or(0),
        })
    }

    /// The events of domain `domain_id` before `position` that a change line of the certificate
    /// stream needs: its registration (its name) and every `CertificateIssued` (the last is the
    /// certificate in service then), in stream order.
    pub async fn edge_domain_facts(
        &self,
        domain_id: &str,
        position: i64,
    ) -> Result<Vec<FeedRow>, StoreError> {
        let sql = "SELECT position, aggregate_id, sequence, event_type, event_version, \
                   CAST(payload AS TEXT) AS payload FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND position < $3 \
                   AND (sequence = 1 OR event_type = 'CertificateIssued') ORDER BY sequence";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .bind(domain_id)
            .bind(position)
            .fetch_all(pool)
            .await?
            .iter()
            .map(FeedRow::read)
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }
}

impl EdgeSnapshot {
    /// The feed position the snapshot shows.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Up to `limit` domains after `after_id` (in id order) that may have served a certificate
    /// at the snapshot's position: those whose view serves one (a `not_after` is kept for
    /// active and expired domains that are not removed), and those whose view is ahead of the
    /// position, whatever it shows now.
    pub async fn page(
        &mut self,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<EdgeSnapshotRow>, StoreError> {
        let sql = "SELECT v.id, CAST(v.payload AS TEXT) AS view, e.position AS view_position, \
                   CAST(c.payload AS TEXT) AS certificate FROM domain_views v \
                   LEFT JOIN events e ON e.aggregate_type = $1 AND e.aggregate_id = v.id \
                   AND e.sequence = v.last_sequence \
                   LEFT JOIN certificate_views c ON c.domain_id = v.id \
                   WHERE v.id > $2 AND (v.not_after IS NOT NULL OR e.position > $3) \
                   ORDER BY v.id LIMIT $4";
        let position = self.position;
        Ok(
            on_transaction!(&mut self.transaction, tx => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .bind(after_id)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| {
                Ok(EdgeSnapshotRow {
                    domain_id: row.try_get("id")?,
                    view: row.try_get("view")?,
                    view_position: row.try_get("view_position")?,
                    certificate: row.try_get("certificate")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?),
        )
    }

    /// Every event of domain `domain_id` up to the snapshot's position, in stream order: what
    /// its view was then, for a view that is ahead of it.
    pub async fn stream_until_position(
        &mut self,
        domain_id: &str,
    ) -> Result<Vec<FeedRow>, StoreError> {
        let sql = "SELECT position, aggregate_id, sequence, event_type, event_version, \
                   CAST(payload AS TEXT) AS payload FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND position <= $3 \
                   ORDER BY sequence";
        let position = self.position;
        Ok(
            on_transaction!(&mut self.transaction, tx => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .bind(domain_id)
            .bind(position)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(FeedRow::read)
            .collect::<Result<Vec<_>, sqlx::Error>>()?),
        )
    }

    /// The sealed private keys of these orders that are still stored, by order id.
    pub async fn sealed_keys(
        &mut self,
        order_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut keys = HashMap::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(BATCH_ROWS) {
            let numbered = matches!(self.transaction, Transaction::Postgres(_));
            let placeholders: Vec<String> = (1..=chunk.len())
                .map(|n| {
                    if numbered {
                        format!("${n}")
                    } else {
                        "?".into()
                    }
                })
                .collect();
            let sql = format!(
                "SELECT order_id, private_key FROM certificate_keys WHERE order_id IN ({})",
                placeholders.join(", ")
            );
            let rows: Vec<(String, String)> = on_transaction!(&mut self.transaction, tx => {
                let mut query = sqlx::query(&sql);
                for order_id in chunk {
                    query = query.bind(order_id.as_str());
                }
                query
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|row| Ok((row.try_get("order_id")?, row.try_get("private_key")?)))
                    .collect::<Result<_, sqlx::Error>>()?
            });
            keys.extend(rows);
        }
        Ok(keys)
    }

    /// Ends the read transaction and gives its connection back.
    pub async fn close(self) -> Result<(), StoreError> {
        on_transaction!(self.transaction, tx => tx.rollback().await?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::adapters::store::ProjectionWrite;

    fn certificate(domain: &str, order: &str) -> CertificateView {
        CertificateView {
            id: format!("certificate-of-{domain}"),
            domain_id: domain.into(),
            order_id: order.into(),
            serial: "01".into(),
            not_before: Utc::now(),
            not_after: Utc::now(),
            issued_at: Utc::now(),
            fingerprint_sha256: "00".into(),
            sequence: 5,
            chain_pem: format!("chain of {domain}"),
            ca_directory: String::new(),
        }
    }

    /// Each domain's current certificate comes with its own order's key (not an older order's
    /// of the same domain), a destroyed key as none, and a domain without one not at all.
    #[tokio::test]
    async fn current_certificates_come_with_their_own_orders_sealed_keys_in_one_read() {
        let path = std::env::temp_dir().join(format!("edge-materials-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let certificates = [certificate("a", "order-a2"), certificate("b", "order-b1")];
        store
            .write_projection(ProjectionWrite {
                views: &[],
                certificates: &certificates,
                removed: &[],
                renamed: &[],
                key_disposals: &[],
                checkpoint: None,
            })
            .await
            .expect("views written");
        for (order, domain) in [("order-a1", "a"), ("order-a2", "a"), ("order-b1", "b")] {
            store
                .insert_certificate_key(order, domain, &format!("sealed {order}"))
                .await
                .expect("key stored");
        }
        store
            .delete_certificate_key("order-b1")
            .await
            .expect("key destroyed");

        let asked: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let found = store.edge_materials(&asked).await.expect("read");

        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found["a"].certificate, certificates[0]);
        assert_eq!(found["a"].sealed_key.as_deref(), Some("sealed order-a2"));
        assert_eq!(found["b"].certificate, certificates[1]);
        assert_eq!(found["b"].sealed_key, None);
        let _ = std::fs::remove_file(&path);
    }
}
