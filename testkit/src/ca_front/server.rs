//! The front's plumbing: its TLS, its listener (dropped while the CA is down), the connection
//! to Pebble each forwarded request gets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

use super::answer::answer;
use super::Shared;
use crate::process::free_port;

/// What the test's handle tells the server; each is acknowledged once done.
pub(super) enum Control {
    /// Stop listening and close every connection.
    Down(std::sync::mpsc::SyncSender<()>),
    /// Listen again, on this listener (the same port, bound by the test's thread).
    Up(std::net::TcpListener, std::sync::mpsc::SyncSender<()>),
}

/// A listener on a free loopback port, bound before `start` returns so the first request finds
/// it; another port if one was taken between `free_port` and the bind.
pub(super) fn bind() -> (std::net::TcpListener, u16) {
    for _ in 0..10 {
        let port = free_port();
        if let Ok(listener) = listen(port) {
            return (listener, port);
        }
    }
    panic!("the CA front found no free port in 10 attempts");
}

/// A listener on `port` again, after the front was down. `free_port` hands out ports below the
/// ephemeral range, so only another listener could have taken it meanwhile; a closing socket
/// may hold it for a moment.
pub(super) fn rebind(port: u16) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listen(port) {
            Ok(listener) => return listener,
            Err(error) if Instant::now() > deadline => {
                panic!("the CA front could not listen on port {port} again: {error}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A listener on loopback `port`, non-blocking as tokio takes it.
fn listen(port: u16) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The TLS provider, named: rustls here has both aws-lc-rs and ring (reqwest's), so it has no
/// default to pick.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS: Pebble's certificate and key, HTTP/1.1 only (all the server speaks).
pub(super) fn server_tls(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .expect("read Pebble's HTTPS certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read Pebble's HTTPS key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("Pebble's certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The client's TLS to Pebble: the test CA (`ca` in PEM) as the only root, HTTP/1.1.
pub(super) fn client_tls(ca: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(cert.expect("the test CA is PEM"))
            .expect("the test CA is a CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Accepts connections and obeys `controls` until their sender is dropped.
pub(super) async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    mut controls: tokio::sync::mpsc::UnboundedReceiver<Control>,
) {
    let tokio_listener =
        |listener| tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let mut listener = Some(tokio_listener(listener));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Every open connection, so that going down can close them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = accept(listener.as_ref()) => accepted,
            control = controls.recv() => {
                match control {
                    None => return,
                    Some(Control::Down(done)) => {
                        // A closed listening socket refuses connections (RST to a SYN).
                        listener = None;
                        connections.abort_all();
                        while connections.join_next().await.is_some() {}
                        let _ = done.send(());
                    }
                    Some(Control::Up(std_listener, done)) => {
                        listener = Some(tokio_listener(std_listener));
                        let _ = done.send(());
                    }
                }
                continue;
            }
            // Reaps finished connections, so the set holds open ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok(tcp) = accepted else {
            // Out of descriptors or the like: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            // A client that gives up in the handshake ends its own connection only.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move {
                    let lose = shared.take_lost_answer(request.uri().path());
                    let response = answer(&shared, request).await;
                    // An error from the service makes hyper close the connection unanswered.
                    if lose {
                        Err(LostAnswer)
                    } else {
                        Ok(response)
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer the test chose to lose ([`super::CaFront::lose_answers`]): hyper closes the
/// connection instead of answering.
#[derive(Debug)]
struct LostAnswer;

impl std::fmt::Display for LostAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer is lost (injected by the test front)")
    }
}

impl std::error::Error for LostAnswer {}

/// The next connection, or never while there is no listener (the CA is down).
async fn accept(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(tcp, _)| tcp),
        None => std::future::pending().await,
    }
}
