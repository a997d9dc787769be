//! Who a request is, as the events it causes record it.

use std::collections::HashMap;

use actix_web::{HttpMessage, HttpRequest};

use super::auth::{Credential, Role};
use super::observe::RequestId;
use crate::app_state::CommandOrigin;
use crate::domain::aggregate::edge_reader;

/// The metadata recorded with the events a request causes: its request id (see
/// [`RequestId`]), the caller's role and credential (`token_id`), its address and the route.
pub fn origin(request: &HttpRequest) -> CommandOrigin {
    let mut metadata = HashMap::new();
    metadata.insert("actor".to_owned(), "http".to_owned());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), |id| id.0.clone());
    metadata.insert("request_id".to_owned(), request_id);
    metadata.insert("role".to_owned(), Role::of(request).label().to_owned());
    // Which credential: a managed token's id or `env:…`, never a secret.
    if let Some(Credential(id)) = Credential::of(request) {
        metadata.insert("token_id".to_owned(), id.to_string());
    }
    if let Some(peer) = request.peer_addr() {
        metadata.insert("client_addr".to_owned(), peer.ip().to_string());
    }
    metadata.insert(
        "route".to_owned(),
        format!("{} {}", request.method(), request.path()),
    );
    CommandOrigin(metadata)
}

/// Who reads a private key, as its read is recorded: an edge by its name (`edge:<name>`, its
/// first read of each certificate recorded), anyone else by role and address.
pub fn key_reader(request: &HttpRequest) -> String {
    match (Role::of(request), request.peer_addr()) {
        (Role::Edge(name), _) => edge_reader(&name),
        (role, Some(peer)) => format!("{} from {}", role.label(), peer.ip()),
        (role, None) => role.label().to_owned(),
    }
}
