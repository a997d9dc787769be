//! `Supervisor`: owns one `OrderPoller` per pending order and resumes them all on start.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use dns_handling_events::OrderDetails;

use super::poller::OrderPoller;
use crate::services::Services;
use crate::store::StoreError;

/// An order waiting for its challenge record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOrder {
    /// The domain (aggregate) id.
    pub domain_id: String,
    /// The domain's name, for the CSR.
    pub domain_name: String,
    /// The order as recorded in `CertificateRequested`.
    pub order: OrderDetails,
}

/// Start polling an order (ignored when that order already has a poller).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartPolling(pub PendingOrder);

/// Start a poller for every `certificate_pending` domain in the store; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct ResumePending;

/// Stop (sent to the supervisor: stop every poller, then itself).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// How many pollers are live.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PollerCount;

/// A poller ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PollerStopped {
    pub domain_id: String,
    pub order_id: String,
}

/// Owns the pollers: exactly one per pending order in this process.
pub struct Supervisor {
    services: Arc<Services>,
    pollers: HashMap<String, (String, Addr<OrderPoller>)>,
}

impl Supervisor {
    /// A supervisor with no pollers yet.
    pub fn new(services: Arc<Services>) -> Self {
        Self {
            services,
            pollers: HashMap::new(),
        }
    }

    fn start_poller(&mut self, pending: PendingOrder, ctx: &mut Context<Self>) {
        if let Some((order_id, _)) = self.pollers.get(&pending.domain_id) {
            if *order_id == pending.order.order_id {
                return;
            }
        }
        let domain_id = pending.domain_id.clone();
        let order_id = pending.order.order_id.clone();
        let poller = OrderPoller::new(self.services.clone(), pending, ctx.address()).start();
        // A newer order for the same domain replaces the old poller, which would only have its
        // reports refused by the aggregate from now on.
        if let Some((_, previous)) = self.pollers.insert(domain_id, (order_id, poller)) {
            previous.do_send(Shutdown);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<StartPolling> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StartPolling, ctx: &mut Self::Context) {
        self.start_poller(msg.0, ctx);
    }
}

impl Handler<ResumePending> for Supervisor {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, _msg: ResumePending, _ctx: &mut Self::Context) -> Self::Result {
        let services = self.services.clone();
        Box::pin(
            async move { services.store.pending_domain_views().await }
                .into_actor(self)
                .map(|views, supervisor, ctx| {
                    let views = views?;
                    let count = views.len();
                    for view in views {
                        if let Some(order) = view.order {
                            supervisor.start_poller(
                                PendingOrder {
                                    domain_id: view.id,
                                    domain_name: view.domain_name,
                                    order,
                                },
                                ctx,
                            );
                        }
                    }
                    tracing::info!(count, "resumed pending orders");
                    Ok(count)
                }),
        )
    }
}

impl Handler<PollerStopped> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: PollerStopped, _ctx: &mut Self::Context) {
        let is_current = self
            .pollers
            .get(&msg.domain_id)
            .is_some_and(|(order_id, _)| *order_id == msg.order_id);
        if is_current {
            self.pollers.remove(&msg.domain_id);
        }
    }
}

impl Handler<PollerCount> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _msg: PollerCount, _ctx: &mut Self::Context) -> usize {
        self.pollers.len()
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
