//! `export`: the feed as NDJSON on stdout (as stored), or as Parquet files in a directory for
//! analysts (read as the current versions; see `docs/analytics.md`).
//!
//! The Parquet directory holds `events-<first>-<last>.parquet` files, each the events of a run of
//! feed positions, and `certificates.parquet`, derived from the whole log and rewritten once
//! the export has caught up after writing events files. Each file is written whole or not at all (`analytics::table`), so the last
//! file's name says where the directory stands: a run resumes after it and a directory never
//! holds an event twice, whatever stopped the run before.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize as _;

use dns_handling_events::feed::FeedEvent;
use dns_handling_events::CustomDomainEvent;

use crate::adapters::store::Store;
use crate::analytics::certificates::{self, CertificateLedger, CERTIFICATE_COLUMNS};
use crate::analytics::event_columns::{event_row, EVENT_COLUMNS};
use crate::analytics::table::{Table, TableError};

/// The events read from the store at a time.
const PAGE: u32 = 5_000;

/// The name of the derived table of certificates.
pub const CERTIFICATES_FILE: &str = "certificates.parquet";

/// `dns-handling export …`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Start after this feed position
    #[arg(long, value_name = "POSITION", default_value_t = 0)]
    pub after: i64,
    /// `ndjson`: the events as stored, one JSON object a line on stdout; `parquet`: files in
    /// --dir, one row per event read as its current version, its fields in columns, and
    /// certificates.parquet, one row per certificate (see docs/analytics.md)
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    pub format: ExportFormat,
    /// The directory Parquet files are written to (made if missing); a run resumes after the
    /// last file already there
    #[arg(long, value_name = "DIR", required_if_eq("format", "parquet"))]
    pub dir: Option<PathBuf>,
    /// Keep writing as events commit, until stopped (Parquet only)
    #[arg(long)]
    pub follow: bool,
    /// Write a file once the events waiting for it hold this many bytes (Parquet only)
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub roll_bytes: usize,
    /// With --follow, write a file once its first event has waited this long (`30s`, `5m`)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1m")]
    pub roll_after: Duration,
    /// With --follow, how often to look for new events once caught up
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1s")]
    pub poll: Duration,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// NDJSON on stdout.
    Ndjson,
    /// Parquet files in a directory.
    Parquet,
}

/// What a Parquet export wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Events written, in every file of this run.
    pub events: u64,
    /// Event files written.
    pub files: u64,
    /// Rows of `certificates.parquet` last written.
    pub certificates: u64,
}

/// The position the directory's event files end at (0 for none), after clearing what an
/// interrupted run left half-written.
pub fn written_through(dir: &Path) -> anyhow::Result<i64> {
    let mut last = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".parquet.tmp") {
            std::fs::remove_file(dir.join(&name))?;
        } else if let Some((_, through)) = positions_in(&name) {
            last = last.max(through);
        }
    }
    Ok(last)
}

/// The first and last positions an event file's name holds.
pub fn positions_in(name: &str) -> Option<(i64, i64)> {
    let range = name.strip_prefix("events-")?.strip_suffix(".parquet")?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// The name of the file of events `first` to `last` (zero-padded, so names sort as positions).
pub fn file_name(first: i64, last: i64) -> String {
    format!("events-{first:020}-{last:020}.parquet")
}

/// The export's state: the certificates derived so far, the events waiting for their file.
/// `certificates.parquet` is rewritten whenever the export catches up after writing events.
struct Exporter {
    dir: PathBuf,
    /// Events at or before it are only read (for the certificates and domain names).
    skip_through: i64,
    ledger: CertificateLedger,
    pending: Table,
    first: i64,
    last: i64,
    waiting_since: Option<Instant>,
    /// The events file being encoded and written on a blocking thread, and its events.
    writing: Option<(tokio::task::JoinHandle<Result<(), TableError>>, u64)>,
    report: ExportReport,
}

impl Exporter {
    /// Takes one event of the feed.
    fn take(&mut self, mut event: FeedEvent) -> anyhow::Result<()> {
        let stored = std::mem::take(&mut event.payload);
        let (payload, version) =
            dns_handling_events::upcast::upcast(&event.event_type, &event.event_version, stored);
        if certificates::concerns(&event.event_type) {
            let decoded = CustomDomainEvent::deserialize(&payload).with_context(|| {
                format!(
                    "event {} ({} {}) cannot be read",
                    event.position, event.event_type, event.event_version
                )
            })?;
            self.ledger.apply(&event.aggregate_id, &decoded);
        }
        if event.position <= self.skip_through {
            return Ok(());
        }
        let name = self.ledger.domain_name(&event.aggregate_id);
        self.pending
            .push(event_row(&event, &payload, &version, name))
            .with_context(|| format!("event {}", event.position))?;
        if self.pending.len() == 1 {
            self.first = event.position;
            self.waiting_since = Some(Instant::now());
        }
        self.last = event.position;
        Ok(())
    }

    /// Starts writing the waiting events as one file, on a blocking thread, once the file
    /// before it is written. Encoding and compressing a file then runs beside the reading and
    /// flattening of the next file's events, on the second core (about 15 % more events/s at
    /// 1,000,000 events; `bench/README.md`). One file at a time, in order, so the directory's
    /// last file still says where it stands, and at most two files' events are held.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.written().await?;
        let events = self.pending.len() as u64;
        let name = file_name(self.first, self.last);
        let metadata = [
            ("dns_handling.first_position", self.first.to_string()),
            ("dns_handling.last_position", self.last.to_string()),
        ];
        let mut table = std::mem::replace(&mut self.pending, Table::new(EVENT_COLUMNS));
        let dir = self.dir.clone();
        let writing =
            tokio::task::spawn_blocking(move || table.write_atomically(&dir, &name, &metadata));
        self.writing = Some((writing, events));
        self.waiting_since = None;
        Ok(())
    }

    /// Waits until the events file being written, if any, is written.
    async fn written(&mut self) -> anyhow::Result<()> {
        if let Some((writing, events)) = self.writing.take() {
            writing.await.context("the file writer stopped")??;
            self.report.events += events;
            self.report.files += 1;
        }
        Ok(())
    }

    /// Rewrites `certificates.parquet` from the ledger, which has read the log `through` this
    /// position.
    fn write_certificates(&mut self, through: i64) -> anyhow::Result<()> {
        let mut table = Table::new(CERTIFICATE_COLUMNS);
        for row in self.ledger.rows() {
            table.push(row.cells())?;
        }
        self.report.certificates = table.len() as u64;
        let through = [("dns_handling.last_position", through.to_string())];
        table.write_atomically(&self.dir, CERTIFICATES_FILE, &through)?;
        Ok(())
    }
}

/// Writes the feed after `--after` (or after the directory's last file, if further) as Parquet
/// files in `dir`; with `follow`, keeps on until the future is dropped.
pub async fn export_parquet(
    store: &Store,
    dir: &Path,
    args: &ExportArgs,
) -> anyhow::Result<ExportReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let skip_through = written_through(dir)?.max(args.after);
    let mut exporter = Exporter {
        dir: dir.to_owned(),
        skip_through,
        ledger: CertificateLedger::default(),
        pending: Table::new(EVENT_COLUMNS),
        first: 0,
        last: skip_through,
        waiting_since: None,
        writing: None,
        report: ExportReport::default(),
    };
    // From the first event whatever the start: the certificates table and the domains' names
    // need the whole history.
    let mut position = 0;
    // Rewritten once caught up after new events files, not with each: during a catch-up over
    // millions of events it would be rewritten for every file.
    let mut certificates_stale = true;
    let mut next = read_after(store, position);
    loop {
        let page = next.await.context("reading the feed")??;
        let caught_up = page.len() < PAGE as usize;
        // The next page is read while this one is written.
        next = read_after(store, page.last().map_or(position, |last| last.position));
        for event in page {
            position = event.position;
            exporter.take(event)?;
            if exporter.pending.bytes() >= args.roll_bytes {
                exporter.flush().await?;
                certificates_stale = true;
            }
        }
        let waited_enough = exporter
            .waiting_since
            .is_some_and(|since| since.elapsed() >= args.roll_after);
        if caught_up && !exporter.pending.is_empty() && (!args.follow || waited_enough) {
            exporter.flush().await?;
            certificates_stale = true;
        }
        if caught_up {
            exporter.written().await?;
            if certificates_stale {
                exporter.write_certificates(position)?;
                certificates_stale = false;
            }
            if !args.follow {
                return Ok(exporter.report);
            }
            tokio::time::sleep(args.poll).await;
            next = read_after(store, position);
        }
    }
}

/// The page of the feed after `position`, read on a task of its own.
fn read_after(
    store: &Store,
    position: i64,
) -> tokio::task::JoinHandle<Result<Vec<FeedEvent>, crate::adapters::store::StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.events_after(position, PAGE).await })
}

/// Rejects the options that only Parquet takes when NDJSON is asked for.
pub fn check(args: &ExportArgs) -> anyhow::Result<()> {
    if args.format == ExportFormat::Ndjson && (args.dir.is_some() || args.follow) {
        anyhow::bail!("--dir and --follow are for --format parquet");
    }
    Ok(())
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
