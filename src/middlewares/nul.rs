//! U+0000 is refused at the edge (spec §13): PostgreSQL cannot store it, so a string carrying it
//! would otherwise reach the database and fail there. This layer covers paths and queries
//! (`%00`); JSON bodies are checked by the JSON extractor.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The error for a NUL in `field`.
pub fn refused(field: &str) -> Error {
    Error::validation(field, format!("`{field}` must not contain the NUL character (U+0000)"))
}

fn has_encoded_nul(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// Which field of the URI carries an encoded NUL: a query parameter's name, or `path`.
pub fn nul_in_uri(path: &str, query: Option<&str>) -> Option<String> {
    if has_encoded_nul(path) {
        return Some("path".into());
    }
    let query = query?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (has_encoded_nul(value) || has_encoded_nul(name)).then(|| {
            if has_encoded_nul(name) {
                "query".to_string()
            } else {
                name.to_string()
            }
        })
    })
}

pub async fn layer(req: Request, next: Next) -> Response {
    if let Some(field) = nul_in_uri(req.uri().path(), req.uri().query()) {
        return refused(&field).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_encoded_nul_in_paths_and_queries() {
        assert_eq!(nul_in_uri("/handles/a%00b", None).as_deref(), Some("path"));
        assert_eq!(nul_in_uri("/x", Some("q=a%00&limit=1")).as_deref(), Some("q"));
        assert_eq!(nul_in_uri("/x", Some("limit=1&cursor=%00")).as_deref(), Some("cursor"));
        assert_eq!(nul_in_uri("/x", Some("q=100%25")), None);
        assert_eq!(nul_in_uri("/spaces/a", Some("q=%0A")), None);
    }
}
