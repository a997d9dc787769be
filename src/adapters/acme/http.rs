//! The HTTPS client of everything the service asks the CA, and the readiness probe that asks
//! the directory through it.

use std::time::Duration;

use super::AcmeClient;

impl AcmeClient {
    /// Checks that the directory answers with an ACME directory, for the readiness probe. A
    /// plain GET: it needs no account and sends nothing to the CA's rate-limited endpoints.
    pub async fn check_directory(&self) -> Result<(), String> {
        use http_body_util::BodyExt as _;
        let url = &self.directory_url;
        let client = self
            .probe
            .get_or_init(|| acme_http_client(self.ca_bundle.as_deref()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        // `::http` is the crate: inside `acme`, a bare `http` would read as this module.
        let request = ::http::Request::get(url.as_str())
            .body(instant_acme::BodyWrapper::default())
            .map_err(|e| format!("{url} is not a URL: {e}"))?;
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{url} did not answer: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{url} broke off its answer: {e}"))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(PROBE_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url} did not answer within {} s", PROBE_TIMEOUT.as_secs()))??;
        let directory: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url} answered no JSON: {e}"))?;
        match directory.get("newOrder") {
            Some(_) => Ok(()),
            None => Err(format!("{} is not an ACME directory", self.directory_url)),
        }
    }
}

/// The HTTPS client of everything the service asks the CA.
pub(super) type AcmeHttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    instant_acme::BodyWrapper<bytes::Bytes>,
>;

/// The HTTPS client the ACME conversation goes through: instant-acme's own, except for
/// `TCP_NODELAY`. Its client leaves Nagle's algorithm on, and a JWS POST is written in two parts
/// (headers, then body), so every POST waited for the CA's delayed ACK of the first part: about
/// 40 ms per request, with several requests per certificate. Trusts `ca_bundle`'s roots when
/// given (a test CA such as Pebble), else the platform's.
pub(super) fn acme_http_client(
    ca_bundle: Option<&std::path::Path>,
) -> Result<AcmeHttpClient, instant_acme::Error> {
    use rustls::pki_types::pem::PemObject as _;
    let other = |error: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(error);
    let tls = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match ca_bundle {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for root in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| other(e.into()))?
            {
                roots
                    .add(root.map_err(|e| other(e.into()))?)
                    .map_err(|e| other(e.into()))?;
            }
            tls.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        None => tls
            .try_with_platform_verifier()
            .map_err(|e| other(e.into()))?,
    };
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = tls
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// How long the readiness probe waits for the directory.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
