//! Part 1: the in-process name lookup alone (`NameIndex::lookup`), and what the index costs in
//! memory. Each measurement runs in a fresh process (this bench binary again, with
//! `EDGE_BENCH_LOOKUP_CHILD=<domains>`), so that its RSS grows by the index alone: memory a
//! previous index freed would otherwise be reused and hide the cost.

use std::time::{Duration, Instant};

use chrono::Utc;
use dns_handling::edge::names::{NameIndex, ServedEntry};
use rand::Rng;

use crate::process::status_mib;
use crate::seed;
use crate::seed_certificates::names;
use crate::stats::percentile;

/// The variable that makes this binary a child measuring one index: `<domains>,<lookups>`.
pub const CHILD: &str = "EDGE_BENCH_LOOKUP_CHILD";

/// What one child measured.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Names indexed (three per domain).
    pub names: usize,
    /// How long building the index took.
    pub build_s: f64,
    /// RSS growth while building it, per name.
    pub bytes_per_name: f64,
    /// Lookup latency.
    pub p50_us: f64,
    /// Lookup latency.
    pub p99_us: f64,
}

/// In the child: builds an index of `domains` domains' names, times `lookups` lookups, prints
/// [`Figures`] as one JSON line.
pub fn child(domains: usize, lookups: usize) -> anyhow::Result<()> {
    let pid = std::process::id();
    let not_after = Utc::now() + chrono::Duration::days(90);
    let before = status_mib(pid, "VmRSS:");
    let building = Instant::now();
    let mut index = NameIndex::default();
    // Names are made one domain at a time and dropped, so the RSS growth is the index's.
    for n in 0..domains {
        let entry = ServedEntry {
            domain_id: seed::domain_id(n),
            certificate_id: format!("0193a7c4-0000-7000-8000-{n:012}"),
            not_after,
        };
        index.serve(&names(n), entry);
    }
    let build_s = building.elapsed().as_secs_f64();
    let after = status_mib(pid, "VmRSS:");
    anyhow::ensure!(index.len() == 3 * domains, "{} names indexed", index.len());

    // An even mix of a domain's name, its www. and a name under its wildcard; each query made
    // before its clock starts.
    let mut rng = rand::thread_rng();
    let now = Utc::now();
    let mut samples: Vec<Duration> = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let n = rng.gen_range(0..domains);
        let query = match rng.gen_range(0..3) {
            0 => seed::domain_name(n),
            1 => format!("www.{}", seed::domain_name(n)),
            _ => format!("api.{}", seed::domain_name(n)),
        };
        let started = Instant::now();
        let found = index.lookup(&query, now);
        samples.push(started.elapsed());
        let found = found.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            found.is_some_and(|entry| entry.domain_id == seed::domain_id(n)),
            "{query} is not served by domain {n}"
        );
    }
    let us = |duration: Duration| duration.as_secs_f64() * 1e6;
    let figures = Figures {
        names: index.len(),
        build_s,
        bytes_per_name: (after - before) * 1024.0 * 1024.0 / index.len() as f64,
        p50_us: us(percentile(&mut samples, 0.50)),
        p99_us: us(percentile(&mut samples, 0.99)),
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Runs one child over `domains` domains and reads its figures.
fn run_child(domains: usize, lookups: usize) -> anyhow::Result<Figures> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{domains},{lookups}"))
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "the lookup child failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("the lookup child printed no figures: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Measures `runs` children at each size, and prints medians with their spread.
pub fn measure(sizes: &[usize], lookups: usize, runs: usize) -> anyhow::Result<()> {
    for &domains in sizes {
        let figures = (0..runs)
            .map(|_| run_child(domains, lookups))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let spread =
            |pick: fn(&Figures) -> f64| crate::spread(figures.iter().map(pick).collect::<Vec<_>>());
        println!(
            "NameIndex::lookup over {domains} domains ({} names), {runs} runs of {lookups} lookups \
             (domain, www., under the wildcard): p50 {} µs, p99 {} µs; built in {} s; RSS growth \
             while building {} bytes per name",
            figures[0].names,
            spread(|f| f.p50_us),
            spread(|f| f.p99_us),
            spread(|f| f.build_s),
            spread(|f| f.bytes_per_name),
        );
    }
    Ok(())
}
