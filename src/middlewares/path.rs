//! Path and query extractors whose rejections are JSON errors: a malformed path parameter is
//! 400 `InvalidPathParameter` (never a 500), a malformed query 400 `InvalidQuery`.

use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::{FromRequestParts, Query as AxumQuery};
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode};

pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| {
                Error::new(
                    ErrorCode::InvalidPathParameter,
                    format!("Invalid path parameter: {}", e.body_text()),
                )
            })
    }
}

impl<T: JsonSchema> aide::OperationInput for Path<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Path::<T>::operation_input(ctx, operation);
    }
}

pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        AxumQuery::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Error::new(ErrorCode::InvalidQuery, format!("Invalid query: {}", e.body_text())))
    }
}

impl<T: JsonSchema> aide::OperationInput for Query<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        AxumQuery::<T>::operation_input(ctx, operation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status_and_code(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let res = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .into_response();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn bad_uuid_in_path_is_400_json() {
        let app = Router::new().route(
            "/things/{id}",
            get(|Path(id): Path<uuid::Uuid>| async move { axum::Json(id.to_string()) }),
        );
        let (status, body) = status_and_code(app.clone(), "/things/not-a-uuid").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "InvalidPathParameter");
        let id = "0190B6C2-7A3F-7C3B-9D2E-3A1B2C3D4E5F";
        let (status, body) = status_and_code(app, &format!("/things/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, id.to_lowercase(), "any case accepted, lowercase out");
    }

    #[tokio::test]
    async fn bad_query_is_400_json() {
        #[derive(serde::Deserialize)]
        struct Q {
            #[allow(dead_code)]
            limit: Option<u32>,
        }
        let app = Router::new().route("/list", get(|Query(_): Query<Q>| async { "ok" }));
        let (status, body) = status_and_code(app, "/list?limit=abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "InvalidQuery");
    }
}
