//! A process's first audit checkpoint starts from the newest one its key signed, and a walk
//! behind it finds what that start took on trust: signers made again over a real SQLite file,
//! as a restarted process makes its own.

use super::World;
use crate::adapters::store::Store;
use crate::audit::checkpoints::{
    check_log_behind_anchor, sign_checkpoint, AuditSigner, CheckpointError,
};

/// A signer as a restarted process has it: the same key, nothing walked yet.
fn restarted(world: &World) -> AuditSigner {
    AuditSigner::resolve(&world.state.settings).expect("the key beside the database")
}

/// Runs `sql` against the world's SQLite file, as a writer of the database would.
async fn tamper(world: &World, sql: &str) {
    let Store::Sqlite(pool) = &world.state.store else {
        unreachable!("the world's store is SQLite")
    };
    let done = sqlx::query(sql).execute(pool).await.expect("tampered");
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

/// The position of the first event of the log.
async fn first_position(world: &World) -> i64 {
    let events = world.state.store.events_after(0, 1).await.expect("read");
    events.first().expect("an event").position
}

fn assert_refused(outcome: Result<impl std::fmt::Debug, CheckpointError>, why: &str) {
    match outcome {
        Err(CheckpointError::Refused(reason)) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_restarted_signer_hashes_only_what_came_after_its_newest_checkpoint() {
    let world = World::new(1, |_| {}).await;
    world.registered("a.anchor.test").await;
    world.registered("b.anchor.test").await;
    let (first, new) = sign_checkpoint(&world.state.store, &world.state.signer)
        .await
        .expect("signed");
    assert!(new);

    // Rewritten below the checkpoint, keeping the number of events: only a walk from the start
    // can tell. The restarted signer's first checkpoint does not walk there.
    let position = first_position(&world).await;
    tamper(
        &world,
        &format!(
            "UPDATE events SET payload = REPLACE(payload, 'a.anchor.test', 'evil.anchor.test') \
             WHERE position = {position}"
        ),
    )
    .await;
    world.registered("c.anchor.test").await;
    let signer = restarted(&world);
    let (second, new) = sign_checkpoint(&world.state.store, &signer)
        .await
        .expect("signed from the newest checkpoint");
    assert!(new);
    assert_eq!(second.event_count, first.event_count + 1);

    // The walk behind the anchor finds the rewrite, and the process signs no more.
    assert_refused(
        check_log_behind_anchor(&world.state.store, &signer).await,
        "no longer matches its checkpoint",
    );
    world.registered("d.anchor.test").await;
    assert_refused(
        sign_checkpoint(&world.state.store, &signer).await,
        "no longer matches its checkpoint",
    );
}

#[tokio::test]
async fn the_walk_behind_the_newest_checkpoint_of_an_untouched_log_finds_nothing() {
    let world = World::new(1, |_| {}).await;
    world.registered("a.anchor.test").await;
    sign_checkpoint(&world.state.store, &world.state.signer)
        .await
        .expect("signed");
    world.registered("b.anchor.test").await;
    let signer = restarted(&world);
    check_log_behind_anchor(&world.state.store, &signer)
        .await
        .expect("the log matches");
    let (checkpoint, new) = sign_checkpoint(&world.state.store, &signer)
        .await
        .expect("signed");
    assert!(new);
    assert_eq!(checkpoint.event_count, 2);
}

#[tokio::test]
async fn an_event_deleted_below_the_newest_checkpoint_refuses_a_restarted_signer_at_once() {
    let world = World::new(1, |_| {}).await;
    world.registered("a.anchor.test").await;
    world.registered("b.anchor.test").await;
    sign_checkpoint(&world.state.store, &world.state.signer)
        .await
        .expect("signed");
    let position = first_position(&world).await;
    tamper(
        &world,
        &format!("DELETE FROM events WHERE position = {position}"),
    )
    .await;
    assert_refused(
        sign_checkpoint(&world.state.store, &restarted(&world)).await,
        "is 1, where its checkpoint counted 2",
    );
}
