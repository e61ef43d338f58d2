//! Rate limiting of REST requests (spec §11): the buckets each route falls under, checked before
//! the handler runs; handlers add buckets keyed by body fields through [`Limits`]. Every limited
//! response carries the `X-RateLimit-*` headers of the bucket with the fewest remaining requests.

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

/// What a route-specific bucket is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyBy {
    Ip,
    /// The token's user; an unauthenticated request falls back to `anonymous` by IP.
    User,
    /// The token's user and the path segment at this index (a channel id).
    UserAnd(usize),
}

/// The buckets of routes with their own limits. Routes not listed fall under `general` (keyed by
/// the token's user) or `anonymous` (keyed by IP).
fn route_buckets(method: &Method, path: &str) -> Option<&'static [(Bucket, KeyBy)]> {
    use Bucket::*;
    use KeyBy::*;
    if method != Method::POST {
        return None;
    }
    Some(match path {
        "/account/register" => &[(Auth, Ip), (Register, Ip)],
        "/account/login" | "/account/reset_password" | "/account/reset_password/submit" | "/bots/login" => {
            &[(Auth, Ip)]
        }
        "/account/refresh" | "/account/logout" => &[(Refresh, Ip)],
        "/spaces" => &[(SpaceCreate, User)],
        "/spaces/{spaceId}/channels/{channelId}/messages" => &[(Messages, UserAnd(3))],
        "/dm/{channelId}/messages" => &[(Messages, UserAnd(1))],
        "/relations/{relationId}/request" => &[(Relations, User)],
        "/users/me/handle/verify/complete" | "/spaces/{spaceId}/handle/verify/complete" => &[(Verification, User)],
        _ => return None,
    })
}

/// Decisions taken for this request, read back when the response is built.
#[derive(Clone, Default)]
struct Taken(Arc<Mutex<Vec<Decision>>>);

impl Taken {
    fn push(&self, d: Vec<Decision>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(d);
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.config.rate_limits {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Some(path) = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let ip = ClientIp::from_parts(&parts, &state).0.to_string();
    // Only the signature is checked here; the handler does the full verification.
    let sub = bearer_token(&parts)
        .ok()
        .flatten()
        .and_then(|t| state.jwt.verify(t).ok())
        .map(|c| c.sub.to_string());
    let keys: Vec<(Bucket, String)> = match (route_buckets(&parts.method, &path), sub) {
        (Some(buckets), sub) => buckets
            .iter()
            .map(|(b, by)| match (by, &sub) {
                (KeyBy::Ip, _) => (*b, ip.clone()),
                (KeyBy::User, Some(sub)) => (*b, sub.clone()),
                (KeyBy::UserAnd(i), Some(sub)) => {
                    let segment = parts
                        .uri
                        .path()
                        .trim_matches('/')
                        .split('/')
                        .nth(*i)
                        .unwrap_or_default();
                    (*b, format!("{sub}:{segment}"))
                }
                (KeyBy::User | KeyBy::UserAnd(_), None) => (Bucket::Anonymous, ip.clone()),
            })
            .collect(),
        (None, Some(sub)) => vec![(Bucket::General, sub)],
        (None, None) => vec![(Bucket::Anonymous, ip.clone())],
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
    fn route_table() {
        assert_eq!(
            route_buckets(&Method::POST, "/account/register"),
            Some(&[(Bucket::Auth, KeyBy::Ip), (Bucket::Register, KeyBy::Ip)][..])
        );
        assert_eq!(route_buckets(&Method::GET, "/account/register"), None);
        assert_eq!(
            route_buckets(&Method::POST, "/spaces"),
            Some(&[(Bucket::SpaceCreate, KeyBy::User)][..])
        );
        assert_eq!(route_buckets(&Method::GET, "/spaces"), None);
        for path in [
            "/users/me/handle/verify/complete",
            "/spaces/{spaceId}/handle/verify/complete",
        ] {
            assert_eq!(
                route_buckets(&Method::POST, path),
                Some(&[(Bucket::Verification, KeyBy::User)][..])
            );
        }
    }
}
