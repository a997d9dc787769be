//! The actors: a supervisor that owns one poller per pending order (first issuances and
//! renewals alike) and the renewal scheduler that finds due renewals and starts them.
//! `messages.rs` holds what the actors tell each other (the supervisor and its pollers meet
//! only there). `work_lease.rs` holds a work lease for as long as its work runs (a renewal being started),
//! so two replicas never do the same renewal work at once.
//!
//! The actors do the waiting and the I/O (DNS polling, ACME round trips) and report what they
//! saw back to the aggregate as commands; they hold no state that is not also in the events, so
//! a restart loses nothing: the supervisor resumes every pending order from the projection.

mod messages;
mod poller;
mod renewals;
mod supervisor;
mod work_lease;

pub use messages::{PendingOrder, ResumePending, Shutdown, StartPolling, StopPolling};
pub use renewals::{start_renewal, RenewalScheduler, RenewalStartError};
pub use supervisor::Supervisor;
