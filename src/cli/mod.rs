//! The command line: the operator commands on the service's own configuration, and the client
//! for people against a running server.

pub mod client;
pub mod operator;
