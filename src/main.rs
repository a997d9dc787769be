//! The `dns-handling` binary: with no arguments, serves; `replay`, `audit verify`, `audit views`,
//! `keys rotate`, `export` and `config` are operator commands on the same configuration; `domains …` is the client for
//! people, against a running server.

use std::process::ExitCode;

use anyhow::Context as _;
use dns_handling::app::Application;
use dns_handling::audit::checkpoints::AuditSigner;
use dns_handling::audit::verify::{read_kept_checkpoints, verify_log, LogSource};
use dns_handling::cli::{client, operator as cli};
use dns_handling::settings::{LogFormat, Settings};

fn main() -> anyhow::Result<ExitCode> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // People's client commands talk to a server and need none of the service's settings.
    if args.first().map(String::as_str) == Some("domains") {
        dns_handling::install_crypto_provider();
        return client::run(&args[1..]);
    }
    let config_file = take_config_option(&mut args)?.or_else(|| {
        std::env::var("CONFIG_FILE")
            .ok()
            .filter(|path| !path.is_empty())
    });
    let environment = std::env::vars().collect();
    let settings = Settings::load(
        config_file.as_deref().map(std::path::Path::new),
        &environment,
    )?;
    if args == ["config"] {
        print!("{}", settings.to_redacted_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(&settings)?;
    if args.is_empty() {
        // The actors need an actix system; the HTTP server brings its own worker threads.
        actix_web::rt::System::new().block_on(serve(settings))?;
        return Ok(ExitCode::SUCCESS);
    }
    // The operator commands are batch work: a multi-threaded runtime lets the database reads,
    // the decoding and the writes of a replay run side by side.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(command(settings, &args))?;
    Ok(ExitCode::SUCCESS)
}

/// Takes `--config <file>` out of the arguments.
fn take_config_option(args: &mut Vec<String>) -> anyhow::Result<Option<String>> {
    let Some(index) = args.iter().position(|arg| arg == "--config") else {
        return Ok(None);
    };
    anyhow::ensure!(
        index + 1 < args.len(),
        "--config needs a file\n{}",
        cli::USAGE
    );
    let path = args.remove(index + 1);
    args.remove(index);
    Ok(Some(path))
}

/// Logs to stderr: human-readable lines (coloured only at a terminal), or JSON objects with
/// `LOG_FORMAT=json`, the request id of each HTTP request in its span.
fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
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

async fn command(settings: Settings, args: &[String]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["replay"] => cli::replay(&settings).await,
        ["audit", "verify", options @ ..] => {
            let options = cli::VerifyOptions::parse(options)?;
            let source = match &options.server {
                Some(server) => LogSource::api(server, options.token.clone()),
                None => LogSource::Store(cli::open_store(&settings).await?),
            };
            let known = match &options.known {
                Some(path) => read_kept_checkpoints(
                    &std::fs::read_to_string(path)
                        .with_context(|| format!("reading --known {path}"))?,
                )?,
                None => Vec::new(),
            };
            let findings = verify_log(
                &source,
                options.public_key.as_deref(),
                &known,
                &mut std::io::stdout().lock(),
            )
            .await?;
            if !findings.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        ["audit", "public-key"] => {
            println!("{}", AuditSigner::existing(&settings)?.public_key());
            Ok(())
        }
        ["audit", "views"] => {
            let store = cli::open_store(&settings).await?;
            let mismatches = cli::audit_views(&store, &mut std::io::stdout().lock()).await?;
            if !mismatches.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        ["keys", "rotate"] => cli::keys_rotate(&settings, &mut std::io::stdout().lock()).await,
        ["export", rest @ ..] => {
            let after = match rest {
                [] => 0,
                ["--after", position] => position
                    .parse()
                    .with_context(|| format!("--after takes a position, got {position:?}"))?,
                _ => anyhow::bail!("{}", cli::USAGE),
            };
            let store = cli::open_store(&settings).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            cli::export(&store, after, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        ["--help"] | ["-h"] | ["help"] => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        _ => anyhow::bail!("unknown command {:?}\n{}", args.join(" "), cli::USAGE),
    }
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
