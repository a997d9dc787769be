//! The event log as tables for analysts (`export --format parquet`): the events table, one row
//! per event with its payload's fields in columns (`event_columns.rs`), the certificates table
//! derived from the events (`certificates.rs`), and the writing of a table as a Parquet file
//! (`table.rs`). *Boundary:* types and files only; the command that reads the store and
//! follows the feed is `cli/export.rs`.

pub mod certificates;
pub mod event_columns;
pub mod table;
