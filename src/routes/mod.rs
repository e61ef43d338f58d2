//! HTTP routes, one module per API group; handlers stay thin. This module assembles the client
//! API and documents it (the OpenAPI document is generated from these definitions).

pub mod account;
pub mod bans;
pub mod bots;
pub mod channels;
pub mod collab;
pub mod dm;
pub mod docs;
pub mod documents;
pub mod handles;
pub mod invites;
pub mod media;
pub mod members;
pub mod messages;
pub mod meta;
mod params;
pub mod push;
pub mod reference;
pub mod relations;
pub mod roles;
pub mod spaces;
pub mod users;
pub mod voice;
pub mod ws;

use aide::axum::ApiRouter;
use aide::axum::routing::ApiMethodRouter;
use aide::openapi::{OpenApi, SecurityScheme};
use aide::transform::{TransformOpenApi, TransformOperation};

use crate::error::{Error, ErrorCode};
use crate::middlewares::auth::SECURITY_SCHEME;
use crate::middlewares::rate_limit::{self, Limit};
use crate::state::AppState;

// The path parameters the route modules share.
pub use params::*;

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

/// Declares one operation: its tag, Mikoto operationId, summary and rate limit.
pub fn doc(
    tag: &'static str,
    id: &'static str,
    summary: &'static str,
    limit: Limit,
) -> impl for<'a> FnOnce(TransformOperation<'a>) -> TransformOperation<'a> {
    move |o| limited(o.id(id).summary(summary).tag(tag), limit)
}

/// Records an operation's rate limit on it; the rate-limit layer reads it back from the
/// generated document, and refuses to start when an operation has none.
pub fn limited(mut o: TransformOperation<'_>, limit: Limit) -> TransformOperation<'_> {
    o.inner_mut()
        .extensions
        .insert(rate_limit::EXTENSION.into(), limit.to_extension());
    o
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
        .merge(bots::router())
        .merge(voice::router())
        .merge(push::router())
        .merge(documents::router())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middlewares::rate_limit::{EXTENSION, RouteLimits};

    /// Every operation declares its limit, and the special ones are what spec §11.2 says.
    #[test]
    fn every_operation_declares_its_rate_limit() {
        let (_, api) = openapi();
        let doc = serde_json::to_value(&api).unwrap();
        RouteLimits::from_document(&doc).unwrap();
        let declared = |path: &str, method: &str| -> Vec<(String, String)> {
            doc["paths"][path][method][EXTENSION]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no limit"))
                .iter()
                .map(|e| (e["bucket"].as_str().unwrap().into(), e["key"].as_str().unwrap().into()))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(b, k)| (b.to_string(), k.to_string())).collect()
        };
        assert_eq!(
            declared("/account/register", "post"),
            pairs(&[("auth", "ip"), ("register", "ip")])
        );
        for path in [
            "/bots/login",
            "/account/login",
            "/account/reset_password",
            "/account/reset_password/submit",
        ] {
            assert_eq!(declared(path, "post"), pairs(&[("auth", "ip")]), "{path}");
        }
        for path in ["/account/refresh", "/account/logout"] {
            assert_eq!(declared(path, "post"), pairs(&[("refresh", "ip")]), "{path}");
        }
        assert_eq!(declared("/spaces/", "post"), pairs(&[("space-create", "user")]));
        assert_eq!(declared("/spaces/", "get"), pairs(&[]));
        assert_eq!(
            declared("/spaces/{spaceId}/channels/{channelId}/messages/", "post"),
            pairs(&[("messages", "user+channelId")])
        );
        assert_eq!(
            declared("/dm/{channelId}/messages/", "post"),
            pairs(&[("messages", "user+channelId")])
        );
        assert_eq!(
            declared("/relations/{relationId}/request", "post"),
            pairs(&[("relations", "user")])
        );
        for path in [
            "/users/me/handle/verify/complete",
            "/spaces/{spaceId}/handle/verify/complete",
        ] {
            assert_eq!(declared(path, "post"), pairs(&[("verification", "user")]), "{path}");
        }
    }
}
