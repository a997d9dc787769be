//! The `dns-handling` binary: with no arguments, serves.

use anyhow::Context as _;
use dns_handling::app::Application;
use dns_handling::settings::Settings;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log_level)
                .with_context(|| format!("invalid setting LOG_LEVEL={:?}", settings.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(command) = std::env::args().nth(1) {
        anyhow::bail!("unknown command {command:?}; run dns-handling with no arguments to serve");
    }
    dns_handling::install_crypto_provider();
    let app = Application::build(settings).await?;
    // Tests and scripts read this line to learn the port when SERVER_ADDR asks for port 0.
    println!("dns-handling listening on http://{}", app.address());
    tracing::info!(address = %app.address(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
