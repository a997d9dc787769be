//! The `dns-handling` binary: with no arguments, serves; `replay`, `audit verify` and `export`
//! are operator commands on the same store.

use anyhow::Context as _;
use dns_handling::app::Application;
use dns_handling::cli;
use dns_handling::settings::Settings;

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log_level)
                .with_context(|| format!("invalid setting LOG_LEVEL={:?}", settings.log_level))?,
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        // The actors need an actix system; the HTTP server brings its own worker threads.
        return actix_web::rt::System::new().block_on(serve(settings));
    }
    // The operator commands are batch work: a multi-threaded runtime lets the database reads,
    // the decoding and the writes of a replay run side by side.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(command(settings, &args))
}

async fn command(settings: Settings, args: &[String]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["replay"] => cli::replay(&settings).await,
        ["audit", "verify"] => {
            let store = cli::open_store(&settings).await?;
            let broken = cli::audit_verify(&store, &mut std::io::stdout().lock()).await?;
            if !broken.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
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
