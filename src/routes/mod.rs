//! HTTP routes, one module per API group; handlers stay thin. This module assembles the client
//! API and documents it (the OpenAPI document is generated from these definitions).

pub mod account;
pub mod bans;
pub mod channels;
pub mod dm;
pub mod handles;
pub mod invites;
pub mod media;
pub mod members;
pub mod messages;
pub mod meta;
pub mod params;
pub mod relations;
pub mod roles;
pub mod spaces;
pub mod users;
pub mod ws;

use aide::axum::ApiRouter;
use aide::axum::routing::ApiMethodRouter;
use aide::openapi::{OpenApi, SecurityScheme};
use aide::transform::TransformOpenApi;

use crate::error::{Error, ErrorCode};
use crate::middlewares::auth::SECURITY_SCHEME;
use crate::state::AppState;

/// Registers a route at Mikoto's documented path. Requests arrive with their trailing slash
/// already trimmed (spec §2.1), so a collection root such as `/spaces/` is documented with its
/// slash and served at `/spaces`.
pub trait RouterExt {
    fn mikoto_route(self, path: &str, method_router: ApiMethodRouter<AppState>) -> Self;
}

impl RouterExt for ApiRouter<AppState> {
    fn mikoto_route(self, path: &str, method_router: ApiMethodRouter<AppState>) -> Self {
        match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => self
                .api_route(path, method_router.clone())
                .route(trimmed, method_router),
            _ => self.api_route(path, method_router),
        }
    }
}

/// Documents one operation: its tag, Mikoto operationId and summary.
pub fn doc(
    tag: &'static str,
    id: &'static str,
    summary: &'static str,
) -> impl for<'a> FnOnce(aide::transform::TransformOperation<'a>) -> aide::transform::TransformOperation<'a> {
    move |o| o.id(id).summary(summary).tag(tag)
}

/// Every client-facing REST operation.
pub fn api_router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .merge(meta::api_router())
        .merge(account::router())
        .merge(users::router())
        .merge(handles::router())
        .merge(spaces::router())
        .merge(channels::router())
        .merge(members::router())
        .merge(roles::router())
        .merge(bans::router())
        .merge(invites::router())
        .merge(messages::router())
        .merge(relations::router())
        .merge(dm::router())
}

/// Document-level facts: title, version, the bearer scheme, the default error response.
pub fn document(api: TransformOpenApi<'_>) -> TransformOpenApi<'_> {
    api.title("alterego")
        .version(env!("CARGO_PKG_VERSION"))
        .description("A wire-compatible, hardened Mikoto chat server.")
        .security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http {
                scheme: "bearer".into(),
                bearer_format: Some("JWT".into()),
                description: Some(
                    "An access token from `account.login`, `account.register` or `account.refresh`.".into(),
                ),
                extensions: Default::default(),
            },
        )
        .default_response::<axum::Json<crate::error::ErrorBody>>()
}

/// Builds the client API and its OpenAPI document. The generator is configured before any
/// route exists: routes record their schemas as they are built, and reconfiguring it later
/// would drop them.
pub fn openapi() -> (axum::Router<AppState>, OpenApi) {
    aide::generate::on_error(|e| tracing::warn!(error = %e, "OpenAPI generation"));
    aide::generate::extract_schemas(true);
    let mut api = OpenApi::default();
    let router = api_router().finish_api_with(&mut api, document);
    crate::gateway::openapi::document(&mut api);
    (router, api)
}

pub async fn not_found() -> Error {
    Error::new(ErrorCode::NotFound, "No such route")
}

pub async fn method_not_allowed() -> Error {
    Error::new(ErrorCode::MethodNotAllowed, "This method is not allowed on this route")
}
