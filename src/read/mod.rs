//! The read side: the one loop that follows the event feed (`feed_follower`, for the
//! projector, the delegation zone, webhook messages, `GET /events?follow=true` and the edges'
//! certificate stream `edge_stream`), the projector that keeps the views (crate
//! `dns-handling-projections`) in step with the events, and the reader that serves them to the
//! API.

pub mod batched_reads;
pub mod built_aside;
pub mod edge_chunk;
pub mod edge_index;
pub mod edge_material;
pub mod edge_stream;
pub mod feed_follower;
pub mod projector;
pub mod stuck;
pub mod tenant_filter;
pub mod token_table;
pub mod view_reader;
pub mod zone_follower;
pub mod zone_lag;
