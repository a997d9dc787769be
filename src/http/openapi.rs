//! The OpenAPI 3.1 description of the API, generated from the handlers' annotations and the
//! body types, served at `GET /openapi.json`, with Swagger UI (bundled in the binary, no CDN)
//! at `/docs/`.

use std::sync::LazyLock;

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use super::{
    audit, ca, certificates, domain_health, domains, edge, edge_stream, events, overview, renewals,
    tokens, webhooks,
};

/// The API's description: every route of [`super::register_routes`] (a test holds the two
/// together).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dns-handling",
        description = "TLS certificates for custom domains through ACME DNS-01: register a \
            domain, prove ownership with a TXT record, request a certificate, publish the \
            challenge record, and read the certificate once the domain is `active`. Every \
            change is an event; the history of each domain and a global feed are readable.",
        license(name = "Apache-2.0")
    ),
    paths(
        domains::register,
        domains::list,
        domains::get,
        domains::remove,
        domains::verify,
        domain_health::check,
        domains::replace_alt_names,
        certificates::issue_certificate,
        certificates::certificate,
        certificates::certificate_key,
        certificates::retry,
        renewals::renew,
        renewals::history,
        renewals::revoke,
        renewals::one,
        renewals::key,
        events::history,
        events::feed,
        edge::certificate,
        edge_stream::stream,
        audit::list,
        audit::sign,
        audit::edge_deliveries,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        webhooks::rotate_secret,
        webhooks::deliveries,
        tokens::create,
        tokens::list,
        tokens::get,
        tokens::revoke,
        super::healthz,
        super::readyz,
        super::metrics,
        ca::get,
        overview::overview,
        overview::whoami,
        serve,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "domains", description = "Register domains and prove ownership"),
        (name = "certificates", description = "Issue certificates and read them"),
        (name = "events", description = "The history of each domain and the global event feed"),
        (name = "edge", description = "What the platform's TLS terminators pull: the certificate and key serving a handshake's name"),
        (name = "webhooks", description = "Signed notifications (Standard Webhooks) of what happens to certificates"),
        (name = "tokens", description = "Access tokens the service manages: scoped to a role, expiring, limited to addresses, revocable"),
        (name = "operations", description = "Health, readiness, metrics, the overview's figures and this description"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer-token security scheme the operations refer to.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "AUTH_TOKEN (admin), one of READ_ONLY_TOKENS (auditor), or on the edge \
                         routes one of EDGE_TOKENS; not needed when the service runs without \
                         tokens",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "On the edge routes only: an edge's name and its token from \
                         EDGE_TOKENS (as a URL's user info, e.g. Caddy's get_certificate http)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let rendered = serde_json::to_value(ApiDoc::openapi()).and_then(|mut document| {
        spell_link_fields_in_camel_case(&mut document);
        serde_json::to_string_pretty(&document)
    });
    rendered
        .unwrap_or_else(|error| format!("{{\"error\": \"rendering the description: {error}\"}}"))
});

/// utoipa 5 writes a Link object's fields in snake case (`operation_id`), where OpenAPI spells
/// them `operationId`, `operationRef` and `requestBody`; tools that follow links (schemathesis's
/// stateful tests, client generators) ignore links spelled otherwise.
fn spell_link_fields_in_camel_case(document: &mut serde_json::Value) {
    let Some(paths) = document
        .get_mut("paths")
        .and_then(|paths| paths.as_object_mut())
    else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    let responses = operations
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    let links = responses
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

/// `GET /openapi.json`: this description.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of the API",
        content_type = "application/json", body = Object)))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// Registers Swagger UI at `/docs/` (and `/docs` redirecting there), reading `/openapi.json`.
pub fn register_docs(cfg: &mut web::ServiceConfig) {
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .config(utoipa_swagger_ui::Config::from("/openapi.json")),
    )
    .route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header(("location", "/docs/"))
                .finish()
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the service registers is described, and nothing else is.
    #[test]
    fn the_description_lists_exactly_the_registered_routes() {
        let mut registered = Vec::new();
        let _app =
            actix_web::App::new().configure(|cfg| registered = super::super::register_routes(cfg));
        assert!(registered.len() >= 15, "routes: {registered:?}");
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the description is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        for (method, path) in &registered {
            let method = method.as_str().to_lowercase();
            assert!(
                paths
                    .get(*path)
                    .and_then(|item| item.get(&method))
                    .is_some(),
                "{method} {path} is served but missing from the OpenAPI description"
            );
        }
        let described: usize = paths
            .values()
            .map(|item| item.as_object().map_or(0, |ops| ops.len()))
            .sum();
        assert_eq!(
            described,
            registered.len(),
            "the description lists operations the service does not serve"
        );
    }

    /// Each operation documents its error bodies, so generated clients can read them.
    #[test]
    fn every_error_response_has_the_error_body() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the description is JSON");
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        // Placing an order may answer 409 caa_forbids, whose body has more.
                        let orders =
                            path.ends_with("/issue-certificate") || path.ends_with("/renew");
                        let expected = if orders && status == "409" {
                            "#/components/schemas/OrderConflictBody"
                        } else {
                            "#/components/schemas/ErrorBody"
                        };
                        assert_eq!(schema, expected, "{method} {path} {status}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 30, "only {checked} error responses documented");
    }

    /// Every operation that needs a token reads the store, so may answer `503` with
    /// `Retry-After` while the store is unreachable.
    #[test]
    fn every_authenticated_operation_documents_the_unavailable_store() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the description is JSON");
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                if operation.get("security").is_none() {
                    continue;
                }
                let unavailable = &operation["responses"]["503"];
                assert!(
                    unavailable["headers"]["Retry-After"].is_object(),
                    "{method} {path}: {unavailable}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 12, "only {checked} operations checked");
    }
}
