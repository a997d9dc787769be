//! What the testkit's own tests share: instant-acme as the ACME client, an HTTPS client that
//! trusts the test CA alone.

use std::path::Path;
use std::time::Duration;

use instant_acme::{Account, ExternalAccountKey, NewAccount, Problem};
use tokio_rustls::rustls;

/// A new ACME account at `directory_url` through instant-acme, trusting the CA in `root` (a PEM
/// file of one certificate), with an External Account Binding when given.
pub(crate) async fn new_account(
    root: &Path,
    directory_url: String,
    binding: Option<&ExternalAccountKey>,
) -> Result<Account, instant_acme::Error> {
    // instant-acme's client takes the process's provider; rustls has two here.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let account = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, _credentials) = Account::builder_with_root(root)?
        .create(&account, directory_url, binding)
        .await?;
    Ok(account)
}

/// The ACME problem of an error (panics on any other error, naming `what` failed).
pub(crate) fn problem<T>(result: Result<T, instant_acme::Error>, what: &str) -> Problem {
    match result {
        Err(instant_acme::Error::Api(problem)) => problem,
        Err(other) => panic!("{what}: not an ACME problem: {other}"),
        Ok(_) => panic!("{what} succeeded"),
    }
}

/// An HTTPS client that trusts the certificates in `bundle` (PEM) and nothing else.
pub(crate) fn trusting(bundle: &Path) -> reqwest::Client {
    let pem = std::fs::read(bundle).expect("read the CA bundle");
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("a PEM bundle") {
        builder = builder.add_root_certificate(cert);
    }
    builder
        // Loopback only: a proxy from the environment must not stand in between.
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}
