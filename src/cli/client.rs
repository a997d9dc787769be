//! `dns-handling domains …`: a command-line client for people, against a running server.
//!
//! It speaks only the public REST API (so it works against any deployment), prints the
//! instructions the API returns, and `wait` follows a domain with a spinner until it is
//! `active` (exit 0) or `failed` (exit 1).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::settings::parse_duration;

/// How to use the client.
pub const USAGE: &str = "usage: dns-handling domains <command> [--server URL] [--token TOKEN]
  add <name>                 register a domain; prints the TXT record that proves ownership
  list [--status S]          every domain (optionally of one status)
  get <id>                   one domain, as JSON
  verify <id>                check the ownership record and mark the domain verified
  issue <id>                 start issuance; prints the challenge TXT record to publish
  wait <id> [--timeout 10m]  follow the domain until active (exit 0) or failed (exit 1)
  events <id>                the domain's history
  certificate <id> [--key]   the certificate chain as PEM (with --key: the private key)
The server is --server, else $DNS_HANDLING_SERVER, else http://127.0.0.1:8080; the token is
--token, else $DNS_HANDLING_TOKEN.";

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

/// Takes `--name value` out of `args`.
fn take_option(args: &mut Vec<String>, name: &str) -> anyhow::Result<Option<String>> {
    let Some(index) = args.iter().position(|arg| arg == name) else {
        return Ok(None);
    };
    if index + 1 >= args.len() {
        bail!("{name} needs a value\n{USAGE}");
    }
    let value = args.remove(index + 1);
    args.remove(index);
    Ok(Some(value))
}

/// Takes a `--flag` out of `args`.
fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    let before = args.len();
    args.retain(|arg| arg != name);
    args.len() != before
}

/// Runs `dns-handling domains <args…>`.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut args = args.to_vec();
    let server = take_option(&mut args, "--server")?
        .or_else(|| std::env::var("DNS_HANDLING_SERVER").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let token = take_option(&mut args, "--token")?
        .or_else(|| std::env::var("DNS_HANDLING_TOKEN").ok())
        .filter(|token| !token.is_empty());
    let client = Client {
        http: reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?,
        server: server.trim_end_matches('/').to_owned(),
        token,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(dispatch(&client, args))
}

async fn dispatch(client: &Client, mut args: Vec<String>) -> anyhow::Result<ExitCode> {
    let status_filter = take_option(&mut args, "--status")?;
    let timeout = take_option(&mut args, "--timeout")?;
    let with_key = take_flag(&mut args, "--key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["add", name] => add(client, name).await,
        ["list"] => list(client, status_filter.as_deref()).await,
        ["get", id] => {
            let domain = client
                .call(Method::GET, &format!("/domains/{id}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&domain)?);
            Ok(ExitCode::SUCCESS)
        }
        ["verify", id] => {
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
        ["issue", id] => {
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
        ["wait", id] => {
            let timeout = match timeout {
                Some(text) => {
                    parse_duration(&text).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?
                }
                None => Duration::from_secs(600),
            };
            wait(client, id, timeout).await
        }
        ["events", id] => events(client, id).await,
        ["certificate", id] => certificate(client, id, with_key).await,
        [] | ["--help"] | ["-h"] | ["help"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("unknown domains command {:?}\n{USAGE}", args.join(" ")),
    }
}

/// A JSON string field as text ("-" when absent).
fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

async fn add(client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let body = json!({ "domain_name": name });
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
    loop {
        let domain = client.call(Method::GET, &path, None).await?;
        let status = text(&domain["status"]);
        spinner.set_message(format!(
            "{} is {status} ({} s)",
            text(&domain["domain_name"]),
            started.elapsed().as_secs()
        ));
        match status {
            "active" => {
                spinner.finish_and_clear();
                let certificate = &domain["certificate"];
                println!(
                    "{} is active: certificate {} valid until {}.",
                    text(&domain["domain_name"]),
                    text(&certificate["serial"]),
                    text(&certificate["not_after"])
                );
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => {
                spinner.finish_and_clear();
                let reason = &domain["failure_reason"];
                eprintln!(
                    "{} failed: {}: {}",
                    text(&domain["domain_name"]),
                    text(&reason["code"]),
                    text(&reason["detail"])
                );
                return Ok(ExitCode::FAILURE);
            }
            _ if started.elapsed() >= timeout => {
                spinner.finish_and_clear();
                eprintln!(
                    "{} is still {status} after {} s; giving up waiting",
                    text(&domain["domain_name"]),
                    timeout.as_secs()
                );
                return Ok(ExitCode::from(2));
            }
            "certificate_pending" => {
                if let Some(challenge) = domain["challenge"].as_object() {
                    spinner.set_message(format!(
                        "{} is waiting for TXT {} = {} ({} s)",
                        text(&domain["domain_name"]),
                        challenge.get("challenge_domain").map_or("-", text),
                        challenge.get("expected_txt_value").map_or("-", text),
                        started.elapsed().as_secs()
                    ));
                }
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
