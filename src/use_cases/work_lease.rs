//! A work lease held for as long as the work runs: taken once, extended every third of
//! `LEASE_TTL` while held, given back at the end. One piece of renewal work per certificate at a
//! time across replicas (and within one process), however long the CA takes. Work that runs for
//! the life of the process (the health checks) stops when [`WorkLease::lost`] says the lease
//! went to another holder, as a webhook driver stops when its claim is refused.

use crate::adapters::store::{Store, StoreError};
use crate::app_state::AppState;
use crate::tasks::AbortOnDrop;

/// A held work lease; extended in the background until [`WorkLease::release`] (or until dropped,
/// after which it lapses by itself).
pub struct WorkLease {
    store: Store,
    owner: String,
    name: String,
    lost: tokio::sync::watch::Receiver<bool>,
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
        let (lost_sender, lost) = tokio::sync::watch::channel(false);
        let extending = {
            let (store, owner, name) = (store.clone(), owner.clone(), name.clone());
            tokio::spawn(async move {
                let mut extended = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store.renew_work_lease(&name, &owner, ttl).await {
                        Ok(true) => extended = tokio::time::Instant::now(),
                        Ok(false) => {
                            tracing::warn!(lease = %name, "a work lease was lost while its work ran");
                            lost_sender.send_replace(true);
                            return;
                        }
                        // Not extended for a whole `LEASE_TTL`: it has lapsed, and another
                        // replica may hold it now.
                        Err(error) if extended.elapsed() >= ttl => {
                            tracing::warn!(lease = %name, %error, "a work lease lapsed: it could not be extended");
                            lost_sender.send_replace(true);
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
            lost,
            _extending: AbortOnDrop(extending),
        }))
    }

    /// Resolves once the lease is no longer this replica's (another holder took it, or it
    /// lapsed while it could not be extended); pending while it is held.
    pub async fn lost(&mut self) {
        // The sender lives as long as the extending task; once that ended without a loss
        // (it cannot: it ends only by one, or with this lease) nothing is lost.
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Gives the lease back (the work is done); a failure only leaves it to lapse.
    pub async fn release(self) {
        if let Err(error) = self.store.release_work_lease(&self.name, &self.owner).await {
            tracing::warn!(lease = %self.name, %error, "could not give back a work lease; it lapses");
        }
    }
}
