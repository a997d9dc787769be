//! An in-memory model kept from a log by a feed consumer, built aside at start: the consumer
//! fills a model of its own from position 0 while the live one, which readers use, stays empty
//! and not ready (`/readyz` names it); caught up, it hands its model over whole, then applies
//! each batch to the live one in place. The edge index and the table of access tokens are
//! kept this way: each says only which log it reads and what an event does to it
//! ([`FollowedModel`]); the consumer that follows the log is written once, here.

use std::sync::{Arc, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::adapters::store::{Store, StoreError};
use crate::read::feed_follower::{
    FeedConsumer, FeedFollower, FeedRecord, Handed, Handled, Undecodable, Wait,
};

/// How many events one read of the log brings.
const BATCH_EVENTS: u32 = 1_000;

/// How long the first build waits after a failed read before reading on.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A model its readers share, as its follower changes it.
pub(crate) trait LiveModel: Send + Sync + 'static {
    /// The model itself: what is built aside, and what the live one holds.
    type Model: Default + Send;

    /// Puts `built` in service, and says the model is ready.
    fn replace(&self, built: Self::Model);

    /// The model, to change in place.
    fn write(&self) -> RwLockWriteGuard<'_, Self::Model>;

    /// After a batch was applied in place (to count what it holds, say).
    fn applied(&self, _model: &Self::Model) {}
}

/// Where a follower applies what it reads: its own model until it is caught up, then the
/// live one.
pub(crate) enum BuiltAside<L: LiveModel> {
    /// A model of its own, until it is caught up.
    Building(L::Model),
    /// The model its readers use.
    Live(Arc<L>),
}

impl<L: LiveModel> Default for BuiltAside<L> {
    fn default() -> Self {
        BuiltAside::Building(L::Model::default())
    }
}

impl<L: LiveModel> BuiltAside<L> {
    /// Hands the model built so far to `live`, and applies to it from now on.
    pub fn go_live(&mut self, live: Arc<L>) {
        if let BuiltAside::Building(built) = std::mem::replace(self, BuiltAside::Live(live.clone()))
        {
            live.replace(built);
        }
    }

    /// Applies one batch to the current model (the live one under one write lock).
    pub fn apply(&mut self, batch: impl FnOnce(&mut L::Model)) {
        match self {
            BuiltAside::Building(model) => batch(model),
            BuiltAside::Live(live) => {
                let mut model = live.write();
                batch(&mut model);
                live.applied(&model);
            }
        }
    }
}

/// A live model kept from a log by [`follow`]: which log, and what each of its events does.
pub(crate) trait FollowedModel: LiveModel {
    /// The log's rows.
    type Record: FeedRecord;

    /// The consumer's name, as `/readyz` and the stuck consumers show it.
    const CONSUMER: &'static str;

    /// What the model is, for log lines ("the edge index").
    const WHAT: &'static str;

    /// Whether the model reads `row`; the others are passed over undecoded.
    fn reads(_row: &Self::Record) -> bool {
        true
    }

    /// Applies one event of the log, read from `row`, to the model.
    fn apply(
        model: &mut Self::Model,
        row: &Self::Record,
        event: <Self::Record as FeedRecord>::Decoded,
    );
}

/// Builds `live`'s model from its log aside (reading on after a failure), hands it over whole,
/// then follows the log for as long as the process runs, waking at each commit or after
/// `fallback_poll`. The position is kept in memory: the model is built again at each start.
pub(crate) async fn follow<L: FollowedModel>(store: Store, live: Arc<L>, fallback_poll: Duration) {
    let consumer = Follower::<L> {
        target: BuiltAside::default(),
        position: 0,
        fallback_poll,
    };
    let mut follower = FeedFollower::new(store, consumer);
    while let Err(error) = follower.catch_up().await {
        tracing::warn!(%error, "building {} failed; reading on", L::WHAT);
        tokio::time::sleep(RETRY_AFTER).await;
    }
    follower.consumer_mut().target.go_live(live);
    follower.follow().await;
}

/// The consumer of a model's log.
struct Follower<L: FollowedModel> {
    target: BuiltAside<L>,
    /// The last position applied.
    position: i64,
    fallback_poll: Duration,
}

#[async_trait]
impl<L: FollowedModel> FeedConsumer for Follower<L> {
    type Record = L::Record;

    fn names(&self) -> Vec<String> {
        vec![L::CONSUMER.to_owned()]
    }

    fn batch_size(&self) -> u32 {
        BATCH_EVENTS
    }

    fn wait(&self) -> Wait {
        Wait::ForCommitOrAfter(self.fallback_poll)
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        Ok(self.position)
    }

    fn reads(&self, row: &L::Record) -> bool {
        L::reads(row)
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, L::Record>>) -> Result<Handled, StoreError> {
        self.target.apply(|model| {
            for handed in rows {
                if let Some(event) = handed.decoded {
                    L::apply(model, handed.row, event);
                }
            }
        });
        Ok(Handled::All)
    }

    async fn save_position(&mut self, position: i64) -> Result<(), StoreError> {
        self.position = position;
        Ok(())
    }

    async fn undecodable(&mut self, _position: i64, _why: &str) -> Undecodable {
        // Skipping an event could leave the model wrong for good: a revoked token accepted, a
        // revoked certificate served, a new one withheld.
        Undecodable::StayOnIt
    }
}
