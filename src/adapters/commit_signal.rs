//! Wakes the feed followers (`read::feed_follower`: the delegation zone, webhook messages,
//! `GET /events?follow=true` streams) as soon as events are committed, instead of at their
//! next poll.
//!
//! Commits of this process are signalled by the event repository after each append; commits of
//! other replicas arrive through PostgreSQL's `LISTEN`/`NOTIFY` (a trigger on `events` notifies
//! [`CHANNEL`] when the inserting transaction commits, migration 0004). A signal only says "look
//! again": the waiter's own feed position decides what is new, so a signal that carries nothing
//! new costs one query and a lost one costs one poll interval, because every waiter still polls
//! (`FEED_POLL_INTERVAL`) in case notifications do not arrive, e.g. behind a connection pooler
//! that does not pass `LISTEN` through.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::watch;

/// The PostgreSQL notification channel the events trigger notifies.
pub const CHANNEL: &str = "dns_handling_events";

/// How long a lost listening connection waits before connecting again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Counts commit signals; waiters compare what they have seen with it.
static COMMITS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Says that events were committed (in this process or, through the listener, elsewhere).
pub fn committed() {
    COMMITS.send_modify(|count| *count = count.wrapping_add(1));
}

/// Something that waits for commits; sees every commit signalled after it was made.
pub struct CommitWaiter {
    receiver: watch::Receiver<u64>,
}

impl Default for CommitWaiter {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitWaiter {
    /// A waiter that has seen every commit signalled so far.
    pub fn new() -> Self {
        Self {
            receiver: COMMITS.subscribe(),
        }
    }

    /// Returns when a commit was signalled since this waiter last returned (at once if one was
    /// meanwhile), or after `fallback` at the latest. Callers read the feed after it returns, so
    /// a commit signalled while they read makes the next wait return at once: none is missed.
    pub async fn wait(&mut self, fallback: Duration) {
        // The sender is a static and never dropped, so `changed` cannot fail.
        let _ = tokio::time::timeout(fallback, self.receiver.changed()).await;
    }
}

/// Listens on PostgreSQL for commits of every replica and signals them, for as long as the
/// process runs; a lost connection is opened again (and signalled, as commits may have been
/// missed meanwhile).
pub async fn listen_on_postgres(pool: sqlx::PgPool) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    tracing::debug!(channel = CHANNEL, "listening for commits");
                    committed();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => committed(),
                            Ok(None) => {
                                tracing::warn!("commit notifications interrupted; reconnecting");
                                committed();
                            }
                            Err(error) => {
                                tracing::warn!(%error, "commit notifications stopped");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot listen for commit notifications"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect to listen for commits"),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_signalled_before_the_wait_is_not_missed() {
        let mut waiter = CommitWaiter::new();
        committed();
        // With an hour's fallback, only a signal can end this wait (other tests in this process
        // may signal too, which is harmless: a signal means "look again").
        tokio::time::timeout(
            Duration::from_secs(30),
            waiter.wait(Duration::from_secs(3600)),
        )
        .await
        .expect("the signal sent before waiting ends the wait");
    }
}
