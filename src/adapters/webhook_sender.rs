//! Sends webhook messages: Standard Webhooks signatures (the `standardwebhooks` crate), one POST
//! per attempt with a timeout, no redirects followed, and no connection to loopback, private,
//! link-local or metadata addresses unless allowed, checked when the endpoint is created and
//! again at every connection (a name may resolve elsewhere later).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Why a target is refused, or a delivery failed before any answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// Addresses a webhook may never reach unless private targets are allowed: loopback, private
/// ranges, link-local (where cloud metadata services answer), shared address space,
/// unspecified, multicast and broadcast, IPv4 inside IPv6 alike.
pub fn is_forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            // IPv4 inside IPv6: mapped, compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
            let embedded = v6.to_ipv4().or_else(|| {
                let [a, b] = (segments[0] == 0x2002)
                    .then(|| [segments[1], segments[2]])
                    .or_else(|| {
                        (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0])
                            .then(|| [segments[6], segments[7]])
                    })?;
                Some(std::net::Ipv4Addr::from(
                    (u32::from(a) << 16) | u32::from(b),
                ))
            });
            if let Some(v4) = embedded.filter(|v4| !v4.is_unspecified() || v6.is_unspecified()) {
                return is_forbidden_address(IpAddr::V4(v4));
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

/// Checks a webhook URL as given: `http` or `https`, a host, no credentials in it, and (unless
/// `allow_private`) every address its host resolves to reachable without crossing into the
/// platform's own networks.
pub async fn check_target(url: &str, allow_private: bool) -> Result<Url, TargetError> {
    let refuse = |why: String| Err(TargetError(why));
    let parsed = match Url::parse(url) {
        Ok(parsed) => parsed,
        Err(error) => return refuse(format!("url {url:?} is not a URL: {error}")),
    };
    if !matches!(parsed.scheme(), "https" | "http") {
        return refuse(format!(
            "url must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("url must not carry credentials".into());
    }
    let Some(host) = parsed.host_str() else {
        return refuse("url has no host".into());
    };
    if allow_private {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => addresses.collect(),
        Err(error) => return refuse(format!("url host {host} does not resolve: {error}")),
    };
    if let Some(forbidden) = addresses.iter().find(|a| is_forbidden_address(a.ip())) {
        return refuse(format!(
            "url host {host} resolves to {}, a loopback, private, link-local or metadata \
             address (WEBHOOK_ALLOW_PRIVATE_TARGETS is off)",
            forbidden.ip()
        ));
    }
    Ok(parsed)
}

/// The resolver of the sending client: the system's, with forbidden addresses taken out, so a
/// name that resolved somewhere public when the endpoint was made cannot be turned towards the
/// platform later.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| !is_forbidden_address(address.ip()))
                .collect();
            if found.is_empty() {
                let refused = format!("{host} resolves only to forbidden addresses");
                return Err(refused.into());
            }
            let addresses: Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's status code, when it answered.
    pub status: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// What went wrong, when no answer came.
    pub error: Option<String>,
}

/// The client that delivers webhook messages.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl WebhookSender {
    /// A sender whose requests time out after `timeout`.
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, TargetError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the target itself, past the guard.
            .no_proxy()
            .user_agent(concat!("dns-handling-webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder
            .build()
            .map_err(|error| TargetError(format!("no HTTP client: {error}")))?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// POSTs `body` to `url` as message `id`, signed with every one of `secrets` (`whsec_…`).
    pub async fn send(&self, url: &str, id: &str, body: &str, secrets: &[String]) -> Attempt {
        let started = Instant::now();
        let failed = |error: String| Attempt {
            status: None,
            latency: started.elapsed(),
            error: Some(error),
        };
        let timestamp = chrono::Utc::now().timestamp();
        let signature = match sign(secrets, id, timestamp, body) {
            Ok(signature) => signature,
            Err(error) => return failed(error),
        };
        // An address literal never meets the resolver: it is checked here.
        if !self.allow_private {
            let literal = Url::parse(url).ok().and_then(|parsed| {
                let host = parsed
                    .host_str()?
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                host.parse::<IpAddr>().ok()
            });
            if let Some(ip) = literal.filter(|ip| is_forbidden_address(*ip)) {
                return failed(format!("{ip} is a forbidden address"));
            }
        }
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(body.to_owned());
        match request.send().await {
            Ok(response) => Attempt {
                status: Some(response.status().as_u16()),
                latency: started.elapsed(),
                error: None,
            },
            Err(error) => failed(describe(&error)),
        }
    }
}

/// A request error with its causes, which say what actually failed (refused, timed out, …).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `webhook-signature` header: one `v1,<signature>` per secret, separated by spaces.
pub fn sign(secrets: &[String], id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let signatures = secrets
        .iter()
        .map(|secret| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|webhook| webhook.sign(id, timestamp, body.as_bytes()))
                .map_err(|error| format!("cannot sign: {error}"))
        })
        .collect::<Result<Vec<String>, String>>()?;
    Ok(signatures.join(" "))
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_forbidden() {
        for forbidden in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            let ip: IpAddr = forbidden.parse().expect("an address");
            assert!(is_forbidden_address(ip), "{forbidden}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            let ip: IpAddr = public.parse().expect("an address");
            assert!(!is_forbidden_address(ip), "{public}");
        }
    }

    #[tokio::test]
    async fn a_url_to_a_private_address_is_refused_unless_allowed() {
        let refused = check_target("http://127.0.0.1:9/hook", false)
            .await
            .expect_err("refused");
        assert!(refused.0.contains("127.0.0.1"), "{refused}");
        assert!(check_target("http://127.0.0.1:9/hook", true).await.is_ok());
        let metadata = check_target("http://169.254.169.254/latest", false).await;
        assert!(metadata.is_err());
    }

    #[tokio::test]
    async fn a_url_that_is_not_http_or_carries_credentials_is_refused() {
        for url in [
            "ftp://hooks.example/a",
            "https://user:pw@hooks.example/a",
            "no url",
        ] {
            assert!(check_target(url, true).await.is_err(), "{url}");
        }
    }

    #[test]
    fn every_secret_signs_and_the_library_verifies_each_signature() {
        let (first, second) = (new_secret(), new_secret());
        let body = r#"{"type":"certificate.issued"}"#;
        let header = sign(
            &[first.clone(), second.clone()],
            "msg_1",
            1_700_000_000,
            body,
        )
        .expect("signed");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|part| part.starts_with("v1,")));
        for secret in [first, second] {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("webhook-id", "msg_1".parse().expect("a value"));
            headers.insert(
                "webhook-timestamp",
                chrono::Utc::now()
                    .timestamp()
                    .to_string()
                    .parse()
                    .expect("a value"),
            );
            let now = chrono::Utc::now().timestamp();
            let fresh = sign(std::slice::from_ref(&secret), "msg_1", now, body).expect("signed");
            headers.insert("webhook-signature", fresh.parse().expect("a value"));
            standardwebhooks::Webhook::new(&secret)
                .expect("a secret")
                .verify(body.as_bytes(), &headers)
                .expect("verifies");
        }
    }
}
