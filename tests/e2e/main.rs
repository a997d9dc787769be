//! End-to-end tests: the real binary against a real Pebble, a real DNS server and a real
//! database (a SQLite file and a fresh PostgreSQL database).
//!
//! Run them through the test script (`scripts/test.sh`), which installs and starts what they need.

mod http_contract;
mod issuance;
mod support;
