//! What the platform's TLS edges get: the lines of the certificate stream they follow
//! ([`line`]), and the directory `dns-handling edge sync` keeps for terminators that read files
//! ([`directory`]).

pub mod directory;
pub mod line;
pub mod names;
