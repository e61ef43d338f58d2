//! Custom-domain verification (spec §12.4): the challenge texts, the checks of a DNS TXT record
//! and of a well-known file against a challenge, and the [`DomainProbe`] that fetches both.
//!
//! The probe is a trait object on `AppState` so tests can exercise the success paths without the
//! internet; production uses [`NetworkProbe`]: the system resolver for TXT records and an HTTPS
//! client that connects only to public addresses it resolved itself (DNS pinning), on port 443,
//! without redirects, within 5 s, reading at most 64 KiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hickory_resolver::TokioResolver;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;

use crate::functions::ssrf;

/// How long a challenge may be completed.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bound of each outbound check (spec §12.4).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest well-known body read.
pub const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// The challenge nonce: 32 alphanumeric characters from the OS-seeded CSPRNG.
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// What a challenge binds: the domain, the entity and the nonce, for this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeFacts<'a> {
    pub domain: &'a str,
    pub handle_domain: &'a str,
    /// `user` or `space`.
    pub entity_type: &'a str,
    pub entity_id: uuid::Uuid,
    pub nonce: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WellKnownFile<'a> {
    home_instance: &'a str,
    entity_type: &'a str,
    entity_id: String,
    nonce: &'a str,
}

impl ChallengeFacts<'_> {
    pub fn dns_txt_name(&self) -> String {
        format!("_mikoto.{}", self.domain)
    }

    pub fn dns_txt_record(&self) -> String {
        format!(
            "v=1 home={} {}={} nonce={}",
            self.handle_domain, self.entity_type, self.entity_id, self.nonce
        )
    }

    pub fn well_known_url(&self) -> String {
        format!("https://{}/.well-known/mikoto.json", self.domain)
    }

    /// The pretty-printed JSON the domain must serve at [`Self::well_known_url`].
    pub fn well_known_content(&self) -> String {
        let file = WellKnownFile {
            home_instance: self.handle_domain,
            entity_type: self.entity_type,
            entity_id: self.entity_id.to_string(),
            nonce: self.nonce,
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Whether one of the TXT records equals the expected record after whitespace normalisation.
    pub fn txt_matches(&self, records: &[String]) -> bool {
        let expected = normalize_whitespace(&self.dns_txt_record());
        records.iter().any(|r| normalize_whitespace(r) == expected)
    }

    /// Checks a well-known body: JSON whose `homeInstance`, `entityType`, `entityId` and `nonce`
    /// equal the challenge's. The error says which field differs.
    pub fn check_well_known(&self, body: &[u8]) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the well-known file is not valid JSON".to_string())?;
        let field = |name: &str| value.get(name).and_then(|v| v.as_str());
        let entity_id = field("entityId").and_then(|s| uuid::Uuid::parse_str(s.trim()).ok());
        let checks = [
            ("homeInstance", field("homeInstance") == Some(self.handle_domain)),
            ("entityType", field("entityType") == Some(self.entity_type)),
            ("entityId", entity_id == Some(self.entity_id)),
            ("nonce", field("nonce") == Some(self.nonce)),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            None => Ok(()),
            Some((name, _)) => Err(format!("the well-known file's `{name}` does not match the challenge")),
        }
    }
}

/// Runs of whitespace become one space; leading and trailing whitespace is dropped.
pub fn normalize_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How a domain proved control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Dns,
    WellKnown,
}

/// Checks DNS first, then the well-known file (spec §12.4). `Err` carries both reasons.
pub async fn verify(probe: &dyn DomainProbe, facts: &ChallengeFacts<'_>) -> Result<Method, String> {
    let dns = match probe.txt(&facts.dns_txt_name()).await {
        Ok(records) if facts.txt_matches(&records) => return Ok(Method::Dns),
        Ok(records) if records.is_empty() => format!("no TXT record at {}", facts.dns_txt_name()),
        Ok(_) => format!("no TXT record at {} matches the challenge", facts.dns_txt_name()),
        Err(e) => e,
    };
    let well_known = match probe.well_known(facts.domain).await {
        Ok(body) => match facts.check_well_known(&body) {
            Ok(()) => return Ok(Method::WellKnown),
            Err(e) => e,
        },
        Err(e) => e,
    };
    Err(format!("DNS: {dns}; well-known file: {well_known}"))
}

/// The outbound side of verification. Errors are short reasons shown to the user.
pub trait DomainProbe: Send + Sync {
    /// The TXT records at `name`, each record's strings concatenated.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// The body of `https://<domain>/.well-known/mikoto.json` (2xx only, at most 64 KiB).
    fn well_known<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// The production probe: the system resolver and an SSRF-safe HTTPS client. Either half may be
/// missing when it could not be set up at start (reported per check, never a startup failure).
pub struct NetworkProbe {
    resolver: Option<TokioResolver>,
    http: Option<reqwest::Client>,
}

impl NetworkProbe {
    pub fn new() -> NetworkProbe {
        let resolver = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                let opts = builder.options_mut();
                opts.timeout = PROBE_TIMEOUT;
                // A record the user just added must be seen at once: no answer is cached.
                opts.cache_size = 0;
                match builder.build() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS resolver unavailable; handle verification cannot work");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "system DNS configuration unreadable; handle verification cannot work");
                None
            }
        };
        let http = resolver.clone().and_then(|r| {
            reqwest::Client::builder()
                .dns_resolver(PublicOnly(r))
                .https_only(true)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(PROBE_TIMEOUT)
                .connect_timeout(PROBE_TIMEOUT)
                .user_agent(concat!(
                    "alterego/",
                    env!("CARGO_PKG_VERSION"),
                    " (handle verification)"
                ))
                .build()
                .map_err(
                    |e| tracing::warn!(error = %e, "HTTPS client unavailable; well-known verification cannot work"),
                )
                .ok()
        });
        NetworkProbe { resolver, http }
    }
}

impl Default for NetworkProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainProbe for NetworkProbe {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let resolver = self.resolver.as_ref().ok_or("DNS is unavailable on this server")?;
            // A trailing dot makes the name absolute: no search domains are tried.
            let fqdn = format!("{name}.");
            match tokio::time::timeout(PROBE_TIMEOUT, resolver.txt_lookup(fqdn)).await {
                Err(_) => Err("the DNS lookup timed out".to_string()),
                Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Ok(Err(_)) => Err("the DNS lookup failed".to_string()),
                Ok(Ok(lookup)) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect()),
            }
        })
    }

    fn well_known<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let http = self.http.as_ref().ok_or("HTTPS is unavailable on this server")?;
            let url = format!("https://{domain}/.well-known/mikoto.json");
            let fetch = async {
                let mut res = http.get(&url).send().await.map_err(|e| describe(&e))?;
                let status = res.status();
                if !status.is_success() {
                    return Err(format!("the server answered HTTP {}", status.as_u16()));
                }
                if res.content_length().is_some_and(|n| n > WELL_KNOWN_MAX_BYTES as u64) {
                    return Err("the well-known file is larger than 64 KiB".to_string());
                }
                let mut body = Vec::new();
                while let Some(chunk) = res.chunk().await.map_err(|e| describe(&e))? {
                    if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                        return Err("the well-known file is larger than 64 KiB".to_string());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            tokio::time::timeout(PROBE_TIMEOUT, fetch)
                .await
                .unwrap_or_else(|_| Err("the request timed out".to_string()))
        })
    }
}

/// A user-facing reason for a failed fetch (no internal detail beyond the category).
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return refused.0.to_string();
        }
        source = s.source();
    }
    if e.is_timeout() {
        "the request timed out".into()
    } else if e.is_connect() {
        "could not connect to the domain over HTTPS".into()
    } else {
        "the well-known file could not be fetched".into()
    }
}

type DynError = Box<dyn std::error::Error + Send + Sync>;

/// Why the pinned resolver refused a host.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

/// The HTTPS client's resolver: the addresses it returns are the only ones the client connects
/// to, so checking them here pins the connection to validated public addresses (no rebinding
/// between the check and the connect). Any non-public address refuses the whole host.
struct PublicOnly(TokioResolver);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = format!("{}.", name.as_str());
        Box::pin(async move {
            let lookup = resolver
                .lookup_ip(host)
                .await
                .map_err(|_| Box::new(Refused("the domain does not resolve")) as DynError)?;
            let addrs = public_addresses(lookup.iter()).map_err(|r| Box::new(r) as DynError)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Every address must be public (spec §12.2); the port is the URL's (443).
fn public_addresses(ips: impl Iterator<Item = std::net::IpAddr>) -> Result<Vec<SocketAddr>, Refused> {
    let addrs: Vec<SocketAddr> = ips.map(|ip| SocketAddr::new(ip, 443)).collect();
    if addrs.is_empty() {
        return Err(Refused("the domain does not resolve"));
    }
    if addrs.iter().any(|a| !ssrf::is_public(a.ip())) {
        return Err(Refused("the domain resolves to a non-public address"));
    }
    Ok(addrs)
}

/// A shared probe, as `AppState` holds it.
pub type SharedProbe = Arc<dyn DomainProbe>;

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ChallengeFacts<'static> {
        ChallengeFacts {
            domain: "example.org",
            handle_domain: "mikoto.example",
            entity_type: "user",
            entity_id: uuid::Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap(),
            nonce: "abcDEF0123456789abcDEF0123456789",
        }
    }

    #[test]
    fn challenge_texts() {
        let f = facts();
        assert_eq!(f.dns_txt_name(), "_mikoto.example.org");
        assert_eq!(
            f.dns_txt_record(),
            "v=1 home=mikoto.example user=01890a5d-ac96-774b-bcce-b302099a8057 nonce=abcDEF0123456789abcDEF0123456789"
        );
        assert_eq!(f.well_known_url(), "https://example.org/.well-known/mikoto.json");
        assert_eq!(
            f.well_known_content(),
            "{\n  \"homeInstance\": \"mikoto.example\",\n  \"entityType\": \"user\",\n  \
             \"entityId\": \"01890a5d-ac96-774b-bcce-b302099a8057\",\n  \
             \"nonce\": \"abcDEF0123456789abcDEF0123456789\"\n}"
        );
    }

    #[test]
    fn nonces_are_32_alphanumerics() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, nonce());
    }

    #[test]
    fn txt_records_match_after_whitespace_normalisation() {
        let f = facts();
        let spaced = format!("  {}  ", f.dns_txt_record().replace(' ', " \t "));
        assert!(f.txt_matches(&["unrelated".into(), spaced]));
        assert!(!f.txt_matches(&[f.dns_txt_record().replace("nonce=abc", "nonce=xyz")]));
        assert!(!f.txt_matches(&[]));
        // The nonce is part of the record: a record of an older challenge does not count.
        assert!(!f.txt_matches(&[format!("{} extra", f.dns_txt_record())]));
    }

    #[test]
    fn well_known_must_match_every_field() {
        let f = facts();
        assert_eq!(f.check_well_known(f.well_known_content().as_bytes()), Ok(()));
        let upper = f.well_known_content().replace(
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "01890A5D-AC96-774B-BCCE-B302099A8057",
        );
        assert_eq!(f.check_well_known(upper.as_bytes()), Ok(()));
        let wrong_nonce = f.well_known_content().replace("abcDEF", "zzzzzz");
        assert!(
            f.check_well_known(wrong_nonce.as_bytes())
                .unwrap_err()
                .contains("nonce")
        );
        let wrong_home = f.well_known_content().replace("mikoto.example", "evil.example");
        assert!(
            f.check_well_known(wrong_home.as_bytes())
                .unwrap_err()
                .contains("homeInstance")
        );
        let wrong_type = f.well_known_content().replace("\"user\"", "\"space\"");
        assert!(
            f.check_well_known(wrong_type.as_bytes())
                .unwrap_err()
                .contains("entityType")
        );
        assert!(f.check_well_known(b"<html>").unwrap_err().contains("JSON"));
        assert!(f.check_well_known(b"{}").is_err());
    }

    #[test]
    fn pinned_addresses_must_all_be_public() {
        let ok = public_addresses(["93.184.216.34".parse().unwrap()].into_iter()).unwrap();
        assert_eq!(ok, vec!["93.184.216.34:443".parse().unwrap()]);
        let mixed = ["93.184.216.34".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        assert!(public_addresses(mixed.into_iter()).is_err());
        assert!(public_addresses(std::iter::empty()).is_err());
    }

    #[tokio::test]
    async fn the_real_probe_never_connects_to_loopback() {
        // `localhost` resolves to loopback addresses: the pinned resolver refuses it before any
        // connection is attempted.
        let probe = NetworkProbe::new();
        let err = probe.well_known("localhost").await.unwrap_err();
        assert_eq!(err, "the domain resolves to a non-public address");
    }

    struct Fixed {
        txt: Result<Vec<String>, String>,
        body: Result<Vec<u8>, String>,
    }

    impl DomainProbe for Fixed {
        fn txt<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
            Box::pin(async move { self.txt.clone() })
        }
        fn well_known<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            Box::pin(async move { self.body.clone() })
        }
    }

    #[tokio::test]
    async fn dns_is_tried_before_the_well_known_file() {
        let f = facts();
        let both = Fixed {
            txt: Ok(vec![f.dns_txt_record()]),
            body: Ok(f.well_known_content().into_bytes()),
        };
        assert_eq!(verify(&both, &f).await, Ok(Method::Dns));
        let file_only = Fixed {
            txt: Err("the DNS lookup failed".into()),
            body: Ok(f.well_known_content().into_bytes()),
        };
        assert_eq!(verify(&file_only, &f).await, Ok(Method::WellKnown));
        let neither = Fixed {
            txt: Ok(vec![]),
            body: Err("the server answered HTTP 404".into()),
        };
        let err = verify(&neither, &f).await.unwrap_err();
        assert!(err.contains("no TXT record at _mikoto.example.org"), "{err}");
        assert!(err.contains("HTTP 404"), "{err}");
    }
}
