//! The server the client speaks to: where it is, the token to show it, and one request.

use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::Value;

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

/// A connection to a running server.
pub(super) struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    /// Sends one request; a JSON error answer becomes an error carrying the server's message.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
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
    pub(super) fn connect(args: ServerArgs) -> anyhow::Result<Self> {
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
