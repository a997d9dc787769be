//! The receipts of the keys the certificate stream (`GET /edge/certificates`) hands out
//! (`edge_key_deliveries`): which receiver first got which certificate's key, and when. The
//! stream writes them a chunk at a time, before the chunk leaves; auditors read them back.
//!
//! One row per receiver and certificate, never moved: a snapshot of 100,000 certificates costs
//! a few hundred multi-row inserts, not a command per domain, and a stream read again by the
//! same receiver writes nothing new (`ON CONFLICT DO NOTHING` keeps the first time).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{sortable_time, Store, StoreError, BATCH_ROWS};

/// A key about to leave in the stream: its certificate and the certificate's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDelivery {
    /// The certificate whose key it is.
    pub certificate_id: String,
    /// The domain the certificate serves.
    pub domain_id: String,
}

/// The first delivery of a certificate's key to a receiver, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgeKeyDelivery {
    /// Who received it: `edge:<name>` for an edge token, `admin` for the admin token.
    pub edge: String,
    /// The certificate whose key it was.
    pub certificate_id: String,
    /// The domain the certificate serves.
    pub domain_id: String,
    /// When the key was first sent to this receiver (RFC 3339, UTC); later deliveries leave it.
    pub first_delivered_at: String,
}

/// The receiver as recorded for a name an auditor gives: `admin`, a receiver as recorded
/// (`edge:<name>`), or an edge's name in `EDGE_TOKENS`.
pub fn recorded_receiver(name: &str) -> String {
    match name {
        "admin" => name.to_owned(),
        name if name.starts_with("edge:") => name.to_owned(),
        name => crate::domain::aggregate::edge_reader(name),
    }
}

/// Whose deliveries to list.
#[derive(Debug, Clone, Copy)]
pub enum DeliveriesOf<'a> {
    /// Every certificate one receiver got (`edge:<name>` or `admin`), by certificate id.
    Receiver(&'a str),
    /// Every receiver of one certificate's key, by receiver.
    Certificate(&'a str),
}

impl Store {
    /// Records that `receiver` is sent these keys at `at`: a row for each certificate it had
    /// not received before; one it had keeps its first time.
    pub async fn record_key_deliveries(
        &self,
        receiver: &str,
        keys: &[KeyDelivery],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = sortable_time(at);
        for chunk in keys.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO edge_key_deliveries \
                 (edge, certificate_id, domain_id, first_delivered_at) VALUES {} \
                 ON CONFLICT (edge, certificate_id) DO NOTHING",
                self.value_rows(chunk.len(), 4)
            );
            on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for key in chunk {
                    query = query
                        .bind(receiver)
                        .bind(&key.certificate_id)
                        .bind(&key.domain_id)
                        .bind(&at);
                }
                query.execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Up to `limit` recorded deliveries of `of`, after `after` in the order listed (the
    /// certificate id for a receiver's, the receiver for a certificate's; `""`: from the start).
    pub async fn key_deliveries(
        &self,
        of: DeliveriesOf<'_>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<EdgeKeyDelivery>, StoreError> {
        const COLUMNS: &str = "edge, certificate_id, domain_id, first_delivered_at";
        let (sql, key) = match of {
            DeliveriesOf::Receiver(receiver) => (
                format!(
                    "SELECT {COLUMNS} FROM edge_key_deliveries WHERE edge = $1 \
                     AND certificate_id > $2 ORDER BY certificate_id LIMIT $3"
                ),
                receiver,
            ),
            DeliveriesOf::Certificate(certificate_id) => (
                format!(
                    "SELECT {COLUMNS} FROM edge_key_deliveries WHERE certificate_id = $1 \
                     AND edge > $2 ORDER BY edge LIMIT $3"
                ),
                certificate_id,
            ),
        };
        Ok(on_pool!(self, pool => sqlx::query(&sql)
            .bind(key)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(EdgeKeyDelivery {
                    edge: row.try_get("edge")?,
                    certificate_id: row.try_get("certificate_id")?,
                    domain_id: row.try_get("domain_id")?,
                    first_delivered_at: row.try_get("first_delivered_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }
}
