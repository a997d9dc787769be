//! The actors: a supervisor that owns one poller per pending order (first issuances and
//! renewals alike) and the renewal scheduler that finds due renewals and starts them.
//! `messages.rs` holds what the actors tell each other (the supervisor and its pollers meet
//! only there). What the scheduler starts (a renewal) is a use case (`use_cases::renew`), as
//! a request's is; the supervisor takes the orders of both as their `Pollers`.
//!
//! The actors do the waiting and the I/O (DNS polling, ACME round trips) and report what they
//! saw back to the aggregate as commands; they hold no state that is not also in the events, so
//! a restart loses nothing: the supervisor resumes every pending order from the projection.

mod health_checks;
mod messages;
mod poller;
mod renewals;
mod supervisor;

pub use health_checks::check_health_continuously;
pub use messages::{PendingOrder, ResumePending, Shutdown, StartPolling, StopPolling};
pub use renewals::RenewalScheduler;
pub use supervisor::Supervisor;
