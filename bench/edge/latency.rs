//! Part 3: commit → served. One more domain's events, its `CertificateIssued` included, are
//! committed into the store from outside the service, as another replica commits them (its
//! key first, as the service stores a key before its certificate exists). From that commit
//! the bench times, each watched at once:
//! - `GET /edge/certificate?server_name=<its name>` answering with the new certificate
//!   (asked every millisecond);
//! - Caddy, run from `docs/edge/Caddyfile` (`get_certificate http` pointed at the service),
//!   presenting the new certificate in a TLS handshake for its name (a handshake made in process
//!   every millisecond; each one makes Caddy ask the service, which answers `204` until the
//!   name is served);
//! - the running `edge sync` having written its combined PEM (looked for every millisecond);
//! - the feed's own commit → follower latency: the `CertificateIssued` line on a
//!   `GET /events?follow=true` stream.
//!
//! On PostgreSQL the commit wakes the service through `NOTIFY`, as another replica's does. A
//! SQLite store has one process, which signals its own commits in memory; a commit from outside
//! it is seen at its next poll (`FEED_POLL_INTERVAL`, 1 s). So on SQLite the bench then registers
//! a throwaway domain through the API, whose commit wakes the followers as one of the service's
//! own would: the SQLite figures include that request.

use std::time::{Duration, Instant};

use dns_handling::adapters::store::Store;
use dns_handling_testkit::{presented_leaf, Caddy, Service, StoreKind};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::sync::mpsc;

use crate::seed_certificates::{commit_domain, Authority};
use crate::sync::Agent;
use crate::{feed_reader, seed, EDGE, EDGE_TOKEN};

/// The Caddyfile the README gives platform operators, as the edge tests run it.
const CADDYFILE: &str = include_str!("../../docs/edge/Caddyfile");

/// How long one observer waits before the bench fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Asks for `name` every millisecond until the answer carries `leaf_pem`; returns when.
async fn served(service: &Service, name: &str, leaf_pem: &str) -> anyhow::Result<Instant> {
    let client = dns_handling_testkit::client_builder().build()?;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let response = client
            .get(service.url("/edge/certificate"))
            .query(&[("server_name", name)])
            .bearer_auth(EDGE_TOKEN)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if status == 200 && body.contains(leaf_pem) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            status == 204 || status == 200,
            "GET /edge/certificate?server_name={name}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    anyhow::bail!("{name} was not served within {PATIENCE:?}")
}

/// Makes a TLS handshake with Caddy for `name` every millisecond until Caddy presents `leaf`
/// (DER); returns when.
async fn caddy_serves(caddy: &Caddy, name: &str, leaf: &[u8]) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if presented_leaf(caddy.port(), name).await.as_deref() == Some(leaf) {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    anyhow::bail!("Caddy did not serve {name} within {PATIENCE:?}")
}

/// The last lines of a log (Caddy logs each failed handshake: thousands in 30 s).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Looks for `path` every millisecond; returns when it is there.
async fn written(path: std::path::PathBuf) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    anyhow::bail!(
        "edge sync did not write {} within {PATIENCE:?}",
        path.display()
    )
}

/// Starts Caddy in front of `service`, commits `commits` more domains one after the other
/// (numbered from `first`) and prints the four latencies' medians, p99s and maxima.
pub async fn measure(
    kind: StoreKind,
    store: &Store,
    service: &Service,
    authority: &Authority,
    agent: &mut Agent,
    first: usize,
    commits: usize,
) -> anyhow::Result<()> {
    let service_address = service.address.to_string();
    let caddy = Caddy::start(
        CADDYFILE,
        &[
            ("SERVICE", &service_address),
            ("EDGE_NAME", EDGE),
            ("EDGE_TOKEN", EDGE_TOKEN),
        ],
    );
    let (end, _) = store.feed_extent().await?;
    let stream = service
        .client
        .get(service.url(&format!("/events?after={end}&follow=true")))
        .header("accept", "application/x-ndjson")
        .send()
        .await?;
    anyhow::ensure!(stream.status() == 200, "follow: {}", stream.status());
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let follower = tokio::spawn(feed_reader::follow(
        stream,
        Some("CertificateIssued"),
        sender,
    ));

    let (mut to_edge, mut to_caddy) = (Vec::new(), Vec::new());
    let (mut to_sync, mut to_feed) = (Vec::new(), Vec::new());
    for k in 0..commits {
        let n = first + k;
        let issued = authority.issue(n, 0)?;
        let leaf = CertificateDer::from_pem_slice(issued.leaf_pem.as_bytes())?;
        let name = seed::domain_name(n);
        let id = seed::domain_id(n);
        let committing = async {
            commit_domain(store, authority, n, &issued).await?;
            let committed = Instant::now();
            if kind == StoreKind::Sqlite {
                let wake = json!({"domain_name": format!("wake{n}.example.net")});
                let (code, body) = service.post("/domains", Some(wake)).await;
                anyhow::ensure!(code == 201, "waking the service: {code} {body}");
            }
            loop {
                let (arrived_id, at) = tokio::time::timeout(PATIENCE, arrivals.recv())
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("domain {n}'s CertificateIssued was not followed")
                    })?
                    .ok_or_else(|| anyhow::anyhow!("the following stream ended"))?;
                if arrived_id == id {
                    return Ok((committed, at));
                }
            }
        };
        let file = agent.dir.join(format!("{name}.pem"));
        let (committing, edge, handshake, file) = tokio::join!(
            committing,
            served(service, &name, &issued.leaf_pem),
            caddy_serves(&caddy, &name, &leaf),
            written(file)
        );
        let (committed, fed) = committing?;
        let since = |at: Instant| at.saturating_duration_since(committed);
        to_feed.push(since(fed));
        to_edge.push(since(edge?));
        to_caddy.push(since(handshake.map_err(|e| {
            anyhow::anyhow!("{e}; the end of Caddy's log: {}", tail(&caddy.log()))
        })?));
        to_sync.push(since(file.map_err(|e| {
            anyhow::anyhow!("{e}; edge sync's log: {}", agent.log())
        })?));
        agent.ensure_running()?;
    }
    follower.abort();
    let summary = |samples: &mut Vec<Duration>| {
        let max = samples.iter().max().copied().unwrap_or_default();
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(crate::stats::percentile(samples, 0.50)),
            ms(crate::stats::percentile(samples, 0.99)),
            ms(max)
        )
    };
    let sqlite_wake = if kind == StoreKind::Sqlite {
        " (then a POST /domains wakes it)"
    } else {
        " (NOTIFY wakes it)"
    };
    println!(
        "{kind:?}: commit → served, {commits} domains committed one after the other from outside \
         the service{sqlite_wake}:"
    );
    for (what, samples) in [
        (
            "GET /edge/certificate answers the new certificate",
            &mut to_edge,
        ),
        ("Caddy presents it in a handshake", &mut to_caddy),
        ("edge sync wrote its combined PEM", &mut to_sync),
        (
            "GET /events?follow=true has the CertificateIssued line",
            &mut to_feed,
        ),
    ] {
        println!("    {:<56}{}", format!("{what}:"), summary(samples));
    }
    Ok(())
}
