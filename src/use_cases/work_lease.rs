//! A work lease held for as long as the work runs: taken once, extended every third of
//! `LEASE_TTL` while held, given back at the end. One piece of renewal work per certificate at a
//! time across replicas (and within one process), however long the CA takes.

use crate::adapters::store::{Store, StoreError};
use crate::app_state::AppState;
use crate::tasks::AbortOnDrop;

/// A held work lease; extended in the background until [`WorkLease::release`] (or until dropped,
/// after which it lapses by itself).
pub struct WorkLease {
    store: Store,
    owner: String,
    name: String,
    _extending: AbortOnDrop<()>,
}

impl WorkLease {
    /// Takes the lease `name` (`<domain id>#<work>`) for this replica, doing `work`; `None`
    /// while another holder (in this process too) has it.
    pub async fn take(
        state: &AppState,
        name: String,
        work: &str,
    ) -> Result<Option<WorkLease>, StoreError> {
        let ttl = state.settings.lease_ttl;
        let (store, owner) = (state.store.clone(), state.replica_id.clone());
        if !store.claim_work_lease(&name, work, &owner, ttl).await? {
            return Ok(None);
        }
        let extending = {
            let (store, owner, name) = (store.clone(), owner.clone(), name.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store.renew_work_lease(&name, &owner, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %name, "a work lease was lost while its work ran");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(lease = %name, %error, "could not extend a work lease");
                        }
                    }
                }
            })
        };
        Ok(Some(WorkLease {
            store,
            owner,
            name,
            _extending: AbortOnDrop(extending),
        }))
    }

    /// Gives the lease back (the work is done); a failure only leaves it to lapse.
    pub async fn release(self) {
        if let Err(error) = self.store.release_work_lease(&self.name, &self.owner).await {
            tracing::warn!(lease = %self.name, %error, "could not give back a work lease; it lapses");
        }
    }
}
