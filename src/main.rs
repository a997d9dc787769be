//! The `dns-handling` binary: with no command, serves; `config`, `replay`, `audit …`, `keys
//! rotate` and `export` are operator commands on the same configuration; `domains …` and
//! `webhooks …` are the client for people, against a running server; `health` asks a running
//! server whether it is ready; `completions` prints a shell's completions.
//! The grammar is `dns_handling::cli::Cli`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use dns_handling::app::Application;
use dns_handling::audit::checkpoints::AuditSigner;
use dns_handling::audit::verify::{
    keep_checkpoints, read_kept_checkpoints, verify_log, Freshness, LogSource,
};
use dns_handling::cli::{client, export, operator, AuditCommand, Cli, Command, KeysCommand};
use dns_handling::settings::{LogFormat, Settings};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::try_parse().unwrap_or_else(|error| {
        // Help and --version are answers (exit 0, on stdout); a mistake exits 1 like every
        // other error of this binary, not clap's 2, which `domains wait` means as "timed out".
        let _ = error.print();
        std::process::exit(if error.use_stderr() { 1 } else { 0 })
    });
    let config_file = cli.config_file().map(std::path::Path::to_owned);
    let settings = || Settings::load(config_file.as_deref(), &std::env::vars().collect());
    match cli.command {
        // People's client commands talk to a server and need none of the service's settings.
        Some(Command::Domains(args)) => {
            dns_handling::install_crypto_provider();
            client::run(args)
        }
        Some(Command::Webhooks(args)) => {
            dns_handling::install_crypto_provider();
            client::run_webhooks(args)
        }
        Some(Command::Tokens(args)) => {
            dns_handling::install_crypto_provider();
            client::run_tokens(args)
        }
        Some(Command::Edge(args)) => {
            dns_handling::install_crypto_provider();
            dns_handling::cli::edge_sync::run(args)
        }
        Some(Command::Completions { shell }) => {
            let script = dns_handling::cli::completions(shell);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Health(args)) => {
            dns_handling::install_crypto_provider();
            dns_handling::cli::health::run(&args, settings()?.server_addr)
        }
        Some(Command::Config) => {
            print!("{}", settings()?.to_redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let settings = settings()?;
            init_tracing(&settings)?;
            // The actors need an actix system; the HTTP server brings its own worker threads.
            actix_web::rt::System::new().block_on(serve(settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(command) => {
            let settings = settings()?;
            init_tracing(&settings)?;
            // The operator commands are batch work: a multi-threaded runtime lets the database
            // reads, the decoding and the writes of a replay run side by side.
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(settings, command))
        }
    }
}

/// Logs to stderr: human-readable lines (coloured only at a terminal), or JSON objects with
/// `LOG_FORMAT=json`, the request id of each HTTP request in its span.
fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    let filter = log_filter(&settings.log_level)
        .with_context(|| format!("invalid setting LOG_LEVEL={:?}", settings.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

/// The filter of `LOG_LEVEL`. hickory-server logs a line at info for every DNS query it answers
/// (`hickory_server::server: request:… QUERY …`), which at the delegation zone's query rates
/// cost the DNS server most of its throughput (`bench/dns.rs`): its server module logs at warn
/// unless `LOG_LEVEL` names `hickory_server` itself (e.g. `info,hickory_server=info` to see
/// every query).
fn log_filter(
    level: &str,
) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    if level.contains("hickory_server") {
        return Ok(filter);
    }
    Ok(filter.add_directive("hickory_server::server=warn".parse()?))
}

/// Runs an operator command; exits 1 when an audit finds something.
async fn run(settings: Settings, command: Command) -> anyhow::Result<ExitCode> {
    let found = |findings: usize| match findings {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    };
    match command {
        Command::Replay => operator::replay(&settings).await?,
        Command::Audit(AuditCommand::Verify(options)) => {
            let source = match &options.server {
                Some(server) => {
                    let token = options.token.clone().filter(|token| !token.is_empty());
                    LogSource::api(server, token)
                }
                None => LogSource::Store(operator::open_store(&settings).await?),
            };
            let known = match &options.known {
                Some(path) => read_kept_checkpoints(
                    &std::fs::read_to_string(path)
                        .with_context(|| format!("reading --known {path}"))?,
                )?,
                None => Vec::new(),
            };
            let freshness = match options.max_age {
                Some(max_age) => Some(Freshness {
                    max_age: chrono::Duration::from_std(max_age)
                        .context("--max-age is too long")?,
                    now: chrono::Utc::now(),
                }),
                None => None,
            };
            let findings = verify_log(
                &source,
                options.public_key.as_deref(),
                &known,
                freshness,
                &mut std::io::stdout().lock(),
            )
            .await?;
            if let (Some(path), true, true) =
                (&options.known, options.update_known, findings.is_empty())
            {
                keep_checkpoints(path, &source.checkpoints().await?, &known)?;
            }
            return Ok(found(findings.len()));
        }
        Command::Audit(AuditCommand::PublicKey) => {
            println!("{}", AuditSigner::existing(&settings)?.public_key());
        }
        Command::Audit(AuditCommand::Views) => {
            let store = operator::open_store(&settings).await?;
            let mismatches = operator::audit_views(&store, &mut std::io::stdout().lock()).await?;
            return Ok(found(mismatches.len()));
        }
        Command::Audit(AuditCommand::EdgeDeliveries(options)) => {
            let source = match &options.server {
                Some(server) => {
                    let token = options.token.clone().filter(|token| !token.is_empty());
                    LogSource::api(server, token)
                }
                None => LogSource::Store(operator::open_store(&settings).await?),
            };
            let mut out = std::io::stdout().lock();
            operator::audit_edge_deliveries(&source, &options, &mut out).await?;
        }
        Command::Keys(KeysCommand::Rotate) => {
            operator::keys_rotate(&settings, &mut std::io::stdout().lock()).await?
        }
        Command::Export(args) => {
            export::check(&args)?;
            let store = operator::open_store(&settings).await?;
            match &args.dir {
                Some(dir) => {
                    let report = export::export_parquet(&store, dir, &args).await?;
                    eprintln!(
                        "wrote {} events in {} files, and {} certificates",
                        report.events, report.files, report.certificates
                    );
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    operator::export(&store, args.after, &mut out).await?;
                    std::io::Write::flush(&mut out)?;
                }
            }
        }
        // Answered before the settings were read.
        Command::Config
        | Command::Domains(_)
        | Command::Webhooks(_)
        | Command::Tokens(_)
        | Command::Edge(_)
        | Command::Health(_)
        | Command::Completions { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    dns_handling::install_crypto_provider();
    let app = Application::build(settings).await?;
    // Tests and scripts read this line to learn the port when SERVER_ADDR asks for port 0.
    println!("dns-handling listening on http://{}", app.address());
    tracing::info!(address = %app.address(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn dns_queries_are_not_logged_one_by_one_unless_asked_for() {
        let filter = |level: &str| log_filter(level).map(|f| f.to_string()).unwrap_or_default();
        assert!(filter("info").contains("hickory_server::server=warn"));
        assert!(filter("debug,dns_handling=trace").contains("hickory_server::server=warn"));
        assert!(!filter("info,hickory_server=info").contains("hickory_server::server=warn"));
        assert!(log_filter("info,[").is_err());
    }
}
