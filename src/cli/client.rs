//! `dns-handling domains …` and `dns-handling webhooks …`: a command-line client for people,
//! against a running server.
//!
//! It speaks only the public REST API (so it works against any deployment), prints the
//! instructions the API returns and the records to publish (none for an order the service
//! validates by delegation, in its own DNS zone), and `wait` follows a domain with a spinner
//! until it is `active` (exit 0), or `failed` or `expired` (exit 1: no usable certificate).
//! `webhooks …` registers the platform's webhook endpoints, shows a new signing secret the one
//! time the server shows it, and prints each endpoint's delivery attempts as a table.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::builder::PossibleValuesParser;
use clap::CommandFactory as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::domain::notifications::NotificationType;
use crate::settings::parse_duration;

/// Where the server is and the token to show it: the options of `domains …` and `webhooks …`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
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
}

/// `dns-handling domains …`: where the server is, and what to ask it.
#[derive(Debug, clap::Args)]
pub struct DomainsArgs {
    /// The server and the token
    #[command(flatten)]
    pub server: ServerArgs,
    /// What to ask; with none, this help
    #[command(subcommand)]
    pub command: Option<DomainsCommand>,
}

/// `dns-handling webhooks …`: where the server is, and what to ask it about webhook endpoints.
#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    /// The server and the token
    #[command(flatten)]
    pub server: ServerArgs,
    /// What to ask; with none, this help
    #[command(subcommand)]
    pub command: Option<WebhooksCommand>,
}

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

/// The webhook commands: the platform's endpoints, their secrets and their deliveries.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint the service POSTs signed notifications to (Standard Webhooks);
    /// prints its id and its signing secret, which is shown this once
    Add {
        /// Where messages are POSTed (https://…; its host must not resolve to a loopback,
        /// private, link-local or metadata address unless the server allows it)
        url: String,
        /// A notification type to send; repeatable; none: every type
        #[arg(long = "event", value_name = "TYPE", value_parser = PossibleValuesParser::new(NotificationType::ALL.map(NotificationType::as_str)))]
        events: Vec<String>,
        /// What the endpoint is for (up to 500 characters)
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Every endpoint not removed, oldest first, with its messages pending, delivered and failed
    List,
    /// One endpoint: its URL, types, status and messages (never its secret)
    Show {
        /// The endpoint's id
        id: String,
    },
    /// Remove an endpoint: nothing more is sent to it (its history stays)
    Remove {
        /// The endpoint's id
        id: String,
    },
    /// Make a new signing secret, shown this once; the replaced one signs beside it for the
    /// server's WEBHOOK_SECRET_OVERLAP (24 hours by default)
    RotateSecret {
        /// The endpoint's id
        id: String,
    },
    /// The endpoint's delivery attempts, newest first: time, message id, attempt, status,
    /// latency, error
    Deliveries {
        /// The endpoint's id
        id: String,
        /// How many attempts to show
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
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

impl Client {
    /// A client of the server `args` name.
    fn connect(args: ServerArgs) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(Duration::from_secs(60))
                .build()
                .context("building the HTTP client")?,
            server: args.server.trim_end_matches('/').to_owned(),
            token: args.token.filter(|token| !token.is_empty()),
        })
    }
}

/// The help of `dns-handling <name>`, as a question answered rather than a mistake: what a
/// client command with no subcommand prints.
fn help_of(name: &str) -> anyhow::Result<ExitCode> {
    let mut root = crate::cli::Cli::command();
    // Built, so that the usage line names the whole command (`dns-handling domains`).
    root.build();
    let help = root.find_subcommand_mut(name).map(|c| c.render_help());
    println!("{}", help.unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// Runs one client command to its end on a single-threaded runtime.
fn block_on(
    work: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// Runs `dns-handling domains …`.
pub fn run(args: DomainsArgs) -> anyhow::Result<ExitCode> {
    let Some(command) = args.command else {
        return help_of("domains");
    };
    let client = Client::connect(args.server)?;
    block_on(dispatch(&client, command))
}

/// Runs `dns-handling webhooks …`.
pub fn run_webhooks(args: WebhooksArgs) -> anyhow::Result<ExitCode> {
    let Some(command) = args.command else {
        return help_of("webhooks");
    };
    let client = Client::connect(args.server)?;
    block_on(dispatch_webhooks(&client, command))
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
    print!("{}", ownership_records(&domain));
    Ok(ExitCode::SUCCESS)
}

/// The records that prove a newly registered domain's ownership, when the server validates by
/// delegation (empty otherwise: the instructions name the one TXT record): the TXT record, or
/// the CNAME records that also let the service publish every challenge itself.
fn ownership_records(domain: &Value) -> String {
    let cnames = delegation_records(domain);
    if cnames.is_empty() {
        return String::new();
    }
    let txt = &domain["verification_record"];
    let mut out = format!(
        "To prove ownership by TXT (every order's records are then published by hand):\n  {} TXT {}\n",
        text(&txt["name"]),
        text(&txt["value"])
    );
    out.push_str(
        "Or by CNAME, once for good (the service then publishes every challenge itself, renewals included):\n",
    );
    out.push_str(&delegation_lines(&cnames));
    if let Some(shared) = cnames
        .iter()
        .map(|cname| text(&cname["name"]))
        .find(|name| *name == text(&txt["name"]))
    {
        out.push_str(&format!(
            "A CNAME excludes any other record at its name: set {shared} to the TXT record or to the CNAME, not both.\n"
        ));
    }
    out
}

/// The delegation CNAME records of a domain: `delegation_records`, or the one
/// `delegation_record`; none when the server does not validate by delegation.
fn delegation_records(domain: &Value) -> Vec<Value> {
    match domain["delegation_records"].as_array() {
        Some(records) if !records.is_empty() => records.clone(),
        _ => domain["delegation_record"]
            .is_object()
            .then(|| domain["delegation_record"].clone())
            .into_iter()
            .collect(),
    }
}

/// One line per delegation CNAME record, with the names it serves.
fn delegation_lines(cnames: &[Value]) -> String {
    cnames
        .iter()
        .map(|cname| {
            let names: Vec<&str> = cname["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "  {} CNAME {}   (for {})\n",
                text(&cname["name"]),
                text(&cname["value"]),
                names.join(", ")
            )
        })
        .collect()
}

/// What to print of the `202` of `issue-certificate` or `renew`: the API's instructions for an
/// order published by hand; for a delegated one, that there is nothing to publish and which
/// values the service serves itself.
fn started_instructions(started: &Value) -> String {
    if is_delegated(started) {
        order_report("The order", started, &challenges_of(&started["challenges"]))
    } else {
        format!("{}\n", text(&started["instructions"]))
    }
}

/// An order's challenges (`challenges` of a `202` or of a domain, or `renewal.challenges`).
fn challenges_of(challenges: &Value) -> Vec<Value> {
    challenges.as_array().cloned().unwrap_or_default()
}

/// Whether the open order of `order` (the `202` of `issue-certificate` or `renew`, or a domain
/// with an order open) is validated by delegation: the service publishes its records itself.
fn is_delegated(order: &Value) -> bool {
    order["validation"] == "delegated"
}

/// What an open order waits for, after `heading` (which names the order): for a delegated order,
/// nothing to publish, and the values the service serves in its own zone; otherwise the TXT
/// records to publish, and why the order is not delegated when delegation was tried, with the
/// CNAME records that would delegate the next orders (when `order` is a domain, which lists them).
fn order_report(heading: &str, order: &Value, challenges: &[Value]) -> String {
    if is_delegated(order) {
        let served: String = challenges
            .iter()
            .map(|challenge| {
                format!(
                    "  {} TXT {}   (for {}, via {})\n",
                    text(&challenge["delegated_to"]),
                    text(&challenge["expected_txt_value"]),
                    text(&challenge["identifier"]),
                    text(&challenge["challenge_domain"])
                )
            })
            .collect();
        return if served.is_empty() {
            format!("{heading}: nothing to publish: delegated\n")
        } else {
            format!(
                "{heading}: nothing to publish: delegated; the service serves these values in its own zone:\n{served}"
            )
        };
    }
    let mut out = if challenges.is_empty() {
        format!(
            "{heading}: nothing to publish: the CA holds a valid authorization for every name\n"
        )
    } else {
        format!(
            "{heading} waits for these TXT records:\n{}",
            records(challenges)
        )
    };
    if let Some(problem) = order["delegation_problem"].as_str() {
        out.push_str(&format!("  (not delegated: {problem})\n"));
        let cnames = delegation_records(order);
        if !cnames.is_empty() {
            out.push_str("  to have the next orders delegated, set these CNAME records once:\n");
            out.push_str(&delegation_lines(&cnames));
        }
    }
    out
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

/// Says on stderr what needs a person in the domain's renewal: an open order's records (a
/// delegated one needs nobody, and says so), and failed attempts in a row with the next one.
fn report_renewal(domain: &Value) {
    let name = text(&domain["domain_name"]);
    let renewal = &domain["renewal"];
    if let Some((order_id, challenges)) = renewal_waiting(domain) {
        let heading = format!(
            "the renewal of {name} (order {order_id}; the current certificate ends at {})",
            text(&domain["certificate"]["not_after"])
        );
        let warning = if is_delegated(domain) {
            ""
        } else {
            "warning: "
        };
        eprint!("{warning}{}", order_report(&heading, domain, &challenges));
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
            let heading = format!(
                "Its replacement (order {order_id}; the revoked certificate is served until it is issued)"
            );
            print!("{}", order_report(&heading, &domain, &challenges));
        }
        None => println!(
            "Its replacement could not be ordered now; the service orders it at its next renewal check (see `domains get {id}`)."
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `webhooks add` and `webhooks rotate-secret` say on stderr beside a new secret.
const SECRET_WARNING: &str = "warning: the secret is shown this once and never again: store it \
     now where the receiver verifies webhook-signature with it (a Standard Webhooks library \
     takes it as it is, whsec_ included)";

async fn dispatch_webhooks(client: &Client, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Add {
            url,
            events,
            description,
        } => {
            let mut body = json!({ "url": url });
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            let created = client.call(Method::POST, "/webhooks", Some(body)).await?;
            print!("{}", created_report(&created));
            eprintln!("{SECRET_WARNING}");
        }
        WebhooksCommand::List => {
            let list = client.call(Method::GET, "/webhooks", None).await?;
            print!("{}", endpoints_table(&items_of(&list["items"])));
        }
        WebhooksCommand::Show { id } => {
            let endpoint = client
                .call(Method::GET, &format!("/webhooks/{id}"), None)
                .await?;
            print!("{}", endpoint_details(&endpoint));
        }
        WebhooksCommand::Remove { id } => {
            client
                .call(Method::DELETE, &format!("/webhooks/{id}"), None)
                .await?;
            println!("Webhook endpoint {id} is removed: nothing more is sent to it.");
        }
        WebhooksCommand::RotateSecret { id } => {
            let path = format!("/webhooks/{id}/rotate-secret");
            let rotated = client.call(Method::POST, &path, None).await?;
            print!("{}", rotated_report(&rotated));
            eprintln!("{SECRET_WARNING}");
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let attempts = deliveries(client, &id, limit).await?;
            print!("{}", deliveries_table(&attempts));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Up to `limit` of the endpoint's delivery attempts, newest first, a page at a time.
async fn deliveries(client: &Client, id: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    /// The largest page the server gives.
    const PAGE: u32 = 500;
    let mut attempts: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    while attempts.len() < limit as usize {
        let page_size = PAGE.min(limit - attempts.len() as u32);
        let mut path = format!("/webhooks/{id}/deliveries?limit={page_size}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let page = client.call(Method::GET, &path, None).await?;
        attempts.extend(items_of(&page["items"]));
        match page["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    attempts.truncate(limit as usize);
    Ok(attempts)
}

/// The items of a list the server answered (none when it is not one).
fn items_of(items: &Value) -> Vec<Value> {
    items.as_array().cloned().unwrap_or_default()
}

/// The notification types an endpoint is sent, for people: `every type` when it named none.
fn event_types(endpoint: &Value) -> String {
    let types: Vec<&str> = endpoint["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if types.is_empty() {
        "every type".to_owned()
    } else {
        types.join(", ")
    }
}

/// What `webhooks add` prints: the endpoint's id, where it is sent what, and its secret.
fn created_report(created: &Value) -> String {
    format!(
        "Created webhook endpoint {} for {} (sent: {}).\nSigning secret: {}\n",
        text(&created["id"]),
        text(&created["url"]),
        event_types(created),
        text(&created["secret"])
    )
}

/// What `webhooks rotate-secret` prints: the new secret, and until when the replaced one signs
/// beside it.
fn rotated_report(rotated: &Value) -> String {
    let mut out = format!(
        "New signing secret of webhook endpoint {}: {}\n",
        text(&rotated["id"]),
        text(&rotated["secret"])
    );
    if let Some(until) = rotated["previous_secret_valid_until"].as_str() {
        out.push_str(&format!(
            "The previous secret signs every message beside it until {until}: switch the receiver to the new one before then.\n"
        ));
    }
    out
}

/// A count of the endpoint's messages (`-` when the server gave none).
fn count(value: &Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// `webhooks list`: one row per endpoint, the URL last.
fn endpoints_table(endpoints: &[Value]) -> String {
    let header = [
        "ID",
        "STATUS",
        "EVENTS",
        "PENDING",
        "DELIVERED",
        "FAILED",
        "URL",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for endpoint in endpoints {
        rows.push(vec![
            text(&endpoint["id"]).to_owned(),
            text(&endpoint["status"]).to_owned(),
            event_types(endpoint).replace(", ", ","),
            count(&endpoint["pending_messages"]),
            count(&endpoint["delivered_messages"]),
            count(&endpoint["failed_messages"]),
            text(&endpoint["url"]).to_owned(),
        ]);
    }
    table(&rows)
}

/// `webhooks show`: one endpoint, a field a line.
fn endpoint_details(endpoint: &Value) -> String {
    let mut status = text(&endpoint["status"]).to_owned();
    if let Some(reason) = endpoint["disabled_reason"].as_str() {
        status.push_str(&format!(" ({reason})"));
    }
    let mut lines = vec![
        ("id", text(&endpoint["id"]).to_owned()),
        ("url", text(&endpoint["url"]).to_owned()),
        ("events", event_types(endpoint)),
        (
            "description",
            Some(text(&endpoint["description"]))
                .filter(|description| !description.is_empty())
                .unwrap_or("-")
                .to_owned(),
        ),
        ("status", status),
        ("created", text(&endpoint["created_at"]).to_owned()),
        (
            "messages",
            format!(
                "{} pending, {} delivered, {} failed",
                count(&endpoint["pending_messages"]),
                count(&endpoint["delivered_messages"]),
                count(&endpoint["failed_messages"])
            ),
        ),
    ];
    if let Some(until) = endpoint["previous_secret_valid_until"].as_str() {
        lines.push(("previous secret", format!("signs too until {until}")));
    }
    lines
        .iter()
        .map(|(field, value)| format!("{:<17}{value}\n", format!("{field}:")))
        .collect()
}

/// `webhooks deliveries`: one row per attempt, newest first, the error last.
fn deliveries_table(attempts: &[Value]) -> String {
    let header = ["TIME", "MESSAGE", "ATTEMPT", "STATUS", "LATENCY", "ERROR"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for attempt in attempts {
        let latency = attempt["latency_ms"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        // An error from the network stack is one line, whatever it carried.
        let error = attempt["error"].as_str().map_or_else(
            || "-".to_owned(),
            |e| e.split_whitespace().collect::<Vec<_>>().join(" "),
        );
        rows.push(vec![
            text(&attempt["attempted_at"]).to_owned(),
            text(&attempt["message_id"]).to_owned(),
            count(&attempt["attempt"]),
            count(&attempt["status_code"]),
            latency,
            error,
        ]);
    }
    table(&rows)
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

    /// The delegation records of a registration: the domain and its wildcard share one.
    fn cnames() -> Value {
        json!([
            {"name": "_acme-challenge.shop.test.", "type": "CNAME", "value": "a1.acme.platform.test.",
             "names": ["shop.test", "*.shop.test"]},
            {"name": "_acme-challenge.www.shop.test.", "type": "CNAME", "value": "b2.acme.platform.test.",
             "names": ["www.shop.test"]}
        ])
    }

    #[test]
    fn a_registration_without_delegation_adds_nothing_to_the_instructions() {
        let domain = json!({"verification_record": {"name": "_acme-challenge.shop.test.", "type": "TXT", "value": "tok"}});
        assert_eq!(ownership_records(&domain), "");
        assert!(delegation_records(&domain).is_empty());
    }

    #[test]
    fn a_registration_with_delegation_lists_the_txt_record_and_every_cname() {
        let domain = json!({
            "verification_record": {"name": "_acme-challenge.shop.test.", "type": "TXT", "value": "tok"},
            "delegation_record": cnames()[0].clone(),
            "delegation_records": cnames(),
        });
        assert_eq!(
            ownership_records(&domain),
            "To prove ownership by TXT (every order's records are then published by hand):\n\
             \x20 _acme-challenge.shop.test. TXT tok\n\
             Or by CNAME, once for good (the service then publishes every challenge itself, renewals included):\n\
             \x20 _acme-challenge.shop.test. CNAME a1.acme.platform.test.   (for shop.test, *.shop.test)\n\
             \x20 _acme-challenge.www.shop.test. CNAME b2.acme.platform.test.   (for www.shop.test)\n\
             A CNAME excludes any other record at its name: set _acme-challenge.shop.test. to the TXT record or to the CNAME, not both.\n"
        );
    }

    #[test]
    fn the_single_delegation_record_stands_in_for_a_missing_list() {
        let domain = json!({"delegation_record": cnames()[1].clone()});
        assert_eq!(
            delegation_lines(&delegation_records(&domain)),
            "  _acme-challenge.www.shop.test. CNAME b2.acme.platform.test.   (for www.shop.test)\n"
        );
    }

    #[test]
    fn a_delegated_order_has_nothing_to_publish_and_names_what_the_service_serves() {
        let challenges = vec![json!({
            "identifier": "shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1",
            "delegated_to": "a1.acme.platform.test."
        })];
        let started = json!({"validation": "delegated", "challenges": challenges,
            "instructions": "Nothing to publish: …"});
        assert_eq!(
            started_instructions(&started),
            "The order: nothing to publish: delegated; the service serves these values in its own zone:\n\
             \x20 a1.acme.platform.test. TXT v1   (for shop.test, via _acme-challenge.shop.test.)\n"
        );
        assert_eq!(
            order_report("x", &json!({"validation": "delegated"}), &[]),
            "x: nothing to publish: delegated\n"
        );
    }

    #[test]
    fn a_manual_order_lists_its_records_and_why_it_is_not_delegated() {
        let challenges = vec![json!({
            "identifier": "shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1"
        })];
        let started = json!({"validation": "manual", "instructions": "Set a TXT record at …"});
        assert_eq!(started_instructions(&started), "Set a TXT record at …\n");
        // Delegation off: the records alone, as before.
        assert_eq!(
            order_report("its order (o)", &json!({"validation": "manual"}), &challenges),
            "its order (o) waits for these TXT records:\n  _acme-challenge.shop.test. TXT v1   (for shop.test)\n"
        );
        // Fallen back: why, and the CNAME records that would delegate the next orders.
        let domain = json!({
            "validation": "manual",
            "delegation_problem": "_acme-challenge.shop.test. has no CNAME; set it to a1.acme.platform.test. to let the service publish the challenges",
            "delegation_records": [cnames()[0].clone()],
        });
        assert_eq!(
            order_report("its order (o)", &domain, &challenges),
            "its order (o) waits for these TXT records:\n\
             \x20 _acme-challenge.shop.test. TXT v1   (for shop.test)\n\
             \x20 (not delegated: _acme-challenge.shop.test. has no CNAME; set it to a1.acme.platform.test. to let the service publish the challenges)\n\
             \x20 to have the next orders delegated, set these CNAME records once:\n\
             \x20 _acme-challenge.shop.test. CNAME a1.acme.platform.test.   (for shop.test, *.shop.test)\n"
        );
        assert_eq!(
            order_report("its order (o)", &json!({"validation": "manual"}), &[]),
            "its order (o): nothing to publish: the CA holds a valid authorization for every name\n"
        );
    }
    /// An endpoint as the server answers it, with the given types.
    fn endpoint(events: Value) -> Value {
        json!({
            "id": "0193-a", "url": "https://hooks.platform.test/certs", "events": events,
            "description": "edge", "status": "active", "pending_messages": 1,
            "delivered_messages": 12, "failed_messages": 0, "created_at": "2026-11-30T01:00:00Z"
        })
    }

    #[test]
    fn a_new_endpoint_prints_its_id_its_types_and_its_secret() {
        let mut created = endpoint(json!([]));
        created["secret"] = json!("whsec_abc");
        assert_eq!(
            created_report(&created),
            "Created webhook endpoint 0193-a for https://hooks.platform.test/certs (sent: every type).\n\
             Signing secret: whsec_abc\n"
        );
        created["events"] = json!(["certificate.issued", "certificate.renewed"]);
        assert!(
            created_report(&created).contains("(sent: certificate.issued, certificate.renewed)")
        );
    }

    #[test]
    fn a_rotated_secret_says_until_when_the_previous_one_signs() {
        let mut rotated = endpoint(json!([]));
        rotated["secret"] = json!("whsec_new");
        rotated["previous_secret_valid_until"] = json!("2026-12-01T01:00:00Z");
        assert_eq!(
            rotated_report(&rotated),
            "New signing secret of webhook endpoint 0193-a: whsec_new\n\
             The previous secret signs every message beside it until 2026-12-01T01:00:00Z: switch the receiver to the new one before then.\n"
        );
    }

    #[test]
    fn endpoints_are_listed_one_a_row_with_their_url_last() {
        let mut disabled = endpoint(json!(["domain.removed"]));
        disabled["id"] = json!("0193-b");
        disabled["status"] = json!("disabled");
        disabled["url"] = json!("https://gone.test/h");
        assert_eq!(
            endpoints_table(&[endpoint(json!([])), disabled]),
            "ID      STATUS    EVENTS          PENDING  DELIVERED  FAILED  URL\n\
             0193-a  active    every type      1        12         0       https://hooks.platform.test/certs\n\
             0193-b  disabled  domain.removed  1        12         0       https://gone.test/h\n"
        );
        assert_eq!(
            endpoints_table(&[]),
            "ID  STATUS  EVENTS  PENDING  DELIVERED  FAILED  URL\n"
        );
    }

    #[test]
    fn an_endpoint_is_shown_a_field_a_line_with_why_it_is_disabled() {
        let mut shown = endpoint(json!(["certificate.issued", "domain.removed"]));
        shown["status"] = json!("disabled");
        shown["disabled_reason"] = json!("the receiver answered 410 Gone to message msg_1");
        shown["previous_secret_valid_until"] = json!("2026-12-01T01:00:00Z");
        assert_eq!(
            endpoint_details(&shown),
            "id:              0193-a\n\
             url:             https://hooks.platform.test/certs\n\
             events:          certificate.issued, domain.removed\n\
             description:     edge\n\
             status:          disabled (the receiver answered 410 Gone to message msg_1)\n\
             created:         2026-11-30T01:00:00Z\n\
             messages:        1 pending, 12 delivered, 0 failed\n\
             previous secret: signs too until 2026-12-01T01:00:00Z\n"
        );
        shown["description"] = json!("");
        assert!(endpoint_details(&shown).contains("\ndescription:     -\n"));
    }

    #[test]
    fn deliveries_show_each_attempt_with_its_status_or_its_error() {
        let attempts = [
            json!({"id": 3, "message_id": "msg_1", "position": 41, "attempt": 3,
                   "attempted_at": "2026-11-30T01:00:10Z", "status_code": 200, "latency_ms": 35,
                   "error": null}),
            json!({"id": 2, "message_id": "msg_1", "position": 41, "attempt": 2,
                   "attempted_at": "2026-11-30T01:00:05Z", "status_code": null,
                   "latency_ms": 15000, "error": "operation timed out\n(after 15 s)"}),
            json!({"id": 1, "message_id": "msg_1", "position": 41, "attempt": 1,
                   "attempted_at": "2026-11-30T01:00:00Z", "status_code": 503, "latency_ms": 4,
                   "error": null}),
        ];
        assert_eq!(
            deliveries_table(&attempts),
            "TIME                  MESSAGE  ATTEMPT  STATUS  LATENCY   ERROR\n\
             2026-11-30T01:00:10Z  msg_1    3        200     35 ms     -\n\
             2026-11-30T01:00:05Z  msg_1    2        -       15000 ms  operation timed out (after 15 s)\n\
             2026-11-30T01:00:00Z  msg_1    1        503     4 ms      -\n"
        );
    }
}
