//! `Supervisor`: owns one `OrderPoller` per pending order this replica holds the lease of.
//!
//! In PostgreSQL mode several replicas share the pending orders: each order is polled by the
//! replica holding its lease (`order_leases`). A supervisor renews its leases every third of
//! `LEASE_TTL`, stops the pollers of leases it lost, and looks for pending orders nobody holds
//! (a new order, or one whose replica died) to take over with the time each has left. In
//! SQLite mode the process is the only replica: every lease is granted, and every pending order
//! is started by this supervisor itself, so there are no unheld orders to look for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;

use super::messages::{
    PendingOrder, PollerStopped, ResumePending, Shutdown, StartPolling, StopPolling,
};
use super::poller::OrderPoller;
use crate::adapters::store::StoreError;
use crate::app_state::AppState;
use crate::metrics::METRICS;
use crate::tasks::contained;
use crate::use_cases::Pollers;

/// The supervisor's name as background work: its store round trips run as tasks of their own
/// (`tasks::contained`), so a panic in one ends that step alone, counted under this name, and
/// the supervisor (and every poller it owns) lives on.
const SUPERVISOR: &str = "supervisor";

/// How long a poller that died waits before it is started again, so that one that dies at
/// once does not spin; doubled for each restart in a row, up to [`MAX_RESTART_DELAY`].
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest wait before a poller that keeps dying is started again.
const MAX_RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(300);

/// The use cases hand their orders to the supervisor through its address.
impl Pollers for Addr<Supervisor> {
    fn start(
        &self,
        domain_id: &str,
        domain_name: &str,
        order: &dns_handling_events::OrderDetails,
        renewal: bool,
    ) {
        self.do_send(StartPolling(PendingOrder {
            domain_id: domain_id.to_owned(),
            domain_name: domain_name.to_owned(),
            order: order.clone(),
            renewal,
            requested_at: chrono::Utc::now(),
        }));
    }

    fn stop(&self, domain_id: &str) {
        self.do_send(StopPolling(domain_id.to_owned()));
    }
}

/// The wait before the restart that follows `in_a_row` restarts of one domain's poller.
fn restart_delay(in_a_row: u32) -> std::time::Duration {
    RESTART_DELAY
        .saturating_mul(1 << in_a_row.min(16))
        .min(MAX_RESTART_DELAY)
}

/// How many orders' leases one statement claims (PostgreSQL mode). One by one, each claim a
/// round trip and a commit, 20,000 pending orders took 50 s to resume (eight at a time, 4–6 s).
const CLAIMS_PER_STATEMENT: usize = 1_000;

/// Owns the pollers: exactly one per pending order held by this replica.
pub struct Supervisor {
    state: Arc<AppState>,
    /// By domain: the order id each poller polls, and the poller.
    pollers: HashMap<String, (String, Addr<OrderPoller>)>,
    /// Restarts in a row of each domain's poller, for the growing wait between them.
    restarts: HashMap<String, u32>,
    /// Domains whose poller's restart is scheduled: it is not scheduled twice.
    restarting: HashSet<String>,
    /// Domains whose lease claim is in flight: a claim that outlasts a tick is not repeated.
    claiming: HashSet<String>,
    /// True while `ResumePending` claims every pending order: the ticks leave them to it.
    resuming: bool,
}

impl Supervisor {
    /// A supervisor with no pollers yet.
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            state,
            pollers: HashMap::new(),
            restarts: HashMap::new(),
            restarting: HashSet::new(),
            claiming: HashSet::new(),
            resuming: false,
        }
    }

    fn polls(&self, pending: &PendingOrder) -> bool {
        self.pollers
            .get(&pending.domain_id)
            .is_some_and(|(order_id, _)| *order_id == pending.order.order_id)
    }

    /// Whether the pending orders nobody holds are worth looking for. In SQLite mode this
    /// process is the only replica and starts every order itself (`ResumePending` on start,
    /// `StartPolling` for each new one), so there are none; the scan decoded every pending
    /// order's view every tick, half the CPU of 20,000 waiting orders.
    fn scans_for_orphans(&self) -> bool {
        self.state.store.is_shared_by_replicas() && !self.resuming
    }

    /// Starts a poller for an order whose lease this replica holds.
    fn spawn_poller(&mut self, pending: PendingOrder, ctx: &mut Context<Self>) {
        if self.polls(&pending) {
            return;
        }
        let domain_id = pending.domain_id.clone();
        let order_id = pending.order.order_id.clone();
        let poller =
            OrderPoller::new(self.state.clone(), pending, ctx.address().recipient()).start();
        // A newer order for the same domain replaces the old poller, whose reports the
        // aggregate would refuse from now on anyway.
        if let Some((_, previous)) = self.pollers.insert(domain_id, (order_id, poller)) {
            previous.do_send(Shutdown);
        }
    }

    /// Starts the poller of a domain again, after `RESTART_DELAY`, from its view: the poller
    /// `dead` died without finishing (or vanished), and nothing else would ever poll its order
    /// while this replica renews the lease. (The order is read again rather than kept, which
    /// would double the memory of every waiting order for a rare event.)
    fn restart_poller(
        &mut self,
        domain_id: &str,
        dead: &Addr<OrderPoller>,
        ctx: &mut Context<Self>,
    ) {
        if !self.restarting.insert(domain_id.to_owned()) {
            return;
        }
        // A poller that dies every time is started again ever more slowly, not every second.
        let in_a_row = self.restarts.entry(domain_id.to_owned()).or_insert(0);
        let delay = restart_delay(*in_a_row);
        *in_a_row += 1;
        METRICS.poller_restarts.inc();
        tracing::warn!(%domain_id, ?delay, "a poller died without finishing its order; starting it again");
        let state = self.state.clone();
        let (domain_id, dead) = (domain_id.to_owned(), dead.clone());
        let reading = domain_id.clone();
        ctx.spawn(
            contained(SUPERVISOR, async move {
                actix_web::rt::time::sleep(delay).await;
                state.store.domain_view(&reading).await
            })
            .into_actor(self)
            .map(move |view, supervisor, ctx| {
                supervisor.restarting.remove(&domain_id);
                // A read that panicked: the poller is still gone, and found so again at the
                // next lease tick.
                let Some(view) = view else {
                    return;
                };
                // Only if nothing replaced or removed it meanwhile (a newer order, a lost lease).
                let still_dead = supervisor
                    .pollers
                    .get(&domain_id)
                    .is_some_and(|(_, poller)| *poller == dead);
                if !still_dead {
                    return;
                }
                let view = match view {
                    Ok(view) => view,
                    Err(error) => {
                        // Nothing else would take the order up in SQLite mode: try again.
                        tracing::warn!(%domain_id, %error, "could not read the order to restart its poller; trying again");
                        supervisor.restart_poller(&domain_id, &dead, ctx);
                        return;
                    }
                };
                supervisor.pollers.remove(&domain_id);
                let pending = pending_orders(view.into_iter().collect());
                for pending in pending {
                    supervisor.spawn_poller(pending, ctx);
                }
            }),
        );
    }

    /// Restarts the pollers that are gone without having said so (their actor dropped).
    fn restart_vanished_pollers(&mut self, ctx: &mut Context<Self>) {
        let vanished: Vec<(String, Addr<OrderPoller>)> = self
            .pollers
            .iter()
            .filter(|(_, (_, poller))| !poller.connected())
            .map(|(domain_id, (_, poller))| (domain_id.clone(), poller.clone()))
            .collect();
        for (domain_id, poller) in vanished {
            self.restart_poller(&domain_id, &poller, ctx);
        }
    }

    /// Stops a domain's poller as finished and releases its lease.
    fn stop_polling(&mut self, domain_id: &str, ctx: &mut Context<Self>) {
        self.restarts.remove(domain_id);
        let Some((_, poller)) = self.pollers.remove(domain_id) else {
            return;
        };
        poller.do_send(Shutdown);
        let state = self.state.clone();
        let domain_id = domain_id.to_owned();
        ctx.spawn(
            async move {
                contained(SUPERVISOR, async move {
                    if let Err(error) = state
                        .store
                        .release_lease(&domain_id, &state.replica_id)
                        .await
                    {
                        tracing::warn!(%error, "could not release a lease; it expires by itself");
                    }
                })
                .await;
            }
            .into_actor(self),
        );
    }

    /// Claims the orders' leases and starts a poller for each one granted.
    fn claim_and_start(&mut self, orders: Vec<PendingOrder>, ctx: &mut Context<Self>) {
        let orders: Vec<PendingOrder> = orders
            .into_iter()
            .filter(|p| !self.polls(p) && !self.claiming.contains(&p.domain_id))
            .collect();
        if orders.is_empty() {
            return;
        }
        let claimed: Vec<String> = orders.iter().map(|p| p.domain_id.clone()).collect();
        self.claiming.extend(claimed.iter().cloned());
        let state = self.state.clone();
        ctx.spawn(
            contained(
                SUPERVISOR,
                async move { claim_leases(&state, orders).await },
            )
            .into_actor(self)
            .map(move |granted, supervisor, ctx| {
                for domain_id in &claimed {
                    supervisor.claiming.remove(domain_id);
                }
                for pending in granted.into_iter().flatten() {
                    supervisor.spawn_poller(pending, ctx);
                }
            }),
        );
    }

    /// Renews this replica's leases, stops the pollers of leases lost, and claims pending
    /// orders that nobody holds.
    fn tend_leases(&mut self, ctx: &mut Context<Self>) {
        self.restart_vanished_pollers(ctx);
        let state = self.state.clone();
        let held: Vec<String> = self.pollers.keys().cloned().collect();
        let held_orders: Vec<(String, String)> = self
            .pollers
            .iter()
            .map(|(domain_id, (order_id, _))| (domain_id.clone(), order_id.clone()))
            .collect();
        let scan = self.scans_for_orphans();
        ctx.spawn(
            contained(SUPERVISOR, async move {
                let ttl = state.settings.lease_ttl;
                let renewed = state
                    .store
                    .renew_leases(&state.replica_id, ttl, &held)
                    .await;
                let pending = if scan {
                    state.store.pending_domain_views().await
                } else {
                    Ok(Vec::new())
                };
                (renewed, pending)
            })
            .into_actor(self)
            .map(move |tended, supervisor, ctx| {
                // A tick that panicked leaves things as they were until the next one.
                let Some((renewed, pending)) = tended else {
                    return;
                };
                match renewed {
                    Ok(still_held) => {
                        // A set: a list's `contains` for every poller made this tick quadratic,
                        // 10,000 pending orders blocking the actors' thread ~0.1 s every tick.
                        let still_held: HashSet<&str> =
                            still_held.iter().map(String::as_str).collect();
                        let lost: Vec<String> = supervisor
                            .pollers
                            .keys()
                            .filter(|domain_id| !still_held.contains(domain_id.as_str()))
                            .cloned()
                            .collect();
                        for domain_id in lost {
                            if let Some((_, poller)) = supervisor.pollers.remove(&domain_id) {
                                tracing::warn!(%domain_id, "lease lost to another replica; poller stops");
                                poller.do_send(Shutdown);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not renew leases"),
                }
                match pending {
                    Ok(views) => {
                        // A poller whose order is no longer pending (its domain was removed
                        // through another replica, say) stops here rather than at its next
                        // report. Only pollers held before the read began are judged: one
                        // started meanwhile may be newer than what was read.
                        let pending_ids: HashSet<&str> =
                            views.iter().map(|view| view.id.as_str()).collect();
                        for (domain_id, order_id) in &held_orders {
                            let same_poller = supervisor
                                .pollers
                                .get(domain_id)
                                .is_some_and(|(polled, _)| polled == order_id);
                            if scan && same_poller && !pending_ids.contains(domain_id.as_str()) {
                                tracing::info!(%domain_id, "order no longer pending; poller stops");
                                supervisor.stop_polling(domain_id, ctx);
                            }
                        }
                        supervisor.claim_and_start(pending_orders(views), ctx)
                    }
                    Err(error) => tracing::warn!(%error, "could not read pending orders"),
                }
            }),
        );
    }
}

/// Claims the leases of `orders` for this replica, `CLAIMS_PER_STATEMENT` at a time; returns
/// those granted. Orders whose claim fails are left for the next tick.
async fn claim_leases(state: &AppState, orders: Vec<PendingOrder>) -> Vec<PendingOrder> {
    let ttl = state.settings.lease_ttl;
    let mut granted = Vec::with_capacity(orders.len());
    let mut orders = orders.into_iter().peekable();
    while orders.peek().is_some() {
        let batch: Vec<PendingOrder> = orders.by_ref().take(CLAIMS_PER_STATEMENT).collect();
        let claims: Vec<(&str, &str)> = batch
            .iter()
            .map(|pending| (pending.domain_id.as_str(), pending.order.order_id.as_str()))
            .collect();
        let store = &state.store;
        match store.claim_leases(&claims, &state.replica_id, ttl).await {
            Ok(ids) => {
                let ids: std::collections::HashSet<String> = ids.into_iter().collect();
                granted.extend(batch.into_iter().filter(|p| ids.contains(&p.domain_id)));
            }
            Err(error) => {
                tracing::warn!(%error, orders = batch.len(), "could not claim leases; next tick");
            }
        }
    }
    granted
}

/// The open orders (first issuances and renewals) among domain views.
fn pending_orders(views: Vec<dns_handling_projections::DomainView>) -> Vec<PendingOrder> {
    views
        .into_iter()
        .filter_map(|view| {
            let order = view.open_order()?.clone();
            let renewal = view.renewal.as_ref().is_some_and(|r| r.in_progress);
            Some(PendingOrder {
                domain_id: view.id,
                domain_name: view.domain_name,
                order,
                renewal,
                requested_at: view.updated_at,
            })
        })
        .collect()
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = self.state.settings.lease_ttl / 3;
        ctx.run_interval(every, |supervisor, ctx| supervisor.tend_leases(ctx));
    }
}

impl Handler<StartPolling> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StartPolling, ctx: &mut Self::Context) {
        self.claim_and_start(vec![msg.0], ctx);
    }
}

impl Handler<StopPolling> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StopPolling, ctx: &mut Self::Context) {
        self.stop_polling(&msg.0, ctx);
    }
}

impl Handler<ResumePending> for Supervisor {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, _msg: ResumePending, _ctx: &mut Self::Context) -> Self::Result {
        let state = self.state.clone();
        self.resuming = true;
        Box::pin(
            async move {
                let views = state.store.pending_domain_views().await?;
                Ok(claim_leases(&state, pending_orders(views)).await)
            }
            .into_actor(self)
            .map(
                |granted: Result<Vec<PendingOrder>, StoreError>, supervisor, ctx| {
                    supervisor.resuming = false;
                    let granted = granted?;
                    let count = granted.len();
                    for pending in granted {
                        supervisor.spawn_poller(pending, ctx);
                    }
                    tracing::info!(count, "resumed pending orders");
                    Ok(count)
                },
            ),
        )
    }
}

impl Handler<PollerStopped> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: PollerStopped, ctx: &mut Self::Context) {
        let current = self
            .pollers
            .get(&msg.domain_id)
            .filter(|(order_id, _)| *order_id == msg.order_id)
            .map(|(_, poller)| poller.clone());
        let Some(poller) = current else {
            return;
        };
        if !msg.finished {
            // The order is still pending and its lease still ours: start its poller again.
            self.restart_poller(&msg.domain_id, &poller, ctx);
            return;
        }
        self.pollers.remove(&msg.domain_id);
        self.restarts.remove(&msg.domain_id);
        let state = self.state.clone();
        ctx.spawn(
            async move {
                contained(SUPERVISOR, async move {
                    if let Err(error) = state
                        .store
                        .release_lease(&msg.domain_id, &state.replica_id)
                        .await
                    {
                        tracing::warn!(%error, "could not release a lease; it expires by itself");
                    }
                })
                .await;
            }
            .into_actor(self),
        );
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        for (_, (_, poller)) in self.pollers.drain() {
            poller.do_send(Shutdown);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poller_that_keeps_dying_is_restarted_ever_more_slowly_up_to_five_minutes() {
        assert_eq!(restart_delay(0), std::time::Duration::from_secs(1));
        assert_eq!(restart_delay(3), std::time::Duration::from_secs(8));
        assert_eq!(restart_delay(40), MAX_RESTART_DELAY);
    }
}
