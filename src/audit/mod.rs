//! Tamper evidence for auditors: signed checkpoints of the whole log, and `audit verify`, which
//! checks them and every stream's hash chain.

pub mod checkpoints;
pub mod verify;
