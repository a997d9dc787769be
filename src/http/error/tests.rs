//! What each error answers: its status, its `Retry-After`, what the client reads, and what
//! stays in the log.

use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use cqrs_es::CqrsFramework;

use super::*;
use crate::adapters::event_repository::EventRepository;
use crate::adapters::store::{is_unreachable, Store};
use crate::domain::aggregate::{CustomDomain, CustomDomainCommand};
use crate::domain::domain_name::DomainName;

fn refused() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

fn disk() -> std::io::Error {
    std::io::Error::other("no space left on the disk")
}

/// Status, `Retry-After` and `error` of the answer an error gives.
async fn answer(error: ApiError) -> (u16, Option<String>, String) {
    let response = error.error_response();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let message = body["error"].as_str().expect("error").to_owned();
    (status, retry_after, message)
}

#[test]
fn only_errors_that_mean_an_unreachable_database_are_unavailable() {
    for unreachable in [
        sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed,
        refused(),
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        sqlx::Error::Tls("handshake failed".into()),
    ] {
        assert!(is_unreachable(&unreachable), "{unreachable:?}");
        assert!(StoreError::Database(unreachable).is_unavailable());
    }
    for fault in [
        sqlx::Error::RowNotFound,
        sqlx::Error::Protocol("unexpected message".into()),
        sqlx::Error::ColumnNotFound("payload".into()),
        sqlx::Error::Decode("not text".into()),
        sqlx::Error::Configuration("bad URL".into()),
        sqlx::Error::WorkerCrashed,
    ] {
        assert!(!is_unreachable(&fault), "{fault:?}");
        assert!(!StoreError::Database(fault).is_unavailable());
    }
    let shared = std::sync::Arc::new(StoreError::Database(sqlx::Error::PoolTimedOut));
    assert!(StoreError::Shared(shared).is_unavailable());
    assert!(!StoreError::io("cannot open the lock file", disk()).is_unavailable());
    assert!(!StoreError::Locked("another process".into()).is_unavailable());
}

#[tokio::test]
async fn an_unreachable_store_answers_503_with_retry_after_and_other_failures_500() {
    let (status, retry_after, message) =
        answer(StoreError::Database(sqlx::Error::PoolTimedOut).into()).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
    assert!(
        message == "the store is unavailable; retry in a few seconds",
        "{message}"
    );
    // Through the key vault and the ACME client too.
    let vault = VaultError::Store(StoreError::Database(refused()));
    assert_eq!(answer(vault.into()).await.0, 503);
    let shared = std::sync::Arc::new(StoreError::Database(refused()));
    let acme = AcmeError::Vault(VaultError::Store(StoreError::Shared(shared)));
    assert_eq!(answer(acme.into()).await.0, 503);

    let (status, retry_after, _) =
        answer(StoreError::Database(sqlx::Error::RowNotFound).into()).await;
    assert_eq!((status, retry_after), (500, None));
    let acme = AcmeError::Vault(VaultError::Store(StoreError::io("disk", disk())));
    assert_eq!(answer(acme.into()).await.0, 500);
}

#[tokio::test]
async fn command_errors_wrapping_an_unreachable_database_answer_503() {
    // As postgres-es and sqlite-es box a timed-out pool, and as our EventRepository boxes
    // a StoreError.
    for error in [
        AggregateError::<DomainError>::UnexpectedError(Box::new(sqlx::Error::PoolTimedOut)),
        AggregateError::DatabaseConnectionError(Box::new(refused())),
        AggregateError::DatabaseConnectionError(Box::new(StoreError::Database(
            sqlx::Error::PoolClosed,
        ))),
    ] {
        let (status, retry_after, _) = answer(error.into()).await;
        assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
    }
    for error in [
        AggregateError::<DomainError>::UnexpectedError(Box::new(sqlx::Error::RowNotFound)),
        AggregateError::DatabaseConnectionError(Box::new(StoreError::io("disk", disk()))),
        AggregateError::UnexpectedError("something else".into()),
    ] {
        assert_eq!(answer(error.into()).await.0, 500);
    }
}

/// A real SQLite store whose every connection is taken: what the service's command and query
/// paths return when no connection comes within `STORE_TIMEOUT`, and how fast.
#[tokio::test]
async fn a_store_without_a_free_connection_answers_503_after_its_store_timeout() {
    let path = std::env::temp_dir().join(format!("error-test-{}.db", uuid::Uuid::new_v4()));
    let timeout = Duration::from_millis(200);
    let store = Store::connect_with(&format!("sqlite://{}", path.display()), timeout)
        .await
        .expect("connects");
    store.migrate().await.expect("migrates");
    let Store::Sqlite(pool) = &store else {
        unreachable!("a SQLite URL")
    };
    let mut held = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        held.push(pool.acquire().await.expect("a connection"));
    }

    let started = Instant::now();
    let error = store.domain_view("d").await.expect_err("no connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited the STORE_TIMEOUT only"
    );
    assert!(error.is_unavailable(), "{error}");
    assert_eq!(answer(error.into()).await.0, 503);

    // The command side: sqlite-es loading the aggregate...
    let event_store = PersistedEventStore::new_event_store(EventRepository::new(store.clone()));
    let cqrs = CqrsFramework::<CustomDomain, _>::new(event_store, vec![], Default::default());
    let command = CustomDomainCommand::RegisterDomain {
        domain_name: DomainName::parse("outage.example.com").expect("valid name"),
        verification_token: "token".into(),
        verification_record_name: "_acme-challenge.outage.example.com.".into(),
        alt_names: Default::default(),
        tenant: None,
        at: chrono::Utc::now(),
    };
    let error = cqrs.execute("d", command).await.expect_err("no connection");
    assert!(
        matches!(error, AggregateError::UnexpectedError(_)),
        "{error:?}"
    );
    assert_eq!(answer(error.into()).await.0, 503);
    // ...and our EventRepository reading the hash to chain a later event to.
    let event = SerializedEvent {
        aggregate_id: "d".into(),
        sequence: 2,
        aggregate_type: dns_handling_events::AGGREGATE_TYPE.into(),
        event_type: "DomainVerified".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({}),
        metadata: serde_json::json!({}),
    };
    let error: AggregateError<DomainError> = EventRepository::new(store.clone())
        .persist::<CustomDomain>(&[event], None)
        .await
        .expect_err("no connection")
        .into();
    assert!(
        matches!(error, AggregateError::DatabaseConnectionError(_)),
        "{error:?}"
    );
    assert_eq!(answer(error.into()).await.0, 503);

    drop(held);
    assert!(store.domain_view("d").await.is_ok(), "connections are back");
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A store failure's own words (here a statement the database did not understand, naming
/// a table) are for the log: the client reads a fixed text and the request id.
#[tokio::test]
async fn a_store_failure_s_text_never_reaches_the_client() {
    let internal = || {
        ApiError::from(StoreError::Database(sqlx::Error::Protocol(
            "unexpected message from table secret_keys".into(),
        )))
    };
    let (status, _, message) = answer(internal()).await;
    assert_eq!(status, 500);
    assert_eq!(message, "internal error");
    let (_, _, message) = crate::http::observe::with_request_id("req-7", answer(internal())).await;
    assert_eq!(message, "internal error; request id req-7");

    let unavailable = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
    let (status, _, message) = answer(unavailable).await;
    assert_eq!(status, 503);
    assert!(!message.contains("pool timed out"), "{message}");

    let acme = AcmeError::Vault(VaultError::Store(StoreError::Database(
        sqlx::Error::ColumnNotFound("sealed_private_key".into()),
    )));
    let (status, _, message) = answer(acme.into()).await;
    assert_eq!(status, 500);
    assert!(!message.contains("sealed_private_key"), "{message}");
}

/// What an internal answer hides from the client stays in its `source` chain, down to the
/// database's own error, for the log.
#[test]
fn the_cause_of_an_internal_error_is_kept_in_its_source_chain() {
    fn causes(error: &dyn std::error::Error) -> Vec<&(dyn std::error::Error + 'static)> {
        std::iter::successors(error.source(), |cause| cause.source()).collect()
    }
    let error = ApiError::from(StoreError::Database(sqlx::Error::RowNotFound));
    assert!(
        causes(&error)
            .iter()
            .any(|cause| matches!(cause.downcast_ref(), Some(sqlx::Error::RowNotFound))),
        "{error:?}"
    );
    let error = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
    assert!(
        causes(&error)
            .iter()
            .any(|cause| matches!(cause.downcast_ref(), Some(sqlx::Error::PoolTimedOut))),
        "{error:?}"
    );
    let error = ApiError::from(AcmeError::Vault(VaultError::Store(StoreError::io(
        "disk",
        disk(),
    ))));
    assert!(
        causes(&error)
            .iter()
            .any(|cause| cause.downcast_ref::<std::io::Error>().is_some()),
        "{error:?}"
    );
    assert!(
        error_chain(&error).ends_with("no space left on the disk"),
        "{}",
        error_chain(&error)
    );
}

/// A cause its error already tells (`"database error: {0}"`, an ACME failure naming why) is
/// logged once, and the causes under it still are.
#[test]
fn the_log_tells_a_cause_its_error_already_tells_once() {
    let error = ApiError::from(StoreError::Database(sqlx::Error::RowNotFound));
    let chain = error_chain(&error);
    let told = sqlx::Error::RowNotFound.to_string();
    assert_eq!(chain.matches(&told).count(), 1, "{chain}");

    let error = ApiError::from(AcmeError::unreachable(
        "no connection to the CA could be made",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    ));
    let chain = error_chain(&error);
    assert_eq!(
        chain,
        "ACME failure: ACME server unreachable: no connection to the CA could be made: \
         connection refused",
        "{chain}"
    );
}
