//! The decisions: the `CustomDomain` aggregate (its commands, the events it emits, what it
//! refuses) and the domain types it decides over. Nothing here does I/O.

pub mod access_token;
pub mod aggregate;
pub mod alt_names;
pub mod caa;
pub mod delegation;
pub mod domain_name;
pub mod health;
pub mod notifications;
pub mod renewal;
pub mod tenant;
pub mod webhook_endpoint;
