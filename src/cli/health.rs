//! `dns-handling health`: asks a running service whether it is ready (`GET /readyz`) and exits
//! 0 when it is, 1 when it is not or does not answer: a container's `HEALTHCHECK` (or any probe
//! that runs a command) needs no HTTP client of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

/// `dns-handling health`: where the service is, and how long to wait.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The service's base URL; by default the one SERVER_ADDR's settings make (asked on
    /// loopback when it binds every address, as in a container)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How long to wait for the answer (e.g. 3s)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The base URL a service bound to `server_addr` is reached at from the same host.
pub fn local_url(server_addr: SocketAddr) -> String {
    let ip = match server_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, server_addr.port()))
}

/// Asks `GET {url}/readyz`; prints `ready`, or on stderr why not, and exits accordingly.
pub fn run(args: &HealthArgs, server_addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let base = args.url.clone().unwrap_or_else(|| local_url(server_addr));
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let response = client.get(&url).send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await.unwrap_or_default()))
        });
    match answer {
        Ok((status, _)) if status.is_success() => {
            println!("ready");
            Ok(ExitCode::SUCCESS)
        }
        Ok((status, body)) => {
            eprintln!("not ready: {url} answered {status}: {body}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("not ready: {url} did not answer: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local_url;

    #[test]
    fn a_service_bound_to_every_address_is_asked_on_loopback() {
        let url = |addr: &str| local_url(addr.parse().expect("address"));
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80");
    }
}
