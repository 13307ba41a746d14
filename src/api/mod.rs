//! The HTTP API: `router(state)` builds the whole surface (apps' placement
//! API, the operators' room map, events, health, metrics, the OpenAPI
//! document and the live page), so tests can call it without a socket.
//!
//! [`serve`] runs it over TCP with the connection limits of `[api]`
//! ([`server`]); [`ids`] gives every id its documented pattern.
//!
//! Routes are grouped by resource, one file each: [`rooms`] (map,
//! placement, colocate), [`nodes`] (list, drain), [`queues`] (queues,
//! callers, agents, static members), [`tokens`] (peek,
//! consume), [`route`] (the proxy's route-ahead lookup), [`events`]
//! (server-sent events), [`health`] (`/healthz`,
//! `/readyz`, `/metrics`), [`map`] (the page at `/`). Handlers are thin:
//! extract, call the controller or the store, map the result. Errors are
//! [`ApiError`]s, always JSON.
//!
//! # Authentication
//!
//! With `api.token` (or `CORRAL_API_TOKEN`) set, every route that changes
//! state or reveals a token (placement, colocate, tokens, drain, undrain,
//! queue members) needs `Authorization: Bearer <token>` ([`extract::Authorized`]). The
//! read-only views (rooms, nodes, queues, events, health, metrics, the page
//! and the OpenAPI document) stay open: they show no secret and an operator on call
//! must reach them without one. The proxy's route-ahead lookup is open too
//! (see [`route`]). Without a token nothing is protected (`corral serve`
//! warns at start).

pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod ids;
pub mod map;
pub mod nodes;
pub mod queues;
pub mod rooms;
pub mod route;
pub mod server;
pub mod tokens;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::error::ApiError;
pub use self::server::{ServerConfig, serve};
use crate::controller::Controller;
use crate::store::Store;

/// The largest request body accepted, in bytes. Every body of this API is a
/// few short ids; 16 KiB leaves room and keeps a flood cheap.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store (rooms, nodes, tokens).
    pub store: Arc<dyn Store>,
    /// The controller (decisions, node streams, metrics, events).
    pub controller: Controller,
    /// The bearer token protected routes require.
    pub auth: ApiAuth,
    /// Fires when the server stops: endless responses (the event stream)
    /// end then, so a graceful shutdown does not wait for their clients.
    pub shutdown: CancellationToken,
    /// Whether `GET /v1/route/{user}` answers (`api.route_ahead`); when
    /// false it always has no opinion.
    pub route_ahead: bool,
}

impl AppState {
    /// The state for `controller`, protected by `token` when given.
    pub fn new(controller: Controller, token: Option<String>) -> Self {
        Self {
            store: controller.store().clone(),
            controller,
            auth: ApiAuth::new(token),
            shutdown: CancellationToken::new(),
            route_ahead: true,
        }
    }

    /// Switches route ahead on (the default) or off.
    #[must_use]
    pub fn with_route_ahead(mut self, on: bool) -> Self {
        self.route_ahead = on;
        self
    }

    /// Ends the event streams when `shutdown` fires (pass the token the
    /// server's graceful shutdown waits on).
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("controller", &self.controller)
            .field("auth", &self.auth)
            .field("route_ahead", &self.route_ahead)
            .finish()
    }
}

/// The API's bearer token. Its `Debug` never shows it.
#[derive(Clone, Default)]
pub struct ApiAuth(Option<Arc<str>>);

impl ApiAuth {
    /// `None` or an empty token: no authentication.
    pub fn new(token: Option<String>) -> Self {
        Self(token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// True when a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `given` (the bearer token of a request) passes. Compares in
    /// constant time for equal lengths.
    pub fn allows(&self, given: Option<&str>) -> bool {
        let Some(want) = &self.0 else { return true };
        let Some(given) = given else { return false };
        let (a, b) = (want.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "ApiAuth(set)"
        } else {
            "ApiAuth(not set)"
        })
    }
}

/// The OpenAPI document's root: info, tags and the bearer scheme. Paths
/// come from the handlers through [`OpenApiRouter`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "corral",
        description = "Placement API for apps, room map and queues for operators. Errors are \
            `{\"error\":{\"code\",\"message\"}}` with a stable code."
    ),
    modifiers(&BearerScheme),
    // Schemas only referenced by name are listed here: the placement body
    // (given by reference: it is optional, not nullable) and the room
    // map's cursor (query parameters do not collect their schemas).
    components(schemas(rooms::PlacementRequest, ids::Cursor)),
    tags(
        (name = "rooms", description = "Room map, placement, colocate"),
        (name = "nodes", description = "Nodes and drain"),
        (name = "tokens", description = "Single-use redirect tokens"),
        (name = "queues", description = "Call queues: callers, agents, static members"),
        (name = "route", description = "Route ahead: the SIP proxy asks where a call's room lives"),
        (name = "ops", description = "Events, health, metrics")
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The documented routes, with the OpenAPI document they make.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rooms::list))
        .routes(routes!(rooms::get))
        .routes(routes!(rooms::placement))
        .routes(routes!(rooms::colocate))
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::drain))
        .routes(routes!(nodes::undrain))
        .routes(routes!(queues::list))
        .routes(routes!(queues::get))
        .routes(routes!(queues::add_member))
        .routes(routes!(queues::remove_member))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::unpause))
        .routes(routes!(tokens::get))
        .routes(routes!(tokens::consume))
        .routes(routes!(route::route))
        .routes(routes!(events::stream))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI 3 document of the API (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = documented().split_for_parts();
    // Rendered once: the document is fixed for the life of the process.
    let doc = axum::body::Bytes::from(doc.to_json().unwrap_or_default());
    // Layers, innermost first: the body limit applies to every extractor;
    // `observe` wraps each matched route (it sees the matched path) and
    // logs 5xx once; the fallbacks answer JSON for unknown routes/methods.
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .route("/", get(map::page))
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(error::not_found)
        .with_state(state)
}

/// Runs every routed request in a span naming its method and matched route,
/// times it into `corral_api_request_duration_seconds`, and logs each 5xx
/// once, with its cause chain (4xx are the client's business: not logged).
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let span = tracing::debug_span!("api", %method, route = %route);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let _in = span.enter();
    let status = resp.status();
    st.controller.metrics().api_request(
        &route,
        method.as_str(),
        status.as_u16(),
        started.elapsed(),
    );
    if status.is_server_error() {
        let detail = resp
            .extensions()
            .get::<error::InternalDetail>()
            .map(|d| d.0.as_str())
            .unwrap_or("");
        tracing::warn!(%method, route, status = status.as_u16(), reason = detail, "API request failed");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_means_open_and_a_token_must_match_exactly() {
        let open = ApiAuth::new(None);
        assert!(open.allows(None) && open.allows(Some("anything")));
        assert!(
            ApiAuth::new(Some(String::new())).allows(None),
            "empty = unset"
        );
        let auth = ApiAuth::new(Some("s3cret".into()));
        assert!(auth.allows(Some("s3cret")));
        for bad in [
            None,
            Some(""),
            Some("s3cre"),
            Some("s3cret "),
            Some("S3cret"),
            Some("s3cretx"),
        ] {
            assert!(!auth.allows(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let auth = ApiAuth::new(Some("s3cret".into()));
        assert_eq!(format!("{auth:?}"), "ApiAuth(set)");
    }

    /// Client generators name a method after its operationId: two routes
    /// with one id collide (the handlers `rooms::list` and `nodes::list`
    /// once both gave `list`).
    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let id = op["operationId"]
                    .as_str()
                    .expect("every operation has an id");
                if let Some(first) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId {id:?} of {method} {path} is also {first}'s");
                }
            }
        }
        assert!(seen.contains_key("list_rooms") && seen.contains_key("get_token"));
    }

    /// Every `$ref` of the document names a schema it holds (query
    /// parameters and bodies given by reference do not add theirs).
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, doc: &serde_json::Value, refs: &mut usize) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        let name = r
                            .strip_prefix("#/components/schemas/")
                            .unwrap_or_else(|| panic!("{r} is not a component schema"));
                        assert!(
                            doc["components"]["schemas"][name].is_object(),
                            "{r} does not resolve"
                        );
                        *refs += 1;
                    }
                    m.values().for_each(|x| walk(x, doc, refs));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, doc, refs)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 50, "only {refs} references");
    }

    #[test]
    fn the_document_has_every_route_and_the_bearer_scheme() {
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        for path in [
            "/v1/rooms",
            "/v1/rooms/{kind}/{name}",
            "/v1/rooms/{kind}/{name}/placement",
            "/v1/rooms/{kind}/{name}/colocate",
            "/v1/nodes",
            "/v1/nodes/{id}/drain",
            "/v1/nodes/{id}/undrain",
            "/v1/tokens/{token}",
            "/v1/tokens/{token}/consume",
            "/v1/queues",
            "/v1/queues/{name}",
            "/v1/queues/{name}/members",
            "/v1/queues/{name}/members/{agent}",
            "/v1/queues/{name}/members/{agent}/pause",
            "/v1/queues/{name}/members/{agent}/unpause",
            "/v1/route/{user}",
            "/v1/events",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let placement = &doc["paths"]["/v1/rooms/{kind}/{name}/placement"]["post"];
        assert!(
            placement["security"].is_array(),
            "placement needs the token"
        );
        assert!(
            doc["paths"]["/v1/rooms"]["get"]["security"].is_null(),
            "the map is open"
        );
        for (path, method) in [
            ("/v1/queues/{name}/members", "post"),
            ("/v1/queues/{name}/members/{agent}", "delete"),
            ("/v1/queues/{name}/members/{agent}/pause", "post"),
            ("/v1/queues/{name}/members/{agent}/unpause", "post"),
        ] {
            assert!(
                doc["paths"][path][method]["security"].is_array(),
                "{method} {path} needs the token"
            );
        }
        assert!(
            doc["paths"]["/v1/route/{user}"]["get"]["security"].is_null(),
            "the proxy's lookup is open"
        );
        for path in ["/v1/queues", "/v1/queues/{name}"] {
            assert!(
                doc["paths"][path]["get"]["security"].is_null(),
                "{path} is open"
            );
        }
    }
}
