//! The way through to Pebble: one request on a connection of its own, headers of one hop removed.

use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use hyper::Request;
use tokio_rustls::rustls;

use super::reply::Body;
use super::Shared;

/// One request to Pebble on a connection of its own, and Pebble's response, body read.
pub(super) async fn send_to_pebble(
    shared: &Shared,
    request: Request<Body>,
) -> Result<(hyper::http::response::Parts, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(shared.pebble)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::from(shared.pebble.ip());
    let tls = shared
        .pebble_tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    // hyper's connection API sends the request as it is: the client's `Host`, no header added.
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts, body))
}

/// Removes the headers of one connection (RFC 9110 §7.6.1): those `Connection` names, and
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}
