//! `tokens …`: the access tokens the service manages: make one (its secret printed this once),
//! list them, revoke one.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use super::format::{table, text};
use super::server::Client;

/// The token commands: make, list and revoke the tokens the service manages.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Make a token; prints its id and its secret, which is shown this once
    Create {
        /// What it is for (an edge token's name is its edge's name)
        name: String,
        /// What it may do
        #[arg(long, value_parser = ["admin", "auditor", "edge", "tenant"])]
        role: String,
        /// The tenant of a `tenant` token (required with it, refused with any other role):
        /// the token sees and acts on this tenant's domains only
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// When it stops being accepted (RFC 3339, e.g. 2027-01-31T00:00:00Z); none: never
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// A prefix (CIDR) the caller's address must be in; repeatable; none: any address
        #[arg(long = "allowed-from", value_name = "CIDR")]
        allowed_from: Vec<String>,
    },
    /// Every token, revoked ones too, oldest first (never a secret)
    List,
    /// Revoke a token: every replica refuses it within a second or so
    Revoke {
        /// The token's id
        id: String,
    },
}

/// What `tokens create` says on stderr beside the secret.
const SECRET_WARNING: &str = "warning: the secret is shown this once and never again (only its \
     SHA-256 is stored): store it now; present it as Authorization: Bearer <secret>";

/// Runs one `tokens …` command.
pub(super) async fn dispatch(client: &Client, command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create {
            name,
            role,
            tenant,
            expires_at,
            allowed_from,
        } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(tenant) = tenant {
                body["tenant"] = json!(tenant);
            }
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            if !allowed_from.is_empty() {
                body["allowed_from"] = json!(allowed_from);
            }
            let created = client.call(Method::POST, "/tokens", Some(body)).await?;
            print!("{}", created_report(&created));
            eprintln!("{SECRET_WARNING}");
        }
        TokensCommand::List => {
            let list = client.call(Method::GET, "/tokens", None).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            print!("{}", tokens_table(&items));
        }
        TokensCommand::Revoke { id } => {
            client
                .call(Method::DELETE, &format!("/tokens/{id}"), None)
                .await?;
            println!("Token {id} is revoked: every replica refuses it from now on.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `tokens create` prints: the token's id, role and secret.
fn created_report(created: &Value) -> String {
    format!(
        "Created {} token {} ({}).\nSecret: {}\n",
        text(&created["role"]),
        text(&created["id"]),
        text(&created["name"]),
        text(&created["secret"])
    )
}

/// `tokens list`: one row per token, the name last.
fn tokens_table(tokens: &[Value]) -> String {
    let header = [
        "ID",
        "ROLE",
        "STATUS",
        "EXPIRES",
        "LAST USED",
        "ALLOWED FROM",
        "NAME",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for token in tokens {
        let allowed: Vec<&str> = token["allowed_from"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // A tenant token's role names its tenant: `tenant:acct_123`.
        let role = match token["tenant"].as_str() {
            Some(tenant) => format!("{}:{tenant}", text(&token["role"])),
            None => text(&token["role"]).to_owned(),
        };
        rows.push(vec![
            text(&token["id"]).to_owned(),
            role,
            text(&token["status"]).to_owned(),
            text(&token["expires_at"]).to_owned(),
            text(&token["last_used_at"]).to_owned(),
            if allowed.is_empty() {
                "any".to_owned()
            } else {
                allowed.join(",")
            },
            text(&token["name"]).to_owned(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_no_secret_and_any_for_an_open_token() {
        let listed = tokens_table(&[json!({
            "id": "t1", "role": "auditor", "status": "active", "name": "ci",
            "allowed_from": [], "secret": "dnsh_never"
        })]);
        assert!(listed.contains("t1  auditor  active"), "{listed}");
        assert!(listed.contains("any"), "{listed}");
        assert!(!listed.contains("dnsh_never"), "{listed}");
    }

    #[test]
    fn the_list_names_a_tenant_token_s_tenant_in_its_role() {
        let listed = tokens_table(&[json!({
            "id": "t2", "role": "tenant", "tenant": "acct_1", "status": "active", "name": "x",
            "allowed_from": []
        })]);
        assert!(listed.contains("t2  tenant:acct_1  active"), "{listed}");
    }
}
