//! Rate limiting of REST requests (spec §11): each route declares its buckets with its operation
//! ([`Limit`], `routes::doc`); this layer checks them before the handler runs, and handlers add
//! buckets keyed by body fields (an email) through [`Limits`]. Every limited
//! response carries the `X-RateLimit-*` headers of the bucket with the fewest remaining requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::functions::rate_limit::{Bucket, Decision, governing};
use crate::middlewares::auth::bearer_token;
use crate::middlewares::client_ip::ClientIp;
use crate::state::AppState;

/// What a route's own bucket is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    Ip,
    /// The token's user; an unauthenticated request falls back to `anonymous` by IP.
    User,
    /// The token's user and the value of this path parameter (a channel id).
    UserAnd(&'static str),
}

/// A route's rate limit, declared with its operation (`routes::doc`): its own buckets, or none
/// for `general` (keyed by the token's user) or `anonymous` (keyed by IP) alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub &'static [(Bucket, KeyBy)]);

/// The OpenAPI operation extension that carries a route's [`Limit`] (documentation for client
/// developers, and what [`RouteLimits`] is built from).
pub const EXTENSION: &str = "x-rate-limit";

impl Limit {
    pub const GENERAL: Limit = Limit(&[]);
    /// Credential checks by IP (spec §11.2 `auth`).
    pub const AUTH: Limit = Limit(&[(Bucket::Auth, KeyBy::Ip)]);
    pub const REGISTER: Limit = Limit(&[(Bucket::Auth, KeyBy::Ip), (Bucket::Register, KeyBy::Ip)]);
    pub const REFRESH: Limit = Limit(&[(Bucket::Refresh, KeyBy::Ip)]);
    pub const SPACE_CREATE: Limit = Limit(&[(Bucket::SpaceCreate, KeyBy::User)]);
    /// Sends, per user and channel.
    pub const MESSAGES: Limit = Limit(&[(Bucket::Messages, KeyBy::UserAnd("channelId"))]);
    pub const RELATIONS: Limit = Limit(&[(Bucket::Relations, KeyBy::User)]);
    pub const VERIFICATION: Limit = Limit(&[(Bucket::Verification, KeyBy::User)]);

    /// `[{"bucket": "auth", "key": "ip"}, …]`; `key` is `ip`, `user` or `user+{parameter}`.
    pub fn to_extension(self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(bucket, key)| {
                let key = match key {
                    KeyBy::Ip => "ip".to_string(),
                    KeyBy::User => "user".to_string(),
                    KeyBy::UserAnd(param) => format!("user+{param}"),
                };
                serde_json::json!({ "bucket": bucket.name(), "key": key })
            })
            .collect()
    }
}

/// How the layer keys a declared bucket for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Ip,
    User,
    /// The user and the path segment at this index.
    UserAnd(usize),
}

/// Every route's declared buckets, by method and (trailing-slash-trimmed) route path.
#[derive(Debug, Default)]
pub struct RouteLimits(HashMap<(Method, String), Vec<(Bucket, Key)>>);

/// A route whose declaration could not be read back (a bug in a declaration).
#[derive(Debug, thiserror::Error)]
#[error("rate limit of {method} {path}: {problem}")]
pub struct DeclarationError {
    method: String,
    path: String,
    problem: String,
}

impl RouteLimits {
    /// Reads the declarations from the generated OpenAPI document. Every operation must carry
    /// one: a route registered without deciding its limit is an error here.
    pub fn from_document(doc: &serde_json::Value) -> Result<RouteLimits, DeclarationError> {
        let mut table = HashMap::new();
        let paths = doc.get("paths").and_then(|p| p.as_object()).into_iter().flatten();
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, operation) in item {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let fail = |problem: &str| DeclarationError {
                    method: method.to_string(),
                    path: path.clone(),
                    problem: problem.to_string(),
                };
                let declared = operation
                    .get(EXTENSION)
                    .and_then(|d| d.as_array())
                    .ok_or_else(|| fail("no limit declared"))?;
                let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
                let mut buckets = Vec::with_capacity(declared.len());
                for entry in declared {
                    let name = entry.get("bucket").and_then(|b| b.as_str()).unwrap_or_default();
                    let bucket = Bucket::ALL
                        .into_iter()
                        .find(|b| b.name() == name)
                        .ok_or_else(|| fail("unknown bucket"))?;
                    let key = match entry.get("key").and_then(|k| k.as_str()).unwrap_or_default() {
                        "ip" => Key::Ip,
                        "user" => Key::User,
                        other => {
                            let param = other.strip_prefix("user+").ok_or_else(|| fail("unknown key"))?;
                            let wanted = format!("{{{param}}}");
                            let index = segments
                                .iter()
                                .position(|s| *s == wanted)
                                .ok_or_else(|| fail("the keyed parameter is not in the path"))?;
                            Key::UserAnd(index)
                        }
                    };
                    buckets.push((bucket, key));
                }
                let trimmed = match path.strip_suffix('/') {
                    Some(t) if !t.is_empty() => t.to_string(),
                    _ => path.clone(),
                };
                table.insert((method, trimmed), buckets);
            }
        }
        Ok(RouteLimits(table))
    }

    fn buckets(&self, method: &Method, path: &str) -> &[(Bucket, Key)] {
        self.0
            .get(&(method.clone(), path.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The rate-limit layer's state: the app and the declared limits.
#[derive(Clone)]
pub struct Limiting {
    pub state: AppState,
    pub routes: Arc<RouteLimits>,
}

/// Decisions taken for this request, read back when the response is built.
#[derive(Clone, Default)]
struct Taken(Arc<Mutex<Vec<Decision>>>);

impl Taken {
    fn push(&self, d: Vec<Decision>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(d);
    }
}

pub async fn layer(State(limiting): State<Limiting>, req: Request, next: Next) -> Response {
    let state = &limiting.state;
    if !state.config.rate_limits {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Some(path) = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let ip = ClientIp::of(&parts).0.to_string();
    // Only the signature is checked here; the handler does the full verification.
    let sub = bearer_token(&parts)
        .ok()
        .flatten()
        .and_then(|t| state.jwt.verify(t).ok())
        .map(|c| c.sub.to_string());
    let declared = limiting.routes.buckets(&parts.method, &path);
    let keys: Vec<(Bucket, String)> = match (declared, sub) {
        ([], Some(sub)) => vec![(Bucket::General, sub)],
        ([], None) => vec![(Bucket::Anonymous, ip.clone())],
        (buckets, sub) => buckets
            .iter()
            .map(|(b, by)| match (by, &sub) {
                (Key::Ip, _) => (*b, ip.clone()),
                (Key::User, Some(sub)) => (*b, sub.clone()),
                (Key::UserAnd(i), Some(sub)) => {
                    let segment = parts
                        .uri
                        .path()
                        .trim_matches('/')
                        .split('/')
                        .nth(*i)
                        .unwrap_or_default();
                    (*b, format!("{sub}:{segment}"))
                }
                (Key::User | Key::UserAnd(_), None) => (Bucket::Anonymous, ip.clone()),
            })
            .collect(),
    };
    let checks: Vec<(Bucket, &str)> = keys.iter().map(|(b, k)| (*b, k.as_str())).collect();
    let decisions = state.limiter.check_all(&checks).await;
    let taken = Taken::default();
    taken.push(decisions);
    if let Some(resp) = refusal(&taken) {
        return resp;
    }
    parts.extensions.insert(taken.clone());
    let mut res = next.run(Request::from_parts(parts, body)).await;
    let all = taken.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(d) = governing(&all) {
        set_headers(res.headers_mut(), d);
    }
    res
}

fn refusal(taken: &Taken) -> Option<Response> {
    let all = taken.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let d = governing(&all)?;
    if d.allowed {
        return None;
    }
    metrics::counter!("alterego_rate_limited_total", "bucket" => d.bucket).increment(1);
    let mut res = Error::rate_limited(d.retry_after.as_secs_f64()).into_response();
    set_headers(res.headers_mut(), d);
    Some(res)
}

/// The `X-RateLimit-*` headers of one decision (spec §11.3); media routes use it too.
pub(crate) fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("x-ratelimit-limit", d.limit.to_string());
    put("x-ratelimit-remaining", d.remaining.to_string());
    put("x-ratelimit-reset-after", format_secs(d.reset_after.as_secs_f64()));
    put("x-ratelimit-bucket", d.bucket.to_string());
}

/// Seconds with up to three decimals, without trailing zeros.
fn format_secs(secs: f64) -> String {
    let s = format!("{:.3}", (secs * 1000.0).ceil() / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Lets a handler check buckets keyed by what it decoded (an email, a bot id).
pub struct Limits {
    state: AppState,
    taken: Taken,
}

impl Limits {
    /// Checks and consumes; a refusal is a 429 and its headers govern the response.
    pub async fn check(&self, bucket: Bucket, key: &str) -> Result<(), Error> {
        if !self.state.config.rate_limits {
            return Ok(());
        }
        let decisions = self.state.limiter.check_all(&[(bucket, key)]).await;
        let refused = decisions.iter().find(|d| !d.allowed).map(|d| (d.bucket, d.retry_after));
        self.taken.push(decisions);
        match refused {
            Some((bucket, retry_after)) => {
                metrics::counter!("alterego_rate_limited_total", "bucket" => bucket).increment(1);
                Err(Error::rate_limited(retry_after.as_secs_f64()))
            }
            None => Ok(()),
        }
    }

    /// Checks and consumes without telling the client anything (`auth-mail`, spec §11.2).
    pub async fn check_silently(&self, bucket: Bucket, key: &str) -> bool {
        if !self.state.config.rate_limits {
            return true;
        }
        self.state
            .limiter
            .check_all(&[(bucket, key)])
            .await
            .iter()
            .all(|d| d.allowed)
    }
}

impl FromRequestParts<AppState> for Limits {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let taken = parts.extensions.get::<Taken>().cloned().unwrap_or_default();
        Ok(Limits {
            state: state.clone(),
            taken,
        })
    }
}

impl aide::OperationInput for Limits {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format() {
        assert_eq!(format_secs(6.0), "6");
        assert_eq!(format_secs(5.9994), "6");
        assert_eq!(format_secs(0.25), "0.25");
        assert_eq!(format_secs(0.0001), "0.001");
    }

    #[test]
    fn declarations_read_back_from_the_document() {
        const MESSAGES: Limit = Limit(&[(Bucket::Messages, KeyBy::UserAnd("channelId"))]);
        const REGISTER: Limit = Limit(&[(Bucket::Auth, KeyBy::Ip), (Bucket::Register, KeyBy::Ip)]);
        let doc = serde_json::json!({"paths": {
            "/spaces/{spaceId}/channels/{channelId}/messages/": {
                "get": {EXTENSION: Limit::GENERAL.to_extension()},
                "post": {EXTENSION: MESSAGES.to_extension()},
            },
            "/account/register": {"post": {EXTENSION: REGISTER.to_extension()}},
        }});
        let limits = RouteLimits::from_document(&doc).unwrap();
        let messages = "/spaces/{spaceId}/channels/{channelId}/messages";
        assert_eq!(
            limits.buckets(&Method::POST, messages),
            &[(Bucket::Messages, Key::UserAnd(3))]
        );
        assert_eq!(limits.buckets(&Method::GET, messages), &[]);
        assert_eq!(
            limits.buckets(&Method::POST, "/account/register"),
            &[(Bucket::Auth, Key::Ip), (Bucket::Register, Key::Ip)]
        );
        assert_eq!(limits.buckets(&Method::GET, "/account/register"), &[]);
    }

    #[test]
    fn an_undeclared_or_wrong_limit_is_an_error() {
        let undeclared = serde_json::json!({"paths": {"/x": {"get": {"operationId": "x"}}}});
        assert!(RouteLimits::from_document(&undeclared).is_err());
        let bad_param = serde_json::json!({"paths": {"/x/{a}": {"post": {
            EXTENSION: Limit(&[(Bucket::Messages, KeyBy::UserAnd("b"))]).to_extension()
        }}}});
        assert!(RouteLimits::from_document(&bad_param).is_err());
    }
}
