//! `EventRepository`: the cqrs-es repository of whichever database is configured (postgres-es
//! or sqlite-es), which also links every event into its stream's hash chain before storing it,
//! and reads old payload versions through the upcasters.

use cqrs_es::persist::{
    EventUpcaster, PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::Aggregate;
use dns_handling_events::chain::{event_hash, ChainedContent, GENESIS, HASH_KEY, PREV_HASH_KEY};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;

use crate::adapters::store::{EventTable, Store};
use crate::metrics::METRICS;

enum Backend {
    Postgres(PostgresEventRepository),
    Sqlite(SqliteEventRepository),
}

/// An append refused because the event before it has no stored hash to link to.
#[derive(Debug, thiserror::Error)]
#[error(
    "the hash chain of stream {aggregate_id} is broken: event {sequence} has no stored hash, so \
     nothing more is appended to it (dns-handling audit verify shows where it breaks)"
)]
pub struct BrokenChain {
    /// The stream.
    pub aggregate_id: String,
    /// The event whose hash is missing.
    pub sequence: i64,
}

/// The event repository over the configured store.
pub struct EventRepository {
    backend: Backend,
    store: Store,
    table: EventTable,
}

impl EventRepository {
    /// The repository of the domains' log in `store`'s database.
    pub fn new(store: Store) -> Self {
        let backend = match &store {
            Store::Postgres(pool) => Backend::Postgres(PostgresEventRepository::new(pool.clone())),
            Store::Sqlite(pool) => Backend::Sqlite(SqliteEventRepository::new(pool.clone())),
        };
        Self {
            backend,
            store,
            table: EventTable::Events,
        }
    }

    /// The repository of the webhook endpoints' log (`webhook_events`), chained the same way.
    pub fn for_webhooks(store: Store) -> Self {
        Self::beside(store, EventTable::WebhookEvents, "webhook_snapshots")
    }

    /// The repository of the access tokens' log (`token_events`), chained the same way.
    pub fn for_tokens(store: Store) -> Self {
        Self::beside(store, EventTable::TokenEvents, "token_snapshots")
    }

    /// The repository of a log beside the domains', in `table` with its `snapshots`.
    fn beside(store: Store, table: EventTable, snapshots: &str) -> Self {
        let events = table.name();
        let backend = match &store {
            Store::Postgres(pool) => Backend::Postgres(
                PostgresEventRepository::new(pool.clone()).with_tables(events, snapshots),
            ),
            Store::Sqlite(pool) => Backend::Sqlite(
                SqliteEventRepository::new(pool.clone()).with_tables(events, snapshots),
            ),
        };
        Self {
            backend,
            store,
            table,
        }
    }

    /// Adds `prev_hash` and `hash` to each event's metadata. The previous hash of the first
    /// event is read from the store; if another writer appends to the same stream meanwhile,
    /// the store's unique (stream, sequence) key refuses one of the two commits, so a chain
    /// can never fork.
    async fn link(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let mut prev_hash = if first.sequence <= 1 {
            GENESIS.to_owned()
        } else {
            self.store
                .event_hash_in(
                    self.table,
                    &first.aggregate_type,
                    &first.aggregate_id,
                    first.sequence as i64 - 1,
                )
                .await
                .map_err(|e| PersistenceError::ConnectionError(Box::new(e)))?
                .ok_or_else(|| {
                    // Starting the chain again here would hide a broken chain behind a new,
                    // valid-looking one: the append is refused instead.
                    PersistenceError::UnknownError(
                        BrokenChain {
                            aggregate_id: first.aggregate_id.clone(),
                            sequence: first.sequence as i64 - 1,
                        }
                        .into(),
                    )
                })?
        };
        let mut linked = Vec::with_capacity(events.len());
        for event in events {
            let mut event = event.clone();
            if !event.metadata.is_object() {
                event.metadata = Value::Object(serde_json::Map::new());
            }
            let hash = event_hash(
                &prev_hash,
                &ChainedContent {
                    aggregate_type: &event.aggregate_type,
                    aggregate_id: &event.aggregate_id,
                    sequence: event.sequence as u64,
                    event_type: &event.event_type,
                    event_version: &event.event_version,
                    payload: &event.payload,
                    metadata: &event.metadata,
                },
            );
            if let Some(metadata) = event.metadata.as_object_mut() {
                metadata.insert(PREV_HASH_KEY.to_owned(), Value::from(prev_hash.clone()));
                metadata.insert(HASH_KEY.to_owned(), Value::from(hash.clone()));
            }
            prev_hash = hash;
            linked.push(event);
        }
        Ok(linked)
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.backend {
            Backend::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
            Backend::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.backend {
            Backend::Postgres(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Backend::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match &self.backend {
            Backend::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            Backend::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // A command the aggregate took without an event (a health check that found nothing
        // changed, thousands a second on a large platform): nothing to store, no transaction
        // to open, and no commit to wake the feed followers for.
        if events.is_empty() && snapshot_update.is_none() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let linked = self.link(events).await?;
        let result = match &self.backend {
            Backend::Postgres(repo) => repo.persist::<A>(&linked, snapshot_update).await,
            Backend::Sqlite(repo) => repo.persist::<A>(&linked, snapshot_update).await,
        };
        METRICS.event_append(started.elapsed(), result.is_ok());
        if result.is_ok() {
            crate::adapters::commit_signal::committed();
        }
        result
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match &self.backend {
            Backend::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
            Backend::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match &self.backend {
            Backend::Postgres(repo) => repo.stream_all_events::<A>().await,
            Backend::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}

/// Reads stored payloads of older versions as the current version (see
/// `dns_handling_events::upcast`), for the aggregate's event store.
pub struct Upcasters;

impl EventUpcaster for Upcasters {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        dns_handling_events::upcast::needs_upcast(event_type, event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let payload = std::mem::take(&mut event.payload);
        let (payload, version) =
            dns_handling_events::upcast::upcast(&event.event_type, &event.event_version, payload);
        event.payload = payload;
        event.event_version = version;
        event
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::persist::PersistedEventRepository;

    use super::*;
    use crate::domain::aggregate::CustomDomain;

    fn event(sequence: usize) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "d1".into(),
            sequence,
            aggregate_type: "CustomDomain".into(),
            event_type: "DomainRemoved".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"DomainRemoved": {"at": "2026-01-01T00:00:00Z"}}),
            metadata: serde_json::json!({}),
        }
    }

    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("chain-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("store");
        store.migrate().await.expect("migrated");
        (store, path)
    }

    #[tokio::test]
    async fn an_append_after_an_event_without_its_hash_is_refused_instead_of_restarting_the_chain()
    {
        let (store, path) = sqlite_store().await;
        let repository = EventRepository::new(store.clone());
        repository
            .persist::<CustomDomain>(&[event(1)], None)
            .await
            .expect("first event stored");
        assert!(store
            .event_hash("CustomDomain", "d1", 1)
            .await
            .expect("read")
            .is_some());
        if let Store::Sqlite(pool) = &store {
            sqlx::query("UPDATE events SET metadata = '{}' WHERE aggregate_id = 'd1'")
                .execute(pool)
                .await
                .expect("hash removed");
        }
        let error = repository
            .persist::<CustomDomain>(&[event(2)], None)
            .await
            .expect_err("refused");
        assert!(
            error.to_string().contains("event 1 has no stored hash"),
            "{error}"
        );
        let stored = store.domain_history("d1").await.expect("history");
        assert_eq!(stored.len(), 1, "nothing was appended");
        let _ = std::fs::remove_file(path);
    }

    /// What a command that records nothing commits: nothing, without touching the store (closed
    /// here, so that any statement would fail).
    #[tokio::test]
    async fn persisting_no_events_touches_no_store() {
        let (store, path) = sqlite_store().await;
        let repository = EventRepository::new(store.clone());
        if let Store::Sqlite(pool) = &store {
            pool.close().await;
        }
        repository
            .persist::<CustomDomain>(&[], None)
            .await
            .expect("nothing to store, and no statement run");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn an_append_links_to_the_stored_hash_of_the_event_before() {
        let (store, path) = sqlite_store().await;
        let repository = EventRepository::new(store.clone());
        repository
            .persist::<CustomDomain>(&[event(1)], None)
            .await
            .expect("stored");
        repository
            .persist::<CustomDomain>(&[event(2)], None)
            .await
            .expect("stored");
        let history = store.domain_history("d1").await.expect("history");
        assert_eq!(
            history[1].metadata[PREV_HASH_KEY],
            history[0].metadata[HASH_KEY]
        );
        assert!(dns_handling_events::chain::verify_stream("CustomDomain", &history).is_none());
        let _ = std::fs::remove_file(path);
    }
}
