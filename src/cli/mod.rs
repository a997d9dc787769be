//! The command line: its grammar, declared here as types (clap derives the parser, the help and
//! the shell completions from them); the operator commands on the service's own configuration;
//! and the client for people against a running server.

pub mod client;
pub mod edge_sync;
pub mod export;
pub mod health;
pub mod operator;

use std::path::Path;

use clap::{CommandFactory as _, Parser, Subcommand};

/// ACME DNS-01 certificates for custom domains. With no command, serves the API.
///
/// Settings come from the environment, over the TOML file of --config (or $CONFIG_FILE), whose
/// keys are the variables' names in lower case.
#[derive(Debug, Parser)]
#[command(name = "dns-handling", version)]
pub struct Cli {
    /// A TOML file of the service's settings, under the environment's
    #[arg(long, global = true, value_name = "FILE", env = "CONFIG_FILE")]
    // Text rather than a path: an empty CONFIG_FILE means no file (clap's path parser would
    // refuse it as a missing value).
    config: Option<String>,
    /// What to do; with none, serve the API
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The TOML file of settings, when one is named.
    pub fn config_file(&self) -> Option<&Path> {
        self.config
            .as_deref()
            .filter(|path| !path.is_empty())
            .map(Path::new)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (file, then environment) as TOML, secrets redacted
    Config,
    /// Rebuild every read projection from the first event (stop the service first)
    Replay,
    /// Check the log's hash chains and signed checkpoints, or the stored views
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The keys private keys are sealed under
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write the event feed as NDJSON to stdout, or as Parquet files for analysts (--format
    /// parquet --dir DIR [--follow]: the events, their fields in columns, and a table of
    /// certificates; see docs/analytics.md)
    Export(export::ExportArgs),
    /// The client for people, against a running server
    Domains(client::DomainsArgs),
    /// The platform's webhook endpoints, against a running server: signed notifications of
    /// certificates issued, renewed, revoked or failing, and of records to publish
    Webhooks(client::WebhooksArgs),
    /// The access tokens the service manages, against a running server: make one for a role
    /// (expiring, limited to addresses), list them, revoke one
    Tokens(client::TokensArgs),
    /// For the platform's TLS edges: `edge sync` keeps a directory of certificates for
    /// terminators that read files
    Edge(edge_sync::EdgeArgs),
    /// Ask a running service whether it is ready (GET /readyz): exit 0 when it is, 1 when not
    /// or when it does not answer (a container's HEALTHCHECK)
    Health(health::HealthArgs),
    /// Print the completion script for a shell
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
}

/// `dns-handling audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every stream's hash chain and every signed checkpoint (signature, event count, log
    /// hash); exits 1 on any finding
    Verify(operator::VerifyOptions),
    /// Print the public key checkpoints are signed with, for auditors
    PublicKey,
    /// Check every stored domain view against its own history (safe while the service runs);
    /// exits 1 when one disagrees
    Views,
    /// List the private keys the certificate stream (GET /edge/certificates) handed out: each
    /// receiver's first delivery of each certificate's key, for one edge or one certificate
    EdgeDeliveries(operator::DeliveriesOptions),
}

/// `dns-handling keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every stored private key and ACME account under KEY_ENCRYPTION_KEY (the old key
    /// in PREVIOUS_KEY_ENCRYPTION_KEYS; safe while the service runs)
    Rotate,
}

/// The completion script of the whole command line for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    // Into memory first: clap_complete panics on a failed write, such as a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dns-handling", &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    /// Every command's path of names, the root's included (empty).
    fn every_command() -> Vec<Vec<String>> {
        fn walk(command: &clap::Command, path: Vec<String>, all: &mut Vec<Vec<String>>) {
            for sub in command.get_subcommands() {
                let mut below = path.clone();
                below.push(sub.get_name().to_owned());
                walk(sub, below, all);
            }
            all.push(path);
        }
        let mut all = Vec::new();
        walk(&Cli::command(), Vec::new(), &mut all);
        all
    }

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_answers_help() {
        let commands = every_command();
        assert!(commands.len() > 15, "{commands:?}");
        for path in commands {
            let args = std::iter::once("dns-handling".to_owned())
                .chain(path.iter().cloned())
                .chain(["--help".to_owned()]);
            let error = Cli::try_parse_from(args).expect_err("help stops the parse");
            assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{path:?}: {error}");
        }
    }

    #[test]
    fn the_commands_take_their_options_where_they_did() {
        let cli = Cli::try_parse_from(["dns-handling", "config", "--config", "a.toml"])
            .expect("--config after the command");
        assert_eq!(cli.config_file(), Some(Path::new("a.toml")));
        let cli = Cli::try_parse_from(["dns-handling", "export", "--after", "7"]).expect("export");
        assert!(matches!(
            cli.command,
            Some(Command::Export(export::ExportArgs { after: 7, .. }))
        ));
        let cli = Cli::try_parse_from([
            "dns-handling",
            "export",
            "--format",
            "parquet",
            "--dir",
            "out",
            "--follow",
        ])
        .expect("export to parquet");
        assert!(matches!(
            cli.command,
            Some(Command::Export(export::ExportArgs {
                follow: true,
                format: export::ExportFormat::Parquet,
                dir: Some(_),
                ..
            }))
        ));
        assert!(
            Cli::try_parse_from(["dns-handling", "export", "--format", "parquet"]).is_err(),
            "parquet needs a directory"
        );
        let cli = Cli::try_parse_from(["dns-handling"]).expect("serve");
        assert!(cli.command.is_none());
        for unknown in [&["dns-handling", "serve"][..], &["dns-handling", "audit"]] {
            assert!(Cli::try_parse_from(unknown).is_err(), "{unknown:?}");
        }
    }

    #[test]
    fn the_webhook_commands_take_the_api_s_types_and_a_positive_limit() {
        let cli = Cli::try_parse_from([
            "dns-handling",
            "webhooks",
            "add",
            "https://hooks.platform.test/a",
            "--event",
            "certificate.issued",
            "--event",
            "renewal.records_required",
            "--description",
            "edge",
            "--server",
            "http://127.0.0.1:1",
        ])
        .expect("webhooks add");
        let Some(Command::Webhooks(args)) = cli.command else {
            panic!("not webhooks: {cli:?}");
        };
        assert_eq!(args.server.server, "http://127.0.0.1:1");
        assert!(matches!(
            args.command,
            Some(client::WebhooksCommand::Add { ref events, .. })
                if events == &["certificate.issued", "renewal.records_required"]
        ));
        let cli = Cli::try_parse_from(["dns-handling", "webhooks", "deliveries", "w1"])
            .expect("deliveries");
        assert!(matches!(
            cli.command,
            Some(Command::Webhooks(client::WebhooksArgs {
                command: Some(client::WebhooksCommand::Deliveries { limit: 50, .. }),
                ..
            }))
        ));
        for wrong in [
            &[
                "dns-handling",
                "webhooks",
                "add",
                "https://a.test",
                "--event",
                "bogus",
            ][..],
            &[
                "dns-handling",
                "webhooks",
                "deliveries",
                "w1",
                "--limit",
                "0",
            ],
            &["dns-handling", "webhooks", "show"],
        ] {
            assert!(Cli::try_parse_from(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn audit_edge_deliveries_takes_exactly_one_of_an_edge_and_a_certificate() {
        let cli = Cli::try_parse_from(["dns-handling", "audit", "edge-deliveries", "--edge", "e1"])
            .expect("by edge");
        let Some(Command::Audit(AuditCommand::EdgeDeliveries(options))) = cli.command else {
            panic!("not audit edge-deliveries: {cli:?}");
        };
        assert_eq!(
            (
                options.edge.as_deref(),
                options.certificate_id,
                options.server
            ),
            (Some("e1"), None, None)
        );
        let cli = Cli::try_parse_from([
            "dns-handling",
            "audit",
            "edge-deliveries",
            "--certificate-id",
            "c1",
            "--server",
            "http://127.0.0.1:1",
        ])
        .expect("by certificate, through the API");
        assert!(matches!(
            cli.command,
            Some(Command::Audit(AuditCommand::EdgeDeliveries(operator::DeliveriesOptions {
                certificate_id: Some(ref id),
                server: Some(_),
                ..
            }))) if id == "c1"
        ));
        for wrong in [
            &["dns-handling", "audit", "edge-deliveries"][..],
            &[
                "dns-handling",
                "audit",
                "edge-deliveries",
                "--edge",
                "e1",
                "--certificate-id",
                "c1",
            ],
        ] {
            assert!(Cli::try_parse_from(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn completions_are_written_for_bash() {
        let script = String::from_utf8(completions(clap_complete::Shell::Bash)).expect("text");
        assert!(script.contains("dns-handling"), "{script}");
        assert!(script.contains("public-key"), "{script}");
        assert!(script.contains("rotate-secret"), "{script}");
        assert!(script.contains("renewal.records_required"), "{script}");
    }
}
