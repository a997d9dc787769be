//! Keeps the delegation zone of this replica in step with the event feed: the CA may ask any of
//! the zone's nameservers, so every replica serves every open delegated order's values, whoever
//! created the order.
//!
//! At start the zone is filled from the domain views with an open order, then the feed is
//! followed from the views' checkpoint. The views may already be past that checkpoint; replaying
//! events they hold is harmless, since each event sets its domain's entry outright (an order
//! publishes its values, its end withdraws exactly that order's), so the zone ends where the
//! feed does. Commits of any replica wake the follower at once (see `commit_signal`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dns_handling_events::CustomDomainEvent;

use crate::adapters::dns_server::ChallengeZone;
use crate::adapters::store::{FeedRow, Store, StoreError};
use crate::read::feed_follower::{FeedConsumer, FeedFollower, Handed, Handled, Undecodable, Wait};
use crate::read::projector::DOMAIN_VIEWS;
use crate::read::zone_lag;

/// Events read per batch.
const BATCH_EVENTS: u32 = 1_000;

/// The follower's name in `feed_consumer_stuck` and `/readyz`.
const CONSUMER: &str = "zone_follower";

/// Applies one event of `domain_id` to the zone.
pub async fn apply(zone: &ChallengeZone, domain_id: &str, event: &CustomDomainEvent) {
    match event {
        CustomDomainEvent::CertificateRequested { order, .. }
        | CustomDomainEvent::RenewalRequested { order, .. } => zone.publish(domain_id, order).await,
        CustomDomainEvent::CertificateIssued { certificate, .. } => {
            zone.withdraw(domain_id, Some(&certificate.order_id)).await;
        }
        CustomDomainEvent::IssuanceFailed { order_id, .. }
        | CustomDomainEvent::IssuanceTimedOut { order_id, .. }
        | CustomDomainEvent::RenewalFailed {
            order_id: Some(order_id),
            ..
        } => zone.withdraw(domain_id, Some(order_id)).await,
        CustomDomainEvent::DomainRemoved { .. } => zone.withdraw(domain_id, None).await,
        _ => {}
    }
}

/// Fills the zone from the views and returns the feed position to follow from.
pub async fn fill(store: &Store, zone: &ChallengeZone) -> Result<i64, StoreError> {
    // The checkpoint first: the views read next hold at least every event up to it.
    let position = store.checkpoint(DOMAIN_VIEWS).await?;
    for view in store.pending_domain_views().await? {
        if let Some(order) = view.open_order() {
            zone.publish(&view.id, order).await;
        }
    }
    Ok(position)
}

/// Follows the feed after `position` (from [`fill`]) for as long as the process runs. An event
/// it cannot read stops it there, loudly (see [`crate::read::stuck`]): skipping it could leave
/// a value served for good, or never serve one; it reads on once the event decodes.
///
/// It records how far it has applied the feed in `zone_followers` under `replica_id`, after
/// each batch it applies and at every [`zone_lag::HEARTBEAT`] while idle (or stopped at an
/// event): the pollers of every replica read it before telling the CA an order is ready.
pub async fn follow(
    store: Store,
    zone: Arc<ChallengeZone>,
    position: i64,
    fallback_poll: Duration,
    replica_id: String,
) {
    let consumer = ZoneConsumer {
        store: store.clone(),
        zone,
        position,
        fallback_poll,
        replica_id,
        heartbeat: Heartbeat::default(),
    };
    FeedFollower::new(store, consumer).follow().await;
}

/// The delegation zone as a consumer of the feed: its checkpoint is in memory (the zone is
/// filled again from the views at each start), and its row in `zone_followers` says how far
/// it is to the other replicas.
struct ZoneConsumer {
    store: Store,
    zone: Arc<ChallengeZone>,
    /// The last position applied.
    position: i64,
    fallback_poll: Duration,
    replica_id: String,
    heartbeat: Heartbeat,
}

#[async_trait]
impl FeedConsumer for ZoneConsumer {
    type Record = FeedRow;

    fn names(&self) -> Vec<String> {
        vec![CONSUMER.to_owned()]
    }

    fn batch_size(&self) -> u32 {
        BATCH_EVENTS
    }

    fn wait(&self) -> Wait {
        // Woken at the latest at the next heartbeat, which must be written even when idle.
        Wait::ForCommitOrAfter(self.fallback_poll.min(zone_lag::HEARTBEAT))
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        Ok(self.position)
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, FeedRow>>) -> Result<Handled, StoreError> {
        for handed in &rows {
            if let Some(event) = &handed.decoded {
                apply(&self.zone, &handed.row.aggregate_id, event).await;
            }
        }
        if let Some(last) = rows.last() {
            zone_lag::applied(last.row.position);
        }
        Ok(Handled::All)
    }

    async fn save_position(&mut self, position: i64) -> Result<(), StoreError> {
        self.position = position;
        self.heartbeat
            .beat(&self.store, &self.replica_id, position)
            .await;
        Ok(())
    }

    async fn undecodable(&mut self, _position: i64, _why: &str) -> Undecodable {
        Undecodable::StayOnIt
    }
}

/// The follower's last write of its row in `zone_followers`.
#[derive(Debug, Default)]
struct Heartbeat {
    /// The position written and when (`None` before the first write).
    written: Option<(i64, Instant)>,
}

impl Heartbeat {
    /// Writes the row when the position moved or a heartbeat is due, and updates the lag
    /// gauge. A failed write is tried again at the next loop: the row then ages, and other
    /// replicas stop waiting for this one once it is older than [`zone_lag::LIVE_WITHIN`].
    async fn beat(&mut self, store: &Store, replica_id: &str, position: i64) {
        let due = match self.written {
            Some((written, at)) => written != position || at.elapsed() >= zone_lag::HEARTBEAT,
            None => true,
        };
        if !due {
            return;
        }
        if self.written.is_none() {
            if let Err(error) = store.forget_gone_zone_followers(replica_id).await {
                tracing::warn!(%error, "could not forget the zone rows of replicas gone for good");
            }
        }
        match store.record_zone_follower(replica_id, position).await {
            Ok(()) => self.written = Some((position, Instant::now())),
            Err(error) => {
                tracing::warn!(%error, "could not record how far the delegation zone has applied the feed");
            }
        }
        zone_lag::refresh(store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use dns_handling_events::{
        CertificateKeyType, FailureReason, OrderChallenge, OrderDetails, Validation,
    };

    use crate::domain::delegation::DelegationZone;

    const AT: &str = "a1.acme.platform.test.";

    fn zone() -> ChallengeZone {
        let zone = DelegationZone::parse("acme.platform.test").expect("a zone");
        ChallengeZone::new(&zone, &["ns1.platform.test".to_owned()]).expect("a zone")
    }

    fn requested(order_id: &str) -> CustomDomainEvent {
        CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id: order_id.into(),
                order_url: "https://ca.test/order/1".into(),
                names: vec!["shop.test".into()],
                challenges: vec![OrderChallenge {
                    identifier: "shop.test".into(),
                    challenge_url: "https://ca.test/chall/1".into(),
                    challenge_domain: "_acme-challenge.shop.test.".into(),
                    expected_txt_value: format!("value-{order_id}"),
                    delegated_to: Some(AT.into()),
                }],
                account_id: "https://ca.test/acct/1".into(),
                poll_interval_ms: 1000,
                deadline: Utc::now(),
                key_type: CertificateKeyType::EcdsaP256,
                validation: Validation::Delegated,
                delegation_problem: None,
                ca_directory: String::new(),
            },
            requested_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_delegated_request_is_served_until_its_order_fails() {
        let zone = zone();
        apply(&zone, "d1", &requested("o1")).await;
        assert_eq!(zone.values_at(AT).await, ["value-o1"]);
        let failed = CustomDomainEvent::IssuanceFailed {
            order_id: "o1".into(),
            reason: FailureReason::new("challenge_invalid", "refused"),
            failed_at: Utc::now(),
        };
        apply(&zone, "d1", &failed).await;
        assert!(zone.values_at(AT).await.is_empty());
    }

    #[tokio::test]
    async fn replaying_events_the_views_already_hold_ends_where_the_feed_does() {
        let zone = zone();
        let timed_out = CustomDomainEvent::IssuanceTimedOut {
            order_id: "o1".into(),
            deadline: Utc::now(),
            unseen_names: vec![],
            timed_out_at: Utc::now(),
        };
        // Filled from a view that already shows o2 open, then the feed from an older checkpoint.
        apply(&zone, "d1", &requested("o2")).await;
        for event in [requested("o1"), timed_out, requested("o2")] {
            apply(&zone, "d1", &event).await;
        }
        assert_eq!(zone.values_at(AT).await, ["value-o2"]);
    }

    /// A request of `order_id` whose value is served at `a<n>.acme.platform.test.`.
    fn requested_at(order_id: &str, n: u8) -> CustomDomainEvent {
        let mut event = requested(order_id);
        if let CustomDomainEvent::CertificateRequested { order, .. } = &mut event {
            order.challenges[0].delegated_to = Some(format!("a{n}.acme.platform.test."));
        }
        event
    }

    /// A fresh SQLite store, and its path.
    async fn sqlite_store(name: &str) -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("{name}-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        (store, path)
    }

    /// Appends `payload` as the first event of `domain_id`, stored as `event_type` at the
    /// version of a `CertificateRequested`.
    async fn append(store: &Store, domain_id: &str, event_type: &str, payload: &str) {
        let Store::Sqlite(pool) = store else {
            unreachable!("a SQLite store")
        };
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('CustomDomain', $1, 1, $2, $3, $4, '{}')",
        )
        .bind(domain_id)
        .bind(event_type)
        .bind(requested("o").version())
        .bind(payload)
        .execute(pool)
        .await
        .expect("appends");
    }

    #[tokio::test]
    async fn an_undecodable_event_stops_the_follower_before_it_and_nothing_after_it_is_lost() {
        let (store, path) = sqlite_store("undecodable").await;
        let payload = |n| serde_json::to_string(&requested_at(&format!("o{n}"), n)).expect("json");
        append(&store, "d1", "CertificateRequested", &payload(1)).await;
        append(
            &store,
            "d2",
            "FutureEvent",
            r#"{"FutureEvent":{"what":"later"}}"#,
        )
        .await;
        append(&store, "d3", "CertificateRequested", &payload(3)).await;
        let zone = Arc::new(zone());
        let consumer = ZoneConsumer {
            store: store.clone(),
            zone: zone.clone(),
            position: 0,
            fallback_poll: Duration::from_secs(60),
            replica_id: "replica-1".into(),
            heartbeat: Heartbeat::default(),
        };
        let mut follower = FeedFollower::new(store.clone(), consumer);

        let applied = follower.catch_up().await.expect("stays on the event");
        assert_eq!(applied, 1, "the follower's position stays before the event");
        assert_eq!(follower.consumer().position, 1);
        let problem = crate::read::stuck::readiness_problem().expect("reported");
        assert!(problem.contains("zone_follower at position 2"), "{problem}");
        assert!(problem.contains("FutureEvent"), "{problem}");
        assert_eq!(zone.values_at("a1.acme.platform.test.").await, ["value-o1"]);
        assert!(
            zone.values_at("a3.acme.platform.test.").await.is_empty(),
            "nothing after it is applied yet"
        );

        // Once the event reads (here: repaired), the follower goes on from the kept position.
        let Store::Sqlite(pool) = &store else {
            unreachable!("a SQLite store")
        };
        sqlx::query("UPDATE events SET event_type = 'CertificateRequested', payload = $1 WHERE aggregate_id = 'd2'")
            .bind(payload(2))
            .execute(pool)
            .await
            .expect("repaired");
        assert_eq!(follower.catch_up().await.expect("reads on"), 2);
        assert_eq!(follower.consumer().position, 3);
        assert_eq!(zone.values_at("a2.acme.platform.test.").await, ["value-o2"]);
        assert_eq!(zone.values_at("a3.acme.platform.test.").await, ["value-o3"]);
        assert!(crate::read::stuck::readiness_problem()
            .is_none_or(|problem| !problem.contains("zone_follower")));
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn the_follower_records_the_position_it_applied_and_stays_live_while_idle() {
        let path = std::env::temp_dir().join(format!("follower-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let Store::Sqlite(pool) = &store else {
            unreachable!("a SQLite store")
        };
        for sequence in 1..=3 {
            let event = requested(&format!("o{sequence}"));
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) VALUES ('CustomDomain', 'd1', $1, $2, $3, \
                 $4, '{}')",
            )
            .bind(sequence)
            .bind(event.type_name())
            .bind(event.version())
            .bind(serde_json::to_string(&event).expect("serialises"))
            .execute(pool)
            .await
            .expect("appends");
        }
        let head = store.feed_head().await.expect("a head");
        let zone = Arc::new(zone());
        let following = tokio::spawn(follow(
            store.clone(),
            zone,
            0,
            Duration::from_secs(60),
            "replica-1".into(),
        ));
        let live = zone_lag::LIVE_WITHIN;
        let applied = |position| {
            let store = store.clone();
            async move {
                store
                    .zone_followers_behind(position, live)
                    .await
                    .expect("reads")
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while applied(head + 1).await.first().map(|row| row.position) != Some(head) {
            assert!(
                Instant::now() < deadline,
                "the follower never recorded {head}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Idle now: its row must still be renewed, or other replicas would take it for gone.
        sqlx::query("UPDATE zone_followers SET updated_at = '2000-01-01T00:00:00.000000Z'")
            .execute(pool)
            .await
            .expect("ages the row");
        assert!(applied(head + 1).await.is_empty(), "stale");
        // A heartbeat comes within HEARTBEAT of the last write; a loaded machine may delay it
        // a little, never by two more.
        let deadline = Instant::now() + 3 * zone_lag::HEARTBEAT;
        while applied(head + 1).await.is_empty() {
            assert!(Instant::now() < deadline, "never live again: no heartbeat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        following.abort();
        let _ = std::fs::remove_file(path);
    }
}
