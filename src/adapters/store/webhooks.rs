//! Webhook delivery's tables: where the messages' follower of the feed stands (`webhook_feed`)
//! and each endpoint's cursor in the feed, its messages (the outbox it is sent from, in order),
//! every attempt, and the sealed signing secrets.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{sortable_time, Store, StoreError};

/// A message as stored: sent as built, whatever the retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The endpoint it is for.
    pub endpoint_id: String,
    /// The feed position of the event it reports.
    pub position: i64,
    /// Its place among the messages of that event.
    pub ordinal: i64,
    /// `webhook-id`: the same on every attempt.
    pub message_id: String,
    /// Its notification type.
    pub message_type: String,
    /// The JSON body.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the next attempt is due (`None`: now).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A message to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `webhook-id`.
    pub message_id: String,
    /// Its notification type.
    pub message_type: String,
    /// The JSON body.
    pub body: String,
}

/// One delivery attempt, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The endpoint.
    pub endpoint_id: String,
    /// `webhook-id` of the message.
    pub message_id: String,
    /// The feed position of the event it reports.
    pub position: i64,
    /// Which attempt of the message (1 for the first).
    pub attempt: i64,
    /// When it was made.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status code, when it answered.
    pub status_code: Option<i64>,
    /// How long it took, in milliseconds.
    pub latency_ms: i64,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The replica that made it.
    pub replica: String,
}

/// The messages one event made for one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointMessages {
    /// The endpoint.
    pub endpoint_id: String,
    /// The event's feed position.
    pub position: i64,
    /// Its messages, in order (their ordinals).
    pub messages: Vec<NewMessage>,
}

/// What an attempt decided for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFate {
    /// Delivered: the next message is sent.
    Delivered,
    /// Tried again at the given time.
    RetryAt(DateTime<Utc>),
    /// Failed for good (its retries are spent, or the endpoint is gone): the next message
    /// is sent.
    Failed,
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
        .map(|time| time.with_timezone(&Utc))
}

impl Store {
    /// Every webhook endpoint's id (deleted ones too), in id order.
    pub async fn webhook_endpoint_ids(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT aggregate_id FROM webhook_events ORDER BY aggregate_id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// Every webhook endpoint's id with the sequence of its last event: an endpoint whose
    /// sequence moved has changed (created, rotated, disabled, deleted).
    pub async fn webhook_endpoint_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT aggregate_id, MAX(sequence) AS version FROM webhook_events \
                   GROUP BY aggregate_id ORDER BY aggregate_id";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("aggregate_id")?, row.try_get("version")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }

    /// Every endpoint's cursor row: the endpoints the messages' follower makes messages for.
    pub async fn webhook_cursors(&self) -> Result<HashMap<String, i64>, StoreError> {
        let sql = "SELECT endpoint_id, position FROM webhook_cursors";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("endpoint_id")?, row.try_get("position")?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?))
    }

    /// Where the messages' follower of the feed stands (`None` before its first batch).
    pub async fn webhook_feed_position(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT position FROM webhook_feed WHERE id = 1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql)
            .fetch_optional(pool)
            .await?))
    }

    /// Stores the messages a batch of the feed made, for whichever endpoints, and moves the
    /// messages' follower to `position`, in one transaction. A message already stored (another
    /// replica's follower made it first) is kept as it was, so every endpoint has each message
    /// once; the position never moves back.
    pub async fn store_webhook_messages(
        &self,
        messages: &[EndpointMessages],
        position: i64,
    ) -> Result<(), StoreError> {
        let feed = "INSERT INTO webhook_feed (id, position) VALUES (1, $1) \
                    ON CONFLICT (id) DO UPDATE SET position = excluded.position \
                    WHERE webhook_feed.position < excluded.position";
        self.messages_then(messages, feed, None, position).await
    }

    /// Stores the messages of an endpoint the follower starts making messages for (those of the
    /// events between where the endpoint starts and where the follower stands) and writes the
    /// endpoint's cursor row at `position`, in one transaction: from then on the follower makes
    /// its messages with everyone's.
    pub async fn join_webhook_feed(
        &self,
        endpoint_id: &str,
        messages: &[EndpointMessages],
        position: i64,
    ) -> Result<(), StoreError> {
        let cursor = "INSERT INTO webhook_cursors (endpoint_id, position) VALUES ($1, $2) \
                      ON CONFLICT (endpoint_id) DO UPDATE SET position = excluded.position \
                      WHERE webhook_cursors.position < excluded.position";
        self.messages_then(messages, cursor, Some(endpoint_id), position)
            .await
    }

    /// Inserts messages (keeping any stored before), then runs `then` with `endpoint_id` (when
    /// given) and `position` bound, in one transaction.
    async fn messages_then(
        &self,
        messages: &[EndpointMessages],
        then: &str,
        endpoint_id: Option<&str>,
        position: i64,
    ) -> Result<(), StoreError> {
        let insert = "INSERT INTO webhook_messages (endpoint_id, position, ordinal, message_id, \
                      message_type, body, created_at, state) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') \
                      ON CONFLICT (endpoint_id, position, ordinal) DO NOTHING";
        let now = sortable_time(Utc::now());
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for each in messages {
                for (ordinal, message) in each.messages.iter().enumerate() {
                    sqlx::query(insert)
                        .bind(&each.endpoint_id)
                        .bind(each.position)
                        .bind(ordinal as i64)
                        .bind(&message.message_id)
                        .bind(&message.message_type)
                        .bind(&message.body)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let mut query = sqlx::query(then);
            if let Some(endpoint_id) = endpoint_id {
                query = query.bind(endpoint_id);
            }
            query.bind(position).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The endpoints with a message waiting to be sent.
    pub async fn endpoints_with_messages_to_send(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT endpoint_id FROM webhook_messages WHERE state = 'pending'";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// Stores a sealed secret.
    pub async fn insert_webhook_secret(
        &self,
        secret_id: &str,
        endpoint_id: &str,
        sealed: &str,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO webhook_secrets (secret_id, endpoint_id, secret, created_at) \
                   VALUES ($1, $2, $3, $4)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(secret_id)
            .bind(endpoint_id)
            .bind(sealed)
            .bind(sortable_time(Utc::now()))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// A sealed secret.
    pub async fn webhook_secret(&self, secret_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT secret FROM webhook_secrets WHERE secret_id = $1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(secret_id)
            .fetch_optional(pool)
            .await?))
    }

    /// The endpoint's next message to send, if any.
    pub async fn next_webhook_message(
        &self,
        endpoint_id: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let sql = "SELECT position, ordinal, message_id, message_type, body, attempts, \
                   next_attempt_at FROM webhook_messages \
                   WHERE endpoint_id = $1 AND state = 'pending' \
                   ORDER BY position, ordinal LIMIT 1";
        let row = on_pool!(self, pool => sqlx::query(sql)
            .bind(endpoint_id)
            .fetch_optional(pool)
            .await?
            .map(|row| -> Result<StoredMessage, sqlx::Error> {
                Ok(StoredMessage {
                    endpoint_id: endpoint_id.to_owned(),
                    position: row.try_get("position")?,
                    ordinal: row.try_get("ordinal")?,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    body: row.try_get("body")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: parse_time(row.try_get("next_attempt_at")?),
                })
            })
            .transpose()?);
        Ok(row)
    }

    /// Records an attempt and what it decided for its message, in one transaction, only when
    /// the message is still as the sender read it (pending, with as many attempts) and, on a
    /// store shared by replicas, the sender still holds `lease`. Answers false, recording
    /// nothing, when not: a replica that lost the lease while it sent (it stalled, and another
    /// replica took the endpoint over and recorded the message since) must not overwrite what
    /// the current holder recorded.
    pub async fn record_webhook_attempt(
        &self,
        message: &StoredMessage,
        attempt: &AttemptRecord,
        fate: MessageFate,
        lease: &str,
    ) -> Result<bool, StoreError> {
        let insert = "INSERT INTO webhook_attempts (endpoint_id, message_id, position, attempt, \
                      attempted_at, status_code, latency_ms, error, replica) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let (state, next_attempt_at) = match fate {
            MessageFate::Delivered => ("delivered", None),
            MessageFate::Failed => ("failed", None),
            MessageFate::RetryAt(at) => ("pending", Some(sortable_time(at))),
        };
        let as_read =
            "UPDATE webhook_messages SET state = $4, attempts = $5, next_attempt_at = $6 \
                       WHERE endpoint_id = $1 AND position = $2 AND ordinal = $3 \
                       AND state = 'pending' AND attempts = $7";
        // On PostgreSQL the lease is a row; on SQLite one process holds every lease.
        let shared = self.is_shared_by_replicas();
        let update = if shared {
            format!(
                "{as_read} AND EXISTS (SELECT 1 FROM order_leases WHERE domain_id = $8 \
                 AND owner = $9 AND expires_at > now())"
            )
        } else {
            as_read.to_owned()
        };
        let recorded = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query(&update)
                .bind(&message.endpoint_id)
                .bind(message.position)
                .bind(message.ordinal)
                .bind(state)
                .bind(attempt.attempt)
                .bind(next_attempt_at.clone())
                .bind(message.attempts);
            if shared {
                query = query.bind(lease).bind(&attempt.replica);
            }
            let updated = query.execute(&mut *tx).await?.rows_affected();
            if updated == 0 {
                tx.rollback().await?;
                false
            } else {
                sqlx::query(insert)
                    .bind(&attempt.endpoint_id)
                    .bind(&attempt.message_id)
                    .bind(attempt.position)
                    .bind(attempt.attempt)
                    .bind(sortable_time(attempt.attempted_at))
                    .bind(attempt.status_code)
                    .bind(attempt.latency_ms)
                    .bind(&attempt.error)
                    .bind(&attempt.replica)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                true
            }
        });
        Ok(recorded)
    }

    /// Whether a replica other than `owner` holds `lease` now (always false on SQLite, where
    /// one process holds them all).
    pub async fn lease_held_by_another(
        &self,
        lease: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(false);
        };
        let sql = "SELECT 1 FROM order_leases WHERE domain_id = $1 AND owner <> $2 \
                   AND expires_at > now()";
        Ok(sqlx::query(sql)
            .bind(lease)
            .bind(owner)
            .fetch_optional(pool)
            .await?
            .is_some())
    }

    /// The endpoint's attempts, newest first: up to `limit` of them before attempt id `before`.
    pub async fn webhook_attempts(
        &self,
        endpoint_id: &str,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AttemptRecord)>, StoreError> {
        let sql = "SELECT id, message_id, position, attempt, attempted_at, status_code, \
                   latency_ms, error, replica FROM webhook_attempts \
                   WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3";
        let rows = on_pool!(self, pool => sqlx::query(sql)
            .bind(endpoint_id)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<(i64, AttemptRecord), sqlx::Error> {
                Ok((row.try_get("id")?, AttemptRecord {
                    endpoint_id: endpoint_id.to_owned(),
                    message_id: row.try_get("message_id")?,
                    position: row.try_get("position")?,
                    attempt: row.try_get("attempt")?,
                    attempted_at: parse_time(row.try_get("attempted_at")?).unwrap_or_default(),
                    status_code: row.try_get("status_code")?,
                    latency_ms: row.try_get("latency_ms")?,
                    error: row.try_get("error")?,
                    replica: row.try_get("replica")?,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?);
        Ok(rows)
    }

    /// How many of the endpoint's messages are in each state: (pending, delivered, failed).
    pub async fn webhook_message_counts(
        &self,
        endpoint_id: &str,
    ) -> Result<(i64, i64, i64), StoreError> {
        let sql = "SELECT \
                   COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
                   COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0) AS delivered, \
                   COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS failed \
                   FROM webhook_messages WHERE endpoint_id = $1";
        Ok(on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(endpoint_id).fetch_one(pool).await?;
            (row.try_get("pending")?, row.try_get("delivered")?, row.try_get("failed")?)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt_by(message: &StoredMessage, replica: &str, status: i64) -> AttemptRecord {
        AttemptRecord {
            endpoint_id: message.endpoint_id.clone(),
            message_id: message.message_id.clone(),
            position: message.position,
            attempt: message.attempts + 1,
            attempted_at: Utc::now(),
            status_code: Some(status),
            latency_ms: 5,
            error: None,
            replica: replica.into(),
        }
    }

    #[tokio::test]
    async fn a_stale_holder_cannot_overwrite_the_result_the_current_holder_recorded() {
        let path = std::env::temp_dir().join(format!("webhooks-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let endpoint = "e1";
        let message = NewMessage {
            message_id: "msg_1".into(),
            message_type: "domain.removed".into(),
            body: "{}".into(),
        };
        let made = EndpointMessages {
            endpoint_id: endpoint.into(),
            position: 7,
            messages: vec![message],
        };
        store
            .join_webhook_feed(endpoint, &[made], 7)
            .await
            .expect("stored");
        let lease = "e1#webhook";
        // Replica A read the message and stalled while sending; its lease lapsed, replica B
        // took over, read the same message, sent it and recorded it delivered.
        let read_by_a = store
            .next_webhook_message(endpoint)
            .await
            .expect("read")
            .expect("one");
        let read_by_b = store
            .next_webhook_message(endpoint)
            .await
            .expect("read")
            .expect("one");
        let recorded = store
            .record_webhook_attempt(
                &read_by_b,
                &attempt_by(&read_by_b, "b", 200),
                MessageFate::Delivered,
                lease,
            )
            .await
            .expect("recorded");
        assert!(recorded, "the current holder's result is recorded");

        // A comes back with its failure: refused, nothing written.
        let retry = MessageFate::RetryAt(Utc::now() + chrono::Duration::seconds(30));
        let recorded = store
            .record_webhook_attempt(&read_by_a, &attempt_by(&read_by_a, "a", 500), retry, lease)
            .await
            .expect("answered");
        assert!(!recorded, "the stale holder's write is refused");
        assert_eq!(
            store.next_webhook_message(endpoint).await.expect("read"),
            None,
            "the message stays delivered, not pending again"
        );
        assert_eq!(
            store
                .webhook_message_counts(endpoint)
                .await
                .expect("counts"),
            (0, 1, 0)
        );
        let attempts = store
            .webhook_attempts(endpoint, i64::MAX, 10)
            .await
            .expect("attempts");
        let replicas: Vec<&str> = attempts.iter().map(|(_, a)| a.replica.as_str()).collect();
        assert_eq!(
            replicas,
            ["b"],
            "only the current holder's attempt is on record"
        );
        let _ = std::fs::remove_file(path);
    }
}
