//! `domains …`: register a domain, verify it, start its issuance or renewal, follow it until it
//! settles, and read its history; the certificate commands are in `certificates`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::builder::PossibleValuesParser;
use reqwest::Method;
use serde_json::{json, Value};

use super::certificates::{certificate, certificates, revoke, REVOCATION_REASONS};
use super::format::text;
use super::records::{
    challenges_of, is_delegated, order_report, ownership_records, renewal_waiting, report_renewal,
    started_instructions,
};
use super::server::Client;
use crate::settings::parse_duration;

/// The client's commands.
#[derive(Debug, clap::Subcommand)]
pub enum DomainsCommand {
    /// Register a domain; prints the TXT record that proves ownership and, where the server
    /// validates by delegation, the CNAME records that prove it too and let the service publish
    /// every challenge itself, for every renewal as well
    Add {
        /// The domain name
        name: String,
        /// A further name the certificate covers (a subdomain, or `*.` a wildcard); repeatable
        #[arg(long = "alt-name", value_name = "NAME")]
        alt_names: Vec<String>,
    },
    /// Replace the further names the next certificate covers (none given: no further names)
    AltNames {
        /// The domain's id
        id: String,
        /// The new set of further names
        names: Vec<String>,
    },
    /// Every domain (optionally of one status)
    List {
        /// Only the domains of this status: pending, verified, certificate_pending, active,
        /// failed, expired or moved
        #[arg(long, value_name = "S")]
        status: Option<String>,
    },
    /// One domain, as JSON
    Get {
        /// The domain's id
        id: String,
    },
    /// Check the ownership record and mark the domain verified
    Verify {
        /// The domain's id
        id: String,
    },
    /// Check the domain's DNS now (routing, delegation, CAA): one line per check and name;
    /// exit 1 when an outcome is not `ok`
    Health {
        /// The domain's id
        id: String,
    },
    /// Start issuance; prints the challenge TXT records to publish (nothing for a delegated
    /// order: the service publishes them itself)
    Issue {
        /// The domain's id
        id: String,
    },
    /// Renew the certificate now; prints the challenge TXT records to publish, nothing for a
    /// delegated order (the current certificate stays in service until the new one is issued)
    Renew {
        /// The domain's id
        id: String,
    },
    /// Follow the domain until active (exit 0), or failed or expired (exit 1); exit 2 on the
    /// timeout. An expired domain whose renewal waits for its records is followed on. An open
    /// order's records (or that it is delegated, and why not when it fell back to manual) and a
    /// failing renewal are reported on stderr
    Wait {
        /// The domain's id
        id: String,
        /// How long to wait (`90s`, `10m`)
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The domain's history
    Events {
        /// The domain's id
        id: String,
    },
    /// The certificate chain as PEM
    Certificate {
        /// The domain's id
        id: String,
        /// Append the private key (admin only)
        #[arg(long)]
        key: bool,
    },
    /// Every certificate the domain had, newest first; `*` marks the current one
    Certificates {
        /// The domain's id
        id: String,
    },
    /// Revoke the current certificate at the CA; its replacement is ordered at once
    Revoke {
        /// The domain's id
        id: String,
        /// Why (RFC 5280); the server's default is unspecified
        #[arg(long, value_name = "REASON", value_parser = PossibleValuesParser::new(REVOCATION_REASONS))]
        reason: Option<String>,
    },
}

pub(super) async fn dispatch(client: &Client, command: DomainsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DomainsCommand::Add { name, alt_names } => add(client, &name, &alt_names).await,
        DomainsCommand::AltNames { id, names } => {
            let body = json!({ "alt_names": names });
            let path = format!("/domains/{id}/alt_names");
            let domain = client.call(Method::PUT, &path, Some(body)).await?;
            println!("{}", serde_json::to_string_pretty(&domain)?);
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::List { status } => list(client, status.as_deref()).await,
        DomainsCommand::Get { id } => {
            let domain = client
                .call(Method::GET, &format!("/domains/{id}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&domain)?);
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::Verify { id } => {
            let domain = client
                .call(Method::POST, &format!("/domains/{id}/verify"), None)
                .await?;
            println!(
                "{} is {}.",
                text(&domain["domain_name"]),
                text(&domain["status"])
            );
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::Health { id } => {
            let check = client
                .call(Method::POST, &format!("/domains/{id}/health"), None)
                .await?;
            print!("{}", health_lines(&check));
            let healthy = check["problems"].as_array().is_none_or(Vec::is_empty);
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DomainsCommand::Issue { id } => {
            let started = client
                .call(
                    Method::POST,
                    &format!("/domains/{id}/issue-certificate"),
                    None,
                )
                .await?;
            println!(
                "Order {} is {}.",
                text(&started["order_id"]),
                text(&started["status"])
            );
            print!("{}", started_instructions(&started));
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::Renew { id } => {
            let started = client
                .call(Method::POST, &format!("/domains/{id}/renew"), None)
                .await?;
            println!(
                "Renewal order {} placed; the domain stays {} with its current certificate until the new one is issued.",
                text(&started["order_id"]),
                text(&started["status"])
            );
            print!("{}", started_instructions(&started));
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::Wait { id, timeout } => wait(client, &id, timeout).await,
        DomainsCommand::Events { id } => events(client, &id).await,
        DomainsCommand::Certificate { id, key } => certificate(client, &id, key).await,
        DomainsCommand::Certificates { id } => certificates(client, &id).await,
        DomainsCommand::Revoke { id, reason } => revoke(client, &id, reason.as_deref()).await,
    }
}

async fn add(client: &Client, name: &str, alt_names: &[String]) -> anyhow::Result<ExitCode> {
    let body = json!({ "domain_name": name, "alt_names": alt_names });
    let domain = client.call(Method::POST, "/domains", Some(body)).await?;
    println!(
        "Registered {} as {} (status {}).",
        text(&domain["domain_name"]),
        text(&domain["id"]),
        text(&domain["status"])
    );
    println!("{}", text(&domain["instructions"]));
    print!("{}", ownership_records(&domain));
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, status: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut cursor: Option<String> = None;
    println!("{:<38} {:<20} DOMAIN", "ID", "STATUS");
    loop {
        let mut path = "/domains?limit=500".to_owned();
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = client.call(Method::GET, &path, None).await?;
        for domain in page["items"].as_array().into_iter().flatten() {
            println!(
                "{:<38} {:<20} {}",
                text(&domain["id"]),
                text(&domain["status"]),
                text(&domain["domain_name"])
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Follows a domain until it settles, with a spinner on a terminal.
async fn wait(client: &Client, id: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let path = format!("/domains/{id}");
    // The order whose records were last printed: each is printed once, beside the spinner,
    // which shows nothing when stderr is not a terminal.
    let mut announced: Option<String> = None;
    loop {
        let domain = client.call(Method::GET, &path, None).await?;
        let status = text(&domain["status"]);
        let name = text(&domain["domain_name"]);
        let renewing = renewal_waiting(&domain);
        spinner.set_message(format!(
            "{name} is {status} ({} s)",
            started.elapsed().as_secs()
        ));
        match status {
            "active" => {
                spinner.finish_and_clear();
                let certificate = &domain["certificate"];
                println!(
                    "{name} is active: certificate {} valid until {}.",
                    text(&certificate["serial"]),
                    text(&certificate["not_after"])
                );
                report_renewal(&domain);
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => {
                spinner.finish_and_clear();
                let reason = &domain["failure_reason"];
                eprintln!(
                    "{name} failed: {}: {}",
                    text(&reason["code"]),
                    text(&reason["detail"])
                );
                return Ok(ExitCode::FAILURE);
            }
            // Expired with no renewal order open: nothing will change before the next attempt.
            "expired" if renewing.is_none() => {
                spinner.finish_and_clear();
                eprintln!(
                    "{name} is expired: certificate {} ended at {}; no renewal order is open.",
                    text(&domain["certificate"]["serial"]),
                    text(&domain["certificate"]["not_after"])
                );
                report_renewal(&domain);
                return Ok(ExitCode::FAILURE);
            }
            _ if started.elapsed() >= timeout => {
                spinner.finish_and_clear();
                eprintln!(
                    "{name} is still {status} after {} s; giving up waiting",
                    timeout.as_secs()
                );
                if status == "expired" {
                    report_renewal(&domain);
                }
                return Ok(ExitCode::from(2));
            }
            "certificate_pending" => {
                let order_id = text(&domain["order_id"]).to_owned();
                if announced.as_deref() != Some(order_id.as_str()) {
                    let heading = format!("{name} is certificate_pending; its order ({order_id})");
                    let report =
                        order_report(&heading, &domain, &challenges_of(&domain["challenges"]));
                    spinner.suspend(|| eprint!("{report}"));
                    announced = Some(order_id);
                }
                if is_delegated(&domain) {
                    spinner.set_message(format!(
                        "{name} is certificate_pending, delegated: the service publishes its records ({} s)",
                        started.elapsed().as_secs()
                    ));
                } else if let Some(challenge) = domain["challenge"].as_object() {
                    spinner.set_message(format!(
                        "{name} is waiting for TXT {} = {} ({} s)",
                        challenge.get("challenge_domain").map_or("-", text),
                        challenge.get("expected_txt_value").map_or("-", text),
                        started.elapsed().as_secs()
                    ));
                }
            }
            "expired" => {
                let (order_id, challenges) = renewing.unwrap_or_default();
                if announced.as_deref() != Some(order_id.as_str()) {
                    let heading = format!("{name} is expired; its renewal (order {order_id})");
                    let report = order_report(&heading, &domain, &challenges);
                    spinner.suspend(|| eprint!("{report}"));
                    announced = Some(order_id);
                }
                let waiting = if is_delegated(&domain) {
                    "delegated: the service publishes its records".to_owned()
                } else {
                    format!("waiting for {} TXT record(s)", challenges.len())
                };
                spinner.set_message(format!(
                    "{name} is expired, its renewal {waiting} ({} s)",
                    started.elapsed().as_secs()
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn events(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let history = client
        .call(Method::GET, &format!("/domains/{id}/events"), None)
        .await?;
    println!("{:>4}  {:<22} {:<24} BY", "SEQ", "RECORDED", "EVENT");
    for event in history.as_array().into_iter().flatten() {
        let metadata = &event["metadata"];
        let by = metadata["actor"].as_str().unwrap_or("-");
        let request = metadata["request_id"]
            .as_str()
            .map(|id| format!(" (request {id})"))
            .unwrap_or_default();
        println!(
            "{:>4}  {:<22} {:<24} {by}{request}",
            event["sequence"].as_i64().unwrap_or(0),
            text(&event["recorded_at"]),
            text(&event["event_type"]),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A health check as lines: `<check> <name> <outcome>: found <found> (expected <expected>)`.
fn health_lines(check: &Value) -> String {
    let mut lines = String::new();
    for kind in ["routing", "delegation", "caa"] {
        for entry in check[kind].as_array().into_iter().flatten() {
            lines.push_str(&format!(
                "{kind} {} {}: found {} (expected {})\n",
                text(&entry["name"]),
                text(&entry["outcome"]),
                text(&entry["found"]),
                text(&entry["expected"])
            ));
        }
    }
    if lines.is_empty() {
        lines.push_str("Nothing to check: no ROUTING_TARGETS, no delegation, CAA_CHECK=off.\n");
    }
    lines
}
