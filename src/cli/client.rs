//! `dns-handling domains …`: a command-line client for people, against a running server.
//!
//! It speaks only the public REST API (so it works against any deployment), prints the
//! instructions the API returns, and `wait` follows a domain with a spinner until it is
//! `active` (exit 0), or `failed` or `expired` (exit 1: no usable certificate).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::builder::PossibleValuesParser;
use clap::CommandFactory as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::settings::parse_duration;

/// `dns-handling domains …`: where the server is, and what to ask it.
#[derive(Debug, clap::Args)]
pub struct DomainsArgs {
    /// The server
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DNS_HANDLING_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The bearer token
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "DNS_HANDLING_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// What to ask; with none, this help
    #[command(subcommand)]
    pub command: Option<DomainsCommand>,
}

/// The client's commands.
#[derive(Debug, clap::Subcommand)]
pub enum DomainsCommand {
    /// Register a domain; prints the TXT record that proves ownership
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
        /// failed or expired
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
    /// Start issuance; prints the challenge TXT record to publish
    Issue {
        /// The domain's id
        id: String,
    },
    /// Renew the certificate now; prints the challenge TXT records to publish (the current
    /// certificate stays in service until the new one is issued)
    Renew {
        /// The domain's id
        id: String,
    },
    /// Follow the domain until active (exit 0), or failed or expired (exit 1); exit 2 on the
    /// timeout. An expired domain whose renewal waits for its records is followed on; a renewal
    /// waiting for records, or failing, is reported on stderr
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

/// The revocation reasons the API takes, as it spells them.
const REVOCATION_REASONS: [&str; 6] = [
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
];

/// A connection to a running server.
struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    /// Sends one request; a JSON error answer becomes an error carrying the server's message.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("{method} {path}: the server answered {status} with no JSON")
            })?
        };
        if !status.is_success() {
            let message = answer["error"].as_str().unwrap_or("no error message");
            bail!("{method} {path}: {} {message}", status.as_u16());
        }
        Ok(answer)
    }
}

/// Runs `dns-handling domains …`.
pub fn run(args: DomainsArgs) -> anyhow::Result<ExitCode> {
    let Some(command) = args.command else {
        // No command: the help, as a question answered rather than a mistake.
        let mut root = crate::cli::Cli::command();
        // Built, so that the usage line names the whole command (`dns-handling domains`).
        root.build();
        let help = root.find_subcommand_mut("domains").map(|c| c.render_help());
        println!("{}", help.unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    };
    let client = Client {
        http: reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?,
        server: args.server.trim_end_matches('/').to_owned(),
        token: args.token.filter(|token| !token.is_empty()),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(dispatch(&client, command))
}

async fn dispatch(client: &Client, command: DomainsCommand) -> anyhow::Result<ExitCode> {
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
            println!("{}", text(&started["instructions"]));
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
            println!("{}", text(&started["instructions"]));
            Ok(ExitCode::SUCCESS)
        }
        DomainsCommand::Wait { id, timeout } => wait(client, &id, timeout).await,
        DomainsCommand::Events { id } => events(client, &id).await,
        DomainsCommand::Certificate { id, key } => certificate(client, &id, key).await,
        DomainsCommand::Certificates { id } => certificates(client, &id).await,
        DomainsCommand::Revoke { id, reason } => revoke(client, &id, reason.as_deref()).await,
    }
}

/// A JSON string field as text ("-" when absent).
fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
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
    // The renewal order whose records were last printed: each is printed once, beside the
    // spinner, which shows nothing when stderr is not a terminal.
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
                if let Some(challenge) = domain["challenge"].as_object() {
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
                    spinner.suspend(|| {
                        eprintln!(
                            "{name} is expired; its renewal (order {order_id}) waits for these TXT records:"
                        );
                        eprint!("{}", records(&challenges));
                    });
                    announced = Some(order_id);
                }
                spinner.set_message(format!(
                    "{name} is expired, its renewal waiting for {} TXT record(s) ({} s)",
                    challenges.len(),
                    started.elapsed().as_secs()
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The open renewal order of a domain: its id and the TXT records it waits for.
fn renewal_waiting(domain: &Value) -> Option<(String, Vec<Value>)> {
    let renewal = &domain["renewal"];
    if renewal["in_progress"] != true {
        return None;
    }
    let challenges = renewal["challenges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Some((text(&renewal["order_id"]).to_owned(), challenges))
}

/// One line per TXT record to publish.
fn records(challenges: &[Value]) -> String {
    challenges
        .iter()
        .map(|challenge| {
            format!(
                "  {} TXT {}   (for {})\n",
                text(&challenge["challenge_domain"]),
                text(&challenge["expected_txt_value"]),
                text(&challenge["identifier"])
            )
        })
        .collect()
}

/// Says on stderr what needs a person in the domain's renewal: an open order's records, and
/// failed attempts in a row with the next one.
fn report_renewal(domain: &Value) {
    let name = text(&domain["domain_name"]);
    let renewal = &domain["renewal"];
    if let Some((order_id, challenges)) = renewal_waiting(domain) {
        eprintln!(
            "warning: the renewal of {name} (order {order_id}) waits for these TXT records; the current certificate ends at {}:",
            text(&domain["certificate"]["not_after"])
        );
        eprint!("{}", records(&challenges));
    }
    let attempts = renewal["attempts"].as_u64().unwrap_or(0);
    if attempts > 0 {
        let failure = &renewal["last_failure"];
        eprintln!(
            "warning: {attempts} renewal attempt(s) of {name} failed in a row, the last with {}: {}; the next is due at {}",
            text(&failure["code"]),
            text(&failure["detail"]),
            text(&renewal["next_attempt_at"])
        );
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

async fn certificate(client: &Client, id: &str, with_key: bool) -> anyhow::Result<ExitCode> {
    let certificate = client
        .call(Method::GET, &format!("/domains/{id}/certificate"), None)
        .await?;
    eprintln!(
        "certificate {} serial {} valid {} to {}",
        text(&certificate["id"]),
        text(&certificate["serial"]),
        text(&certificate["not_before"]),
        text(&certificate["not_after"])
    );
    print!("{}", text(&certificate["chain_pem"]));
    if with_key {
        let key = client
            .call(Method::GET, &format!("/domains/{id}/certificate/key"), None)
            .await?;
        print!("{}", text(&key["private_key_pem"]));
    }
    Ok(ExitCode::SUCCESS)
}

async fn certificates(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let history = client
        .call(Method::GET, &format!("/domains/{id}/certificates"), None)
        .await?;
    let header = [
        "",
        "ID",
        "SERIAL",
        "NOT_AFTER",
        "ISSUED",
        "NAMES",
        "REPLACED",
        "REASON",
        "REVOKED",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for item in history["items"].as_array().into_iter().flatten() {
        let names: Vec<&str> = item["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let revoked = match item["revoked_at"].as_str() {
            Some(at) => format!("{at} {}", text(&item["revocation_reason"])),
            None => "-".to_owned(),
        };
        let current = if item["current"] == true { "*" } else { " " };
        rows.push(vec![
            current.to_owned(),
            text(&item["id"]).to_owned(),
            text(&item["serial"]).to_owned(),
            text(&item["not_after"]).to_owned(),
            text(&item["issued_at"]).to_owned(),
            names.join(","),
            text(&item["replaced"]).to_owned(),
            text(&item["renewal_reason"]).to_owned(),
            revoked,
        ]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Rows as columns padded to their widest cell, two spaces apart (the last column unpadded).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

async fn revoke(client: &Client, id: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    };
    let path = format!("/domains/{id}/certificate/revoke");
    let domain = client.call(Method::POST, &path, Some(body)).await?;
    let certificate = &domain["certificate"];
    println!(
        "Certificate {} of {} is revoked ({}); the domain is {}.",
        text(&certificate["serial"]),
        text(&domain["domain_name"]),
        text(&certificate["revocation_reason"]),
        text(&domain["status"])
    );
    match renewal_waiting(&domain) {
        Some((order_id, challenges)) => {
            println!(
                "Its replacement, order {order_id}, waits for these TXT records (the revoked certificate is served until it is issued):"
            );
            print!("{}", records(&challenges));
        }
        None => println!(
            "Its replacement could not be ordered now; the service orders it at its next renewal check (see `domains get {id}`)."
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["".to_owned(), "ID".to_owned(), "NAMES".to_owned()],
            vec!["*".to_owned(), "abc".to_owned(), "a.test,b.test".to_owned()],
        ];
        assert_eq!(table(&rows), "   ID   NAMES\n*  abc  a.test,b.test\n");
    }

    #[test]
    fn records_list_each_challenge_on_its_own_line() {
        let challenges = vec![json!({
            "identifier": "*.shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1"
        })];
        assert_eq!(
            records(&challenges),
            "  _acme-challenge.shop.test. TXT v1   (for *.shop.test)\n"
        );
        let domain =
            json!({"renewal": {"in_progress": true, "order_id": "o", "challenges": challenges}});
        assert_eq!(
            renewal_waiting(&domain).map(|(id, c)| (id, c.len())),
            Some(("o".to_owned(), 1))
        );
        assert!(renewal_waiting(&json!({"renewal": {"in_progress": false}})).is_none());
    }
}
