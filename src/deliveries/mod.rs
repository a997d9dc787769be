//! Webhook deliveries: what the platform is told, made from the feed and sent to each
//! endpoint. Two tasks per process, neither an actor (each is one loop that owns nothing but
//! its leases):
//! - `messages.rs`: one follower of the feed makes every live endpoint's messages, reading each
//!   event once and folding the domain's views around it once, whatever the number of
//!   endpoints; each endpoint's messages are its outbox in the store.
//! - `sending.rs`: one driver per endpoint with messages to send, on whichever replica holds
//!   the endpoint's lease: in order, retried on its schedule, nothing lost across a crash.

pub mod messages;
pub mod sending;
