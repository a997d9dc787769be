//! The edge routes (`/edge/…`), for the platform's TLS terminators: an edge token may use
//! them and nothing else (see `auth`). `GET /edge/certificate` follows Caddy's
//! `get_certificate http` contract.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Role;
use super::bodies::ErrorBody;
use super::origin::{key_reader, origin};
use super::{ApiError, SharedState};
use crate::use_cases::edge_certificate::{certificate_for, Asker};

/// The query of `GET /edge/certificate`; the other parameters Caddy sends
/// (`cipher_suites`, `signature_schemes`, …) are ignored.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertificateQuery {
    /// The host name the TLS client asked for (SNI): case and a trailing dot do not matter,
    /// an internationalised name in either form.
    server_name: Option<String>,
}

/// `GET /edge/certificate?server_name=<SNI>`: the certificate serving that name, as Caddy's
/// `get_certificate http` takes it: the PEM chain, then the PEM private key, in one body.
#[utoipa::path(
    get, path = "/edge/certificate", operation_id = "getEdgeCertificate", tag = "edge",
    params(CertificateQuery),
    responses(
        (status = 200, description = "The chain (leaf first) then the private key, PEM; an edge's first read of each certificate is recorded first", content_type = "application/x-pem-file", body = String),
        (status = 204, description = "No certificate serves that name: not ours, not issued yet, removed, revoked, or past its end"),
        (status = 400, description = "server_name is missing or not a host name", body = ErrorBody),
        (status = 401, description = "Missing or invalid token (Bearer, or Basic <edge name>:<token>)", body = ErrorBody),
        (status = 403, description = "A read-only token: the edge routes hand out private keys", body = ErrorBody),
        (status = 503, description = "The store cannot be reached; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")))
    ),
    security(("bearer" = []), ("basic" = []))
)]
pub async fn certificate(
    state: SharedState,
    request: HttpRequest,
    query: web::Query<CertificateQuery>,
) -> Result<HttpResponse, ApiError> {
    let asker = match Role::of(&request) {
        Role::Edge(name) => Asker::Edge(name),
        _ => Asker::Other(key_reader(&request)),
    };
    let server_name = query.server_name.as_deref();
    let served = certificate_for(&state, server_name, asker, || origin(&request)).await?;
    let Some(served) = served else {
        return Ok(HttpResponse::NoContent().finish());
    };
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .insert_header(("cache-control", "no-store"))
        .body(served.pem_body.clone()))
}
