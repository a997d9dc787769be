//! `domains certificate`, `domains certificates` and `domains revoke`: a domain's certificate
//! (with its key, for admins), every certificate it had, and revocation at the CA.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use super::format::{table, text};
use super::records::{order_report, renewal_waiting};
use super::server::Client;

/// The revocation reasons the API takes, as it spells them.
pub(super) const REVOCATION_REASONS: [&str; 6] = [
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
];

pub(super) async fn certificate(
    client: &Client,
    id: &str,
    with_key: bool,
) -> anyhow::Result<ExitCode> {
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

pub(super) async fn certificates(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
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

pub(super) async fn revoke(
    client: &Client,
    id: &str,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
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
