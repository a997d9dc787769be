//! Run: `cargo bench --bench export` (EVENTS=1000000 by default, ROUNDS=3; SQLite)
//!
//! Loads EVENTS events into a fresh SQLite store (domains registered, verified, requested,
//! observed and issued, every other one with its renewal scheduled; payloads and hash-chained
//! metadata as the service writes them, see `seed.rs`), then, ROUNDS times, in turn:
//! - the NDJSON export (`dns-handling export`) into a file;
//! - the Parquet export (`dns-handling export --format parquet`) into an empty directory;
//!
//! and reports each one's events/s (median, min–max), their ratio, and the size of the Parquet
//! files against the NDJSON file. Then, when DUCKDB_PYTHON names a Python with `duckdb`
//! (tests/run.sh's venv: target/schemathesis/bin/python), DuckDB's time to answer the
//! per-day query of docs/analytics.md over the files (median of 5, min–max).

// A bench binary: its items need no docs.
#![allow(missing_docs)]

#[allow(dead_code)]
mod seed;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use dns_handling::adapters::store::Store;
use dns_handling::cli::export::{export_parquet, ExportArgs, ExportFormat};
use dns_handling::cli::operator;

/// Events per seeded domain, on average (5 for an active one, 6 with its renewal scheduled).
const EVENTS_PER_DOMAIN: f64 = 5.5;

fn summary(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn size_of(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".parquet") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The per-day query of docs/analytics.md, as the DuckDB test reads it.
fn per_day_query() -> anyhow::Result<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/analytics.md"))?;
    let block = |name: &str| -> anyhow::Result<String> {
        let marker = format!("<!-- query: {name} -->\n```sql\n");
        let start = doc
            .find(&marker)
            .ok_or_else(|| anyhow::anyhow!("no query {name} in docs/analytics.md"))?
            + marker.len();
        let end = doc[start..]
            .find("```")
            .ok_or_else(|| anyhow::anyhow!("query {name} is not closed"))?;
        Ok(doc[start..start + end].to_owned())
    };
    Ok((block("views")?, block("per_day")?))
}

/// DuckDB's time to answer the per-day query over `dir`, five times (seconds), or `None` when
/// no DuckDB is at hand.
fn duckdb_per_day(dir: &Path) -> anyhow::Result<Option<Vec<f64>>> {
    let Some(python) = std::env::var_os("DUCKDB_PYTHON") else {
        return Ok(None);
    };
    let (views, query) = per_day_query()?;
    let script = r#"
import os, sys, time, duckdb
os.chdir(sys.argv[1])
connection = duckdb.connect()
connection.execute(sys.argv[2])
for _ in range(5):
    started = time.perf_counter()
    rows = connection.execute(sys.argv[3]).fetchall()
    print(time.perf_counter() - started, len(rows))
"#;
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .arg(views)
        .arg(query)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect(),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // as a quick smoke test of the same code paths on a few thousand events.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let events: usize = match std::env::var("EVENTS").ok().and_then(|v| v.parse().ok()) {
        Some(events) => events,
        None if benchmarking => 1_000_000,
        None => 5_500,
    };
    let rounds: usize = match std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()) {
        Some(rounds) => rounds,
        None if benchmarking => 3,
        None => 1,
    };
    let work = std::env::temp_dir().join(format!("dns-handling-export-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let store = Store::connect(&format!("sqlite://{}", work.join("bench.db").display())).await?;
    let started = Instant::now();
    let domains = (events as f64 / EVENTS_PER_DOMAIN).round() as usize;
    let due_at = Utc::now() + chrono::Duration::days(60);
    let loaded = seed::seed_with(
        &store,
        domains,
        |n| {
            if n % 2 == 0 {
                seed::Lifecycle::Active
            } else {
                seed::Lifecycle::RenewalScheduled { due_at }
            }
        },
        false,
    )
    .await?;
    eprintln!(
        "loaded {loaded} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (mut ndjson_rates, mut parquet_rates) = (Vec::new(), Vec::new());
    let (mut ndjson_bytes, mut parquet_bytes) = (0, 0);
    let parquet_dir = work.join("parquet");
    for round in 0..rounds {
        let path = work.join("events.ndjson");
        let started = Instant::now();
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let written = operator::export(&store, 0, &mut out).await?;
        std::io::Write::flush(&mut out)?;
        drop(out);
        let ndjson = started.elapsed();
        ndjson_bytes = std::fs::metadata(&path)?.len();
        std::fs::remove_file(&path)?;

        let _ = std::fs::remove_dir_all(&parquet_dir);
        let args = ExportArgs {
            after: 0,
            format: ExportFormat::Parquet,
            dir: Some(parquet_dir.clone()),
            follow: false,
            roll_bytes: 64 << 20,
            roll_after: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        };
        let started = Instant::now();
        let report = export_parquet(&store, &parquet_dir, &args).await?;
        let parquet = started.elapsed();
        parquet_bytes = size_of(&parquet_dir)?;
        assert_eq!(written as usize, loaded, "NDJSON lines");
        assert_eq!(report.events as usize, loaded, "Parquet rows");
        ndjson_rates.push(loaded as f64 / ndjson.as_secs_f64());
        parquet_rates.push(loaded as f64 / parquet.as_secs_f64());
        eprintln!(
            "round {round}: NDJSON {:.2} s, Parquet {:.2} s ({} files)",
            ndjson.as_secs_f64(),
            parquet.as_secs_f64(),
            report.files
        );
    }
    let mut ratios: Vec<f64> = parquet_rates
        .iter()
        .zip(&ndjson_rates)
        .map(|(parquet, ndjson)| parquet / ndjson)
        .collect();
    let (ndjson, ndjson_min, ndjson_max) = summary(&mut ndjson_rates);
    let (parquet, parquet_min, parquet_max) = summary(&mut parquet_rates);
    let (ratio, ratio_min, ratio_max) = summary(&mut ratios);
    println!(
        "export of {loaded} events, {rounds} rounds: NDJSON {ndjson:.0} events/s ({ndjson_min:.0}–{ndjson_max:.0}) | Parquet {parquet:.0} events/s ({parquet_min:.0}–{parquet_max:.0}) | Parquet/NDJSON {ratio:.2}× ({ratio_min:.2}–{ratio_max:.2})"
    );
    println!(
        "size: NDJSON {:.1} MB, Parquet {:.1} MB (events and certificates) = {:.3}× NDJSON",
        ndjson_bytes as f64 / 1e6,
        parquet_bytes as f64 / 1e6,
        parquet_bytes as f64 / ndjson_bytes as f64
    );
    match duckdb_per_day(&parquet_dir)? {
        Some(mut seconds) if !seconds.is_empty() => {
            let (median, least, most) = summary(&mut seconds);
            println!(
                "DuckDB per-day query over {loaded} events: {:.1} ms ({:.1}–{:.1}), median of {}",
                median * 1e3,
                least * 1e3,
                most * 1e3,
                seconds.len()
            );
        }
        _ => println!("DuckDB per-day query: skipped (set DUCKDB_PYTHON to a Python with duckdb)"),
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
