//! The REST API (actix-web): the contract is `docs/API.md`, the fields `/openapi.json`,
//! generated from these handlers.

mod answers;
mod audit;
pub mod auth;
mod bodies;
mod ca;
mod certificates;
mod client_address;
pub mod console;
mod domain_health;
mod domains;
mod edge;
mod edge_stream;
mod error;
mod events;
pub mod observe;
pub mod openapi;
mod origin;
mod overview;
mod renewals;
mod scope;
mod tokens;
mod use_case_errors;
mod webhooks;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse, Route};

use bodies::{ErrorBody, HealthBody, ReadyBody};
pub use error::ApiError;

use crate::app_state::AppState;
use crate::metrics::METRICS;

/// The state every handler is given.
type SharedState = web::Data<std::sync::Arc<AppState>>;

/// The largest request body accepted; the API's bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Whether a route needs the bearer token (when one is configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Health checks and the API description.
    Public,
    /// Everything else.
    Token,
}

/// The routes of the API, grouped by path, each group one actix resource (so a known path with
/// an unknown method gets `405`, not `404`). The same table feeds the OpenAPI completeness test.
#[derive(Default)]
struct RouteTable {
    resources: Vec<PathRoutes>,
}

/// The routes of one path.
struct PathRoutes {
    path: &'static str,
    access: Access,
    routes: Vec<(Method, Route)>,
}

impl RouteTable {
    fn add(&mut self, access: Access, method: Method, path: &'static str, route: Route) {
        let route = route.method(method.clone());
        match self.resources.iter_mut().find(|known| known.path == path) {
            Some(known) => {
                debug_assert_eq!(known.access, access, "one access rule per path: {path}");
                known.routes.push((method, route));
            }
            None => self.resources.push(PathRoutes {
                path,
                access,
                routes: vec![(method, route)],
            }),
        }
    }

    /// Registers every resource and answers what was registered.
    fn register(self, cfg: &mut web::ServiceConfig) -> Vec<(Method, &'static str)> {
        let mut registered = Vec::new();
        for PathRoutes {
            path,
            access,
            routes,
        } in self.resources
        {
            let mut resource = web::resource(path);
            for (method, route) in routes {
                registered.push((method, path));
                resource = resource.route(route);
            }
            match access {
                Access::Public => cfg.service(resource),
                Access::Token => cfg.service(resource.wrap(from_fn(auth::require_token))),
            };
        }
        registered
    }
}

/// Registers every API route with its authentication and answers the (method, path) pairs, as
/// the OpenAPI document must list them.
pub fn register_routes(cfg: &mut web::ServiceConfig) -> Vec<(Method, &'static str)> {
    use Access::{Public, Token};
    let mut table = RouteTable::default();
    table.add(Public, Method::GET, "/healthz", web::to(healthz));
    table.add(Public, Method::GET, "/readyz", web::to(readyz));
    // Every path under auth::EDGE_ROUTES is an edge route: open to edge tokens and admins.
    // Before the routes with segments: actix tries resources in order, each `{id}` pattern a
    // regex, and a TLS handshake asks here every time (behind the /domains routes, matching
    // them took 7 % of the service's CPU samples under a load of cached handshakes).
    let edge_certificate = web::to(edge::certificate);
    table.add(Token, Method::GET, "/edge/certificate", edge_certificate);
    table.add(
        Token,
        Method::GET,
        "/edge/certificates",
        web::to(edge_stream::stream),
    );
    table.add(
        Public,
        Method::GET,
        "/openapi.json",
        web::to(openapi::serve),
    );
    table.add(Token, Method::GET, "/metrics", web::to(metrics));
    table.add(Token, Method::GET, "/ca", web::to(ca::get));
    table.add(Token, Method::GET, "/overview", web::to(overview::overview));
    table.add(Token, Method::GET, "/whoami", web::to(overview::whoami));
    table.add(Token, Method::POST, "/domains", web::to(domains::register));
    table.add(Token, Method::GET, "/domains", web::to(domains::list));
    table.add(Token, Method::GET, "/domains/{id}", web::to(domains::get));
    table.add(
        Token,
        Method::DELETE,
        "/domains/{id}",
        web::to(domains::remove),
    );
    table.add(
        Token,
        Method::POST,
        "/domains/{id}/retry",
        web::to(certificates::retry),
    );
    table.add(
        Token,
        Method::GET,
        "/domains/{id}/events",
        web::to(events::history),
    );
    table.add(
        Token,
        Method::POST,
        "/domains/{id}/verify",
        web::to(domains::verify),
    );
    let health = web::to(domain_health::check);
    table.add(Token, Method::POST, "/domains/{id}/health", health);
    table.add(
        Token,
        Method::PUT,
        "/domains/{id}/alt_names",
        web::to(domains::replace_alt_names),
    );
    let issue = web::to(certificates::issue_certificate);
    table.add(
        Token,
        Method::POST,
        "/domains/{id}/issue-certificate",
        issue,
    );
    let certificate = web::to(certificates::certificate);
    table.add(Token, Method::GET, "/domains/{id}/certificate", certificate);
    let renew = web::to(renewals::renew);
    table.add(Token, Method::POST, "/domains/{id}/renew", renew);
    let certificates = web::to(renewals::history);
    table.add(
        Token,
        Method::GET,
        "/domains/{id}/certificates",
        certificates,
    );
    let past = "/domains/{id}/certificates/{certificate_id}";
    table.add(Token, Method::GET, past, web::to(renewals::one));
    let past_key = "/domains/{id}/certificates/{certificate_id}/key";
    table.add(Token, Method::GET, past_key, web::to(renewals::key));
    let revoke = web::to(renewals::revoke);
    table.add(
        Token,
        Method::POST,
        "/domains/{id}/certificate/revoke",
        revoke,
    );
    let key = web::to(certificates::certificate_key);
    table.add(Token, Method::GET, "/domains/{id}/certificate/key", key);
    table.add(Token, Method::GET, "/events", web::to(events::feed));
    let checkpoints = "/audit/checkpoints";
    table.add(Token, Method::GET, checkpoints, web::to(audit::list));
    table.add(Token, Method::POST, checkpoints, web::to(audit::sign));
    // Outside EDGE_ROUTES on purpose: auditors read it, edge tokens may not.
    let edge_deliveries = web::to(audit::edge_deliveries);
    table.add(
        Token,
        Method::GET,
        "/audit/edge-deliveries",
        edge_deliveries,
    );
    table.add(Token, Method::POST, "/webhooks", web::to(webhooks::create));
    table.add(Token, Method::GET, "/webhooks", web::to(webhooks::list));
    table.add(Token, Method::GET, "/webhooks/{id}", web::to(webhooks::get));
    table.add(
        Token,
        Method::DELETE,
        "/webhooks/{id}",
        web::to(webhooks::delete),
    );
    let rotate = web::to(webhooks::rotate_secret);
    table.add(Token, Method::POST, "/webhooks/{id}/rotate-secret", rotate);
    let deliveries = web::to(webhooks::deliveries);
    table.add(Token, Method::GET, "/webhooks/{id}/deliveries", deliveries);
    table.add(Token, Method::POST, "/tokens", web::to(tokens::create));
    table.add(Token, Method::GET, "/tokens", web::to(tokens::list));
    table.add(Token, Method::GET, "/tokens/{id}", web::to(tokens::get));
    let revoke_token = web::to(tokens::revoke);
    table.add(Token, Method::DELETE, "/tokens/{id}", revoke_token);
    table.register(cfg)
}

/// Registers every route, the interactive reference at `/docs`, the console at `/console/`,
/// the JSON error handling and authentication.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(json_payload_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error));
    register_routes(cfg);
    openapi::register_docs(cfg);
    console::register(cfg);
    cfg.default_service(web::to(unknown_route));
}

/// The middleware that turns actix's own plain-text errors into `{"error": ...}`.
pub fn json_errors<B: actix_web::body::MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(error::json_error_body)
}

async fn unknown_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    )))
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthBody)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody { status: "ok" })
}

/// `GET /readyz`: the store answers and the ACME directory is reachable, no feed consumer is
/// stopped at an event it cannot read, the edge index is built from the feed, the delegation zone (if any) is not behind the feed for
/// long (`read::zone_lag`), and no background work is down or panicking again and
/// again.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "Store or ACME directory unreachable, a feed consumer stopped at an event it cannot read, the edge index or the table of access tokens not yet built (at start), the delegation zone behind the event feed for more than 10 s, or background work down or panicking again and again (the message says which)", body = ErrorBody)
    ))]
async fn readyz(state: SharedState) -> HttpResponse {
    match readiness_problem(&state).await {
        None => HttpResponse::Ok().json(ReadyBody {
            status: "ready",
            background: crate::tasks::BACKGROUND.report(),
        }),
        Some(problem) => HttpResponse::ServiceUnavailable().json(ErrorBody { error: problem }),
    }
}

/// Why the service is not ready, as `GET /readyz` says it; `None` when it is. The service
/// manager is told `READY=1` by the same test (`app/service_manager.rs`).
pub async fn readiness_problem(state: &AppState) -> Option<String> {
    if let Some(stuck) = crate::read::stuck::readiness_problem() {
        return Some(stuck);
    }
    if let Some(building) = state.edge_index.readiness_problem() {
        return Some(building);
    }
    if let Some(building) = state.token_table.readiness_problem() {
        return Some(building);
    }
    if let Some(behind) = crate::read::zone_lag::readiness_problem(&state.store).await {
        return Some(behind);
    }
    let first_ca = async {
        match state.issuers.first() {
            Some(ca) => ca.check_directory().await,
            None => Err("no CA is configured".to_owned()),
        }
    };
    let (store, acme) = futures::join!(state.store.ping(), first_ca);
    match (store, acme, crate::tasks::BACKGROUND.problem()) {
        (Ok(()), Ok(()), None) => None,
        (Err(error), _, _) => Some(format!("store unreachable: {error}")),
        (Ok(()), Err(error), _) => Some(format!("ACME directory unreachable: {error}")),
        (Ok(()), Ok(()), Some(problem)) => Some(problem),
    }
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses(
        (status = 200, description = "Every metric", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The store cannot be reached; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")))
    ),
    security(("bearer" = [])))]
async fn metrics(state: SharedState) -> Result<HttpResponse, ApiError> {
    // The zone's lag is read at each scrape too: a follower that is held up updates it no more.
    crate::read::zone_lag::refresh(&state.store).await;
    let figures = state.store.scrape_figures(chrono::Utc::now()).await?;
    let text = METRICS.render(&figures);
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

/// A page size from the query: `default` when absent, refused outside 1 to `max`.
fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}, got {limit}"
        )));
    }
    Ok(limit)
}

fn json_payload_error(error: JsonPayloadError, _request: &HttpRequest) -> actix_web::Error {
    let api_error = match &error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"))
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "request body must be JSON (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            ApiError::BadRequest(format!("invalid request body: {inner}"))
        }
        JsonPayloadError::Deserialize(inner) => {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
        other => ApiError::BadRequest(format!("invalid request body: {other}")),
    };
    api_error.into()
}

fn path_error(error: PathError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {error}")).into()
}

fn query_error(error: QueryPayloadError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {error}")).into()
}
