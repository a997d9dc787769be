//! Run: `cargo bench --bench console` (N=100000 domains, RUNS=10 page loads; STORES=sqlite,postgres;
//! needs Debian's chromium and chromium-driver, and Selenium in target/schemathesis, as
//! tests/run.sh installs them)
//!
//! The console's first render: seeds a fresh store with N `active` domains (events and views,
//! as `bench/seed.rs` writes them), starts the release binary without a token (the console then
//! opens straight on the domain list) and runs `bench/console_render.py`, which loads
//! `/console/#/domains` RUNS times in headless Chromium and reads the page's own clock: first
//! render (navigation start to the list on screen), the list request's share of it, a name
//! search over every domain, and in the same browser a plain page of the same 50 rows, the
//! floor any page showing them pays. Also the page weight, as sent on the first (cold) load.
//! Under `cargo test --all-targets` it is a smoke run: 300 domains, 2 loads.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

mod harness;

#[allow(dead_code)]
mod seed;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dns_handling::adapters::store::Store;
use dns_handling_testkit::{database_env, Service, StoreKind, TestDatabase};
use serde_json::Value;

/// The service binary cargo built with this bench (the release one under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_dns-handling");

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment's python, where tests/run.sh installs Selenium.
fn python() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .and_then(|schemathesis| schemathesis.parent().map(|bin| bin.join("python")))
        .filter(|python| python.exists())
        .unwrap_or_else(|| workspace().join("target/schemathesis/bin/python"))
}

fn median_and_range(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    (median, values[0], values[values.len() - 1])
}

fn column(runs: &[Value], key: &str) -> Vec<f64> {
    runs.iter().filter_map(|run| run[key].as_f64()).collect()
}

async fn measure(kind: StoreKind, domains: usize, runs: usize) -> anyhow::Result<()> {
    let database = TestDatabase::create(kind).await;
    let store = Store::connect(&database.url).await?;
    let started = Instant::now();
    seed::seed_with(&store, domains, |_| seed::Lifecycle::Active, true).await?;
    println!(
        "[{kind:?}] seeded {domains} active domains in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    seed::close(store).await;

    let mut env = database_env(&database);
    env.insert("LOG_LEVEL".into(), "info".into());
    let service = Service::start(BINARY, &env);
    let output = Command::new(python())
        .arg(workspace().join("bench/console_render.py"))
        .env("CONSOLE_BASE", service.url(""))
        .env("RUNS", runs.to_string())
        .env("SE_OFFLINE", "true")
        .output()
        .map_err(|error| anyhow::anyhow!("cannot run bench/console_render.py: {error}"))?;
    anyhow::ensure!(
        output.status.success(),
        "bench/console_render.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(
        output
            .stdout
            .split(|byte| *byte == b'\n')
            .rfind(|line| line.starts_with(b"{"))
            .unwrap_or_default(),
    )?;
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!runs.is_empty(), "no run measured: {report}");
    for run in &runs {
        anyhow::ensure!(run["rows"] == 50, "a load did not show 50 rows: {run}");
    }
    let cold = &runs[0];
    println!(
        "[{kind:?}] page weight, first load: {} bytes sent ({} decoded), of which the list's JSON {} bytes",
        cold["page_bytes"], cold["decoded_bytes"], cold["list_json_bytes"]
    );
    let warm = if runs.len() > 1 {
        &runs[1..]
    } else {
        &runs[..]
    };
    let mut ratios: Vec<f64> = warm
        .iter()
        .filter_map(|run| {
            let (first, api, plain) = (
                run["first_render_ms"].as_f64()?,
                run["api_ms"].as_f64()?,
                run["static_ms"].as_f64()?,
            );
            Some(first / (plain + api))
        })
        .collect();
    println!(
        "[{kind:?}] first load (cold cache): first render {:.1} ms, list request {:.1} ms",
        cold["first_render_ms"].as_f64().unwrap_or(f64::NAN),
        cold["api_ms"].as_f64().unwrap_or(f64::NAN)
    );
    for (label, key) in [
        ("first render", "first_render_ms"),
        ("list request (GET /domains, 50 of them)", "api_ms"),
        ("plain page of the same rows", "static_ms"),
        ("name search over every domain", "search_ms"),
    ] {
        let (median, low, high) = median_and_range(&mut column(warm, key));
        println!(
            "[{kind:?}] later loads, {label}: median {median:.1} ms ({low:.1}–{high:.1}) over {} loads",
            warm.len()
        );
    }
    let (median, low, high) = median_and_range(&mut ratios);
    println!(
        "[{kind:?}] first render ÷ (plain page + list request): median {median:.2} ({low:.2}–{high:.2})"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = harness::benchmarking();
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let domains = number("N", if benchmarking { 100_000 } else { 300 });
    let runs = number("RUNS", if benchmarking { 10 } else { 2 });
    harness::on_each_store(|kind| measure(kind, domains, runs))
}
