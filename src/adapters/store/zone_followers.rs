//! How far each replica's delegation-zone follower has applied the event feed (migration
//! 0013), and where in the feed a delegated order was opened: together they tell a poller
//! whether every live replica's nameserver serves its order's values yet.
//!
//! A row's time is the database's clock on PostgreSQL (`now()`, so replicas' clocks do not
//! matter), the one process's clock on SQLite.

use std::time::Duration;

use chrono::Utc;
use dns_handling_events::{CustomDomainEvent, AGGREGATE_TYPE};
use sqlx::Row;

use super::{sortable_time, FeedRow, Store, StoreError};

/// A live replica whose zone follower has not applied the feed up to a position yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaggingFollower {
    /// The replica (`REPLICA_ID`, or the id it made up at start).
    pub replica_id: String,
    /// The last feed position its follower applied.
    pub position: i64,
}

/// Request events read back per look-up of an order's opening: the order polled is almost
/// always the domain's latest request, so one row answers; a few more cover a request that a
/// newer one superseded meanwhile (its poller stops at its next command anyway).
const REQUESTS_READ: i64 = 8;

impl Store {
    /// Records that `replica_id`'s zone follower has applied the feed up to `position`, now.
    pub async fn record_zone_follower(
        &self,
        replica_id: &str,
        position: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO zone_followers (replica_id, position, updated_at) \
                     VALUES ($1, $2, now()) ON CONFLICT (replica_id) DO UPDATE \
                     SET position = excluded.position, updated_at = excluded.updated_at",
                )
                .bind(replica_id)
                .bind(position)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO zone_followers (replica_id, position, updated_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (replica_id) DO UPDATE \
                     SET position = excluded.position, updated_at = excluded.updated_at",
                )
                .bind(replica_id)
                .bind(position)
                .bind(sortable_time(Utc::now()))
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes the rows of replicas gone for good, when `replica_id`'s follower starts: on
    /// PostgreSQL those not written for a day (a replica without `REPLICA_ID` gets a new id at
    /// each start, so its old rows would pile up); on SQLite every other row, since one process
    /// holds the database (`lock_sqlite_exclusively`) and its previous run's row would
    /// otherwise hold delegated orders back for the live window after a restart.
    pub async fn forget_gone_zone_followers(&self, replica_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "DELETE FROM zone_followers WHERE replica_id <> $1 \
                     AND updated_at < now() - interval '1 day'",
                )
                .bind(replica_id)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query("DELETE FROM zone_followers WHERE replica_id <> $1")
                    .bind(replica_id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The replicas whose follower wrote its row within `live_within` (live) and has not
    /// applied the feed up to `position`. A replica whose row is older is taken for gone
    /// (stopped, or cut off from the database, so it answers nobody from a current zone
    /// either): waiting for it would hold every delegated order until it came back.
    pub async fn zone_followers_behind(
        &self,
        position: i64,
        live_within: Duration,
    ) -> Result<Vec<LaggingFollower>, StoreError> {
        let rows = match self {
            Store::Postgres(pool) => sqlx::query(
                "SELECT replica_id, position FROM zone_followers WHERE position < $1 \
                     AND updated_at > now() - make_interval(secs => $2) ORDER BY replica_id",
            )
            .bind(position)
            .bind(live_within.as_secs_f64())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("replica_id")?, row.try_get("position")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?,
            Store::Sqlite(pool) => {
                let since = Utc::now()
                    - chrono::Duration::from_std(live_within)
                        .unwrap_or_else(|_| chrono::Duration::days(1));
                sqlx::query(
                    "SELECT replica_id, position FROM zone_followers WHERE position < $1 \
                     AND updated_at > $2 ORDER BY replica_id",
                )
                .bind(position)
                .bind(sortable_time(since))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("replica_id")?, row.try_get("position")?)))
                .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(replica_id, position)| LaggingFollower {
                replica_id,
                position,
            })
            .collect())
    }

    /// The feed position of the `CertificateRequested` or `RenewalRequested` event that opened
    /// `order_id` of the domain (`None` when the domain's latest requests do not include it).
    /// Through the primary key (the domain's stream, newest first), a few rows at most.
    pub async fn order_request_position(
        &self,
        domain_id: &str,
        order_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT position, aggregate_id, sequence, event_type, event_version, \
                   CAST(payload AS TEXT) AS payload FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 \
                   AND event_type IN ('CertificateRequested', 'RenewalRequested') \
                   ORDER BY sequence DESC LIMIT $3";
        let rows = on_pool!(self, pool => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .bind(domain_id)
            .bind(REQUESTS_READ)
            .fetch_all(pool)
            .await?
            .iter()
            .map(FeedRow::read)
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        for row in rows {
            match row.decode()? {
                CustomDomainEvent::CertificateRequested { order, .. }
                | CustomDomainEvent::RenewalRequested { order, .. }
                    if order.order_id == order_id =>
                {
                    return Ok(Some(row.position));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns_handling_events::{CertificateKeyType, OrderDetails, RenewalReason, Validation};

    /// A migrated store on a fresh SQLite file, and the file's path (for removing it).
    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("zone-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        (store, path)
    }

    fn order(order_id: &str) -> OrderDetails {
        OrderDetails {
            order_id: order_id.into(),
            order_url: format!("https://ca.test/order/{order_id}"),
            names: vec!["shop.test".into()],
            challenges: vec![],
            account_id: "https://ca.test/acct/1".into(),
            poll_interval_ms: 1000,
            deadline: Utc::now(),
            key_type: CertificateKeyType::EcdsaP256,
            validation: Validation::Delegated,
            delegation_problem: None,
            ca_directory: String::new(),
        }
    }

    /// Appends `event` to the domain's stream as the event repository does (the trigger gives
    /// it the next feed position); answers that position.
    async fn append(
        store: &Store,
        domain_id: &str,
        sequence: i64,
        event: &CustomDomainEvent,
    ) -> i64 {
        let Store::Sqlite(pool) = store else {
            unreachable!("a SQLite store")
        };
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, '{}')",
        )
        .bind(AGGREGATE_TYPE)
        .bind(domain_id)
        .bind(sequence)
        .bind(event.type_name())
        .bind(event.version())
        .bind(serde_json::to_string(event).expect("serialises"))
        .execute(pool)
        .await
        .expect("appends");
        store.feed_head().await.expect("a head")
    }

    #[tokio::test]
    async fn only_live_replicas_whose_zone_has_not_applied_the_position_are_waited_for() {
        let (store, path) = sqlite_store().await;
        store
            .record_zone_follower("current", 10)
            .await
            .expect("records");
        store
            .record_zone_follower("behind", 5)
            .await
            .expect("records");
        store
            .record_zone_follower("gone", 3)
            .await
            .expect("records");
        // "gone" stopped writing its heartbeat a minute ago.
        let Store::Sqlite(pool) = &store else {
            unreachable!()
        };
        sqlx::query("UPDATE zone_followers SET updated_at = $1 WHERE replica_id = 'gone'")
            .bind(sortable_time(Utc::now() - chrono::Duration::minutes(1)))
            .execute(pool)
            .await
            .expect("ages the row");
        let live = Duration::from_secs(10);

        let behind = store.zone_followers_behind(8, live).await.expect("reads");
        assert_eq!(
            behind,
            [LaggingFollower {
                replica_id: "behind".into(),
                position: 5
            }],
            "the live replica behind position 8, not the stale one nor the current one"
        );
        assert!(
            store
                .zone_followers_behind(5, live)
                .await
                .expect("reads")
                .is_empty(),
            "a replica that applied exactly the order's event serves it"
        );
        store
            .record_zone_follower("behind", 9)
            .await
            .expect("records");
        assert!(store
            .zone_followers_behind(8, live)
            .await
            .expect("reads")
            .is_empty());
        // A heartbeat makes a stopped replica live again: waited for once more.
        store
            .record_zone_follower("gone", 3)
            .await
            .expect("records");
        assert_eq!(
            store
                .zone_followers_behind(8, live)
                .await
                .expect("reads")
                .len(),
            1
        );

        // A SQLite database has one process: at its start, the rows of earlier runs go.
        store
            .forget_gone_zone_followers("current")
            .await
            .expect("forgets");
        let left = store
            .zone_followers_behind(i64::MAX, live)
            .await
            .expect("reads");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].replica_id, "current");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn an_orders_request_is_found_at_its_feed_position_among_its_domains_events() {
        let (store, path) = sqlite_store().await;
        let requested = CustomDomainEvent::CertificateRequested {
            order: order("o1"),
            requested_at: Utc::now(),
        };
        let renewal = CustomDomainEvent::RenewalRequested {
            order: order("o2"),
            reason: RenewalReason::Manual,
            renews_certificate_id: "c1".into(),
            replaces: None,
            requested_at: Utc::now(),
        };
        let first = append(&store, "d1", 1, &requested).await;
        let other_domain = append(&store, "d2", 1, &renewal).await;
        let second = append(&store, "d1", 2, &renewal).await;
        assert!(first < other_domain && other_domain < second);

        let at = |domain: &'static str, order: &'static str| {
            let store = store.clone();
            async move {
                store
                    .order_request_position(domain, order)
                    .await
                    .expect("reads")
            }
        };
        assert_eq!(at("d1", "o1").await, Some(first));
        assert_eq!(at("d1", "o2").await, Some(second));
        assert_eq!(at("d2", "o2").await, Some(other_domain));
        assert_eq!(at("d2", "o1").await, None);
        let _ = std::fs::remove_file(path);
    }
}
