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
            .map_err(|e| {
                Error::new(
                    ErrorCode::InvalidQuery,
                    format!("Invalid query: {}", e.body_text()),
                )
            })
    }
}

impl<T: JsonSchema> aide::OperationInput for Query<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        AxumQuery::<T>::operation_input(ctx, operation);
    }
}
