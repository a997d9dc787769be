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

use dns_handling_events::CustomDomainEvent;

use crate::adapters::commit_signal::CommitWaiter;
use crate::adapters::dns_server::ChallengeZone;
use crate::adapters::store::{Store, StoreError};
use crate::read::projector::DOMAIN_VIEWS;
use crate::read::zone_lag;

/// Events read per batch.
const BATCH_EVENTS: u32 = 1_000;

/// How long a failed read waits before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long the follower waits before reading an event it could not read once more.
const UNDECODABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

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
    mut position: i64,
    fallback_poll: Duration,
    replica_id: String,
) {
    let mut waiter = CommitWaiter::new();
    let mut heartbeat = Heartbeat::default();
    loop {
        let batch = match store.projection_batch(position, BATCH_EVENTS).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not read the feed for the delegation zone");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let (applied, undecodable) = apply_batch(&zone, &batch).await;
        if let Some(last) = applied {
            position = last;
            zone_lag::applied(last);
        }
        heartbeat.beat(&store, &replica_id, position).await;
        if let Some((at, error)) = undecodable {
            crate::read::stuck::stopped_at(CONSUMER, at, &error);
            tokio::time::sleep(UNDECODABLE_RETRY_AFTER).await;
            continue;
        }
        crate::read::stuck::reads_on(CONSUMER);
        if batch.len() < BATCH_EVENTS as usize {
            // Woken at the latest at the next heartbeat, which must be written even when idle.
            waiter.wait(fallback_poll.min(zone_lag::HEARTBEAT)).await;
        }
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

/// Applies the batch's events in order up to the first one that does not decode. Answers the
/// position of the last event applied, and the position of the one that stopped it with why.
async fn apply_batch(
    zone: &ChallengeZone,
    batch: &[crate::adapters::store::ProjectionRow],
) -> (Option<i64>, Option<(i64, String)>) {
    let mut applied = None;
    for row in batch {
        match row.decode() {
            Ok(event) => apply(zone, &row.aggregate_id, &event).await,
            Err(error) => {
                let why = format!("{} {}: {error}", row.event_type, row.event_version);
                return (applied, Some((row.position, why)));
            }
        }
        applied = Some(row.position);
    }
    (applied, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use dns_handling_events::{
        CertificateKeyType, FailureReason, OrderChallenge, OrderDetails, Validation,
    };

    use crate::adapters::store::ProjectionRow;
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

    fn row(position: i64, domain_id: &str, event: &CustomDomainEvent) -> ProjectionRow {
        ProjectionRow {
            position,
            aggregate_id: domain_id.into(),
            sequence: position,
            event_type: event.type_name().into(),
            event_version: event.version().into(),
            payload: serde_json::to_string(event).expect("serialises"),
        }
    }

    /// A request of `order_id` whose value is served at `a<n>.acme.platform.test.`.
    fn requested_at(order_id: &str, n: u8) -> CustomDomainEvent {
        let mut event = requested(order_id);
        if let CustomDomainEvent::CertificateRequested { order, .. } = &mut event {
            order.challenges[0].delegated_to = Some(format!("a{n}.acme.platform.test."));
        }
        event
    }

    #[tokio::test]
    async fn an_undecodable_event_stops_the_follower_before_it_and_nothing_after_it_is_lost() {
        let zone = zone();
        let mut unreadable = row(2, "d2", &requested_at("o2", 2));
        unreadable.event_type = "FutureEvent".into();
        unreadable.payload = r#"{"FutureEvent":{"what":"a later release's event"}}"#.into();
        let batch = [
            row(1, "d1", &requested_at("o1", 1)),
            unreadable,
            row(3, "d3", &requested_at("o3", 3)),
        ];

        let (applied, stopped) = apply_batch(&zone, &batch).await;
        assert_eq!(
            applied,
            Some(1),
            "the follower's position stays before the event"
        );
        let (at, why) = stopped.expect("stopped");
        assert_eq!(at, 2);
        assert!(why.contains("FutureEvent"), "{why}");
        assert_eq!(zone.values_at("a1.acme.platform.test.").await, ["value-o1"]);
        assert!(
            zone.values_at("a3.acme.platform.test.").await.is_empty(),
            "nothing after it is applied yet"
        );

        // Once the event reads (here: repaired), the batch from the kept position goes through.
        let batch = [
            row(2, "d2", &requested_at("o2", 2)),
            row(3, "d3", &requested_at("o3", 3)),
        ];
        let (applied, stopped) = apply_batch(&zone, &batch).await;
        assert_eq!((applied, stopped), (Some(3), None));
        assert_eq!(zone.values_at("a2.acme.platform.test.").await, ["value-o2"]);
        assert_eq!(zone.values_at("a3.acme.platform.test.").await, ["value-o3"]);
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
        tokio::time::sleep(zone_lag::HEARTBEAT + Duration::from_millis(500)).await;
        assert_eq!(
            applied(head + 1).await.len(),
            1,
            "live again after a heartbeat"
        );
        following.abort();
        let _ = std::fs::remove_file(path);
    }
}
