//! The one loop that follows the global feed, for every consumer of it: the projector, the
//! delegation zone, webhook messages and `GET /events?follow=true` streams.
//!
//! A round reads a batch after the consumer's position, decodes its rows in order up to the
//! first one that does not decode, hands the decoded ones over, and lets the consumer store
//! where it now stands; then, when the batch was not full, it waits for a commit (of any
//! replica, see `commit_signal`) or a timer. What differs between consumers is theirs to say
//! ([`FeedConsumer`]): where their checkpoint lives, what they do with a batch, and what they
//! do with an event they cannot read: stay on it loudly (see [`crate::read::stuck`]), so that
//! nothing after it is lost, or stop with an error.
//!
//! A full batch means more may follow: the next batch is read while the consumer handles this
//! one, which is what makes a replay fast.

use std::time::Duration;

use async_trait::async_trait;
use dns_handling_events::feed::FeedEvent;
use dns_handling_events::CustomDomainEvent;

use crate::adapters::commit_signal::CommitWaiter;
use crate::adapters::store::{FeedRow, Store, StoreError};
use crate::tasks::AbortOnDrop;

/// How long a follower waits after a failed read or a failed handling before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a follower that stays on an event it cannot read waits before reading it again.
const UNDECODABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// A row of the feed as a consumer reads it, and what it decodes into.
#[async_trait]
pub trait FeedRecord: Sized + Send + Sync + 'static {
    /// What a row decodes into.
    type Decoded: Send;

    /// Up to `limit` rows after `position`, in feed order.
    async fn read(store: Store, position: i64, limit: u32) -> Result<Vec<Self>, StoreError>;

    /// The row's feed position.
    fn position(&self) -> i64;

    /// Decodes the row; the error says why it cannot be.
    fn decode(&self) -> Result<Self::Decoded, String>;
}

#[async_trait]
impl FeedRecord for FeedRow {
    type Decoded = CustomDomainEvent;

    async fn read(store: Store, position: i64, limit: u32) -> Result<Vec<Self>, StoreError> {
        store.feed_batch(position, limit).await
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn decode(&self) -> Result<CustomDomainEvent, String> {
        FeedRow::decode(self)
            .map_err(|error| format!("{} {}: {error}", self.event_type, self.event_version))
    }
}

/// A feed event as `GET /events` sends it: it "decodes" into its NDJSON line.
#[async_trait]
impl FeedRecord for FeedEvent {
    type Decoded = Vec<u8>;

    async fn read(store: Store, position: i64, limit: u32) -> Result<Vec<Self>, StoreError> {
        store.events_after(position, limit).await
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn decode(&self) -> Result<Vec<u8>, String> {
        let mut line = serde_json::to_vec(self).map_err(|error| error.to_string())?;
        line.push(b'\n');
        Ok(line)
    }
}

/// One row handed to a consumer: decoded, or passed over undecoded when the consumer does not
/// read rows of its kind ([`FeedConsumer::reads`]).
pub struct Handed<'a, R: FeedRecord> {
    /// The row as read.
    pub row: &'a R,
    /// What it decoded into (`None`: passed over).
    pub decoded: Option<R::Decoded>,
}

/// What a consumer made of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Every row handed over is done with.
    All,
    /// Done up to the row before `position`, which it cannot read (`why`): treated as an event
    /// that does not decode.
    StoppedAt {
        /// The position of the row it stopped at.
        position: i64,
        /// Why it cannot read it.
        why: String,
    },
    /// The consumer wants nothing more (a stream whose client left, or that sent its limit).
    Finished,
}

/// What a consumer does with an event it cannot read.
#[derive(Debug)]
pub enum Undecodable {
    /// Stays on it (its position just before it), says so (`feed_consumer_stuck`, `/readyz`),
    /// and reads it again a little later: once it decodes, nothing after it was lost.
    StayOnIt,
    /// Stops following, with this error.
    Stop(StoreError),
}

/// How a caught-up consumer waits for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until any replica commits, or this long at most.
    ForCommitOrAfter(Duration),
    /// This long, then from its stored checkpoint again (a consumer that repairs what the
    /// commits' own path missed: its checkpoint is shared, so another replica may have moved
    /// it, or an operator reset it, meanwhile).
    After(Duration),
    /// It does not: caught up, it is finished (a stream that does not follow).
    Ends,
}

/// A consumer of the feed: where it stands, what it does with what it reads.
#[async_trait]
pub trait FeedConsumer: Send {
    /// The rows it reads.
    type Record: FeedRecord;

    /// The names it is reported under while it stays on an event it cannot read.
    fn names(&self) -> Vec<String>;

    /// Rows per read.
    fn batch_size(&self) -> u32;

    /// How it waits once caught up.
    fn wait(&self) -> Wait;

    /// Where it stands: the position of the last event it is done with (its checkpoint).
    async fn load_position(&mut self) -> Result<i64, StoreError>;

    /// Whether it decodes this row; a row it does not is handed over undecoded.
    fn reads(&self, _row: &Self::Record) -> bool {
        true
    }

    /// Takes the decoded rows of a batch, in feed order.
    async fn handle(&mut self, rows: Vec<Handed<'_, Self::Record>>) -> Result<Handled, StoreError>;

    /// Stores where it stands, after every round (also when it did not move: a heartbeat may
    /// be due).
    async fn save_position(&mut self, position: i64) -> Result<(), StoreError>;

    /// What it does with the event at `position`, which it cannot read.
    async fn undecodable(&mut self, position: i64, why: &str) -> Undecodable;

    /// Whether to try again after `error` (a failed read or handling), from its checkpoint.
    async fn failed(&mut self, _error: &StoreError) -> bool {
        true
    }

    /// Lets work it still has in flight land (a write of the last batch), before the follower
    /// waits or returns.
    async fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How one round ended.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// The batch was full: more may follow at once.
    More,
    /// The feed is read to its end.
    CaughtUp,
    /// It stays on an event it cannot read.
    Stuck,
    /// The consumer is finished.
    Finished,
}

/// A batch read ahead: the position and size it was read with, and the read.
type ReadAhead<R> = (i64, u32, AbortOnDrop<Result<Vec<R>, StoreError>>);

/// Follows the feed for one consumer.
pub struct FeedFollower<C: FeedConsumer> {
    store: Store,
    consumer: C,
    /// The last position the consumer is done with (`None` until loaded).
    position: Option<i64>,
    /// The next batch, read ahead from the position it is keyed by.
    ahead: Option<ReadAhead<C::Record>>,
    /// Rows handed over and done with so far.
    handed: u64,
    /// The names reported stuck now.
    stuck: Vec<String>,
}

impl<C: FeedConsumer> FeedFollower<C> {
    /// A follower of `store`'s feed for `consumer`, from its checkpoint.
    pub fn new(store: Store, consumer: C) -> Self {
        Self {
            store,
            consumer,
            position: None,
            ahead: None,
            handed: 0,
            stuck: Vec::new(),
        }
    }

    /// The consumer.
    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    /// The consumer, to change between catching up and following.
    pub fn consumer_mut(&mut self) -> &mut C {
        &mut self.consumer
    }

    /// Reads until the end of the feed (or until the consumer stays on an event or is
    /// finished); answers how many rows it handed over. A failed read, or a consumer that
    /// stops at an event, ends it with the error, after the consumer's work in flight landed.
    pub async fn catch_up(&mut self) -> Result<u64, StoreError> {
        let before = self.handed;
        loop {
            match self.round().await {
                Ok(Round::More) => continue,
                Ok(_) => break,
                Err(error) => {
                    let _ = self.consumer.flush().await;
                    return Err(error);
                }
            }
        }
        self.consumer.flush().await?;
        Ok(self.handed - before)
    }

    /// Follows the feed until the consumer is finished: failures are logged and tried again.
    pub async fn follow(mut self) {
        // Made before the first read, so a commit between a read and the wait is not missed.
        let mut commits = CommitWaiter::new();
        loop {
            let round = self.round().await;
            match round {
                Ok(Round::More) => continue,
                Ok(Round::Finished) => {
                    let _ = self.consumer.flush().await;
                    return;
                }
                Ok(Round::Stuck) => {
                    self.flush_or_warn().await;
                    tokio::time::sleep(UNDECODABLE_RETRY_AFTER).await;
                }
                Ok(Round::CaughtUp) => {
                    self.flush_or_warn().await;
                    match self.consumer.wait() {
                        Wait::ForCommitOrAfter(longest) => commits.wait(longest).await,
                        Wait::After(interval) => {
                            tokio::time::sleep(interval).await;
                            self.position = None;
                            self.ahead = None;
                        }
                        Wait::Ends => return,
                    }
                }
                Err(error) => {
                    let _ = self.consumer.flush().await;
                    if !self.consumer.failed(&error).await {
                        return;
                    }
                    let names = self.consumer.names().join(", ");
                    tracing::warn!(consumer = %names, %error, "a feed follower failed; trying again");
                    // Read again from the checkpoint: the consumer's in-memory state may be
                    // ahead of what it stored.
                    self.position = None;
                    self.ahead = None;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    async fn flush_or_warn(&mut self) {
        if let Err(error) = self.consumer.flush().await {
            tracing::warn!(%error, "a feed consumer's write failed; it reads again");
            self.position = None;
            self.ahead = None;
        }
    }

    /// One batch: read, decode, hand over, save the position.
    async fn round(&mut self) -> Result<Round, StoreError> {
        let position = match self.position {
            Some(position) => position,
            None => {
                let loaded = self.consumer.load_position().await?;
                self.position = Some(loaded);
                loaded
            }
        };
        let limit = self.consumer.batch_size();
        let batch = match self.ahead.take() {
            Some((from, size, read)) if from == position && size == limit => read
                .await
                .map_err(|e| StoreError::other("a read of the feed failed", e))??,
            _ => C::Record::read(self.store.clone(), position, limit).await?,
        };
        let full = batch.len() >= limit as usize;
        if let Some(last) = batch.last().filter(|_| full) {
            let (store, from) = (self.store.clone(), last.position());
            let read = tokio::spawn(C::Record::read(store, from, limit));
            self.ahead = Some((from, limit, AbortOnDrop(read)));
        }
        let (rows, undecodable) = decode_up_to_failure(&batch, |row| self.consumer.reads(row));
        let count = rows.len();
        let mut done = rows.last().map_or(position, |handed| handed.row.position());
        let mut stopped = undecodable;
        let mut finished = false;
        if count > 0 {
            match self.consumer.handle(rows).await? {
                Handled::All => {}
                Handled::StoppedAt { position: at, why } => {
                    done = batch
                        .iter()
                        .map(FeedRecord::position)
                        .take_while(|p| *p < at)
                        .last()
                        .unwrap_or(position);
                    stopped = Some((at, why));
                }
                Handled::Finished => finished = true,
            }
        }
        self.handed += batch
            .iter()
            .take_while(|row| row.position() <= done)
            .count() as u64;
        self.consumer.save_position(done).await?;
        if done != position {
            self.position = Some(done);
        }
        if finished {
            return Ok(Round::Finished);
        }
        if let Some((at, why)) = stopped {
            self.ahead = None;
            return match self.consumer.undecodable(at, &why).await {
                Undecodable::StayOnIt => {
                    self.mark_stuck(at, &why);
                    Ok(Round::Stuck)
                }
                Undecodable::Stop(error) => Err(error),
            };
        }
        self.reads_on();
        Ok(if full { Round::More } else { Round::CaughtUp })
    }

    /// Reports the consumer's names stuck at `position`; names it no longer has are cleared.
    fn mark_stuck(&mut self, position: i64, why: &str) {
        let names = self.consumer.names();
        for gone in self.stuck.iter().filter(|name| !names.contains(name)) {
            crate::read::stuck::reads_on(gone);
        }
        for name in &names {
            crate::read::stuck::stopped_at(name, position, why);
        }
        self.stuck = names;
    }

    fn reads_on(&mut self) {
        for name in self.stuck.drain(..) {
            crate::read::stuck::reads_on(&name);
        }
    }
}

impl<C: FeedConsumer> Drop for FeedFollower<C> {
    /// A follower that no longer runs here is not stuck here.
    fn drop(&mut self) {
        self.reads_on();
    }
}

/// The rows of `batch` in order, decoded when `reads` says so, up to the first that does not
/// decode; with that one's position and why.
fn decode_up_to_failure<R: FeedRecord>(
    batch: &[R],
    reads: impl Fn(&R) -> bool,
) -> (Vec<Handed<'_, R>>, Option<(i64, String)>) {
    let mut rows = Vec::with_capacity(batch.len());
    for row in batch {
        let decoded = if reads(row) {
            match row.decode() {
                Ok(decoded) => Some(decoded),
                Err(why) => return (rows, Some((row.position(), why))),
            }
        } else {
            None
        };
        rows.push(Handed { row, decoded });
    }
    (rows, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64, event_type: &str, payload: &str) -> FeedRow {
        FeedRow {
            position,
            aggregate_id: "d1".into(),
            sequence: position,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: payload.into(),
        }
    }

    fn removed() -> String {
        let removed = CustomDomainEvent::DomainRemoved {
            domain_name: "shop.test".into(),
            removed_at: chrono::Utc::now(),
        };
        serde_json::to_string(&removed).expect("serialises")
    }

    #[test]
    fn a_row_that_does_not_decode_stops_the_batch_before_it_and_says_why() {
        let payload = removed();
        let batch = [
            row(4, "DomainRemoved", &payload),
            row(5, "FutureEvent", r#"{"FutureEvent":{}}"#),
            row(6, "DomainRemoved", &payload),
        ];
        let (rows, stopped) = decode_up_to_failure(&batch, |_| true);
        let positions: Vec<i64> = rows.iter().map(|handed| handed.row.position).collect();
        assert_eq!(positions, [4], "nothing at or after the unreadable row");
        let (at, why) = stopped.expect("stopped");
        assert_eq!(at, 5);
        assert!(why.contains("FutureEvent 1.0"), "{why}");
    }

    #[test]
    fn a_row_the_consumer_does_not_read_is_handed_over_undecoded() {
        let batch = [
            row(1, "FutureEvent", "not even JSON"),
            row(2, "DomainRemoved", &removed()),
        ];
        let (rows, stopped) = decode_up_to_failure(&batch, |row| row.event_type == "DomainRemoved");
        assert!(stopped.is_none());
        assert!(rows[0].decoded.is_none());
        assert!(rows[1].decoded.is_some());
    }
}
