//! `dns-handling domains …` and `dns-handling webhooks …`: a command-line client for people,
//! against a running server.
//!
//! It speaks only the public REST API (so it works against any deployment), prints the
//! instructions the API returns and the records to publish (none for an order the service
//! validates by delegation, in its own DNS zone), and `wait` follows a domain with a spinner
//! until it is `active` (exit 0), or `failed` or `expired` (exit 1: no usable certificate).
//! `webhooks …` registers the platform's webhook endpoints, shows a new signing secret the one
//! time the server shows it, and prints each endpoint's delivery attempts as a table.
//! `tokens …` makes, lists and revokes the access tokens the service manages.
//!
//! One file per command group: `domains` (register, follow, history), `certificates` (the chain,
//! the key, the history, revocation), `webhooks`; `records` says which records an order waits
//! for, `server` speaks to the server and `format` lays out the answers.

use std::process::ExitCode;

use clap::CommandFactory as _;

mod certificates;
mod domains;
pub(crate) mod format;
mod records;
mod server;
mod tokens;
mod webhooks;

pub use domains::DomainsCommand;
pub use server::ServerArgs;
pub use tokens::TokensCommand;
pub use webhooks::WebhooksCommand;

use server::Client;

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

/// `dns-handling tokens …`: where the server is, and what to ask it about access tokens.
#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    /// The server and the token
    #[command(flatten)]
    pub server: ServerArgs,
    /// What to ask; with none, this help
    #[command(subcommand)]
    pub command: Option<TokensCommand>,
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
    block_on(domains::dispatch(&client, command))
}

/// Runs `dns-handling webhooks …`.
pub fn run_webhooks(args: WebhooksArgs) -> anyhow::Result<ExitCode> {
    let Some(command) = args.command else {
        return help_of("webhooks");
    };
    let client = Client::connect(args.server)?;
    block_on(webhooks::dispatch(&client, command))
}

/// Runs `dns-handling tokens …`.
pub fn run_tokens(args: TokensArgs) -> anyhow::Result<ExitCode> {
    let Some(command) = args.command else {
        return help_of("tokens");
    };
    let client = Client::connect(args.server)?;
    block_on(tokens::dispatch(&client, command))
}
