//! The operator commands: `replay`, `audit verify` and `export`.

use std::io::Write;
use std::time::Instant;

use anyhow::Context as _;
use dns_handling_events::chain::{verify_stream, BrokenLink};
use dns_handling_events::AGGREGATE_TYPE;
use indicatif::{ProgressBar, ProgressStyle};

use crate::projector::ViewProjector;
use crate::settings::Settings;
use crate::store::Store;

/// Usage text for every command.
pub const USAGE: &str = "usage: dns-handling [--config FILE] [COMMAND]
  (no command)   serve the API
  config         print the effective configuration (file, then environment), secrets redacted
  replay         rebuild every read projection from the first event (stop the service first)
  audit verify   check every stream's hash chain; exits 1 when a link is broken
  export         write the event feed after <position> as NDJSON to stdout (--after <position>)
  domains ...    the client for people, against a running server (dns-handling domains --help)
Settings come from the environment, over the TOML file of --config (or $CONFIG_FILE).";

/// Opens (and migrates) the configured store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database_url)
        .await
        .context("connecting to the store (DATABASE_URL)")?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

/// Rebuilds the projections from zero with a progress bar on stderr. In SQLite mode it refuses
/// to run while the service holds the database.
pub async fn replay(settings: &Settings) -> anyhow::Result<()> {
    let _lock = crate::store::lock_sqlite_exclusively(&settings.database_url)?;
    let store = open_store(settings).await?;
    let (_, total) = store.feed_extent().await?;
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let applied = ViewProjector::new(store)
        .rebuild(|done| bar.set_position(done))
        .await?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {applied} events in {seconds:.2} s ({:.0} events/s)",
        applied as f64 / seconds.max(f64::EPSILON)
    );
    Ok(())
}

/// Walks every stream's chain; returns the broken links found (at most one per stream).
pub async fn audit_verify(store: &Store, out: &mut impl Write) -> anyhow::Result<Vec<BrokenLink>> {
    let mut broken = Vec::new();
    let mut streams = 0u64;
    let mut events = 0u64;
    let mut after = String::new();
    loop {
        let page = store.all_streams_in_order(&after, 500).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.aggregate_id.clone();
        for stream in page.chunk_by(|a, b| a.aggregate_id == b.aggregate_id) {
            streams += 1;
            events += stream.len() as u64;
            if let Some(link) = verify_stream(AGGREGATE_TYPE, stream) {
                writeln!(
                    out,
                    "BROKEN stream {} at sequence {} (position {}): {}",
                    link.aggregate_id, link.sequence, link.position, link.reason
                )?;
                broken.push(link);
            }
        }
    }
    writeln!(
        out,
        "checked {streams} streams, {events} events: {} broken",
        broken.len()
    )?;
    Ok(broken)
}

/// Writes the feed after `after` as NDJSON.
pub async fn export(store: &Store, after: i64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut position = after;
    let mut written = 0u64;
    loop {
        let page = store.events_after(position, 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(written);
        };
        position = last.position;
        for event in &page {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
        }
        written += page.len() as u64;
    }
}
