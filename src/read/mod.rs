//! The read side: the projector that keeps the views (crate `dns-handling-projections`) in step
//! with the events, and the reader that serves them to the API.

pub mod projector;
pub mod stuck;
pub mod view_reader;
pub mod zone_follower;
pub mod zone_lag;
