//! The adapters: everything that talks to the world outside the process, behind the types the
//! decisions and the actors use.

pub mod acme;
pub mod caa;
pub mod certificate_keys;
pub mod commit_signal;
pub mod dns;
pub mod dns_server;
pub mod event_repository;
pub mod store;
pub mod vault;
pub mod webhook_sender;
