//! An in-memory model kept from a log by a feed consumer, built aside at start: the consumer
//! fills a model of its own from position 0 while the live one, which readers use, stays empty
//! and not ready (`/readyz` names it); caught up, it hands its model over whole, then applies
//! each batch to the live one in place. The edge index and the table of access tokens are
//! kept this way.

use std::sync::{Arc, RwLockWriteGuard};
use std::time::Duration;

use crate::adapters::store::Store;
use crate::read::feed_follower::{FeedConsumer, FeedFollower};

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

/// Builds `consumer`'s model from the log (reading on after a failure, logged as building
/// `what`), hands it over with `go_live`, then follows the log for as long as the process runs.
pub(crate) async fn build_then_follow<C: FeedConsumer>(
    store: Store,
    consumer: C,
    what: &str,
    go_live: impl FnOnce(&mut C),
) {
    let mut follower = FeedFollower::new(store, consumer);
    while let Err(error) = follower.catch_up().await {
        tracing::warn!(%error, "building {what} failed; reading on");
        tokio::time::sleep(RETRY_AFTER).await;
    }
    go_live(follower.consumer_mut());
    follower.follow().await;
}
