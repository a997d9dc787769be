//! The client's address, as a managed token's `allowed_from` is matched against it.
//!
//! It is the connection's peer, unless the peer is one of `TRUSTED_PROXIES`: then it is the
//! right-most address of `X-Forwarded-For` that is not a trusted proxy's (each proxy appends
//! the address it saw, so everything left of the first untrusted hop may be the client's own
//! invention). A trusted peer with no such header is the client itself; an entry that is not
//! an address leaves the client unknown, which no `allowed_from` admits.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use ipnet::IpNet;

/// The header proxies append their peer's address to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address of `request` (see the module documentation).
pub fn client_address(request: &ServiceRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request.peer_addr().map(|address| address.ip());
    let forwarded: Vec<&str> = request
        .headers()
        .get_all(FORWARDED_FOR)
        .map(|value| value.to_str().unwrap_or("?"))
        .collect();
    behind(peer, &forwarded.join(","), trusted)
}

/// The client behind `peer`, given the `X-Forwarded-For` values joined with commas.
fn behind(peer: Option<IpAddr>, forwarded: &str, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    let mut client = peer?;
    if !is_trusted(&client) {
        return Some(client);
    }
    let hops = forwarded
        .split(',')
        .map(str::trim)
        .filter(|hop| !hop.is_empty());
    for hop in hops.rev() {
        client = hop.parse().ok()?;
        if !is_trusted(&client) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|net| net.parse().expect("a prefix"))
            .collect()
    }

    fn address(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("an address"))
    }

    #[test]
    fn without_trusted_proxies_the_client_is_the_peer_whatever_the_header_says() {
        let peer = address("192.0.2.1");
        assert_eq!(behind(peer, "10.1.2.3", &[]), peer);
        assert_eq!(behind(peer, "10.1.2.3", &nets(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_hop() {
        let trusted = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        let peer = address("192.0.2.1");
        assert_eq!(behind(peer, "10.1.2.3", &trusted), address("10.1.2.3"));
        // The left entry is the client's own claim; the right-most untrusted hop wins.
        assert_eq!(
            behind(peer, "10.9.9.9, 198.51.100.4, 192.0.2.8", &trusted),
            address("198.51.100.4")
        );
        assert_eq!(behind(peer, "", &trusted), peer);
        assert_eq!(behind(peer, "192.0.2.9", &trusted), address("192.0.2.9"));
        assert_eq!(
            behind(address("2001:db8::1"), "2001:db8::2, 2001:db9::5", &trusted),
            address("2001:db9::5")
        );
    }

    #[test]
    fn a_forwarded_entry_that_is_not_an_address_leaves_the_client_unknown() {
        let trusted = nets(&["192.0.2.0/24"]);
        assert_eq!(
            behind(address("192.0.2.1"), "10.1.2.3, unknown", &trusted),
            None
        );
        assert_eq!(behind(None, "10.1.2.3", &trusted), None);
    }
}
